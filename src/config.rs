//! Configuration: a TOML file (see `config/sms-relay.example.toml`), then environment variables
//! `SMS_RELAY__<SECTION>__<KEY>` (e.g. `SMS_RELAY__RELAY__BATCH_SIZE=200`), then `DATABASE_URL`.

use std::{collections::HashSet, path::Path, time::Duration};

use serde::Deserialize;

use crate::{
    admin::AdminSettings,
    maintenance::Maintenance,
    providers::{ProviderChain, ProviderConfig, SimulatorSettings, names_by_kind},
    receipts::{
        server::Webhooks,
        watch::{Poller, Sweeper},
    },
    store::{ResendRule, Store},
};
pub use crate::{
    db::DatabaseSettings,
    maintenance::MaintenanceSettings,
    receipts::settings::{ReceiptSettings, WebhookSettings},
    relay::{RelaySettings, RetryPolicy},
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
    pub database: DatabaseSettings,
    /// Claiming and sending.
    pub relay: RelaySettings,
    /// Retry schedule.
    pub retry: RetryPolicy,
    /// The provider chain, tried in this order. Defaults to one `simulator`.
    pub providers: Vec<ProviderConfig>,
    /// Where providers send delivery receipts; health endpoints.
    pub webhooks: WebhookSettings,
    /// What receipts (and their absence) do.
    pub receipts: ReceiptSettings,
    /// Scheduled jobs and retention.
    pub maintenance: MaintenanceSettings,
    /// The operators' listener (`/metrics`).
    pub admin: AdminSettings,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database: DatabaseSettings::default(),
            relay: RelaySettings::default(),
            retry: RetryPolicy::default(),
            providers: vec![ProviderConfig::simulator(
                "simulator",
                SimulatorSettings::default(),
            )],
            webhooks: WebhookSettings::default(),
            receipts: ReceiptSettings::default(),
            maintenance: MaintenanceSettings::default(),
            admin: AdminSettings::default(),
        }
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

    /// Checks each section, then the rules that span sections.
    pub fn validate(&self) -> Result<(), String> {
        self.database.validate()?;
        self.relay.validate()?;
        self.retry.validate()?;
        self.webhooks.validate()?;
        self.receipts.validate()?;
        self.maintenance.validate()?;
        self.admin.validate()?;
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
        // A delivered receipt that came before its attempt was recorded is matched only by the
        // rematch job; without it, the no-receipt pass would resend a delivered code.
        let reachable = self.webhooks_reachable();
        if self.receipts.max_resends > 0
            && self.maintenance.rematch.is_empty()
            && self.providers.iter().any(|p| p.expects_receipts(reachable))
        {
            return Err(
                "maintenance.rematch must run while receipts.max_resends > 0 and a provider sends \
                 receipts (an early delivered receipt would otherwise be resent)"
                    .into(),
            );
        }
        Ok(())
    }

    /// Whether providers can reach this relay's webhooks: it serves them and has a public URL.
    pub fn webhooks_reachable(&self) -> bool {
        !self.webhooks.listen.is_empty() && self.webhooks.public_base_url.is_some()
    }

    /// When a message may be resent: `receipts.max_resends`, and validity past
    /// `relay.expiry_margin_ms`.
    pub fn resend_rule(&self) -> ResendRule {
        ResendRule {
            max_resends: self.receipts.max_resends,
            expiry_margin: Duration::from_millis(self.relay.expiry_margin_ms),
        }
    }

    /// The receipt webhooks of the configured providers. At most half the pool writes receipts
    /// at once, so a flood of receipts cannot starve claims and completions.
    pub fn webhooks(&self, store: Store) -> Webhooks {
        let writers = self.database.max_connections as usize / 2;
        Webhooks::new(
            &self.webhooks,
            &self.providers,
            self.resend_rule(),
            writers,
            store,
        )
    }

    /// The no-receipt and unknown-window sweeper for the configured providers.
    pub fn sweeper(&self, store: Store) -> Sweeper {
        let reachable = self.webhooks_reachable();
        Sweeper::new(
            &self.receipts,
            &self.providers,
            self.resend_rule(),
            reachable,
            store,
        )
    }

    /// The maintenance jobs, run by this relay.
    pub fn maintenance(&self, store: Store) -> Maintenance {
        Maintenance::new(&self.maintenance, &self.relay.relay_id(), store)
            .matching(names_by_kind(&self.providers), self.resend_rule())
    }

    /// The report poller for the providers of `chain` (built from this configuration).
    pub fn poller(&self, chain: &ProviderChain, store: Store) -> Poller {
        Poller::new(
            &self.receipts,
            &self.providers,
            chain,
            self.resend_rule(),
            store,
        )
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
        assert!(!config.webhooks_reachable());
        config.webhooks.public_base_url = Some("https://relay.example.com".into());
        assert!(config.webhooks_reachable());
        config.webhooks.listen = String::new();
        assert!(!config.webhooks_reachable());
    }

    #[test]
    fn resends_need_the_rematch_job_when_receipts_come() {
        let with = |rematch: &str, resends: u32| {
            load_str(&format!(
                "[maintenance]\nrematch = \"{rematch}\"\n[receipts]\nmax_resends = {resends}\n\
                 [[providers]]\nname = \"sim\"\nkind = \"simulator\"\nreceipts = true\n"
            ))
        };
        let err = with("", 1).unwrap_err().to_string();
        assert!(err.contains("maintenance.rematch"), "{err}");
        assert!(with("", 0).is_ok(), "without resends nothing is resent");
        assert!(with("*/10 * * * * *", 1).is_ok());
    }
}
