//! Fake SSL Wireless Push SMS API v3: JSON sends with `api_token` and `sid` in
//! the body, HTTP 200 with `status` SUCCESS/FAILED, `csms_id` unique per fake. No lookup, no balance.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{State, rejection::JsonRejection},
    http::{Method, StatusCode, Uri},
    response::Response,
    routing::post,
};
use serde_json::{Value, json};
use sms_relay::domain::segments::{self, Encoding};

use super::{
    Answers, Fake, Received, Refusal, Sent, bd_msisdn, hex_id, is_msisdn, json_str, reply_json,
    unavailable,
};

/// The fake account's API token (at most 50 alphanumerics).
const API_TOKEN: &str = "b7e2c9d4f1a8356e0c2b9d7f4a1e8c3b5d6f7a9c";
/// The fake account's stakeholder id.
const SID: &str = "GLAMORAAPI";

/// `api_token` and `sid`.
pub(super) fn credentials() -> Vec<(&'static str, String)> {
    vec![("api_token", API_TOKEN.to_owned()), ("sid", SID.to_owned())]
}

/// The single-SMS send route.
pub(super) fn router() -> Router<Arc<Fake>> {
    Router::new().route("/api/v3/send-sms", post(send))
}

/// HTTP 200 with `status` FAILED.
fn failed(status_code: u16, error_message: &str) -> Response {
    reply_json(
        StatusCode::OK,
        json!({"status": "FAILED", "status_code": status_code, "error_message": error_message}),
    )
}

/// SSL Wireless's answers to a well-formed send.
struct SslWireless;

impl Answers for SslWireless {
    fn success(sent: &Sent) -> Value {
        let sms_type = match segments::count(&sent.text).encoding {
            Encoding::Gsm7 => "EN",
            Encoding::Ucs2 => "BN",
        };
        json!({
            "status": "SUCCESS",
            "status_code": 200,
            "error_message": "",
            "smsinfo": [{
                "sms_status": "SUCCESS",
                "status_message": "Success",
                "msisdn": bd_msisdn(&sent.to).unwrap_or_else(|| sent.to.clone()),
                "sms_type": sms_type,
                "sms_body": sent.text,
                "csms_id": sent.reference,
                "reference_id": sent.id,
            }],
        })
    }

    fn refusal(refusal: Refusal, _sent: &Sent) -> Response {
        match refusal {
            Refusal::Throttle => failed(4029, "Too many requests"),
            Refusal::ServerError => unavailable(),
            Refusal::InvalidNumber => failed(4025, "Invalid MSISDN"),
            Refusal::Rejected => failed(4003, "IP Blacklisted"),
        }
    }
}

/// `POST /api/v3/send-sms`.
async fn send(
    State(fake): State<Arc<Fake>>,
    method: Method,
    uri: Uri,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    let body = body.map_or(Value::Null, |Json(body)| body);
    let token_ok = json_str(&body, "/api_token").is_some_and(|token| token == API_TOKEN);
    let sid = json_str(&body, "/sid");
    let sid_ok = sid.as_deref() == Some(SID);
    let received = Received {
        to: json_str(&body, "/msisdn").unwrap_or_default(),
        text: json_str(&body, "/sms").unwrap_or_default(),
        sender: sid,
        reference: json_str(&body, "/csms_id"),
        ..Received::new(&method, &uri, token_ok && sid_ok)
    };
    fake.record(&received).await;
    if !body.is_object() {
        return failed(4005, "Invalid request format");
    }
    if !token_ok {
        return failed(4001, "Unauthorized");
    }
    if !sid_ok {
        return failed(4002, "SID not permitted");
    }
    let csms_id = received.reference.as_deref().unwrap_or_default();
    if received.to.is_empty() || received.text.is_empty() || csms_id.is_empty() {
        return failed(4022, "Required parameter missing");
    }
    if !is_msisdn(&received.to) {
        return failed(4005, "Invalid request format");
    }
    if csms_id.len() > 20 || !csms_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return failed(4020, "Invalid CSMS ID");
    }
    if received.text.chars().count() > 1000 {
        return failed(4027, "Message length exceeded");
    }
    if bd_msisdn(&received.to).is_none() {
        return failed(4025, "Invalid MSISDN");
    }
    if !fake
        .sent_where(|sent| sent.reference.as_deref() == Some(csms_id))
        .is_empty()
    {
        return failed(4023, "Duplicate CSMS ID");
    }
    fake.answer::<SslWireless>(Sent::new(hex_id(19), &received))
        .await
}
