//! `[webhooks]` and `[receipts]`: where receipts arrive and what they (and their absence) do.

use std::time::Duration;

use serde::Deserialize;

/// `[webhooks]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSettings {
    /// Address `sms-relay run` serves `/webhooks/<kind>`, `/healthz` and `/readyz` on; an empty
    /// string turns the server off.
    pub listen: String,
    /// The public URL under which this relay's `/webhooks/<kind>` endpoints are reachable by the
    /// providers (e.g. `https://relay.example.com`). Adapters send `<this>/webhooks/<kind>` as the
    /// per-message receipt URL where the API takes one; unset, the provider's dashboard setting
    /// applies. Twilio signs the URL it called, so behind a proxy this must be that URL's base.
    pub public_base_url: Option<String>,
    /// Largest receipt body accepted; larger ones get 400 (refused from `Content-Length` before
    /// anything is read, where the sender states it).
    pub max_body_bytes: usize,
    /// Longest a connection may take to send a request's headers; then it is closed.
    pub header_timeout_ms: u64,
    /// Longest a request may take to send its body once its headers passed; then it gets 408.
    pub body_timeout_ms: u64,
    /// Most connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
}

impl WebhookSettings {
    /// Checks the address, the URL and the body limit.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(url) = &self.public_base_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err("webhooks.public_base_url must start with https:// or http://".into());
        }
        if !self.listen.is_empty() && self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err("webhooks.listen must be host:port (e.g. 127.0.0.1:8080) or empty".into());
        }
        if !(1_024..=16 * 1024 * 1024).contains(&self.max_body_bytes) {
            return Err("webhooks.max_body_bytes must be 1024..=16777216".into());
        }
        if !(100..=60_000).contains(&self.header_timeout_ms)
            || !(100..=60_000).contains(&self.body_timeout_ms)
        {
            return Err(
                "webhooks.header_timeout_ms and body_timeout_ms must be 100..=60000".into(),
            );
        }
        if !(1..=65_536).contains(&self.max_connections) {
            return Err("webhooks.max_connections must be 1..=65536".into());
        }
        Ok(())
    }

    /// `header_timeout_ms` as a duration.
    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }

    /// `body_timeout_ms` as a duration.
    pub fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.body_timeout_ms)
    }
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            public_base_url: None,
            // An Infobip batch of 100 reports is well under this; a single receipt is a few KiB.
            max_body_bytes: 128 * 1024,
            header_timeout_ms: 5_000,
            body_timeout_ms: 10_000,
            max_connections: 512,
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
    /// Checks ranges and the order of the windows.
    pub fn validate(&self) -> Result<(), String> {
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
