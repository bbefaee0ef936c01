//! Fake Twilio Programmable Messaging: form sends under HTTP Basic auth, JSON
//! Message resources, message lookups and the account balance.

use std::{sync::Arc, time::Duration};

use axum::{
    Form, Router,
    extract::{Path, Query, State, rejection::FormRejection},
    http::{HeaderMap, Method, StatusCode, Uri},
    response::Response,
    routing::get,
};
use serde_json::{Value, json};

use super::{
    Answers, Fake, Params, Received, Refusal, Sent, basic_auth, field, form_params, hex_id,
    is_msisdn, reply_json,
};

/// The fake account's SID ("AC" + 32 hex digits).
const ACCOUNT_SID: &str = "AC8e1f2a3b4c5d6e7f8091a2b3c4d5e6f7";
/// The fake account's auth token.
const AUTH_TOKEN: &str = "5c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f";

/// `account_sid` and `auth_token`.
pub(super) fn credentials() -> Vec<(&'static str, String)> {
    vec![
        ("account_sid", ACCOUNT_SID.to_owned()),
        ("auth_token", AUTH_TOKEN.to_owned()),
    ]
}

/// Send, list, fetch and balance routes.
pub(super) fn router() -> Router<Arc<Fake>> {
    Router::new()
        .route(
            "/2010-04-01/Accounts/{sid}/Messages.json",
            get(list).post(send),
        )
        .route("/2010-04-01/Accounts/{sid}/Messages/{file}", get(fetch))
        .route("/2010-04-01/Accounts/{sid}/Balance.json", get(balance))
}

/// Whether the request carries the account's Basic credentials and names that account in its path.
fn authorized(headers: &HeaderMap, sid: &str) -> bool {
    sid == ACCOUNT_SID
        && basic_auth(headers)
            .is_some_and(|(user, password)| user == ACCOUNT_SID && password == AUTH_TOKEN)
}

/// Twilio's error body: `{"code", "message", "more_info", "status"}`.
fn error(status: StatusCode, code: u32, message: &str) -> Response {
    reply_json(
        status,
        json!({
            "code": code,
            "message": message,
            "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
            "status": status.as_u16(),
        }),
    )
}

/// 401 / 20003.
fn unauthorized() -> Response {
    error(StatusCode::UNAUTHORIZED, 20003, "Authenticate")
}

/// A Message resource in `status`.
fn resource(sent: &Sent, status: &str) -> Value {
    let uri = format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{}", sent.id);
    let date = sent.at.to_rfc2822();
    let date_sent = (status != "queued").then(|| date.clone());
    json!({
        "sid": sent.id,
        "account_sid": ACCOUNT_SID,
        "messaging_service_sid": null,
        "from": sent.sender,
        "to": sent.to,
        "body": sent.text,
        "status": status,
        "num_segments": sent.parts.to_string(),
        "num_media": "0",
        "direction": "outbound-api",
        "api_version": "2010-04-01",
        "price": null,
        "price_unit": "USD",
        "error_code": null,
        "error_message": null,
        "date_created": date,
        "date_sent": date_sent,
        "date_updated": date,
        "uri": format!("{uri}.json"),
        "subresource_uris": {"media": format!("{uri}/Media.json")},
    })
}

/// Twilio's answers to a well-formed send.
struct Twilio;

impl Answers for Twilio {
    const OK: StatusCode = StatusCode::CREATED;

    fn success(sent: &Sent) -> Value {
        resource(sent, "queued")
    }

    fn refusal(refusal: Refusal, sent: &Sent) -> Response {
        let to = &sent.to;
        match refusal {
            Refusal::Throttle => error(StatusCode::TOO_MANY_REQUESTS, 20429, "Too Many Requests"),
            Refusal::ServerError => error(
                StatusCode::SERVICE_UNAVAILABLE,
                20500,
                "Internal Server Error",
            ),
            Refusal::InvalidNumber => invalid_to(to),
            Refusal::Rejected => error(
                StatusCode::BAD_REQUEST,
                21608,
                &format!(
                    "The number {to} is unverified. Trial accounts cannot send messages to \
                     unverified numbers; verify {to} at twilio.com/user/account/phone-numbers/verified, \
                     or purchase a Twilio number to send messages to unverified numbers"
                ),
            ),
        }
    }
}

