//! Infobip SMS v3 (`POST /sms/3/messages`, JSON, `Authorization: App <key>`). Our call reference
//! goes out as the destination's `messageId`, so a status lookup (`GET /sms/3/logs`) can find it.
//! Numbers go out without the `+`.

use std::{sync::Arc, time::Duration};

use serde::Deserialize;
use serde_json::json;

use super::{
    Accepted, BoxFuture, BuildError, KindSettings, Lookup, OutgoingSms, Provider, Receipt, Reports,
    SendError,
    fields::{Credential, validate_sender},
    http::{Connection, Endpoint, Reply, exchange},
    kind::adapter,
};
pub mod receipt;

/// `kind = "infobip"`: credentials and sender. `base_url` is the account's own host.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfobipSettings {
    /// API key (secret; `env:NAME` reads it from the environment).
    pub api_key: Credential,
    /// Sender id.
    pub sender: String,
    /// Basic-auth user that delivery-report webhooks must present (set the same in the
    /// subscription's security config). Without it every Infobip webhook is refused.
    #[serde(default)]
    pub receipt_username: Option<String>,
    /// Basic-auth password for delivery-report webhooks.
    #[serde(default)]
    pub receipt_password: Option<Credential>,
    /// Also pull reports from `/sms/3/reports` (each is returned once), for when webhooks cannot
    /// reach the relay.
    #[serde(default)]
    pub pull_reports: bool,
}

impl KindSettings for InfobipSettings {
    fn label(&self) -> &'static str {
        "infobip"
    }

    fn validate(&self) -> Result<(), String> {
        if self.receipt_username.is_some() != self.receipt_password.is_some() {
            return Err("set both receipt_username and receipt_password, or neither".into());
        }
        validate_sender(&self.sender)
    }

    fn expects_receipts(&self, webhooks_reachable: bool) -> bool {
        (webhooks_reachable && self.receipt_password.is_some()) || self.pull_reports
    }

    fn build(
        &self,
        connection: &Connection,
        callback: Option<String>,
    ) -> Result<Arc<dyn Provider>, BuildError> {
        adapter(connection, Infobip::new(connection, self, callback))
    }
}

/// The Infobip adapter.
pub struct Infobip {
    http: Endpoint,
    settings: InfobipSettings,
    callback: Option<String>,
}

/// Infobip's status object (send answer, logs, reports).
#[derive(Debug, Deserialize)]
struct Status {
    #[serde(rename = "groupId")]
    group_id: i64,
    id: i64,
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
}

#[derive(Debug, Deserialize)]
struct SentMessage {
    #[serde(rename = "messageId")]
    message_id: Option<String>,
    status: Status,
}

#[derive(Debug, Deserialize)]
struct Response {
    messages: Vec<SentMessage>,
}

#[derive(Debug, Deserialize)]
struct Logs {
    results: Vec<SentMessage>,
}

/// The v3 `ApiError`, or the legacy `requestError` shape.
#[derive(Debug, Deserialize)]
struct ApiError {
    #[serde(rename = "errorCode")]
    error_code: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    violations: Vec<Violation>,
    #[serde(rename = "requestError")]
    request_error: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct Violation {
    #[serde(default)]
    property: String,
    #[serde(default)]
    violation: String,
}

/// Status group 5 ids about the number itself: REJECTED_PREFIX_MISSING, REJECTED_DESTINATION.
const BAD_NUMBER_IDS: [i64; 2] = [8, 52];

impl Infobip {
    /// An adapter for `config`; `callback` is the delivery-report URL.
    pub fn new(
        connection: &Connection,
        settings: &InfobipSettings,
        callback: Option<String>,
    ) -> Result<Self, String> {
        Ok(Self {
            http: Endpoint::new(connection)?,
            settings: settings.clone(),
            callback,
        })
    }

