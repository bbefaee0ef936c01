//! Fake Infobip SMS v3: JSON sends under `Authorization: App <key>`, message
//! logs, pull-once delivery reports and the account balance.

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{Query, State, rejection::JsonRejection},
    http::{HeaderMap, Method, StatusCode, Uri, header},
    response::Response,
    routing::{get, post},
};
use rand::RngExt as _;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{Answers, Fake, Params, Received, Refusal, Sent, is_msisdn, json_str, reply_json};

/// The fake account's API key.
const API_KEY: &str = "7d4c1e9a2b6f8035c1d2e3f4a5b6c7d8-2f1e0d9c-8b7a-4c5d-9e6f-1a2b3c4d5e6f";

/// `api_key`.
pub(super) fn credentials() -> Vec<(&'static str, String)> {
    vec![("api_key", API_KEY.to_owned())]
}

/// Send, logs and balance routes.
pub(super) fn router() -> Router<Arc<Fake>> {
    Router::new()
        .route("/sms/3/messages", post(send))
        .route("/sms/3/logs", get(logs))
        .route("/sms/3/reports", get(reports))
        .route("/account/1/balance", get(balance))
}

/// Whether the request carries `Authorization: App <API_KEY>`.
fn authorized(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.strip_prefix("App ") == Some(API_KEY))
}

/// A v3 `ApiError` body.
fn api_error(status: StatusCode, description: &str, violations: Vec<Value>) -> Response {
    reply_json(
        status,
        json!({
            "errorCode": format!("E{}", status.as_u16()),
            "description": description,
            "action": "Check the request and try again.",
            "violations": violations,
            "resources": [],
        }),
    )
}

/// 401 `ApiError`.
fn unauthorized() -> Response {
    api_error(
        StatusCode::UNAUTHORIZED,
        "Invalid login details",
        Vec::new(),
    )
}

/// One `ApiError` violation.
fn violation(property: &str, violation: &str) -> Value {
    json!({"property": property, "violation": violation})
}

/// A `status` object.
fn status(group_id: u8, group_name: &str, id: u16, name: &str, description: &str) -> Value {
    json!({
        "groupId": group_id,
        "groupName": group_name,
        "id": id,
        "name": name,
        "description": description,
    })
}

/// The v3 send response for `sent` with message status `status`.
fn send_response(sent: &Sent, status: Value) -> Value {
    let bulk_id = rand::rng().random_range(10_u64.pow(18)..10_u64.pow(19));
    json!({
        "bulkId": bulk_id.to_string(),
        "messages": [{
            "messageId": sent.id,
            "destination": sent.to,
            "status": status,
            "details": {"messageCount": sent.parts},
        }],
    })
}

/// Infobip's answers to a well-formed send.
struct Infobip;

impl Answers for Infobip {
    fn success(sent: &Sent) -> Value {
        send_response(
            sent,
            status(
                1,
                "PENDING",
                26,
                "PENDING_ACCEPTED",
                "Message sent to next instance",
            ),
        )
    }

    fn refusal(refusal: Refusal, sent: &Sent) -> Response {
        let rejected = |id: u16, name: &str, description: &str| {
            reply_json(
                StatusCode::OK,
                send_response(sent, status(5, "REJECTED", id, name, description)),
            )
        };
        match refusal {
            Refusal::Throttle => api_error(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many requests",
                Vec::new(),
            ),
            Refusal::ServerError => api_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Service unavailable",
                Vec::new(),
            ),
            Refusal::InvalidNumber => {
                rejected(52, "REJECTED_DESTINATION", "Invalid destination address")
            }
            Refusal::Rejected => rejected(12, "REJECTED_NOT_ENOUGH_CREDITS", "Not enough credits"),
        }
    }
}

/// What is wrong with the first message of a send, as `ApiError` violations.
fn violations(message: &Value, received: &Received) -> Vec<Value> {
    if !message.is_object() {
        return vec![violation("messages", "must not be empty")];
    }
    let mut found = Vec::new();
    let to = "messages[0].destinations[0].to";
    if received.to.is_empty() {
        found.push(violation(to, "must not be blank"));
    } else if !is_msisdn(&received.to) {
        found.push(violation(
            to,
            "must be a number in international format without '+', 7 to 15 digits",
        ));
    }
    if received.text.is_empty() {
        found.push(violation("messages[0].content.text", "must not be blank"));
    }
    found
}