/// 400 / 21211.
fn invalid_to(to: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        21211,
        &format!("The 'To' number {to} is not a valid phone number."),
    )
}

/// `POST /2010-04-01/Accounts/{sid}/Messages.json`.
async fn send(
    State(fake): State<Arc<Fake>>,
    Path(sid): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    form: Result<Form<Params>, FormRejection>,
) -> Response {
    let form = form_params(form);
    let received = Received {
        to: field(&form, "To"),
        text: field(&form, "Body"),
        sender: form
            .get("From")
            .or_else(|| form.get("MessagingServiceSid"))
            .cloned(),
        callback: form.get("StatusCallback").cloned(),
        ttl: form
            .get("ValidityPeriod")
            .and_then(|s| s.parse().ok())
            .map(Duration::from_secs),
        ..Received::new(&method, &uri, authorized(&headers, &sid))
    };
    fake.record(&received).await;
    if !received.authorized {
        return unauthorized();
    }
    let bad_request = |code: u32, message: &str| error(StatusCode::BAD_REQUEST, code, message);
    if received.to.is_empty() {
        return bad_request(21604, "A 'To' phone number is required.");
    }
    if received.sender.as_deref().is_none_or(str::is_empty) {
        return bad_request(21603, "A 'From' phone number is required.");
    }
    if received.text.is_empty() {
        return bad_request(21602, "Message body is required.");
    }
    if received.text.chars().count() > 1600 {
        return bad_request(
            21617,
            "The concatenated message body exceeds the 1600 character limit.",
        );
    }
    if !received.to.strip_prefix('+').is_some_and(is_msisdn) {
        return invalid_to(&received.to);
    }
    let sid = format!("SM{}", hex_id(32));
    fake.answer::<Twilio>(Sent::new(sid, &received)).await
}

/// `GET /2010-04-01/Accounts/{sid}/Messages.json?To=...`: the accepted messages, newest first.
async fn list(
    State(fake): State<Arc<Fake>>,
    Path(sid): Path<String>,
    headers: HeaderMap,
    Query(query): Query<Params>,
) -> Response {
    if !authorized(&headers, &sid) {
        return unauthorized();
    }
    fake.looked_up();
    let to = query.get("To");
    let messages: Vec<Value> = fake
        .sent_where(|sent| to.is_none_or(|to| &sent.to == to))
        .iter()
        .map(|sent| resource(sent, "sent"))
        .collect();
    let page_uri = format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json?PageSize=50&Page=0");
    reply_json(
        StatusCode::OK,
        json!({
            "messages": messages,
            "page": 0,
            "page_size": 50,
            "start": 0,
            "end": messages.len().saturating_sub(1),
            "first_page_uri": page_uri,
            "uri": page_uri,
            "next_page_uri": null,
            "previous_page_uri": null,
        }),
    )
}

/// `GET /2010-04-01/Accounts/{sid}/Messages/{MessageSid}.json`.
async fn fetch(
    State(fake): State<Arc<Fake>>,
    Path((sid, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&headers, &sid) {
        return unauthorized();
    }
    fake.looked_up();
    let id = file.strip_suffix(".json").unwrap_or_default();
    match fake.sent_where(|sent| sent.id == id).first() {
        Some(sent) => reply_json(StatusCode::OK, resource(sent, "sent")),
        None => error(
            StatusCode::NOT_FOUND,
            20404,
            &format!(
                "The requested resource /2010-04-01/Accounts/{sid}/Messages/{file} was not found"
            ),
        ),
    }
}

/// `GET /2010-04-01/Accounts/{sid}/Balance.json`.
async fn balance(Path(sid): Path<String>, headers: HeaderMap) -> Response {
    if !authorized(&headers, &sid) {
        return unauthorized();
    }
    reply_json(
        StatusCode::OK,
        json!({"account_sid": ACCOUNT_SID, "balance": "12.50", "currency": "USD"}),
    )
}
