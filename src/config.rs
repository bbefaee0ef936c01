//! Configuration: a TOML file (see `config/sms-relay.example.toml`), then environment variables
//! `SMS_RELAY__<SECTION>__<KEY>` (e.g. `SMS_RELAY__RELAY__BATCH_SIZE=200`), then `DATABASE_URL`.

use std::{collections::HashSet, path::Path, time::Duration};

use serde::Deserialize;

use crate::{
    providers::{ProviderConfig, SimulatorSettings, UnknownPolicy},
    relay::RetryPolicy,
    store::MAX_RELAY_ID_LEN,
};

/// Why the configuration could not be used. Never worth retrying: fix the file or environment.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or parsed, or a value has the wrong type.
    #[error("cannot load configuration: {0}")]
    Load(#[from] config::ConfigError),
    /// A value is out of range or contradicts another.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Database connection.
    pub database: DatabaseConfig,
    /// Claiming and sending.
    pub relay: RelaySettings,
    /// Retry schedule.
    pub retry: RetryPolicy,
    /// The provider chain, tried in this order. Defaults to one `simulator`.
    pub providers: Vec<ProviderConfig>,
    /// Where providers send delivery receipts; health endpoints.
    pub webhooks: WebhooksConfig,
    /// What receipts (and their absence) do.
    pub receipts: ReceiptSettings,
}

/// `[webhooks]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Address `sms-relay run` serves `/webhooks/<kind>`, `/healthz` and `/readyz` on; an empty
    /// string turns the server off.
    pub listen: String,
    /// The public URL under which this relay's `/webhooks/<kind>` endpoints are reachable by the
    /// providers (e.g. `https://relay.example.com`). Adapters send `<this>/webhooks/<kind>` as the
    /// per-message receipt URL where the API takes one; unset, the provider's dashboard setting
    /// applies. Twilio signs the URL it called, so behind a proxy this must be that URL's base.
    pub public_base_url: Option<String>,
    /// Largest receipt body accepted; larger ones get 400 (the issue asks for 400, not 413).
    pub max_body_bytes: usize,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            public_base_url: None,
            max_body_bytes: 256 * 1024,
        }
    }
}

/// `[receipts]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ReceiptSettings {
    /// Most resends per message, after an undelivered receipt or none in time (0: never).
    pub max_resends: u32,
    /// A message accepted by a provider that sends receipts (`expect_receipts`) with no final
    /// receipt after this long is resent through the next provider, while its code is valid.
    pub resend_after_ms: u64,
    /// An accepted attempt with no final receipt after this long is marked `unknown`.
    pub unknown_after_ms: u64,
    /// How often the no-receipt and unknown windows are checked.
    pub sweep_interval_ms: u64,
    /// How often report APIs (Alpha SMS, Infobip pull, a simulator with receipts) are polled.
    pub poll_interval_ms: u64,
}

impl Default for ReceiptSettings {
    fn default() -> Self {
        Self {
            max_resends: 1,
            resend_after_ms: 90_000,
            unknown_after_ms: 3_600_000,
            sweep_interval_ms: 5_000,
            poll_interval_ms: 15_000,
        }
    }
}

impl ReceiptSettings {
    fn validate(&self) -> Result<(), String> {
        if self.max_resends > 5 {
            return Err("receipts.max_resends must be 0..=5".into());
        }
        if self.resend_after_ms < 1_000 || self.resend_after_ms >= self.unknown_after_ms {
            return Err(
                "receipts.resend_after_ms must be at least 1000 and below unknown_after_ms".into(),
            );
        }
        if !(100..=600_000).contains(&self.sweep_interval_ms)
            || !(100..=600_000).contains(&self.poll_interval_ms)
        {
            return Err(
                "receipts.sweep_interval_ms and poll_interval_ms must be 100..=600000".into(),
            );
        }
        Ok(())
    }

    /// `resend_after_ms` as a duration.
    pub fn resend_after(&self) -> Duration {
        Duration::from_millis(self.resend_after_ms)
    }

    /// `unknown_after_ms` as a duration.
    pub fn unknown_after(&self) -> Duration {
        Duration::from_millis(self.unknown_after_ms)
    }

    /// `sweep_interval_ms` as a duration.
    pub fn sweep_interval(&self) -> Duration {
        Duration::from_millis(self.sweep_interval_ms)
    }

    /// `poll_interval_ms` as a duration.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database: DatabaseConfig::default(),
            relay: RelaySettings::default(),
            retry: RetryPolicy::default(),
            providers: vec![ProviderConfig::simulator(
                "simulator",
                SimulatorSettings::default(),
            )],
            webhooks: WebhooksConfig::default(),
            receipts: ReceiptSettings::default(),
        }
    }
}

