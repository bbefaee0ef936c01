//! One `[[providers]]` entry: the adapter kind and its credentials, plus what every adapter shares
//! (base URL, timeouts, rate limit, circuit breaker, price table).

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};

use std::sync::Arc;

use super::{
    BuildError, Provider, alpha_sms::AlphaSmsSettings, bulksmsbd::BulkSmsBdSettings,
    infobip::InfobipSettings, simulator::SimulatorSettings, ssl_wireless::SslWirelessSettings,
    twilio::TwilioSettings, vonage::VonageSettings,
};

/// One `[[providers]]` entry.
#[derive(Debug, Clone, Deserialize)]
pub struct ProviderConfig {
    /// Unique name, recorded on each attempt.
    pub name: String,
    /// `kind = "..."` and that kind's credentials and sender.
    #[serde(flatten)]
    pub kind: ProviderKind,
    /// The API's root; defaults to the provider's real endpoint (tests point it at a fake).
    #[serde(default)]
    pub base_url: Option<String>,
    /// Longest wait for a whole HTTP exchange, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Longest wait for a TCP/TLS connection, in milliseconds.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Requests per second this relay may send to the provider.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// When to stop calling a failing provider for a while.
    #[serde(default)]
    pub circuit: BreakerSettings,
    /// Configured prices per destination prefix, used when the provider reports none.
    #[serde(default)]
    pub prices: Vec<PriceRule>,
    /// Whether this provider's accepted messages get delivery receipts, so that a missing one
    /// means something (`receipts.resend_after_ms`). Defaults to yes for Twilio, Vonage and
    /// Infobip when `[webhooks] public_base_url` is set (Infobip also when `pull_reports`), and
    /// for a simulator with `receipts = true`; no otherwise.
    #[serde(default)]
    pub expect_receipts: Option<bool>,
}

fn default_timeout_ms() -> u64 {
    5_000
}

fn default_connect_timeout_ms() -> u64 {
    2_000
}

/// The provider kinds this build knows.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProviderKind {
    /// The built-in simulator (no network).
    Simulator(SimulatorSettings),
    /// Twilio Programmable Messaging.
    Twilio(TwilioSettings),
    /// Vonage (Nexmo) SMS API.
    Vonage(VonageSettings),
    /// Infobip SMS v3.
    Infobip(InfobipSettings),
    /// SSL Wireless Push SMS API v3.
    SslWireless(SslWirelessSettings),
    /// BulkSMSBD.
    #[serde(rename = "bulksmsbd")]
    BulkSmsBd(BulkSmsBdSettings),
    /// Alpha SMS (sms.net.bd).
    AlphaSms(AlphaSmsSettings),
}

impl ProviderKind {
    /// The kind's own settings, which answer everything that differs between kinds.
    pub fn settings(&self) -> &dyn KindSettings {
        match self {
            ProviderKind::Simulator(s) => s,
            ProviderKind::Twilio(s) => s,
            ProviderKind::Vonage(s) => s,
            ProviderKind::Infobip(s) => s,
            ProviderKind::SslWireless(s) => s,
            ProviderKind::BulkSmsBd(s) => s,
            ProviderKind::AlphaSms(s) => s,
        }
    }

    /// The `kind` label, also the provider's webhook path segment.
    pub fn label(&self) -> &'static str {
        self.settings().label()
    }
}

/// What each provider kind's settings (`[[providers]]` fields beyond the common ones) answer; every
/// provider module implements it for its settings.
pub trait KindSettings {
    /// The `kind` label, also the provider's webhook path segment.
    fn label(&self) -> &'static str;

    /// The real API root, used when `base_url` is not set; `None` where there is no useful one.
    fn default_base_url(&self) -> Option<&'static str> {
        None
    }

    /// Checks the kind's own fields.
    fn validate(&self) -> Result<(), String>;

    /// Whether receipts are expected for this kind's messages unless `expect_receipts` says
    /// otherwise. `webhooks_reachable`: the relay serves webhooks and has a public URL.
    fn expects_receipts(&self, webhooks_reachable: bool) -> bool {
        let _ = webhooks_reachable;
        false
    }

    /// The adapter for `config` (an entry of this kind); `callback` is the per-message receipt
    /// URL, where the relay has a public one.
    fn build(
        &self,
        config: &ProviderConfig,
        callback: Option<String>,
    ) -> Result<Arc<dyn Provider>, BuildError>;
}

