//! What runs beside the relay for receipts: the sweeper (no-receipt resends, the unknown window)
//! and the poller (report APIs).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{sync::Semaphore, task::JoinSet};
use tokio_util::sync::CancellationToken;

use super::settings::ReceiptSettings;
use crate::{
    providers::{Provider, ProviderChain, ProviderConfig, Receipt, Reports, chain::scrub},
    store::{ResendRule, Store, Via},
};

/// Resends what got no receipt in time, matches receipts that came before their attempt was
/// recorded, and marks what never got a final receipt `unknown`.
pub struct Sweeper {
    store: Store,
    settings: ReceiptSettings,
    rule: ResendRule,
    /// Providers whose accepted messages get receipts (`expect_receipts`).
    expecting: Vec<String>,
    /// Every provider's name.
    every: Vec<String>,
}

/// Attempts marked `unknown` per statement.
const UNKNOWN_BATCH: u32 = 5_000;

impl Sweeper {
    /// A sweeper for `providers`, resending by `rule`; `webhooks_reachable` says whether
    /// providers can deliver receipts to this relay's webhooks.
    pub fn new(
        settings: &ReceiptSettings,
        providers: &[ProviderConfig],
        rule: ResendRule,
        webhooks_reachable: bool,
        store: Store,
    ) -> Self {
        Self {
            store,
            settings: settings.clone(),
            rule,
            expecting: providers
                .iter()
                .filter(|p| p.expects_receipts(webhooks_reachable))
                .map(|p| p.name.clone())
                .collect(),
            every: providers.iter().map(|p| p.name.clone()).collect(),
        }
    }

    /// One pass: resend what got no receipt in time, and mark what never got a final receipt
    /// `unknown`. A step that fails is logged and the other still runs; the next pass tries
    /// again. (Receipts that came before their attempt was recorded are matched again by the
    /// `rematch` maintenance job.)
    pub async fn sweep(&self) {
        if !self.expecting.is_empty() && self.rule.max_resends > 0 {
            match self
                .store
                .resend_unanswered(&self.expecting, self.settings.resend_after(), self.rule)
                .await
            {
                Ok(passed) => {
                    if passed.resent > 0 {
                        tracing::info!(
                            resent = passed.resent,
                            "resending messages that got no delivery receipt"
                        );
                    }
                    if passed.held_off > 0 {
                        tracing::warn!(
                            held_off = passed.held_off,
                            "accepted messages got no receipt, and no receipt came from their \
                             providers since: is the receipt path down? not resending them"
                        );
                    }
                }
                Err(error) => tracing::warn!(%error, "the no-receipt resend pass failed"),
            }
        }
        match self
            .store
            .expire_receipts(&self.every, self.settings.unknown_after(), UNKNOWN_BATCH)
            .await
        {
            Ok(0) => {}
            Ok(unknown) => {
                tracing::info!(unknown, "attempts without a final receipt marked unknown");
            }
            Err(error) => tracing::warn!(%error, "the unknown-window pass failed"),
        }
    }

    /// Sweeps every `sweep_interval_ms` until `cancel` fires.
    pub async fn run(self, cancel: CancellationToken) {
        loop {
            self.sweep().await;
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(self.settings.sweep_interval()) => {}
            }
        }
    }
}

/// One provider with a report API.
struct Polled {
    /// The provider kind (`sms_receipts.source`).
    source: &'static str,
    provider: Arc<dyn Provider>,
    /// Reports fetched but not yet recorded (the database failed): pulled reports are returned
    /// only once, so they are kept for the next pass.
    unrecorded: Mutex<Vec<Receipt>>,
}

/// Asks report APIs about accepted messages still waiting for a final status.
pub struct Poller {
    store: Store,
    settings: ReceiptSettings,
    rule: ResendRule,
    polled: Vec<Polled>,
}

/// Most messages asked about per provider and pass.
const POLL_BATCH: u32 = 100;
/// Report requests in flight at once per provider.
const POLL_CONCURRENCY: usize = 8;
/// Most unrecorded reports kept between passes.
const MAX_UNRECORDED: usize = 10_000;

