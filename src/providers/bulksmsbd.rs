//! BulkSMSBD (`POST /api/smsapi`, form with `api_key`). It answers HTTP 200 with a
//! `response_code` (202 = submitted), and some deployments answer a bare number. Numbers go out as
//! `880…` without the `+`. No delivery receipts, no status lookup.

use std::sync::Arc;

use serde::Deserialize;

use super::{
    Accepted, BoxFuture, BuildError, KindSettings, OutgoingSms, Provider, SendError,
    fields::{Credential, validate_sender},
    http::{Connection, Endpoint, Reply, exchange, text_of},
    kind::adapter,
};
use crate::domain::Encoding;

/// `kind = "bulksmsbd"`: credentials and sender.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkSmsBdSettings {
    /// API key (secret; `env:NAME` reads it from the environment).
    pub api_key: Credential,
    /// `senderid`: an approved numeric sender (`8809…`) or masking name.
    pub sender: String,
}

impl KindSettings for BulkSmsBdSettings {
    fn label(&self) -> &'static str {
        "bulksmsbd"
    }

    fn default_base_url(&self) -> Option<&'static str> {
        Some("https://bulksmsbd.net")
    }

    fn validate(&self) -> Result<(), String> {
        validate_sender(&self.sender)
    }

    fn build(
        &self,
        connection: &Connection,
        _callback: Option<String>,
    ) -> Result<Arc<dyn Provider>, BuildError> {
        adapter(connection, BulkSmsBd::new(connection, self))
    }
}

/// The BulkSMSBD adapter.
pub struct BulkSmsBd {
    http: Endpoint,
    settings: BulkSmsBdSettings,
}

#[derive(Debug, Deserialize)]
struct Response {
    response_code: serde_json::Value,
    #[serde(default)]
    message_id: serde_json::Value,
    #[serde(default)]
    error_message: String,
}

impl BulkSmsBd {
    /// An adapter for `config`.
    pub fn new(connection: &Connection, settings: &BulkSmsBdSettings) -> Result<Self, String> {
        Ok(Self {
            http: Endpoint::new(connection)?,
            settings: settings.clone(),
        })
    }

    async fn post(&self, sms: &OutgoingSms, reference: &str) -> Result<Accepted, SendError> {
        let kind = match sms.segments.encoding {
            Encoding::Gsm7 => "text",
            Encoding::Ucs2 => "unicode",
        };
        let form = [
            ("api_key", self.settings.api_key.expose()),
            ("type", kind),
            ("number", sms.recipient.digits()),
            ("senderid", &self.settings.sender),
            ("message", &sms.body),
        ];
        let request = self
            .http
            .client
            .post(self.http.url("/api/smsapi"))
            .form(&form);
        classify(&exchange(request).await?, reference)
    }

    async fn fetch_balance(&self) -> Result<String, SendError> {
        let request = self
            .http
            .client
            .get(self.http.url("/api/getBalanceApi"))
            .query(&[("api_key", self.settings.api_key.expose())]);
        let reply = exchange(request).await?;
        let value: serde_json::Value = reply.parsed()?;
        text_of(&value)
            .or_else(|| value.get("balance").and_then(text_of))
            .map(|b| format!("{b} BDT"))
            .ok_or_else(|| reply.unreadable())
    }
}

/// Classifies a send answer. A bare `202` has no message id; the call's
/// reference stands in for it.
fn classify(reply: &Reply, reference: &str) -> Result<Accepted, SendError> {
    if !reply.is_success() {
        return Err(reply.unreadable());
    }
    let (code, id, text) = match reply.json::<Response>() {
        Some(r) => (
            text_of(&r.response_code),
            text_of(&r.message_id),
            r.error_message,
        ),
        None => match reply.body.trim().parse::<u32>() {
            Ok(code) => (Some(code.to_string()), None, String::new()),
            Err(_) => return Err(reply.unreadable()),
        },
    };
    let Some(code) = code else {
        return Err(reply.unreadable());
    };
    match code.as_str() {
        "202" => Ok(reply.accepted(id.unwrap_or_else(|| reference.to_owned()))),
        "1001" => Err(reply.bad_recipient(code, text)),
        // 1002 sender id, 1005 internal error, 1006/1007 balance, 1011+ account and price setup,
        // 1032 IP not allow-listed; 1003 a request bug.
        _ => Err(reply.provider_error(code, text)),
    }
}

impl Provider for BulkSmsBd {
    fn name(&self) -> &str {
        &self.http.name
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

    fn class(body: &str) -> Result<Accepted, SendError> {
        classify(
            &Reply {
                status: 200,
                retry_after: None,
                body: body.into(),
            },
            "ref1",
        )
    }

    #[test]
    fn the_classification_table() {
        let ok = class(r#"{"response_code":202,"message_id":13145326,"success_message":"SMS Submitted Successfully 1","error_message":""}"#).unwrap();
        assert_eq!(ok.provider_message_id, "13145326");
        assert_eq!(class("202").unwrap().provider_message_id, "ref1");
        let code = |c: u32| {
            class(&format!(r#"{{"response_code":{c},"error_message":"e"}}"#))
                .unwrap_err()
                .outcome()
        };
        assert_eq!(code(1001), Outcome::BadRecipient);
        for c in [1002, 1003, 1005, 1006, 1007, 1011, 1012, 1018, 1032] {
            assert_eq!(code(c), Outcome::ProviderError, "{c}");
        }
        assert_eq!(class("1007").unwrap_err().outcome(), Outcome::ProviderError);
        assert_eq!(class("<html>").unwrap_err().outcome(), Outcome::Unknown);
        assert_eq!(
            class(r#"{"response_code":"#).unwrap_err().outcome(),
            Outcome::Unknown
        );
    }
}
