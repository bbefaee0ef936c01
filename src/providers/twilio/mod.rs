//! Twilio Programmable Messaging (`POST /2010-04-01/Accounts/{sid}/Messages.json`, form body,
//! HTTP Basic `AccountSid:AuthToken`). Numbers go out in E.164 with the `+`.

pub mod receipt;
pub mod signature;

use std::{sync::Arc, time::Duration};

use serde::Deserialize;

use super::{
    Accepted, BoxFuture, BuildError, Cost, KindSettings, Lookup, OutgoingSms, Provider, SendError,
    fields::{Credential, is_currency, validate_sender},
    http::{Connection, Endpoint, Reply, exchange},
    kind::adapter,
    pricing::parse_micros,
};

/// `kind = "twilio"`: credentials and sender.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwilioSettings {
    /// Account SID (`AC…`), also the Basic-auth user.
    pub account_sid: String,
    /// Auth token (secret; `env:NAME` reads it from the environment).
    pub auth_token: Credential,
    /// `From`: a Twilio number or an alphanumeric sender id.
    #[serde(default)]
    pub sender: Option<String>,
    /// `MessagingServiceSid` (`MG…`), used instead of `sender` when set.
    #[serde(default)]
    pub messaging_service_sid: Option<String>,
}

impl KindSettings for TwilioSettings {
    fn label(&self) -> &'static str {
        "twilio"
    }

    fn default_base_url(&self) -> Option<&'static str> {
        Some("https://api.twilio.com")
    }

    fn validate(&self) -> Result<(), String> {
        if !(self.account_sid.starts_with("AC") && self.account_sid.len() == 34) {
            return Err("account_sid must be the 34-character AC… id".into());
        }
        match (&self.sender, &self.messaging_service_sid) {
            (None, None) => Err("set sender or messaging_service_sid".into()),
            (Some(sender), _) => validate_sender(sender),
            (None, Some(_)) => Ok(()),
        }
    }

    fn expects_receipts(&self, webhooks_reachable: bool) -> bool {
        webhooks_reachable
    }

    fn build(
        &self,
        connection: &Connection,
        callback: Option<String>,
    ) -> Result<Arc<dyn Provider>, BuildError> {
        adapter(connection, Twilio::new(connection, self, callback))
    }
}

/// The Twilio adapter.
pub struct Twilio {
    http: Endpoint,
    settings: TwilioSettings,
    callback: Option<String>,
}

/// A Message resource, as far as the relay reads it.
#[derive(Debug, Deserialize)]
struct Message {
    sid: String,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    price: Option<String>,
    #[serde(default)]
    price_unit: Option<String>,
}

/// Twilio's error body.
#[derive(Debug, Deserialize)]
struct ApiError {
    code: Option<i64>,
    #[serde(default)]
    message: String,
}

#[derive(Debug, Deserialize)]
struct MessageList {
    messages: Vec<Message>,
}

impl Twilio {
    /// An adapter for `config`; `callback` is the StatusCallback URL.
    pub fn new(
        connection: &Connection,
        settings: &TwilioSettings,
        callback: Option<String>,
    ) -> Result<Self, String> {
        Ok(Self {
            http: Endpoint::new(connection)?,
            settings: settings.clone(),
            callback,
        })
    }

    fn messages_url(&self) -> String {
        self.http.url(&format!(
            "/2010-04-01/Accounts/{}/Messages.json",
            self.settings.account_sid
        ))
    }

    fn authed(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        request.basic_auth(
            &self.settings.account_sid,
            Some(self.settings.auth_token.expose()),
        )
    }

    async fn post(&self, sms: &OutgoingSms) -> Result<Accepted, SendError> {
        let mut form: Vec<(&str, String)> = vec![
            ("To", sms.recipient.e164().to_owned()),
            ("Body", sms.body.clone()),
        ];
        match (&self.settings.messaging_service_sid, &self.settings.sender) {
            (Some(service), _) => form.push(("MessagingServiceSid", service.clone())),
            (None, Some(sender)) => form.push(("From", sender.clone())),
            (None, None) => {}
        }
        if let Some(callback) = &self.callback {
            form.push(("StatusCallback", callback.clone()));
        }
        // Twilio takes 1..=36000 seconds (the chain offers no less than `min_validity`): the code
        // is useless after its validity. Rounded down, never up.
        let ttl = sms.valid_for.as_secs().min(36_000);
        form.push(("ValidityPeriod", ttl.to_string()));
        let reply = exchange(
            self.authed(self.http.client.post(self.messages_url()))
                .form(&form),
        )
        .await?;
        classify(&reply)
    }

    async fn find(&self, sms: &OutgoingSms) -> Result<Lookup, SendError> {
        let request = self
            .authed(self.http.client.get(self.messages_url()))
            .query(&[("To", sms.recipient.e164()), ("PageSize", "20")]);
        let reply = exchange(request).await?;
        let list: MessageList = reply.parsed()?;
        let found = list
            .messages
            .into_iter()
            .find(|m| m.body.as_deref() == Some(sms.body.as_str()));
        Ok(match found {
            Some(m) if m.status.as_deref() != Some("failed") => Lookup::Found(accepted(&reply, m)),
            _ => Lookup::NotFound,
        })
    }

