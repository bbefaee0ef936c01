//! The provider interface: one adapter per provider behind [`Provider`], walked in order by
//! [`ProviderChain`]. Adapters classify every answer into an [`Outcome`]; the relay branches on the
//! class only, never on message text.

pub mod chain;
pub mod simulator;

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use uuid::Uuid;

use crate::{
    config::{ProviderConfig, ProviderKind},
    domain::{Recipient, Segments},
};

pub use chain::{AttemptRecord, Price, ProviderChain, RoundResult};
pub use simulator::{Simulator, SimulatorSettings};

/// A boxed future, so that providers can live behind `Arc<dyn Provider>`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One rendered message, ready for a provider.
#[derive(Debug, Clone)]
pub struct OutgoingSms {
    /// `sms_outbox.id`; adapters pass it on as the client reference where the API takes one.
    pub message_id: Uuid,
    /// Destination (prints masked).
    pub recipient: Recipient,
    /// Rendered text. Holds the code: never log it.
    pub body: String,
    /// Encoding and billed parts of `body`.
    pub segments: Segments,
}

/// A price in millionths of the currency unit, so sums stay exact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cost {
    /// Amount × 1,000,000.
    pub micros: i64,
    /// ISO 4217 code, e.g. `BDT`.
    pub currency: String,
}

/// The provider took the message.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The provider's id for the message, used to match delivery receipts.
    pub provider_message_id: String,
    /// HTTP status of the answer, where there was one.
    pub http_status: Option<u16>,
    /// The price the provider reported, if any.
    pub cost: Option<Cost>,
}

/// The class of a provider's answer (`sms_attempts.outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The provider accepted the message.
    Accepted,
    /// The number is invalid, unreachable, opted out or blocked: no provider will do better.
    BadRecipient,
    /// Outage, throttling, auth/balance/sender problem: try the next provider.
    ProviderError,
    /// The request may have reached the provider (e.g. timed out after it was written).
    Ambiguous,
}

impl Outcome {
    /// The `sms_outcome` enum label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::BadRecipient => "bad_recipient",
            Outcome::ProviderError => "provider_error",
            Outcome::Ambiguous => "ambiguous",
        }
    }
}

/// Why a provider did not accept a message.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SendError {
    /// The recipient is bad; not worth retrying anywhere.
    #[error("recipient rejected ({code}): {message}")]
    BadRecipient {
        /// HTTP status, if any.
        http_status: Option<u16>,
        /// The provider's error code.
        code: String,
        /// The provider's error text (never contains our secrets).
        message: String,
    },
    /// This provider cannot take the message now; another provider or a later retry may.
    #[error("provider error ({code}): {message}")]
    Provider {
        /// HTTP status, if any.
        http_status: Option<u16>,
        /// The provider's error code.
        code: String,
        /// The provider's error text.
        message: String,
        /// How long the provider asked us to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// We cannot tell whether the provider took the message.
    #[error("outcome unknown: {message}")]
    Ambiguous {
        /// HTTP status, if a partial answer had one.
        http_status: Option<u16>,
        /// What happened.
        message: String,
    },
}

impl SendError {
    /// The answer's class.
    pub fn outcome(&self) -> Outcome {
        match self {
            SendError::BadRecipient { .. } => Outcome::BadRecipient,
            SendError::Provider { .. } => Outcome::ProviderError,
            SendError::Ambiguous { .. } => Outcome::Ambiguous,
        }
    }

    /// Whether another provider or a later round may succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, SendError::BadRecipient { .. })
    }

    /// HTTP status, code and text as stored in `sms_attempts`.
    pub fn parts(&self) -> (Option<u16>, Option<&str>, &str) {
        match self {
            SendError::BadRecipient {
                http_status,
                code,
                message,
            }
            | SendError::Provider {
                http_status,
                code,
                message,
                ..
            } => (*http_status, Some(code), message),
            SendError::Ambiguous {
                http_status,
                message,
            } => (*http_status, None, message),
        }
    }
}

/// An SMS provider adapter.
pub trait Provider: Send + Sync {
    /// The configured name (`sms_attempts.provider`).
    fn name(&self) -> &str;

    /// Sends one message and classifies the answer.
    fn send<'a>(&'a self, sms: &'a OutgoingSms) -> BoxFuture<'a, Result<Accepted, SendError>>;
}

/// Builds the chain from `[[providers]]`, returning the simulators too so callers can read their
/// counts.
pub fn from_config(
    configs: &[ProviderConfig],
) -> std::io::Result<(ProviderChain, Vec<Arc<Simulator>>)> {
    let mut links: Vec<(Arc<dyn Provider>, Option<Price>)> = Vec::new();
    let mut simulators = Vec::new();
    for config in configs {
        let price =
            config
                .price_per_part
                .zip(config.currency.clone())
                .map(|(per_part, currency)| Price {
                    micros_per_part: (per_part * 1_000_000.0).round() as i64,
                    currency,
                });
        match &config.kind {
            ProviderKind::Simulator(settings) => {
                let simulator = Arc::new(Simulator::new(config.name.clone(), settings.clone())?);
                simulators.push(simulator.clone());
                links.push((simulator, price));
            }
        }
    }
    Ok((ProviderChain::new(links), simulators))
}
