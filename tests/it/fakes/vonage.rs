//! Fake Vonage (Nexmo) SMS API: form sends with `api_key`/`api_secret` in the
//! body, HTTP 200 with a per-part `status`, and the account balance.

use std::{sync::Arc, time::Duration};

use axum::{
    Form, Router,
    extract::{State, rejection::FormRejection},
    http::{HeaderMap, Method, StatusCode, Uri},
    response::Response,
    routing::{get, post},
};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{
    Answers, Fake, Params, Received, Refusal, Sent, basic_auth, field, form_params, hex_id,
    is_msisdn, param_is, reply_json, unavailable,
};

/// The fake account's API key.
const API_KEY: &str = "3f9c2a7e";
/// The fake account's API secret.
const API_SECRET: &str = "Qm7xT2vLp9RkW4sZ";

/// `api_key` and `api_secret`.
pub(super) fn credentials() -> Vec<(&'static str, String)> {
    vec![
        ("api_key", API_KEY.to_owned()),
        ("api_secret", API_SECRET.to_owned()),
    ]
}

/// Send and balance routes.
pub(super) fn router() -> Router<Arc<Fake>> {
    Router::new()
        .route("/sms/json", post(send))
        .route("/account/get-balance", get(balance))
}

/// Whether `params` carry the account's key and secret.
fn keys_match(params: &Params) -> bool {
    param_is(params, "api_key", API_KEY) && param_is(params, "api_secret", API_SECRET)
}

/// A one-object answer with a non-zero `status`.
fn status(code: &str, error_text: &str) -> Response {
    reply_json(
        StatusCode::OK,
        json!({"message-count": "1", "messages": [{"status": code, "error-text": error_text}]}),
    )
}

/// A fresh message id: 16 uppercase hex digits.
fn message_id() -> String {
    hex_id(16).to_uppercase()
}

/// Vonage's answers to a well-formed send.
struct Vonage;

impl Answers for Vonage {
    /// One message object per part, each with its own id and price.
    fn success(sent: &Sent) -> Value {
        let messages: Vec<Value> = (0..sent.parts)
            .map(|part| {
                let id = if part == 0 {
                    sent.id.clone()
                } else {
                    message_id()
                };
                let mut message = json!({
                    "to": sent.to,
                    "message-id": id,
                    "status": "0",
                    "remaining-balance": "15.53590000",
                    "message-price": "0.03330000",
                    "network": "47001",
                });
                if let Some(reference) = &sent.reference {
                    message["client-ref"] = Value::from(reference.as_str());
                }
                message
            })
            .collect();
        json!({"message-count": sent.parts.to_string(), "messages": messages})
    }

    fn refusal(refusal: Refusal, _sent: &Sent) -> Response {
        match refusal {
            Refusal::Throttle => status(
                "1",
                "Throughput Rate Exceeded - please wait [ 1000 ] and retry",
            ),
            Refusal::ServerError => unavailable(),
            Refusal::InvalidNumber => status("7", "Number barred."),
            Refusal::Rejected => status("9", "Quota Exceeded - rejected"),
        }
    }
}

/// `POST /sms/json`.
async fn send(
    State(fake): State<Arc<Fake>>,
    method: Method,
    uri: Uri,
    form: Result<Form<Params>, FormRejection>,
) -> Response {
    let form = form_params(form);
    let received = Received {
        to: field(&form, "to"),
        text: field(&form, "text"),
        sender: form.get("from").cloned(),
        reference: form.get("client-ref").cloned(),
        callback: form.get("callback").cloned(),
        ttl: form
            .get("ttl")
            .and_then(|s| s.parse().ok())
            .map(Duration::from_millis),
        ..Received::new(&method, &uri, keys_match(&form))
    };
    fake.record(&received).await;
    if !form.contains_key("api_key") {
        return status("2", "Missing api_key");
    }
    if !received.authorized {
        return status("4", "Bad Credentials");
    }
    let sender = received.sender.as_deref().unwrap_or_default();
    for (key, value) in [
        ("from", sender),
        ("to", received.to.as_str()),
        ("text", received.text.as_str()),
    ] {
        if value.is_empty() {
            return status("2", &format!("Missing {key} param"));
        }
    }
    if !is_msisdn(&received.to) {
        return status("3", "Invalid to param");
    }
    fake.answer::<Vonage>(Sent::new(message_id(), &received))
        .await
}

/// `GET /account/get-balance` with the key and secret as Basic auth. (The API also takes them in
/// the query string; this fake does not, so a relay that puts its secret in a URL fails here.)
async fn balance(headers: HeaderMap) -> Response {
    let basic =
        basic_auth(&headers).is_some_and(|(key, secret)| key == API_KEY && secret == API_SECRET);
    if !basic {
        return reply_json(
            StatusCode::UNAUTHORIZED,
            json!({
                "type": "https://developer.nexmo.com/api-errors#unauthorized",
                "title": "Unauthorized",
                "detail": "You did not provide correct credentials.",
                "instance": Uuid::new_v4().to_string(),
            }),
        );
    }
    reply_json(
        StatusCode::OK,
        json!({"value": 15.5359, "autoReload": false}),
    )
}
