//! One `[[providers]]` entry: the adapter kind and its credentials, plus what every adapter shares
//! (base URL, timeouts, rate limit, circuit breaker, price table).

use std::{sync::Arc, time::Duration};

use serde::Deserialize;

use super::{
    Provider,
    alpha_sms::AlphaSmsSettings,
    breaker::{Breaker, BreakerSettings},
    bulksmsbd::BulkSmsBdSettings,
    cap::{Cap, Per, SpendCap},
    chain::{Link, ProviderChain, UnknownPolicy},
    http::Connection,
    infobip::InfobipSettings,
    kind::{BuildError, KindSettings},
    pricing::{PriceRule, PriceTable},
    simulator::SimulatorSettings,
    ssl_wireless::SslWirelessSettings,
    throttle::{RateLimit, Throttle},
    twilio::TwilioSettings,
    vonage::VonageSettings,
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
    /// Most messages this provider may accept per UTC day across every relay; beyond it the
    /// chain skips it, so the next provider within its own cap takes over. None: no cap.
    #[serde(default)]
    pub daily_cap: Option<u32>,
    /// The most this provider's accepted messages may cost per UTC day across every relay, in
    /// one currency; beyond it the chain skips it. None: no cap.
    #[serde(default)]
    pub daily_spend_cap: Option<SpendCap>,
    /// Most messages this provider may accept per UTC hour across every relay. None: no cap.
    #[serde(default)]
    pub hourly_cap: Option<u32>,
    /// The most this provider's accepted messages may cost per UTC hour across every relay, in
    /// one currency. None: no cap.
    #[serde(default)]
    pub hourly_spend_cap: Option<SpendCap>,
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
            daily_cap: None,
            daily_spend_cap: None,
            hourly_cap: None,
            hourly_spend_cap: None,
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

    /// The hourly and daily caps this entry sets.
    pub fn caps(&self) -> Vec<Cap> {
        [
            self.hourly_cap.map(|n| Cap::messages(n, Per::Hour)),
            self.hourly_spend_cap
                .as_ref()
                .map(|c| Cap::spend(c, Per::Hour)),
            self.daily_cap.map(|n| Cap::messages(n, Per::Day)),
            self.daily_spend_cap
                .as_ref()
                .map(|c| Cap::spend(c, Per::Day)),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// How the adapter reaches the provider: name, API root and timeouts.
    pub fn connection(&self) -> Connection {
        Connection {
            name: self.name.clone(),
            base_url: self.base_url(),
            timeout: Duration::from_millis(self.timeout_ms),
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
        }
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
                Some(url) if !secure_or_local(&url) => {
                    return Err(format!(
                        "provider {name:?}: base_url must be https:// (plain http:// only to a \
                         loopback address such as 127.0.0.1 or localhost)"
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
        if self.daily_cap == Some(0) || self.hourly_cap == Some(0) {
            return Err(format!(
                "provider {name:?}: daily_cap and hourly_cap must be at least 1 (remove the entry to stop using it)"
            ));
        }
        for cap in [&self.daily_spend_cap, &self.hourly_spend_cap]
            .into_iter()
            .flatten()
        {
            cap.validate()
                .map_err(|e| format!("provider {name:?}: {e}"))?;
        }
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

/// Whether `url` is HTTPS, or plain HTTP to this machine (a local fake or tunnel): credentials
/// and codes never cross a network unencrypted.
fn secure_or_local(url: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(url) else {
        return false;
    };
    match (url.scheme(), url.host_str()) {
        ("https", Some(_)) => true,
        ("http", Some(host)) => {
            host.eq_ignore_ascii_case("localhost")
                || host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        _ => false,
    }
}

/// Builds one adapter. `webhooks_base` is `[webhooks] public_base_url`, from which adapters build
/// their per-message receipt URLs (`<base>/webhooks/<kind>`).
pub fn build(
    config: &ProviderConfig,
    webhooks_base: Option<&str>,
) -> Result<Arc<dyn Provider>, BuildError> {
    let kind = config.kind.settings();
    let callback = webhooks_base
        .map(|base| format!("{}/webhooks/{}", base.trim_end_matches('/'), kind.label()));
    kind.build(&config.connection(), callback)
}

/// The configured providers' names per kind (`sms_receipts.source`), kinds in first-seen order:
/// a receipt matches only the attempts of providers of its own kind.
pub fn names_by_kind(configs: &[ProviderConfig]) -> Vec<(&'static str, Vec<String>)> {
    let mut kinds: Vec<(&'static str, Vec<String>)> = Vec::new();
    for config in configs {
        let kind = config.kind.label();
        match kinds.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, names)) => names.push(config.name.clone()),
            None => kinds.push((kind, vec![config.name.clone()])),
        }
    }
    kinds
}

/// Builds the chain from `[[providers]]`, in order, each with its circuit breaker, rate limit and
/// price table.
pub fn from_config(
    configs: &[ProviderConfig],
    webhooks_base: Option<&str>,
    on_unknown: UnknownPolicy,
) -> Result<ProviderChain, BuildError> {
    let links = configs
        .iter()
        .map(|config| {
            Ok(Link::new(build(config, webhooks_base)?)
                .with_prices(PriceTable::new(&config.prices))
                .with_breaker(Breaker::new(config.circuit.clone()))
                .with_throttle(config.rate_limit.as_ref().map(Throttle::new))
                .with_caps(config.caps()))
        })
        .collect::<Result<Vec<_>, BuildError>>()?;
    Ok(ProviderChain::new(links).with_unknown_policy(on_unknown))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_reaches_this_machine() {
        for (url, allowed) in [
            ("https://api.twilio.com", true),
            ("https://10.0.0.5:8443/sms", true),
            ("http://127.0.0.1:9000", true),
            ("http://127.8.9.10", true),
            ("http://localhost:8080", true),
            ("http://LOCALHOST", true),
            ("http://[::1]:9000", true),
            ("http://api.twilio.com", false),
            ("http://10.0.0.5", false),
            ("http://localhost.example.com", false),
            ("http://[::2]", false),
            ("ftp://127.0.0.1", false),
            ("not a url", false),
        ] {
            assert_eq!(secure_or_local(url), allowed, "{url}");
        }
    }
}