/// `POST /sms/3/messages` (only the first message's first destination is considered).
async fn send(
    State(fake): State<Arc<Fake>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    let body = body.map_or(Value::Null, |Json(body)| body);
    let message = body.pointer("/messages/0").cloned().unwrap_or_default();
    let received = Received {
        to: json_str(&message, "/destinations/0/to").unwrap_or_default(),
        text: json_str(&message, "/content/text").unwrap_or_default(),
        sender: json_str(&message, "/sender"),
        reference: json_str(&message, "/destinations/0/messageId"),
        callback: json_str(&message, "/webhooks/delivery/url"),
        ttl: message
            .pointer("/options/validityPeriod/amount")
            .and_then(Value::as_u64)
            .map(|minutes| Duration::from_secs(minutes * 60)),
        ..Received::new(&method, &uri, authorized(&headers))
    };
    fake.record(&received).await;
    if !received.authorized {
        return unauthorized();
    }
    let problems = violations(&message, &received);
    if !problems.is_empty() {
        return api_error(
            StatusCode::BAD_REQUEST,
            "Request cannot be processed.",
            problems,
        );
    }
    let id = received
        .reference
        .clone()
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| Uuid::new_v4().to_string());
    fake.answer::<Infobip>(Sent::new(id, &received)).await
}

/// One `/sms/3/logs` entry: the message as delivered.
fn log_entry(sent: &Sent) -> Value {
    let at = sent.at.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string();
    json!({
        "messageId": sent.id,
        "to": sent.to,
        "sender": sent.sender,
        "sentAt": at,
        "doneAt": at,
        "messageCount": sent.parts,
        "mccMnc": "47001",
        "price": {"pricePerMessage": 0.0301, "currency": "EUR"},
        "status": status(3, "DELIVERED", 5, "DELIVERED_TO_HANDSET", "Message delivered to handset"),
        "error": {
            "groupId": 0,
            "groupName": "OK",
            "id": 0,
            "name": "NO_ERROR",
            "description": "No Error",
            "permanent": false,
        },
    })
}

/// `GET /sms/3/logs?messageId=...`: the accepted messages with that id (all without a filter).
async fn logs(
    State(fake): State<Arc<Fake>>,
    headers: HeaderMap,
    Query(query): Query<Params>,
) -> Response {
    if !authorized(&headers) {
        return unauthorized();
    }
    fake.looked_up();
    let id = query.get("messageId");
    let results: Vec<Value> = fake
        .sent_where(|sent| id.is_none_or(|id| &sent.id == id))
        .iter()
        .map(log_entry)
        .collect();
    reply_json(StatusCode::OK, json!({"results": results}))
}

/// `GET /account/1/balance` (a v1 endpoint: auth failures use the legacy `requestError` shape).
async fn balance(headers: HeaderMap) -> Response {
    if !authorized(&headers) {
        return reply_json(
            StatusCode::UNAUTHORIZED,
            json!({"requestError": {"serviceException": {
                "messageId": "UNAUTHORIZED",
                "text": "Invalid login details",
            }}}),
        );
    }
    reply_json(StatusCode::OK, json!({"balance": 47.79, "currency": "EUR"}))
}

/// `GET /sms/3/reports`: a v3 delivery report for each accepted message not returned before.
async fn reports(State(fake): State<Arc<Fake>>, headers: HeaderMap) -> Response {
    if !authorized(&headers) {
        return unauthorized();
    }
    fake.looked_up();
    let delivered = fake.report_status("DELIVERED") == "DELIVERED";
    let (status, error) = if delivered {
        (
            json!({"groupId": 3, "groupName": "DELIVERED", "id": 5, "name": "DELIVERED_TO_HANDSET",
                   "description": "Message delivered to handset"}),
            json!({"groupId": 0, "groupName": "OK", "id": 0, "name": "NO_ERROR",
                   "description": "No Error", "permanent": false}),
        )
    } else {
        (
            json!({"groupId": 2, "groupName": "UNDELIVERABLE", "id": 9,
                   "name": "UNDELIVERABLE_NOT_DELIVERED", "description": "Message sent not delivered"}),
            json!({"groupId": 1, "groupName": "HANDSET_ERRORS", "id": 27, "name": "EC_ABSENT_SUBSCRIBER",
                   "description": "Absent Subscriber", "permanent": false}),
        )
    };
    let results: Vec<Value> = fake
        .unreported()
        .into_iter()
        .map(|sent| {
            json!({
                "bulkId": "BULK-1",
                "messageId": sent.id,
                "to": sent.to,
                "sender": sent.sender,
                "sentAt": sent.at.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string(),
                "doneAt": sent.at.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string(),
                "messageCount": sent.parts,
                "price": {"pricePerMessage": 0.0301, "currency": "EUR"},
                "status": status,
                "error": error,
            })
        })
        .collect();
    reply_json(StatusCode::OK, json!({ "results": results }))
}
