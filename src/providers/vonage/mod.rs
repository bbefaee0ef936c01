//! Vonage (Nexmo) SMS API (`POST /sms/json`, form body with `api_key`/`api_secret`). It answers
//! HTTP 200 even when it refuses: the per-part `status` decides. Numbers go out without the `+`.

use std::{sync::Arc, time::Duration};

use serde::Deserialize;

pub mod receipt;
pub mod signature;

pub use signature::VonageMethod;

use super::{
    Accepted, BoxFuture, BuildError, Cost, KindSettings, OutgoingSms, Provider, SendError,
    fields::{Credential, is_currency, validate_sender},
    http::{Connection, Endpoint, Reply, exchange},
    kind::adapter,
    pricing::parse_micros,
};
use crate::domain::Encoding;

/// `kind = "vonage"`: credentials and sender.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VonageSettings {
    /// API key.
    pub api_key: String,
    /// API secret (secret; `env:NAME` reads it from the environment).
    pub api_secret: Credential,
    /// `from`: alphanumeric sender id (≤ 11) or a number without `+`.
    pub sender: String,
    /// Currency of the account, in which Vonage reports `message-price` (default EUR).
    #[serde(default = "default_currency")]
    pub price_currency: String,
    /// The account's signature secret (not the API secret). Receipts must carry a valid `sig`
    /// made with it; without it every Vonage receipt is refused. Signed webhooks are enabled by
    /// Vonage support.
    #[serde(default)]
    pub signature_secret: Option<Credential>,
    /// The signing method chosen in the dashboard: md5hash (default), md5, sha1, sha256, sha512.
    #[serde(default)]
    pub signature_method: VonageMethod,
}

fn default_currency() -> String {
    "EUR".into()
}

impl KindSettings for VonageSettings {
    fn label(&self) -> &'static str {
        "vonage"
    }

    fn default_base_url(&self) -> Option<&'static str> {
        Some("https://rest.nexmo.com")
    }

    fn validate(&self) -> Result<(), String> {
        if !is_currency(&self.price_currency) {
            return Err("price_currency must be an ISO 4217 code".into());
        }
        validate_sender(&self.sender)
    }

    fn expects_receipts(&self, webhooks_reachable: bool) -> bool {
        webhooks_reachable && self.signature_secret.is_some()
    }

    fn build(
        &self,
        connection: &Connection,
        callback: Option<String>,
    ) -> Result<Arc<dyn Provider>, BuildError> {
        adapter(connection, Vonage::new(connection, self, callback))
    }
}

/// The Vonage adapter.
pub struct Vonage {
    http: Endpoint,
    settings: VonageSettings,
    callback: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Response {
    messages: Vec<Part>,
}

#[derive(Debug, Deserialize)]
struct Part {
    status: String,
    #[serde(rename = "message-id")]
    message_id: Option<String>,
    #[serde(rename = "message-price")]
    message_price: Option<String>,
    #[serde(rename = "error-text", default)]
    error_text: String,
}

impl Vonage {
    /// An adapter for `config`; `callback` is the per-message receipt URL (at most 100 characters,
    /// Vonage's limit; a longer one is not sent and the dashboard's URL applies).
    pub fn new(
        connection: &Connection,
        settings: &VonageSettings,
        callback: Option<String>,
    ) -> Result<Self, String> {
        Ok(Self {
            http: Endpoint::new(connection)?,
            settings: settings.clone(),
            callback: callback.filter(|c| c.len() <= 100),
        })
    }

    async fn post(&self, sms: &OutgoingSms, reference: &str) -> Result<Accepted, SendError> {
        let kind = match sms.segments.encoding {
            Encoding::Gsm7 => "text",
            Encoding::Ucs2 => "unicode",
        };
        // Vonage takes 20 s ..= 7 days, in milliseconds (the chain offers no less than
        // `min_validity`). Never rounded up.
        let ttl = sms.valid_for.as_millis().min(604_800_000);
        let mut form: Vec<(&str, String)> = vec![
            ("api_key", self.settings.api_key.clone()),
            ("api_secret", self.settings.api_secret.expose().to_owned()),
            ("from", self.settings.sender.clone()),
            ("to", sms.recipient.digits().to_owned()),
            ("text", sms.body.clone()),
            ("type", kind.to_owned()),
            ("client-ref", reference.to_owned()),
            ("ttl", ttl.to_string()),
        ];
        if let Some(callback) = &self.callback {
            form.push(("callback", callback.clone()));
            form.push(("status-report-req", "1".into()));
        }
        let reply = exchange(
            self.http
                .client
                .post(self.http.url("/sms/json"))
                .form(&form),
        )
        .await?;
        classify(&reply, &self.settings.price_currency)
    }

