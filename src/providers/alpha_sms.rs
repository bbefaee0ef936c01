//! Alpha SMS, sms.net.bd (`POST /sendsms`, form with `api_key`). It answers HTTP 200 with
//! `"error":0` on success and an error code otherwise. Numbers go out as `880…` without the `+`.
//! Delivery status and the charge come from polling `/report/request/{id}/`.

use std::sync::Arc;

use serde::Deserialize;

use super::{
    Accepted, BoxFuture, BuildError, Cost, Delivery, KindSettings, OutgoingSms, Provider, Receipt,
    Reports, SendError,
    fields::{Credential, validate_sender},
    http::{Connection, Endpoint, Reply, exchange, text_of},
    kind::adapter,
    pricing::parse_micros,
};

/// `kind = "alpha_sms"`: credentials and optional sender.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlphaSmsSettings {
    /// API key (secret; `env:NAME` reads it from the environment).
    pub api_key: Credential,
    /// `sender_id`: an approved sender id; the account default when unset.
    #[serde(default)]
    pub sender: Option<String>,
}

impl KindSettings for AlphaSmsSettings {
    fn label(&self) -> &'static str {
        "alpha_sms"
    }

    fn default_base_url(&self) -> Option<&'static str> {
        Some("https://api.sms.net.bd")
    }

    fn validate(&self) -> Result<(), String> {
        self.sender.as_deref().map_or(Ok(()), validate_sender)
    }

    fn build(
        &self,
        connection: &Connection,
        _callback: Option<String>,
    ) -> Result<Arc<dyn Provider>, BuildError> {
        adapter(connection, AlphaSms::new(connection, self))
    }
}

/// The Alpha SMS adapter.
pub struct AlphaSms {
    http: Endpoint,
    settings: AlphaSmsSettings,
}

#[derive(Debug, Deserialize)]
struct Response {
    error: serde_json::Value,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    data: Option<serde_json::Value>,
}

impl AlphaSms {
    /// An adapter for `config`.
    pub fn new(connection: &Connection, settings: &AlphaSmsSettings) -> Result<Self, String> {
        Ok(Self {
            http: Endpoint::new(connection)?,
            settings: settings.clone(),
        })
    }

    async fn post(&self, sms: &OutgoingSms) -> Result<Accepted, SendError> {
        let mut form = vec![
            ("api_key", self.settings.api_key.expose()),
            ("msg", &sms.body),
            ("to", sms.recipient.digits()),
        ];
        if let Some(sender) = &self.settings.sender {
            form.push(("sender_id", sender));
        }
        let request = self.http.client.post(self.http.url("/sendsms")).form(&form);
        classify(&exchange(request).await?)
    }

    /// `GET /report/request/{id}/`: the one recipient's status and charge.
    async fn fetch_report(&self, request_id: &str) -> Result<Option<Receipt>, SendError> {
        let request = self
            .http
            .client
            .get(self.http.url(&format!("/report/request/{request_id}/")))
            .query(&[("api_key", self.settings.api_key.expose())]);
        let reply = exchange(request).await?;
        let response: Response = reply.parsed()?;
        if text_of(&response.error).as_deref() != Some("0") {
            return Err(
                reply.provider_error(text_of(&response.error).unwrap_or_default(), response.msg)
            );
        }
        let Some(recipient) = response
            .data
            .as_ref()
            .and_then(|d| d.get("recipients"))
            .and_then(|r| r.get(0))
        else {
            return Ok(None);
        };
        let Some(word) = recipient.get("status").and_then(text_of) else {
            return Err(reply.unreadable());
        };
        let cost = recipient
            .get("charge")
            .and_then(text_of)
            .and_then(|c| parse_micros(&c))
            .map(|micros| Cost {
                micros,
                currency: "BDT".into(),
            });
        Ok(Some(Receipt {
            provider_message_id: request_id.to_owned(),
            client_ref: None,
            status: delivery(&word),
            dedupe_key: format!("alpha_sms:{request_id}:{word}"),
            status_raw: word,
            error_code: None,
            permanent: false,
            done_at: None,
            cost,
            // The number stays out of what is stored.
            payload: serde_json::json!({
                "request_id": request_id,
                "status": recipient.get("status"),
                "charge": recipient.get("charge"),
            }),
        }))
    }