impl Poller {
    /// A poller for the providers of `chain` (built from `providers`) that have a report API,
    /// resending by `rule`.
    pub fn new(
        settings: &ReceiptSettings,
        providers: &[ProviderConfig],
        chain: &ProviderChain,
        rule: ResendRule,
        store: Store,
    ) -> Self {
        let polled = chain
            .providers()
            .filter(|p| p.reports() != Reports::None)
            .filter_map(|provider| {
                let entry = providers.iter().find(|c| c.name == provider.name())?;
                Some(Polled {
                    source: entry.kind.label(),
                    provider: provider.clone(),
                    unrecorded: Mutex::new(Vec::new()),
                })
            })
            .collect();
        Self {
            store,
            settings: settings.clone(),
            rule,
            polled,
        }
    }

    /// Whether any provider is polled.
    pub fn is_empty(&self) -> bool {
        self.polled.is_empty()
    }

    /// One pass over every polled provider.
    pub async fn poll(&self) {
        for polled in &self.polled {
            if let Err(error) = self.poll_one(polled).await {
                // Provider answers can quote the number: scrub before logging.
                let error = scrub(&error.to_string(), "");
                tracing::warn!(provider = polled.provider.name(), %error, "report polling failed");
            }
        }
    }

    async fn poll_one(&self, polled: &Polled) -> Result<(), PollError> {
        let provider = &polled.provider;
        let fresh = match provider.reports() {
            Reports::None => return Ok(()),
            Reports::Pull => provider.pull_reports().await?,
            Reports::PerMessage => self.ask_each(polled).await?,
        };
        let mut receipts = std::mem::take(&mut *lock(&polled.unrecorded));
        receipts.extend(fresh);
        if receipts.is_empty() {
            return Ok(());
        }
        let names = [provider.name().to_owned()];
        match self
            .store
            .record_receipts(polled.source, Via::Poll, &names, &receipts, self.rule)
            .await
        {
            Ok(totals) => {
                tracing::debug!(
                    provider = provider.name(),
                    ?totals,
                    "polled receipts recorded"
                );
                Ok(())
            }
            Err(error) => {
                receipts.truncate(MAX_UNRECORDED);
                *lock(&polled.unrecorded) = receipts;
                Err(error.into())
            }
        }
    }

    /// Asks the report API about each attempt that is due, a few at a time. A failing request
    /// is logged and skipped (the attempt is asked again later); the others are kept.
    async fn ask_each(&self, polled: &Polled) -> Result<Vec<Receipt>, PollError> {
        let ids = self
            .store
            .due_for_report(
                polled.provider.name(),
                self.settings.poll_interval().min(Duration::from_secs(5)),
                self.settings.poll_interval(),
                self.settings.unknown_after(),
                POLL_BATCH,
            )
            .await?;
        let slots = Arc::new(Semaphore::new(POLL_CONCURRENCY));
        let mut asks = JoinSet::new();
        for id in ids {
            let (provider, slots) = (polled.provider.clone(), slots.clone());
            asks.spawn(async move {
                let _slot = slots.acquire_owned().await;
                provider.report(&id).await
            });
        }
        let (mut receipts, mut failed) = (Vec::new(), 0usize);
        let mut last_error = None;
        while let Some(asked) = asks.join_next().await {
            match asked {
                Ok(Ok(receipt)) => receipts.extend(receipt),
                Ok(Err(error)) => {
                    failed += 1;
                    last_error = Some(error);
                }
                Err(panicked) => {
                    failed += 1;
                    tracing::error!(%panicked, "a report request panicked");
                }
            }
        }
        if let Some(error) = last_error {
            let error = scrub(&error.to_string(), "");
            tracing::warn!(provider = polled.provider.name(), failed, last_error = %error,
                "some report requests failed; those messages are asked again later");
        }
        Ok(receipts)
    }

    /// Polls every `poll_interval_ms` until `cancel` fires.
    pub async fn run(self, cancel: CancellationToken) {
        loop {
            self.poll().await;
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(self.settings.poll_interval()) => {}
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Why a polling pass stopped early (the next pass tries again).
#[derive(Debug, thiserror::Error)]
enum PollError {
    /// The report API failed.
    #[error("report API: {0}")]
    Provider(#[from] crate::providers::SendError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}
