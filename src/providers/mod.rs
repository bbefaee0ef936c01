//! The providers: one adapter per provider behind [`Provider`], walked in order by
//! [`ProviderChain`]. Adapters classify every answer into an [`Outcome`]; the relay branches on the
//! class only, never on message text.
//!
//! Each provider is one module holding all it does: its settings, wire format, send,
//! classification table, status lookup and balance, and (in its `receipt` submodule) how its
//! delivery receipts are checked and parsed. Shared by all: the chain with its circuit
//! [`breaker`], rate limit ([`throttle`]) and [`pricing`]; the HTTP exchange ([`http`]); the
//! canonical [`receipt`] and the [`webhook`] plumbing.

pub mod alpha_sms;
pub mod breaker;
pub mod bulksmsbd;
pub mod cap;
pub mod chain;
#[cfg(test)]
mod examples;
pub mod fields;
pub mod http;
pub mod infobip;
pub mod kind;
pub mod pricing;
pub mod receipt;
pub mod settings;
pub mod simulator;
pub mod ssl_wireless;
pub mod throttle;
pub mod twilio;
pub mod vonage;
pub mod webhook;

use std::{future::Future, pin::Pin, time::Duration};

use uuid::Uuid;

use crate::domain::{Recipient, Segments};

pub use breaker::{Breaker, BreakerSettings, CircuitSnapshot, CircuitState};
pub use cap::{Cap, Measure, Per, SpendCap};
pub use chain::{AttemptRecord, Link, ProviderChain, RoundResult, UnknownPolicy};
pub use fields::Credential;
pub use kind::{BuildError, KindSettings};
pub use pricing::{PriceRule, PriceTable};
pub use receipt::{Delivery, Receipt, ReceiptError};
pub use settings::{ProviderConfig, ProviderKind, build, from_config, names_by_kind};
pub use simulator::{Simulator, SimulatorSettings};
pub use throttle::RateLimit;
pub use throttle::Throttle;
pub use webhook::Webhook;

/// The provider kinds that take delivery receipts by webhook.
pub const WEBHOOKS: &[Webhook] = &[
    twilio::receipt::WEBHOOK,
    vonage::receipt::WEBHOOK,
    infobip::receipt::WEBHOOK,
];

/// A boxed future, so that providers can live behind `Arc<dyn Provider>`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One rendered message, ready for a provider. `Debug` leaves out the body (it holds the code).
#[derive(Clone)]
pub struct OutgoingSms {
    /// `sms_outbox.id`; adapters pass it on as the client reference where the API takes one.
    pub message_id: Uuid,
    /// Destination (prints masked).
    pub recipient: Recipient,
    /// Rendered text. Holds the code: never log it.
    pub body: String,
    /// Encoding and billed parts of `body`.
    pub segments: Segments,
    /// The validity the code has left as this call starts (less the relay's margin), set by the
    /// chain for each call. Adapters pass it on, rounded down, as the message's time-to-live where
    /// the API takes one, so a late code is dropped, not delivered.
    pub valid_for: Duration,
    /// The stem of this round's client references (base-36 outbox sequence and `r<round>`); the
    /// chain appends `s<step>` for each call.
    pub reference_stem: String,
}

impl std::fmt::Debug for OutgoingSms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutgoingSms")
            .field("message_id", &self.message_id)
            .field("recipient", &self.recipient)
            .field("segments", &self.segments)
            .field("valid_for", &self.valid_for)
            .field("reference_stem", &self.reference_stem)
            .finish_non_exhaustive()
    }
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
    /// Something worth keeping about how the acceptance was learned (e.g. a status lookup).
    pub note: Option<String>,
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
    Unknown,
}

impl Outcome {
    /// The `sms_outcome` enum label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::BadRecipient => "bad_recipient",
            Outcome::ProviderError => "provider_error",
            Outcome::Unknown => "unknown",
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
    Unknown {
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
            SendError::Unknown { .. } => Outcome::Unknown,
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
            SendError::Unknown {
                http_status,
                message,
            } => (*http_status, None, message),
        }
    }
}

/// A provider's status-lookup answer about a call whose outcome was unknown.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// The provider has the message: it was taken.
    Found(Accepted),
    /// The provider has no such message (or says it never left): it was not sent.
    NotFound,
}

/// An SMS provider adapter.
pub trait Provider: Send + Sync {
    /// The configured name (`sms_attempts.provider`).
    fn name(&self) -> &str;

    /// Whether messages handed to this provider can reach a phone (the simulator's cannot). A
    /// fictional number is never handed to one that can.
    fn reaches_phones(&self) -> bool {
        true
    }

    /// The shortest time-to-live the provider's API can express. A code with less validity left
    /// is not offered to this provider: it would be told the code lives longer than it does.
    fn min_validity(&self) -> Duration {
        Duration::ZERO
    }

    /// Sends one message and classifies the answer. `reference` is unique to this call; adapters
    /// pass it as the client reference where the API takes one.
    fn send<'a>(
        &'a self,
        sms: &'a OutgoingSms,
        reference: &'a str,
    ) -> BoxFuture<'a, Result<Accepted, SendError>>;

    /// Asks the provider whether it took `sms` (sent with `reference`) after the call's outcome
    /// was unknown. `None` if the provider has no status lookup.
    fn lookup<'a>(
        &'a self,
        _sms: &'a OutgoingSms,
        _reference: &'a str,
    ) -> Option<BoxFuture<'a, Result<Lookup, SendError>>> {
        None
    }

    /// The account balance as the provider states it (e.g. `12.50 USD`). `None` if the provider
    /// has no balance endpoint.
    fn balance(&self) -> Option<BoxFuture<'_, Result<String, SendError>>> {
        None
    }

    /// How the relay learns about this provider's deliveries besides webhooks.
    fn reports(&self) -> Reports {
        Reports::None
    }

    /// Asks the report API about one accepted message ([`Reports::PerMessage`]); `Ok(None)` while
    /// the provider has nothing to say yet.
    fn report<'a>(
        &'a self,
        _provider_message_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Receipt>, SendError>> {
        Box::pin(async { Ok(None) })
    }

    /// Fetches the reports the provider holds for us, each returned once ([`Reports::Pull`]).
    fn pull_reports(&self) -> BoxFuture<'_, Result<Vec<Receipt>, SendError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// A provider's report API, polled by the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reports {
    /// None: receipts come by webhook, or not at all.
    None,
    /// One request per accepted message ([`Provider::report`]).
    PerMessage,
    /// One request returns every new report ([`Provider::pull_reports`]).
    Pull,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_leaves_out_the_code_and_the_number() {
        let sms = OutgoingSms {
            message_id: Uuid::nil(),
            recipient: Recipient::new("+8801712345678"),
            body: "Your code is 482913".into(),
            segments: crate::domain::segments::count("Your code is 482913"),
            valid_for: Duration::from_secs(60),
            reference_stem: "1r1".into(),
        };
        let printed = format!("{sms:?}");
        assert!(
            !printed.contains("482913") && !printed.contains("12345678"),
            "{printed}"
        );
        assert!(printed.contains("1r1"), "{printed}");
    }
}