    fn authed(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        request
            .header(
                reqwest::header::AUTHORIZATION,
                format!("App {}", self.settings.api_key.expose()),
            )
            .header(reqwest::header::ACCEPT, "application/json")
    }

    async fn post(&self, sms: &OutgoingSms, reference: &str) -> Result<Accepted, SendError> {
        // Whole minutes, rounded down (the chain offers no less than `min_validity`).
        let minutes = sms.valid_for.as_secs() / 60;
        let mut message = json!({
            "sender": self.settings.sender,
            "destinations": [{ "to": sms.recipient.digits(), "messageId": reference }],
            "content": { "text": sms.body },
            "options": { "validityPeriod": { "amount": minutes, "timeUnit": "MINUTES" } },
        });
        if let Some(callback) = &self.callback {
            message["webhooks"] = json!({
                "delivery": { "url": callback, "intermediateReport": false, "notify": true },
                "contentType": "application/json",
                "callbackData": reference,
            });
        }
        let request = self
            .authed(self.http.client.post(self.http.url("/sms/3/messages")))
            .json(&json!({ "messages": [message] }));
        classify(&exchange(request).await?)
    }

    async fn find(&self, reference: &str) -> Result<Lookup, SendError> {
        let request = self
            .authed(self.http.client.get(self.http.url("/sms/3/logs")))
            .query(&[("messageId", reference)]);
        let reply = exchange(request).await?;
        let logs: Logs = reply.parsed()?;
        Ok(
            match logs
                .results
                .into_iter()
                .find(|m| m.message_id.as_deref() == Some(reference))
            {
                Some(m) if matches!(m.status.group_id, 0 | 1 | 3) => {
                    Lookup::Found(reply.accepted(reference.to_owned()))
                }
                _ => Lookup::NotFound,
            },
        )
    }

    /// `GET /sms/3/reports`: delivery reports not fetched before. Infobip returns each only
    /// once, so a bad report is logged and skipped rather than failing the page.
    async fn fetch_reports(&self) -> Result<Vec<Receipt>, SendError> {
        let request = self
            .authed(self.http.client.get(self.http.url("/sms/3/reports")))
            .query(&[("limit", "100")]);
        let reply = exchange(request).await?;
        if !reply.is_success() {
            return Err(reply.unreadable());
        }
        let (good, bad) = receipt::parse_lenient(reply.body.as_bytes())
            .map_err(|error| reply.provider_error("BAD_REPORTS", error.to_string()))?;
        if let Some(first) = bad.first() {
            tracing::warn!(provider = %self.http.name, skipped = bad.len(), first = ?first,
                "pulled reports that could not be read were skipped");
        }
        Ok(good)
    }

    async fn fetch_balance(&self) -> Result<String, SendError> {
        #[derive(Deserialize)]
        struct Balance {
            balance: f64,
            currency: String,
        }
        let request = self.authed(self.http.client.get(self.http.url("/account/1/balance")));
        let reply = exchange(request).await?;
        let balance: Balance = reply.parsed()?;
        Ok(format!("{:.4} {}", balance.balance, balance.currency))
    }
}

/// Classifies a send answer.
fn classify(reply: &Reply) -> Result<Accepted, SendError> {
    if !reply.is_success() {
        return Err(classify_error(reply));
    }
    let Some(message) = reply
        .json::<Response>()
        .and_then(|r| r.messages.into_iter().next())
    else {
        return Err(reply.unreadable());
    };
    let Status {
        group_id,
        id,
        name,
        description,
    } = message.status;
    let code = format!("{id} {name}");
    match group_id {
        // OK, PENDING (accepted, e.g. PENDING_ACCEPTED), DELIVERED.
        0 | 1 | 3 => match message.message_id {
            Some(id) => Ok(reply.accepted(id)),
            None => Err(reply.unreadable()),
        },
        5 if BAD_NUMBER_IDS.contains(&id) => Err(reply.bad_recipient(code, description)),
        // Credits, sender, route, flooding, system errors; undeliverable and expired.
        _ => Err(reply.provider_error(code, description)),
    }
}

fn classify_error(reply: &Reply) -> SendError {
    let Some(error) = reply.json::<ApiError>() else {
        return reply.unreadable();
    };
    if reply.status == 400
        && let Some(v) = error
            .violations
            .iter()
            .find(|v| v.property.ends_with(".to"))
    {
        return reply.bad_recipient("E400", format!("{}: {}", v.property, v.violation));
    }
    let code = error
        .error_code
        .unwrap_or_else(|| format!("HTTP{}", reply.status));
    let text = error
        .description
        .or_else(|| error.request_error.map(|e| e.to_string()))
        .unwrap_or_else(|| reply.snippet());
    reply.provider_error(code, text)
}

impl Provider for Infobip {
    fn name(&self) -> &str {
        &self.http.name
    }

