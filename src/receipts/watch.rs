//! What runs beside the relay for receipts: the sweeper (no-receipt resends, the unknown window)
//! and the poller (report APIs).

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::{
    config::{Config, ReceiptSettings},
    providers::{Provider, ProviderChain, Reports},
    store::{ResendRule, Store, Via},
};

/// Resends what got no receipt in time and marks what never got one `unknown`.
pub struct Sweeper {
    store: Store,
    settings: ReceiptSettings,
    rule: ResendRule,
    /// Providers whose accepted messages get receipts (`expect_receipts`).
    expecting: Vec<String>,
}

impl Sweeper {
    /// A sweeper for `config`'s providers.
    pub fn new(config: &Config, store: Store) -> Self {
        let public = config.webhooks.public_base_url.is_some();
        Self {
            store,
            settings: config.receipts.clone(),
            rule: resend_rule(config),
            expecting: config
                .providers
                .iter()
                .filter(|p| p.expects_receipts(public))
                .map(|p| p.name.clone())
                .collect(),
        }
    }

    /// One pass over attempts that finished after `after`; returns the next pass's `after`.
    /// Attempts are considered once their `resend_after` window has passed, so each is looked at
    /// in exactly one pass.
    pub async fn sweep(&self, after: DateTime<Utc>) -> crate::store::Result<DateTime<Utc>> {
        let until = Utc::now() - self.settings.resend_after();
        if !self.expecting.is_empty() && self.rule.max_resends > 0 && until > after {
            let resent = self
                .store
                .resend_unanswered(
                    &self.expecting,
                    after,
                    until,
                    self.settings.resend_after(),
                    self.rule,
                )
                .await?;
            if resent > 0 {
                tracing::info!(resent, "resending messages that got no delivery receipt");
            }
        }
        let unknown = self
            .store
            .expire_receipts(self.settings.unknown_after())
            .await?;
        if unknown > 0 {
            tracing::info!(unknown, "attempts without a final receipt marked unknown");
        }
        Ok(until.max(after))
    }

    /// Sweeps every `sweep_interval_ms` until `cancel` fires. The first pass looks back as far
    /// as the unknown window (older attempts are past any code's validity).
    pub async fn run(self, cancel: CancellationToken) {
        let mut after = Utc::now() - self.settings.unknown_after();
        loop {
            match self.sweep(after).await {
                Ok(next) => after = next,
                Err(error) => tracing::warn!(%error, "receipt sweep failed; will try again"),
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(self.settings.sweep_interval()) => {}
            }
        }
    }
}

fn resend_rule(config: &Config) -> ResendRule {
    ResendRule {
        max_resends: config.receipts.max_resends,
        expiry_margin: Duration::from_millis(config.relay.expiry_margin_ms),
    }
}

/// One provider with a report API.
struct Polled {
    /// The provider kind (`sms_receipts.source`).
    source: &'static str,
    provider: Arc<dyn Provider>,
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

impl Poller {
    /// A poller for the providers of `chain` that have a report API.
    pub fn new(config: &Config, chain: &ProviderChain, store: Store) -> Self {
        let polled = chain
            .providers()
            .filter(|p| p.reports() != Reports::None)
            .filter_map(|provider| {
                let entry = config
                    .providers
                    .iter()
                    .find(|c| c.name == provider.name())?;
                Some(Polled {
                    source: entry.kind.label(),
                    provider: provider.clone(),
                })
            })
            .collect();
        Self {
            store,
            settings: config.receipts.clone(),
            rule: resend_rule(config),
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
                tracing::warn!(provider = polled.provider.name(), %error, "report polling failed");
            }
        }
    }

    async fn poll_one(&self, polled: &Polled) -> Result<(), PollError> {
        let provider = &polled.provider;
        let receipts = match provider.reports() {
            Reports::None => return Ok(()),
            Reports::Pull => provider.pull_reports().await?,
            Reports::PerMessage => {
                let ids = self
                    .store
                    .due_for_report(
                        provider.name(),
                        self.settings.poll_interval().min(Duration::from_secs(5)),
                        self.settings.poll_interval(),
                        self.settings.unknown_after(),
                        POLL_BATCH,
                    )
                    .await?;
                let mut receipts = Vec::with_capacity(ids.len());
                for id in &ids {
                    receipts.extend(provider.report(id).await?);
                }
                receipts
            }
        };
        if receipts.is_empty() {
            return Ok(());
        }
        let names = [provider.name().to_owned()];
        let totals = self
            .store
            .record_receipts(polled.source, Via::Poll, &names, &receipts, self.rule)
            .await?;
        tracing::debug!(
            provider = provider.name(),
            ?totals,
            "polled receipts recorded"
        );
        Ok(())
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
