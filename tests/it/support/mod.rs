//! The test harness: [`TestApp`] (a fresh database per test, with verbs to enqueue, run relays
//! and read what happened), relay builders, rounds by hand, and the real binary.
//!
//! - `db`: the PostgreSQL server for the run and its throwaway databases.
//! - `app`: [`TestApp`] and enqueueing.
//! - `relays`: settings, simulators and HTTP chains, relay runs.
//! - `rounds`: claiming and recording rounds without a relay.
//! - `history`: a message's row, attempts and receipts; counts.
//! - `webhooks`: the relay's receipt endpoints, configured and served.
//! - `receipts`: signed receipts, posted as each provider posts them.
//! - `scene`: one OTP sent through fake providers, ready for receipts.
//! - `reports`: the analysts' report files and a hand-made fixture to run them over.
//! - `cli`: the `sms-relay` binary, scratch directories, background relays.

mod app;
pub mod cli;
mod db;
pub mod history;
pub mod receipts;
mod relays;
pub mod reports;
mod rounds;
pub mod scene;
pub mod webhooks;

use std::time::Duration;

pub use app::{TestApp, otp_request};
pub use relays::{
    accepting, chain, failing, http_chain, provider_config, quick_retries, run_relay_until_drained,
    run_relay_until_idle, settings, simulator,
};
pub use rounds::{RELAY, accepted_call, ended_round, failed_round, sent_round};

/// Awaits `fut`, failing the test if it takes more than `secs` (a hang guard, not a speed test).
pub async fn within<T>(secs: u64, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .expect("did not finish in time")
}

/// Polls `check` every 20 ms until it is true (hang guard: 60 s).
pub async fn eventually<F: AsyncFnMut() -> bool>(mut check: F) {
    within(60, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}