    fn min_validity(&self) -> Duration {
        Duration::from_secs(60)
    }

    fn send<'a>(
        &'a self,
        sms: &'a OutgoingSms,
        reference: &'a str,
    ) -> BoxFuture<'a, Result<Accepted, SendError>> {
        Box::pin(self.post(sms, reference))
    }

    fn lookup<'a>(
        &'a self,
        _sms: &'a OutgoingSms,
        reference: &'a str,
    ) -> Option<BoxFuture<'a, Result<Lookup, SendError>>> {
        Some(Box::pin(self.find(reference)))
    }

    fn balance(&self) -> Option<BoxFuture<'_, Result<String, SendError>>> {
        Some(Box::pin(self.fetch_balance()))
    }

    fn reports(&self) -> Reports {
        if self.settings.pull_reports {
            Reports::Pull
        } else {
            Reports::None
        }
    }

    fn pull_reports(&self) -> BoxFuture<'_, Result<Vec<Receipt>, SendError>> {
        Box::pin(self.fetch_reports())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Outcome;

    fn class(status: u16, body: &str) -> Outcome {
        match classify(&Reply {
            status,
            retry_after: None,
            body: body.into(),
        }) {
            Ok(_) => Outcome::Accepted,
            Err(e) => e.outcome(),
        }
    }

    fn with_status(group: i64, id: i64) -> String {
        format!(
            r#"{{"bulkId":"b","messages":[{{"messageId":"r1","destination":"8801712345678",
               "status":{{"groupId":{group},"groupName":"G","id":{id},"name":"N","description":"d"}}}}]}}"#
        )
    }

    #[test]
    fn the_classification_table() {
        assert_eq!(class(200, &with_status(1, 26)), Outcome::Accepted);
        for id in BAD_NUMBER_IDS {
            assert_eq!(class(200, &with_status(5, id)), Outcome::BadRecipient);
        }
        for (group, id) in [
            (5, 12),
            (5, 17),
            (5, 6),
            (5, 19),
            (5, 11),
            (5, 20),
            (5, 21),
            (2, 9),
            (4, 15),
        ] {
            assert_eq!(
                class(200, &with_status(group, id)),
                Outcome::ProviderError,
                "{id}"
            );
        }
        let bad_to = r#"{"errorCode":"E400","description":"Request cannot be processed.",
            "violations":[{"property":"messages[0].destinations[0].to","violation":"invalid"}]}"#;
        assert_eq!(class(400, bad_to), Outcome::BadRecipient);
        assert_eq!(
            class(400, r#"{"errorCode":"E400","violations":[]}"#),
            Outcome::ProviderError
        );
        assert_eq!(
            class(
                401,
                r#"{"requestError":{"serviceException":{"messageId":"UNAUTHORIZED","text":"Invalid login details"}}}"#
            ),
            Outcome::ProviderError
        );
        assert_eq!(class(429, "{}"), Outcome::ProviderError);
        assert_eq!(class(200, r#"{"bulkId":"#), Outcome::Unknown);
    }
}
