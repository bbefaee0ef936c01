//! SSL Wireless Push SMS API v3 (`POST /api/v3/send-sms`, JSON with `api_token` and `sid`). It
//! answers HTTP 200 with `"status":"FAILED"` when it refuses. Our call reference goes out as
//! `csms_id` (unique per day, ≤ 20 alphanumerics). Numbers go out as `880…` without the `+`. The
//! API has no delivery receipts and no status lookup.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;

use super::{
    Accepted, BoxFuture, BuildError, KindSettings, OutgoingSms, Provider, SendError,
    fields::Credential,
    http::{Connection, Endpoint, Reply, exchange, text_of},
    kind::adapter,
};

/// `kind = "ssl_wireless"`: credentials. The sender (masking name) is tied to the `sid`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SslWirelessSettings {
    /// API token (secret; `env:NAME` reads it from the environment).
    pub api_token: Credential,
    /// Stakeholder id, bound to one masking or non-masking sender.
    pub sid: String,
}

impl KindSettings for SslWirelessSettings {
    fn label(&self) -> &'static str {
        "ssl_wireless"
    }

    fn default_base_url(&self) -> Option<&'static str> {
        Some("https://smsplus.sslwireless.com")
    }

    fn validate(&self) -> Result<(), String> {
        if self.sid.is_empty() || self.sid.len() > 20 {
            return Err("sid must be 1..=20 characters".into());
        }
        Ok(())
    }

    fn build(
        &self,
        connection: &Connection,
        _callback: Option<String>,
    ) -> Result<Arc<dyn Provider>, BuildError> {
        adapter(connection, SslWireless::new(connection, self))
    }
}

/// The SSL Wireless adapter.
pub struct SslWireless {
    http: Endpoint,
    settings: SslWirelessSettings,
}

#[derive(Debug, Deserialize)]
struct Response {
    status: String,
    #[serde(default)]
    status_code: serde_json::Value,
    #[serde(default)]
    error_message: String,
    #[serde(default)]
    smsinfo: Vec<SmsInfo>,
}

#[derive(Debug, Deserialize)]
struct SmsInfo {
    sms_status: String,
    #[serde(default)]
    status_message: String,
    #[serde(default)]
    reference_id: serde_json::Value,
}

impl SslWireless {
    /// An adapter for `config`.
    pub fn new(connection: &Connection, settings: &SslWirelessSettings) -> Result<Self, String> {
        Ok(Self {
            http: Endpoint::new(connection)?,
            settings: settings.clone(),
        })
    }

    async fn post(&self, sms: &OutgoingSms, reference: &str) -> Result<Accepted, SendError> {
        let body = json!({
            "api_token": self.settings.api_token.expose(),
            "sid": self.settings.sid,
            "msisdn": sms.recipient.digits(),
            "sms": sms.body,
            "csms_id": reference,
        });
        let request = self
            .http
            .client
            .post(self.http.url("/api/v3/send-sms"))
            .header(reqwest::header::ACCEPT, "application/json")
            .json(&body);
        classify(&exchange(request).await?, reference)
    }
}

/// SSL already holds a message under this call's `csms_id`: it was taken. Its own id is unknown,
/// so the reference stands in.
fn already_taken(reply: &Reply, reference: &str) -> Accepted {
    Accepted {
        note: Some("SSL Wireless reports a duplicate csms_id: it already has this message".into()),
        ..reply.accepted(reference.to_owned())
    }
}

/// Classifies a send answer, whatever the HTTP status. `reference` is the
/// call's `csms_id`.
fn classify(reply: &Reply, reference: &str) -> Result<Accepted, SendError> {
    let Some(response) = reply.json::<Response>() else {
        return Err(reply.unreadable());
    };
    let info = response.smsinfo.into_iter().next();
    if response.status == "SUCCESS" {
        return match info {
            Some(info) if info.sms_status == "SUCCESS" => match text_of(&info.reference_id) {
                Some(id) => Ok(reply.accepted(id)),
                None => Err(reply.unreadable()),
            },
            Some(info) if info.sms_status == "DUPLICATE" => Ok(already_taken(reply, reference)),
            Some(info)
                if info.sms_status == "INVALID" && info.status_message.contains("MSISDN") =>
            {
                Err(reply.bad_recipient(info.sms_status, info.status_message))
            }
            Some(info) => Err(reply.provider_error(info.sms_status, info.status_message)),
            None => Err(reply.unreadable()),
        };
    }
    let code = text_of(&response.status_code).unwrap_or_else(|| response.status.clone());
    let text = response.error_message;
    Err(match code.as_str() {
        // Invalid or blocked number.
        "4025" | "4026" => reply.bad_recipient(code, text),
        // Duplicate CSMS id: SSL already has this call's message (references are never reused).
        "4023" => return Ok(already_taken(reply, reference)),
        // 4001/4002/4003 token, sid, IP allow-list; 4029/4031 throttled; 5000 unknown; request
        // bugs (4004, 4005, 4020, 4022, 4027, 4028, 4030): another provider may take it.
        _ => reply.provider_error(code, text),
    })
}

impl Provider for SslWireless {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Outcome;

    fn class(status: u16, body: &str) -> Result<Accepted, SendError> {
        classify(
            &Reply {
                status,
                retry_after: None,
                body: body.into(),
            },
            "1r1s1",
        )
    }

    fn failed(code: u32) -> Outcome {
        class(
            200,
            &format!(r#"{{"status":"FAILED","status_code":{code},"error_message":"e"}}"#),
        )
        .unwrap_err()
        .outcome()
    }

    #[test]
    fn the_classification_table() {
        for code in [4025, 4026] {
            assert_eq!(failed(code), Outcome::BadRecipient);
        }
        for code in [
            4001, 4002, 4003, 4004, 4005, 4020, 4022, 4027, 4028, 4029, 4030, 4031, 5000,
        ] {
            assert_eq!(failed(code), Outcome::ProviderError, "{code}");
        }
        assert!(
            class(
                200,
                r#"{"status":"FAILED","status_code":4023,"error_message":"Duplicate"}"#
            )
            .is_ok()
        );
        assert_eq!(
            class(200, "<html>").unwrap_err().outcome(),
            Outcome::Unknown
        );
        assert_eq!(
            class(502, "<html>").unwrap_err().outcome(),
            Outcome::ProviderError
        );
        let invalid = r#"{"status":"SUCCESS","status_code":200,"error_message":"",
            "smsinfo":[{"sms_status":"INVALID","status_message":"Invalid MSISDN","msisdn":"880"}]}"#;
        assert_eq!(
            class(200, invalid).unwrap_err().outcome(),
            Outcome::BadRecipient
        );
    }

    #[test]
    fn success_keeps_the_reference_id() {
        let ok = class(
            200,
            r#"{"status":"SUCCESS","status_code":200,"error_message":"",
               "smsinfo":[{"sms_status":"SUCCESS","status_message":"Success","msisdn":"8801712345678",
               "sms_type":"EN","sms_body":"b","csms_id":"att01","reference_id":"5da2f0b5ba3a2248110"}]}"#,
        )
        .unwrap();
        assert_eq!(ok.provider_message_id, "5da2f0b5ba3a2248110");
    }
}
