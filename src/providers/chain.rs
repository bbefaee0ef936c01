//! Walking the configured providers in order for one send round.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Cost, Outcome, OutgoingSms, Provider, SendError};

/// A configured price: per billed part, in `currency`.
#[derive(Debug, Clone, PartialEq)]
pub struct Price {
    /// Price of one part in millionths of the currency unit.
    pub micros_per_part: i64,
    /// ISO 4217 code.
    pub currency: String,
}

impl Price {
    fn cost(&self, parts: u16) -> Cost {
        Cost {
            micros: self.micros_per_part * i64::from(parts),
            currency: self.currency.clone(),
        }
    }
}

struct Link {
    provider: Arc<dyn Provider>,
    price: Option<Price>,
}

/// The ordered providers a message is offered to.
pub struct ProviderChain {
    links: Vec<Link>,
}

/// What one provider call produced, ready for `sms_attempts`.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    /// Provider name.
    pub provider: String,
    /// 1-based position in this round's walk.
    pub chain_step: i32,
    /// When the call started.
    pub started_at: DateTime<Utc>,
    /// When the answer (or the failure) came.
    pub finished_at: DateTime<Utc>,
    /// The class of the answer.
    pub outcome: Outcome,
    /// HTTP status, if any.
    pub http_status: Option<u16>,
    /// Provider error code.
    pub error_code: Option<String>,
    /// Provider error text.
    pub error_message: Option<String>,
    /// The provider's message id (accepted only).
    pub provider_message_id: Option<String>,
    /// Reported or configured cost.
    pub cost: Option<Cost>,
}

/// How a round ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RoundResult {
    /// A provider accepted the message.
    Sent,
    /// A provider said the recipient is bad; the chain stopped there.
    BadRecipient(String),
    /// Every provider failed; the message may be retried later.
    Exhausted {
        /// The last provider's error.
        reason: String,
        /// The longest wait any provider asked for.
        retry_after: Option<Duration>,
    },
    /// The code's validity ran out before the next provider could be tried.
    Expired,
    /// The relay was told to stop during a provider call; that call's outcome is unknown.
    Interrupted,
}

impl ProviderChain {
    /// A chain of providers with their optional configured prices, in the order given.
    pub fn new(providers: Vec<(Arc<dyn Provider>, Option<Price>)>) -> Self {
        let links = providers
            .into_iter()
            .map(|(provider, price)| Link { provider, price })
            .collect();
        Self { links }
    }

    /// The providers' names in order.
    pub fn names(&self) -> Vec<&str> {
        self.links.iter().map(|l| l.provider.name()).collect()
    }

    /// Offers `sms` to each provider in turn until one accepts it, one rejects the recipient, or
    /// the list (or the `deadline`) runs out. Every call yields one [`AttemptRecord`]; a call cut
    /// short by `stop` is recorded as ambiguous.
    pub async fn send(
        &self,
        sms: &OutgoingSms,
        deadline: Instant,
        stop: &CancellationToken,
    ) -> (RoundResult, Vec<AttemptRecord>) {
        let mut records = Vec::with_capacity(1);
        let mut last: Option<SendError> = None;
        let mut retry_after: Option<Duration> = None;
        for (index, link) in self.links.iter().enumerate() {
            if Instant::now() >= deadline {
                return (RoundResult::Expired, records);
            }
            let started_at = Utc::now();
            let answer = tokio::select! {
                answer = link.provider.send(sms) => Some(answer),
                () = stop.cancelled() => None,
            };
            let finished_at = Utc::now();
            let mut record = AttemptRecord {
                provider: link.provider.name().to_owned(),
                chain_step: i32::try_from(index + 1).unwrap_or(i32::MAX),
                started_at,
                finished_at,
                outcome: Outcome::Accepted,
                http_status: None,
                error_code: None,
                error_message: None,
                provider_message_id: None,
                cost: None,
            };
            let Some(answer) = answer else {
                record.outcome = Outcome::Ambiguous;
                record.error_message = Some("relay stopped during the call".into());
                records.push(record);
                return (RoundResult::Interrupted, records);
            };
            match answer {
                Ok(accepted) => {
                    record.http_status = accepted.http_status;
                    record.provider_message_id = Some(accepted.provider_message_id);
                    record.cost = accepted
                        .cost
                        .or_else(|| link.price.as_ref().map(|p| p.cost(sms.segments.parts)));
                    records.push(record);
                    return (RoundResult::Sent, records);
                }
                Err(error) => {
                    let (http_status, code, message) = error.parts();
                    record.outcome = error.outcome();
                    record.http_status = http_status;
                    record.error_code = code.map(str::to_owned);
                    record.error_message = Some(message.to_owned());
                    records.push(record);
                    tracing::debug!(provider = link.provider.name(), %error, "provider did not accept");
                    if !error.is_retryable() {
                        return (RoundResult::BadRecipient(error.to_string()), records);
                    }
                    if let SendError::Provider {
                        retry_after: Some(wait),
                        ..
                    } = &error
                    {
                        retry_after = retry_after.max(Some(*wait));
                    }
                    last = Some(error);
                }
            }
        }
        let reason = last.map_or_else(|| "no providers configured".to_owned(), |e| e.to_string());
        (
            RoundResult::Exhausted {
                reason,
                retry_after,
            },
            records,
        )
    }
}