    async fn fetch_balance(&self) -> Result<String, SendError> {
        #[derive(Deserialize)]
        struct Balance {
            value: f64,
        }
        let request = self
            .http
            .client
            .get(self.http.url("/account/get-balance"))
            // In a header rather than the query string, where URLs end up in logs.
            .basic_auth(
                &self.settings.api_key,
                Some(self.settings.api_secret.expose()),
            );
        let reply = exchange(request).await?;
        let balance: Balance = reply.parsed()?;
        Ok(format!(
            "{:.4} {}",
            balance.value, self.settings.price_currency
        ))
    }
}

/// Classifies a send answer: every part must have status `0`; otherwise the
/// first refused part's status decides.
fn classify(reply: &Reply, currency: &str) -> Result<Accepted, SendError> {
    if !reply.is_success() {
        return Err(reply.unreadable());
    }
    let Some(response) = reply.json::<Response>() else {
        return Err(reply.unreadable());
    };
    if let Some(refused) = response.messages.iter().find(|p| p.status != "0") {
        let (code, text) = (refused.status.clone(), refused.error_text.clone());
        if response.messages.iter().any(|p| p.status == "0") {
            // Some parts went out: the recipient may have the code already.
            return Err(SendError::Unknown {
                http_status: Some(reply.status),
                message: format!("only some parts were accepted; part refused with {code}: {text}"),
            });
        }
        return Err(match refused.status.as_str() {
            // Number barred; number de-activated.
            "7" | "33" => reply.bad_recipient(code, text),
            // 1 throttled, 4 credentials, 5 internal, 6 unroutable, 8/9 account barred or out of
            // credit, 15 sender refused, 29 demo account; request bugs (2, 3, 12, 22, 23, 32):
            // another provider may take the message.
            _ => reply.provider_error(code, text),
        });
    }
    let Some(id) = response.messages.first().and_then(|p| p.message_id.clone()) else {
        return Err(reply.unreadable());
    };
    let prices: Option<Vec<i64>> = response
        .messages
        .iter()
        .map(|p| p.message_price.as_deref().and_then(parse_micros))
        .collect();
    Ok(Accepted {
        provider_message_id: id,
        http_status: Some(reply.status),
        cost: prices
            .and_then(|p| p.into_iter().try_fold(0i64, i64::checked_add))
            .map(|micros| Cost {
                micros,
                currency: currency.to_owned(),
            }),
        note: None,
    })
}

impl Provider for Vonage {
    fn name(&self) -> &str {
        &self.http.name
    }

    fn min_validity(&self) -> Duration {
        Duration::from_secs(20)
    }

    fn send<'a>(
        &'a self,
        sms: &'a OutgoingSms,
        reference: &'a str,
    ) -> BoxFuture<'a, Result<Accepted, SendError>> {
        Box::pin(self.post(sms, reference))
    }

    fn balance(&self) -> Option<BoxFuture<'_, Result<String, SendError>>> {
        Some(Box::pin(self.fetch_balance()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Outcome;

    fn classify_body(body: &str) -> Result<Accepted, SendError> {
        classify(
            &Reply {
                status: 200,
                retry_after: None,
                body: body.into(),
            },
            "EUR",
        )
    }

    #[test]
    fn the_classification_table() {
        let status = |s: &str| {
            classify_body(&format!(
                r#"{{"message-count":"1","messages":[{{"status":"{s}","error-text":"t"}}]}}"#
            ))
            .unwrap_err()
            .outcome()
        };
        for s in ["7", "33"] {
            assert_eq!(status(s), Outcome::BadRecipient, "{s}");
        }
        for s in [
            "1", "2", "3", "4", "5", "6", "8", "9", "10", "11", "12", "14", "15", "29",
        ] {
            assert_eq!(status(s), Outcome::ProviderError, "{s}");
        }
        assert_eq!(
            classify_body("<html>").unwrap_err().outcome(),
            Outcome::Unknown
        );
        assert_eq!(
            classify_body(r#"{"message-count":"1","messages":[{"status":"0"}]}"#)
                .unwrap_err()
                .outcome(),
            Outcome::Unknown,
            "accepted without an id cannot be tracked"
        );
    }

    #[test]
    fn parts_are_priced_together_and_a_refused_part_fails_the_message() {
        let ok = classify_body(
            r#"{"message-count":"2","messages":[
              {"to":"8801712345678","message-id":"0A01","status":"0","message-price":"0.03330000"},
              {"to":"8801712345678","message-id":"0A02","status":"0","message-price":"0.03330000"}]}"#,
        )
        .unwrap();
        assert_eq!(ok.provider_message_id, "0A01");
        assert_eq!(ok.cost.unwrap().micros, 66_600);
        let partial = classify_body(
            r#"{"message-count":"2","messages":[
              {"message-id":"0A01","status":"0","message-price":"0.0333"},
              {"status":"1","error-text":"Throughput Rate Exceeded"}]}"#,
        )
        .unwrap_err();
        assert_eq!(
            partial.outcome(),
            Outcome::Unknown,
            "a part may carry the code"
        );
    }
}