/// `[database]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// PostgreSQL URL; `DATABASE_URL` overrides it.
    pub url: Option<String>,
    /// Pool size, including the connection held for LISTEN (at least 2).
    pub max_connections: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: None,
            max_connections: 8,
        }
    }
}

/// `[relay]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RelaySettings {
    /// This relay's name in `sms_outbox.claimed_by`, `sms_attempts.relay_id` and (behind
    /// `sms-relay `) its connection's `application_name`; default host-pid. Unique per live relay.
    pub relay_id: Option<String>,
    /// Most messages claimed by one statement.
    pub batch_size: u32,
    /// Most messages claimed but not yet recorded, across all sends.
    pub max_in_flight: u32,
    /// How long a claim holds a message; a relay that dies releases it when this runs out.
    /// Must exceed the time one round through the chain can take.
    pub lease_ms: u64,
    /// Longest sleep without a NOTIFY (also the idle heartbeat).
    pub poll_interval_ms: u64,
    /// A message with less validity than this left is not sent (the code would arrive stale).
    pub expiry_margin_ms: u64,
    /// On SIGTERM, how long in-flight sends may take before they are released.
    pub shutdown_grace_ms: u64,
    /// Finished messages between two `VACUUM sms_outbox` runs by this relay, which keep the claim
    /// index free of dead entries after bursts; 0 leaves it to autovacuum.
    pub vacuum_every: u64,
    /// After an `unknown` outcome that no status lookup resolved: `fall_over` to the next
    /// provider (the same code twice beats no code) or `assume_sent`.
    pub on_unknown: UnknownPolicy,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            relay_id: None,
            batch_size: 500,
            max_in_flight: 2_000,
            lease_ms: 60_000,
            poll_interval_ms: 1_000,
            expiry_margin_ms: 3_000,
            shutdown_grace_ms: 10_000,
            vacuum_every: 20_000,
            on_unknown: UnknownPolicy::FallOver,
        }
    }
}

impl RelaySettings {
    /// The relay id, defaulting to `<hostname>-<pid>`.
    pub fn relay_id(&self) -> String {
        self.relay_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname").unwrap_or_else(|_| "relay".into());
            let host: String = host
                .trim()
                .chars()
                .filter(|c| c.is_ascii_graphic())
                .take(MAX_RELAY_ID_LEN - 11)
                .collect();
            format!("{host}-{}", std::process::id())
        })
    }

    /// `lease_ms` as a duration.
    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }

    /// `poll_interval_ms` as a duration.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }

    /// `shutdown_grace_ms` as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    fn validate(&self) -> Result<(), String> {
        if !(1..=1_000).contains(&self.batch_size) {
            return Err("relay.batch_size must be 1..=1000".into());
        }
        if self.max_in_flight < self.batch_size {
            return Err("relay.max_in_flight must be at least relay.batch_size".into());
        }
        if let Some(id) = &self.relay_id
            && (id.is_empty()
                || id.len() > MAX_RELAY_ID_LEN
                || !id.chars().all(|c| c.is_ascii_graphic()))
        {
            return Err(format!(
                "relay.relay_id must be 1 to {MAX_RELAY_ID_LEN} printable ASCII characters without spaces"
            ));
        }
        if self.lease_ms < 10_000 {
            return Err("relay.lease_ms must be at least 10000 (a round must end, and be recorded, inside it)".into());
        }
        if !(10..=30_000).contains(&self.poll_interval_ms) {
            return Err(
                "relay.poll_interval_ms must be 10..=30000 (it is also the idle heartbeat)".into(),
            );
        }
        Ok(())
    }
}