impl ProviderConfig {
    /// A simulator entry with the default guards and no prices.
    pub fn simulator(name: &str, settings: SimulatorSettings) -> Self {
        Self {
            name: name.into(),
            kind: ProviderKind::Simulator(settings),
            base_url: None,
            timeout_ms: default_timeout_ms(),
            connect_timeout_ms: default_connect_timeout_ms(),
            rate_limit: None,
            circuit: BreakerSettings::default(),
            prices: Vec::new(),
            expect_receipts: None,
        }
    }

    /// Whether receipts are expected for this provider's messages (see `expect_receipts`).
    /// `webhooks_reachable`: the relay serves webhooks and has a public URL to ask for them at.
    /// A Vonage or Infobip entry without webhook credentials gets every receipt refused, so it
    /// expects none.
    pub fn expects_receipts(&self, webhooks_reachable: bool) -> bool {
        self.expect_receipts
            .unwrap_or_else(|| self.kind.settings().expects_receipts(webhooks_reachable))
    }

    /// `base_url`, else the kind's default, without a trailing slash.
    pub fn base_url(&self) -> Option<String> {
        self.base_url
            .as_deref()
            .or(self.kind.settings().default_base_url())
            .map(|u| u.trim_end_matches('/').to_owned())
    }

    /// `timeout_ms` as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// `connect_timeout_ms` as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// Checks this entry on its own.
    pub fn validate(&self) -> Result<(), String> {
        let name = &self.name;
        if name.is_empty() || name.len() > 64 {
            return Err("a provider name must be 1..=64 characters".into());
        }
        let http = !matches!(self.kind, ProviderKind::Simulator(_));
        if http {
            match self.base_url() {
                None => return Err(format!("provider {name:?}: base_url is required")),
                Some(url) if !(url.starts_with("https://") || url.starts_with("http://")) => {
                    return Err(format!(
                        "provider {name:?}: base_url must start with http:// or https://"
                    ));
                }
                Some(_) => {}
            }
            if !(100..=120_000).contains(&self.timeout_ms) {
                return Err(format!(
                    "provider {name:?}: timeout_ms must be 100..=120000"
                ));
            }
            if self.connect_timeout_ms == 0 || self.connect_timeout_ms > self.timeout_ms {
                return Err(format!(
                    "provider {name:?}: connect_timeout_ms must be 1..=timeout_ms"
                ));
            }
        }
        if let Some(limit) = &self.rate_limit {
            limit
                .validate()
                .map_err(|e| format!("provider {name:?}: {e}"))?;
        }
        self.circuit
            .validate()
            .map_err(|e| format!("provider {name:?}: {e}"))?;
        for rule in &self.prices {
            rule.validate()
                .map_err(|e| format!("provider {name:?}: {e}"))?;
        }
        self.kind
            .settings()
            .validate()
            .map_err(|e| format!("provider {name:?}: {e}"))
    }
}

/// `rate_limit = { per_second = 30, burst = 30, max_wait_ms = 1000 }`: a token bucket.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: u32,
    /// Requests that may go at once after a quiet spell (default: `per_second`).
    #[serde(default)]
    pub burst: Option<u32>,
    /// Longest a send waits for a token before the chain moves on to the next provider.
    #[serde(default = "default_max_wait_ms")]
    pub max_wait_ms: u64,
}

fn default_max_wait_ms() -> u64 {
    1_000
}

impl RateLimit {
    fn validate(&self) -> Result<(), String> {
        if self.per_second == 0 || self.burst == Some(0) {
            return Err("rate_limit per_second and burst must be at least 1".into());
        }
        Ok(())
    }
}

/// `circuit = { ... }`: when a provider counts as down, and for how long it is skipped.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerSettings {
    /// Consecutive failed calls that open the circuit.
    pub consecutive_failures: u32,
    /// Share of failed calls among the last `window` that opens the circuit.
    pub failure_rate: f64,
    /// Calls the failure rate is measured over (it applies once this many were made).
    pub window: u32,
    /// How long an open circuit skips the provider before one probe call is let through.
    pub open_ms: u64,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_rate: 0.5,
            window: 20,
            open_ms: 30_000,
        }
    }
}

