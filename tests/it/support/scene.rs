//! [`Scene`]: one OTP sent through a chain of fake providers, with the relay's webhook endpoints
//! served, ready for receipts.

use reqwest::StatusCode;
use sms_relay::{config::Config, receipts::watch::Sweeper};
use uuid::Uuid;

use super::{
    TestApp,
    history::Attempt,
    http_chain, quick_retries,
    receipts::{Dlr, Poster, receipt_entry},
    webhooks::{config_for, serve},
};
use crate::fakes::{FakeProvider, Kind};

/// One OTP sent through the first provider of a chain of fakes (named p1, p2, …), with the
/// relay's webhook endpoints served.
pub struct Scene {
    pub app: TestApp,
    pub fakes: Vec<FakeProvider>,
    pub config: Config,
    /// Where the webhook endpoints are served.
    pub base: String,
    /// The message.
    pub id: Uuid,
    /// Its accepted attempt, as it was when sent.
    pub attempt: Attempt,
}

impl Scene {
    /// The scene for `kinds`, after `tweak` adjusted the configuration, with an OTP expiring in
    /// `expires_in` seconds (the template's 10 minutes when `None`).
    pub async fn new(
        kinds: &[Kind],
        expires_in: Option<i64>,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        let app = TestApp::new().await;
        let mut fakes = Vec::new();
        let mut entries = Vec::new();
        for (i, kind) in kinds.iter().enumerate() {
            let fake = FakeProvider::start(*kind).await;
            entries.push(receipt_entry(&fake, &format!("p{}", i + 1)));
            fakes.push(fake);
        }
        let mut config = config_for(entries);
        tweak(&mut config);
        let base = serve(&config, app.store()).await;
        let id = match expires_in {
            Some(secs) => app.otp_expiring_in("+8801712345611", secs).await,
            None => app.otp("+8801712345611", "482913").await,
        };
        app.run_chain_until_idle(http_chain(&config.providers), quick_retries())
            .await;
        assert_eq!(app.state_of(id).await.0, "sent");
        let attempt = app.accepted_attempt(id).await;
        Self {
            app,
            fakes,
            config,
            base,
            id,
            attempt,
        }
    }

    /// Runs the relay until nothing is due.
    pub async fn run(&self) {
        self.app
            .run_chain_until_idle(http_chain(&self.config.providers), quick_retries())
            .await;
    }

    /// Sends one more OTP, to `number`, through the chain; returns its id.
    pub async fn send_one(&self, number: &str) -> Uuid {
        let id = self.app.otp(number, "482913").await;
        self.run().await;
        assert_eq!(self.app.state_of(id).await.0, "sent");
        id
    }

    /// The message's state.
    pub async fn state(&self) -> String {
        self.app.state_of(self.id).await.0
    }

    /// The message's resends, queued and not withdrawn.
    pub async fn resends(&self) -> i32 {
        self.app.message(self.id).await.resends
    }

    /// The first attempt's delivery status.
    pub async fn delivery(&self) -> Option<String> {
        self.app.attempt(self.attempt.id).await.delivery_status
    }

    /// A poster of receipts from the provider `fakes[i]` stands for.
    pub fn poster(&self, i: usize) -> Poster {
        Poster::new(&self.base, &self.fakes[i])
    }

    /// Posts a signed Twilio receipt for the first attempt (sent through `p1`, a Twilio fake).
    pub async fn twilio(&self, status: &str, error: &str) -> StatusCode {
        self.poster(0)
            .post(&Dlr::of(&self.attempt, status, error))
            .await
    }

    /// The no-receipt sweeper for this scene's configuration.
    pub fn sweeper(&self) -> Sweeper {
        self.config.sweeper(self.app.store())
    }
}