impl Config {
    /// Loads `path` (if given), applies `SMS_RELAY__…` variables, and validates the result.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = path {
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
        }
        let config: Config = builder
            .add_source(
                config::Environment::with_prefix("SMS_RELAY")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true),
            )
            .build()?
            .try_deserialize()?;
        config.validate().map_err(ConfigError::Invalid)?;
        Ok(config)
    }

    /// Checks ranges and cross-field rules.
    pub fn validate(&self) -> Result<(), String> {
        if self.database.max_connections < 2 {
            return Err(
                "database.max_connections must be at least 2 (one is held for LISTEN)".into(),
            );
        }
        self.relay.validate()?;
        self.retry.validate()?;
        if self.providers.is_empty() {
            return Err("at least one [[providers]] entry is needed".into());
        }
        if self.providers.len() > 99 {
            return Err("at most 99 [[providers]] entries".into());
        }
        let mut names = HashSet::new();
        for p in &self.providers {
            if !names.insert(p.name.as_str()) {
                return Err(format!("provider name {:?} is used twice", p.name));
            }
            p.validate()?;
        }
        if let Some(url) = &self.webhooks.public_base_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err("webhooks.public_base_url must start with https:// or http://".into());
        }
        if !self.webhooks.listen.is_empty()
            && self
                .webhooks
                .listen
                .parse::<std::net::SocketAddr>()
                .is_err()
        {
            return Err("webhooks.listen must be host:port (e.g. 127.0.0.1:8080) or empty".into());
        }
        if !(1_024..=16 * 1024 * 1024).contains(&self.webhooks.max_body_bytes) {
            return Err("webhooks.max_body_bytes must be 1024..=16777216".into());
        }
        self.receipts.validate()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::ProviderKind;

    fn load_str(toml: &str) -> Result<Config, ConfigError> {
        let dir = std::env::temp_dir().join(format!("sms-relay-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, toml).unwrap();
        let result = Config::load(Some(&path));
        std::fs::remove_dir_all(&dir).unwrap();
        result
    }

    #[test]
    fn the_example_file_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/sms-relay.example.toml");
        let config = Config::load(Some(&path)).unwrap();
        assert_eq!(config.providers.len(), 1);
        assert_eq!(config.relay, RelaySettings::default());
        assert_eq!(config.retry, RetryPolicy::default());
    }

    #[test]
    fn providers_and_sections_parse() {
        let config = load_str(
            r#"
            [relay]
            batch_size = 50
            [[providers]]
            name = "primary"
            kind = "simulator"
            provider_error = 0.2
            latency_ms = 20
            prices = [{ prefix = "+880", per_part = 0.35, currency = "BDT" }]
            [[providers]]
            name = "backup"
            kind = "simulator"
            "#,
        )
        .unwrap();
        assert_eq!(config.relay.batch_size, 50);
        assert_eq!(config.providers[1].name, "backup");
        let ProviderKind::Simulator(s) = &config.providers[0].kind else {
            panic!("not a simulator: {:?}", config.providers[0].kind);
        };
        assert_eq!((s.latency_ms, s.provider_error), (20, 0.2));
        assert_eq!(config.providers[0].prices[0].per_part, 0.35);
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        let err = load_str("[relay]\nbatch_size = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("batch_size"), "{err}");
        let err = load_str("[relay]\nbatch_sise = 5\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("batch_sise"), "{err}");
        let err = load_str("[[providers]]\nname='a'\nkind='simulator'\n[[providers]]\nname='a'\nkind='simulator'\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("twice"), "{err}");
        let err = load_str(
            "[[providers]]\nname='a'\nkind='simulator'\nprovider_error=0.7\nbad_recipient=0.7\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("ratios"), "{err}");
    }

    #[test]
    fn receipts_are_expected_only_where_they_can_arrive() {
        let entry = |extra: serde_json::Value| -> crate::providers::ProviderConfig {
            let mut entry = serde_json::json!({"name": "p"});
            if extra["kind"] != "ssl_wireless" {
                entry["sender"] = "Glamora".into();
            }
            for (k, v) in extra.as_object().unwrap() {
                entry[k] = v.clone();
            }
            serde_json::from_value(entry).unwrap()
        };
        let twilio = entry(serde_json::json!({"kind": "twilio",
            "account_sid": "AC8e1f2a3b4c5d6e7f8091a2b3c4d5e6f7", "auth_token": "t"}));
        let vonage = serde_json::json!({"kind": "vonage", "api_key": "k", "api_secret": "s"});
        let unsigned = entry(vonage.clone());
        let mut with_secret = vonage;
        with_secret["signature_secret"] = "x".into();
        let signed = entry(with_secret);
        let infobip = entry(serde_json::json!({"kind": "infobip", "api_key": "k"}));
        let infobip_auth = entry(serde_json::json!({"kind": "infobip", "api_key": "k",
            "receipt_username": "u", "receipt_password": "p"}));
        let infobip_pull = entry(serde_json::json!({"kind": "infobip", "api_key": "k",
            "pull_reports": true}));
        let ssl = entry(serde_json::json!({"kind": "ssl_wireless", "api_token": "t", "sid": "S"}));
        let mut told = twilio.clone();
        told.expect_receipts = Some(false);
        for (config, reachable, expected) in [
            (&twilio, true, true),
            (&twilio, false, false),
            (&unsigned, true, false),
            (&signed, true, true),
            (&signed, false, false),
            (&infobip, true, false),
            (&infobip_auth, true, true),
            (&infobip_pull, false, true),
            (&ssl, true, false),
            (&told, true, false),
        ] {
            assert_eq!(
                config.expects_receipts(reachable),
                expected,
                "{:?} reachable={reachable}",
                config.kind.label()
            );
        }
        let mut config = Config::default();
        assert!(!crate::receipts::watch::webhooks_reachable(&config));
        config.webhooks.public_base_url = Some("https://relay.example.com".into());
        assert!(crate::receipts::watch::webhooks_reachable(&config));
        config.webhooks.listen = String::new();
        assert!(!crate::receipts::watch::webhooks_reachable(&config));
    }
}