impl BreakerSettings {
    /// `open_ms` as a duration.
    pub fn open_for(&self) -> Duration {
        Duration::from_millis(self.open_ms)
    }

    fn validate(&self) -> Result<(), String> {
        if self.consecutive_failures == 0 || self.window == 0 {
            return Err("circuit consecutive_failures and window must be at least 1".into());
        }
        if !(self.failure_rate > 0.0 && self.failure_rate <= 1.0) {
            return Err("circuit failure_rate must be in (0, 1]".into());
        }
        if !(100..=3_600_000).contains(&self.open_ms) {
            return Err("circuit open_ms must be 100..=3600000".into());
        }
        Ok(())
    }
}

/// `prices = [{ prefix = "+880", per_part = 0.35, currency = "BDT" }]`: the price of one SMS part
/// to destinations starting with `prefix` (the longest matching prefix wins; `""` matches all).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PriceRule {
    /// E.164 prefix, with or without `+`.
    #[serde(default)]
    pub prefix: String,
    /// Price of one part.
    pub per_part: f64,
    /// ISO 4217 code.
    pub currency: String,
}

impl PriceRule {
    fn validate(&self) -> Result<(), String> {
        if !(self.per_part.is_finite() && self.per_part >= 0.0 && self.per_part < 1e6) {
            return Err("prices: per_part must be a non-negative amount below 1000000".into());
        }
        if !is_currency(&self.currency) {
            return Err("prices: currency must be an ISO 4217 code such as BDT".into());
        }
        if !self
            .prefix
            .trim_start_matches('+')
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            return Err("prices: prefix must be digits, optionally after a +".into());
        }
        Ok(())
    }
}

/// Whether `code` looks like an ISO 4217 currency code.
pub fn is_currency(code: &str) -> bool {
    code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase())
}

/// A credential: the value itself, or `env:NAME` to read it from the environment variable `NAME`
/// when the configuration is loaded. Prints as `[REDACTED]` in `Debug`.
#[derive(Debug, Clone)]
pub struct Credential(SecretString);

impl Credential {
    /// The secret value, for building a request.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl From<&str> for Credential {
    fn from(value: &str) -> Self {
        Credential(SecretString::from(value.to_owned()))
    }
}

impl<'de> Deserialize<'de> for Credential {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        let value = match raw.strip_prefix("env:") {
            Some(var) => std::env::var(var).map_err(|_| {
                serde::de::Error::custom(format!(
                    "credential environment variable {var} is not set"
                ))
            })?,
            None => raw,
        };
        if value.is_empty() {
            return Err(serde::de::Error::custom("a credential must not be empty"));
        }
        Ok(Credential(SecretString::from(value)))
    }
}

/// `sender` checks shared by the adapters: an alphanumeric sender id is at most 11 characters, a
/// numeric one at most 15 digits.
pub fn validate_sender(sender: &str) -> Result<(), String> {
    let numeric = sender
        .trim_start_matches('+')
        .bytes()
        .all(|b| b.is_ascii_digit());
    let ok = if numeric {
        (3..=15).contains(&sender.trim_start_matches('+').len())
    } else {
        (1..=11).contains(&sender.chars().count())
    };
    if ok {
        Ok(())
    } else {
        Err("sender must be 1-11 characters (alphanumeric) or 3-15 digits (numeric)".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_print_and_can_come_from_the_environment() {
        let c: Credential = serde_json::from_str("\"hunter2-secret\"").unwrap();
        assert_eq!(c.expose(), "hunter2-secret");
        assert!(!format!("{c:?}").contains("hunter2"));
        let missing: Result<Credential, _> =
            serde_json::from_str("\"env:SMS_RELAY_TEST_SURELY_UNSET_VARIABLE\"");
        let err = missing.unwrap_err().to_string();
        assert!(
            err.contains("SMS_RELAY_TEST_SURELY_UNSET_VARIABLE"),
            "{err}"
        );
        let path: Credential = serde_json::from_str("\"env:PATH\"").unwrap();
        assert_eq!(path.expose(), std::env::var("PATH").unwrap());
    }

    #[test]
    fn senders_are_checked_by_kind() {
        assert!(validate_sender("Glamora").is_ok());
        assert!(validate_sender("8809612345678").is_ok());
        assert!(validate_sender("GlamoraSalons").is_err());
        assert!(validate_sender("").is_err());
    }
}
