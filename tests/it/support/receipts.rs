//! Signed delivery receipts, posted the way Twilio, Vonage and Infobip post them: the
//! credentials the test configuration holds, and a [`Poster`] per provider.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sms_relay::providers::{
    ProviderConfig,
    twilio::signature::twilio_signature,
    vonage::signature::{VonageMethod, vonage_signature},
};

use super::{history::Attempt, provider_config, webhooks::PUBLIC};
use crate::fakes::{FakeProvider, Kind};

/// The Vonage signature secret the test config holds.
pub const VONAGE_SECRET: &str = "s3cr3tSignature";
/// Infobip webhook Basic-auth user in the test config.
pub const INFOBIP_USER: &str = "dlr-user";
/// Infobip webhook Basic-auth password in the test config.
pub const INFOBIP_PASSWORD: &str = "dlr-pass-6f1c";

/// A provider entry for `fake` with the webhook credentials the relay checks.
pub fn receipt_entry(fake: &FakeProvider, name: &str) -> ProviderConfig {
    let extra = match fake.kind() {
        Kind::Vonage => json!({"signature_secret": VONAGE_SECRET, "signature_method": "sha256"}),
        Kind::Infobip => {
            json!({"receipt_username": INFOBIP_USER, "receipt_password": INFOBIP_PASSWORD})
        }
        _ => json!({}),
    };
    provider_config(fake, name, extra)
}

/// Posts one provider's receipts to the relay's webhook endpoint for it, signed or
/// authenticated as that provider does.
pub struct Poster {
    kind: Kind,
    base: String,
    pub http: reqwest::Client,
    /// Twilio's auth token (the fake account's).
    pub token: String,
}

/// One receipt to post: the provider's ids and its status words.
pub struct Dlr<'a> {
    pub id: &'a str,
    pub client_ref: &'a str,
    /// Twilio `MessageStatus`, Vonage `status`, Infobip `groupId/id`.
    pub status: &'a str,
    pub error: &'a str,
    /// When Vonage signed it (Unix seconds); `None`: now.
    pub signed_at: Option<i64>,
}

impl<'a> Dlr<'a> {
    /// A receipt saying `status` (and `error`, empty for none) about the provider call `attempt`.
    pub fn of(attempt: &'a Attempt, status: &'a str, error: &'a str) -> Self {
        Dlr {
            id: attempt
                .provider_message_id
                .as_deref()
                .expect("an accepted call has the provider's id"),
            client_ref: attempt
                .client_ref
                .as_deref()
                .expect("a call has a client reference"),
            status,
            error,
            signed_at: None,
        }
    }
}

impl Poster {
    /// A poster for the provider `fake` stands for, to the webhooks served at `base`.
    pub fn new(base: &str, fake: &FakeProvider) -> Self {
        let kind = fake.kind();
        let token = fake
            .credentials()
            .into_iter()
            .find(|(k, _)| *k == "auth_token")
            .map(|(_, v)| v)
            .unwrap_or_default();
        Poster {
            kind,
            base: base.to_owned(),
            http: reqwest::Client::new(),
            token,
        }
    }

    fn url(&self) -> String {
        let path = match self.kind {
            Kind::Twilio => "twilio",
            Kind::Vonage => "vonage",
            _ => "infobip",
        };
        format!("{}/webhooks/{path}", self.base)
    }