    async fn fetch_balance(&self) -> Result<String, SendError> {
        let request = self
            .http
            .client
            .get(self.http.url("/user/balance/"))
            .query(&[("api_key", self.settings.api_key.expose())]);
        let reply = exchange(request).await?;
        let response: Response = reply.json().ok_or_else(|| reply.unreadable())?;
        if text_of(&response.error).as_deref() != Some("0") {
            return Err(
                reply.provider_error(text_of(&response.error).unwrap_or_default(), response.msg)
            );
        }
        response
            .data
            .as_ref()
            .and_then(|d| d.get("balance"))
            .and_then(text_of)
            .map(|b| format!("{b} BDT"))
            .ok_or_else(|| reply.unreadable())
    }
}

/// A recipient status from the report API. Alpha SMS documents only `Sent`; the other words are
/// the usual aggregator vocabulary. `Sent` means handed to the operator.
fn delivery(word: &str) -> Delivery {
    match word.to_ascii_lowercase().as_str() {
        "delivered" => Delivery::Delivered,
        "sent" | "submitted" => Delivery::Enroute,
        "pending" | "queued" | "processing" | "scheduled" => Delivery::Queued,
        "failed" | "rejected" | "blocked" => Delivery::Failed,
        "undelivered" | "undeliverable" => Delivery::Undelivered,
        "expired" => Delivery::Expired,
        _ => Delivery::Unknown,
    }
}

/// Classifies a send answer.
fn classify(reply: &Reply) -> Result<Accepted, SendError> {
    let Some(response) = reply.json::<Response>() else {
        return Err(reply.unreadable());
    };
    let Some(code) = text_of(&response.error) else {
        return Err(reply.unreadable());
    };
    match code.as_str() {
        "0" => match response
            .data
            .as_ref()
            .and_then(|d| d.get("request_id"))
            .and_then(text_of)
        {
            Some(id) => Ok(reply.accepted(id)),
            None => Err(reply.unreadable()),
        },
        // No valid number.
        "416" => Err(reply.bad_recipient(code, response.msg)),
        // 409 server error; 403/405/410/411 account and key; 413 sender id; 417 balance; 420
        // content blocked; 421 unregistered numbers before the first recharge; request bugs.
        _ => Err(reply.provider_error(code, response.msg)),
    }
}

impl Provider for AlphaSms {
    fn name(&self) -> &str {
        &self.http.name
    }

    fn send<'a>(
        &'a self,
        sms: &'a OutgoingSms,
        _reference: &'a str,
    ) -> BoxFuture<'a, Result<Accepted, SendError>> {
        Box::pin(self.post(sms))
    }

    fn balance(&self) -> Option<BoxFuture<'_, Result<String, SendError>>> {
        Some(Box::pin(self.fetch_balance()))
    }

    fn reports(&self) -> Reports {
        Reports::PerMessage
    }

    fn report<'a>(
        &'a self,
        provider_message_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Receipt>, SendError>> {
        Box::pin(self.fetch_report(provider_message_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Outcome;

    fn class(status: u16, body: &str) -> Result<Accepted, SendError> {
        classify(&Reply {
            status,
            retry_after: None,
            body: body.into(),
        })
    }

    #[test]
    fn the_classification_table() {
        let ok = class(
            200,
            r#"{"error":0,"msg":"Request successfully submitted","data":{"request_id":1234}}"#,
        )
        .unwrap();
        assert_eq!(ok.provider_message_id, "1234");
        let code = |c: u32| {
            class(200, &format!(r#"{{"error":{c},"msg":"m"}}"#))
                .unwrap_err()
                .outcome()
        };
        assert_eq!(code(416), Outcome::BadRecipient);
        for c in [
            400, 403, 405, 409, 410, 411, 412, 413, 414, 415, 417, 420, 421,
        ] {
            assert_eq!(code(c), Outcome::ProviderError, "{c}");
        }
        assert_eq!(
            class(200, "<html>").unwrap_err().outcome(),
            Outcome::Unknown
        );
        assert_eq!(
            class(500, "oops").unwrap_err().outcome(),
            Outcome::ProviderError
        );
        assert_eq!(
            class(429, "slow down").unwrap_err().outcome(),
            Outcome::ProviderError
        );
    }
}