    async fn fetch_balance(&self) -> Result<String, SendError> {
        #[derive(Deserialize)]
        struct Balance {
            balance: String,
            currency: String,
        }
        let url = self.http.url(&format!(
            "/2010-04-01/Accounts/{}/Balance.json",
            self.settings.account_sid
        ));
        let reply = exchange(self.authed(self.http.client.get(url))).await?;
        let balance: Balance = reply.parsed()?;
        Ok(format!("{} {}", balance.balance, balance.currency))
    }
}

fn accepted(reply: &Reply, message: Message) -> Accepted {
    let cost = message
        .price
        .as_deref()
        .and_then(parse_micros)
        .zip(message.price_unit.filter(|u| is_currency(u)))
        .map(|(micros, currency)| Cost { micros, currency });
    Accepted {
        provider_message_id: message.sid,
        http_status: Some(reply.status),
        cost,
        note: None,
    }
}

/// Classifies a create-message answer.
fn classify(reply: &Reply) -> Result<Accepted, SendError> {
    if reply.is_success() {
        return match reply.json::<Message>() {
            Some(m) if m.sid.starts_with("SM") || m.sid.starts_with("MM") => Ok(accepted(reply, m)),
            _ => Err(reply.unreadable()),
        };
    }
    let Some(ApiError {
        code: Some(code),
        message,
    }) = reply.json::<ApiError>()
    else {
        return Err(reply.unreadable());
    };
    let code_text = code.to_string();
    match code {
        // Invalid number, not a mobile, landline.
        21211 | 21614 | 21635 => Err(reply.bad_recipient(code_text, message)),
        // 20429 throttled, 20003 credentials, 21408 region not enabled, 21608 unverified
        // (trial), 21610 opted out of *this* sender, 21612 not reachable from this sender; and
        // anything else: another provider may do better.
        _ => Err(reply.provider_error(code_text, message)),
    }
}

impl Provider for Twilio {
    fn name(&self) -> &str {
        &self.http.name
    }

    fn min_validity(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn send<'a>(
        &'a self,
        sms: &'a OutgoingSms,
        _reference: &'a str,
    ) -> BoxFuture<'a, Result<Accepted, SendError>> {
        Box::pin(self.post(sms))
    }

    /// Twilio takes no client reference, so the lookup lists the recipient's recent messages and
    /// matches the exact body (it holds the code, so it is unique enough).
    fn lookup<'a>(
        &'a self,
        sms: &'a OutgoingSms,
        _reference: &'a str,
    ) -> Option<BoxFuture<'a, Result<Lookup, SendError>>> {
        Some(Box::pin(self.find(sms)))
    }

    fn balance(&self) -> Option<BoxFuture<'_, Result<String, SendError>>> {
        Some(Box::pin(self.fetch_balance()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Outcome;

    fn reply(status: u16, body: &str) -> Reply {
        Reply {
            status,
            retry_after: None,
            body: body.into(),
        }
    }

    fn class(status: u16, body: &str) -> (Outcome, Option<String>) {
        match classify(&reply(status, body)) {
            Ok(_) => (Outcome::Accepted, None),
            Err(e) => (e.outcome(), e.parts().1.map(str::to_owned)),
        }
    }

    #[test]
    fn the_classification_table() {
        let err = |code: i64, status: u16| {
            class(
                status,
                &format!(r#"{{"code":{code},"message":"m","more_info":"u","status":{status}}}"#),
            )
        };
        for code in [21211, 21614, 21635] {
            assert_eq!(err(code, 400).0, Outcome::BadRecipient, "{code}");
        }
        for (code, status) in [
            (20429, 429),
            (20003, 401),
            (21408, 400),
            (21608, 400),
            (21610, 400),
            (21612, 400),
            (20500, 500),
        ] {
            assert_eq!(
                err(code, status),
                (Outcome::ProviderError, Some(code.to_string()))
            );
        }
        assert_eq!(class(503, "<html>").0, Outcome::ProviderError);
        assert_eq!(class(201, "<html>").0, Outcome::Unknown);
        assert_eq!(class(201, r#"{"sid":"SM01"#).0, Outcome::Unknown);
        assert_eq!(class(201, r#"{"error":"none"}"#).0, Outcome::Unknown);
    }

    #[test]
    fn an_accepted_message_keeps_its_sid_and_reported_price() {
        let ok = classify(&reply(
            201,
            r#"{"sid":"SM0123456789abcdef0123456789abcdef","status":"queued","num_segments":"1","price":"-0.07510","price_unit":"USD"}"#,
        ))
        .unwrap();
        assert_eq!(ok.provider_message_id, "SM0123456789abcdef0123456789abcdef");
        assert_eq!(
            ok.cost,
            Some(Cost {
                micros: 75_100,
                currency: "USD".into()
            })
        );
        let unpriced = classify(&reply(
            201,
            r#"{"sid":"SM1","price":null,"price_unit":"USD"}"#,
        ));
        assert!(unpriced.unwrap().cost.is_none());
    }
}