    /// The form of Twilio's status callback for `dlr`.
    pub fn twilio_form(dlr: &Dlr) -> Vec<(String, String)> {
        let mut form = vec![
            ("MessageSid", dlr.id),
            ("SmsSid", dlr.id),
            ("MessageStatus", dlr.status),
            ("SmsStatus", dlr.status),
            ("AccountSid", "AC8e1f2a3b4c5d6e7f8091a2b3c4d5e6f7"),
            ("From", "Glamora"),
            ("To", "+8801712345611"),
            ("ApiVersion", "2010-04-01"),
        ];
        if !dlr.error.is_empty() {
            form.push(("ErrorCode", dlr.error));
        }
        form.into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    /// The query parameters of Vonage's delivery receipt for `dlr`, signed with
    /// [`VONAGE_SECRET`].
    pub fn vonage_params(dlr: &Dlr) -> Vec<(String, String)> {
        let signed_at = dlr
            .signed_at
            .unwrap_or_else(|| chrono::Utc::now().timestamp())
            .to_string();
        let mut params: Vec<(String, String)> = [
            ("msisdn", "8801712345611"),
            ("to", "Glamora"),
            ("network-code", "47001"),
            ("messageId", dlr.id),
            ("price", "0.03330000"),
            ("status", dlr.status),
            ("scts", "2501011400"),
            (
                "err-code",
                if dlr.error.is_empty() { "0" } else { dlr.error },
            ),
            ("api-key", "3f9c2a7e"),
            ("client-ref", dlr.client_ref),
            ("message-timestamp", "2025-01-01 14:00:05"),
            ("timestamp", signed_at.as_str()),
            ("nonce", "ec11dd3e-1e7f-4db5-9467-82b02cd223b9"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let sig = vonage_signature(VonageMethod::Sha256, VONAGE_SECRET, &params);
        params.push(("sig".into(), sig.to_uppercase()));
        params
    }

    /// Infobip's (v3) delivery report batch for `dlrs`.
    pub fn infobip_body(dlrs: &[Dlr]) -> Value {
        let results: Vec<Value> = dlrs
            .iter()
            .map(|dlr| {
                let (group, id) = dlr.status.split_once('/').unwrap();
                let (group, id): (i64, i64) = (group.parse().unwrap(), id.parse().unwrap());
                let error_id: i64 = dlr.error.parse().unwrap_or(0);
                json!({
                    "bulkId": "BULK-1", "messageId": dlr.id, "to": "8801712345611", "sender": "Glamora",
                    "sentAt": "2025-01-01T14:00:00.000+0000", "doneAt": "2025-01-01T14:00:04.000+0000",
                    "messageCount": 1, "mccMnc": "47001", "callbackData": dlr.client_ref,
                    "price": {"pricePerMessage": 0.0301, "currency": "EUR"},
                    "status": {"groupId": group, "groupName": "G", "id": id, "name": format!("S{group}_{id}"),
                               "description": "d"},
                    "error": {"groupId": 0, "groupName": "OK", "id": error_id, "name": format!("E{error_id}"),
                              "description": "e", "permanent": false},
                })
            })
            .collect();
        json!({ "results": results })
    }

    /// Posts `dlr` the way the provider does, properly authenticated.
    pub async fn post(&self, dlr: &Dlr<'_>) -> StatusCode {
        let request = match self.kind {
            Kind::Twilio => {
                let form = Self::twilio_form(dlr);
                let sig =
                    twilio_signature(&self.token, &format!("{PUBLIC}/webhooks/twilio"), &form);
                self.http
                    .post(self.url())
                    .header("X-Twilio-Signature", sig)
                    .form(&form)
            }
            Kind::Vonage => self.http.get(self.url()).query(&Self::vonage_params(dlr)),
            _ => self
                .http
                .post(self.url())
                .basic_auth(INFOBIP_USER, Some(INFOBIP_PASSWORD))
                .json(&Self::infobip_body(std::slice::from_ref(dlr))),
        };
        request.send().await.unwrap().status()
    }

    /// Posts `dlr` with its credentials tampered with (`forged`) or left out.
    pub async fn post_forged(&self, dlr: &Dlr<'_>, forged: bool) -> StatusCode {
        let request = match self.kind {
            Kind::Twilio => {
                let form = Self::twilio_form(dlr);
                let sig =
                    twilio_signature("not-the-token", &format!("{PUBLIC}/webhooks/twilio"), &form);
                let request = self.http.post(self.url()).form(&form);
                if forged {
                    request.header("X-Twilio-Signature", sig)
                } else {
                    request
                }
            }
            Kind::Vonage => {
                let mut params = Self::vonage_params(dlr);
                if forged {
                    // A valid signature over a different status.
                    let other = if dlr.status == "delivered" {
                        "buffered"
                    } else {
                        "delivered"
                    };
                    params.retain(|(k, _)| k != "status");
                    params.push(("status".into(), other.into()));
                } else {
                    params.retain(|(k, _)| k != "sig");
                }
                self.http.get(self.url()).query(&params)
            }
            _ => {
                let request = self
                    .http
                    .post(self.url())
                    .json(&Self::infobip_body(std::slice::from_ref(dlr)));
                if forged {
                    request.basic_auth(INFOBIP_USER, Some("guess"))
                } else {
                    request
                }
            }
        };
        request.send().await.unwrap().status()
    }
}
