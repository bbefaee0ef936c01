//! Fake Alpha SMS, sms.net.bd: `api_key` form sends, HTTP 200 with an `error`
//! code, per-request delivery reports and the balance.

use std::sync::Arc;

use axum::{
    Form, Router,
    extract::{Path, Query, State, rejection::FormRejection},
    http::{Method, StatusCode, Uri},
    response::Response,
    routing::get,
};
use serde_json::{Value, json};

use super::{
    Answers, Fake, Params, Received, Refusal, Sent, bd_msisdn, field, form_params, is_msisdn,
    numeric, param_is, reply_json, too_many_requests, unavailable,
};

/// The fake account's API key.
const API_KEY: &str = "aS7kD9fG2hJ4kL6zX8cV1bN3mQ5wE7rT9yU2iO4p";

/// `api_key`.
pub(super) fn credentials() -> Vec<(&'static str, String)> {
    vec![("api_key", API_KEY.to_owned())]
}

/// Send, report and balance routes (with and without the trailing slash).
pub(super) fn router() -> Router<Arc<Fake>> {
    Router::new()
        .route("/sendsms", get(send).post(send))
        .route("/report/request/{id}/", get(report))
        .route("/report/request/{id}", get(report))
        .route("/user/balance/", get(balance))
        .route("/user/balance", get(balance))
}

/// HTTP 200 with a non-zero `error`.
fn error(code: u16, msg: &str) -> Response {
    reply_json(StatusCode::OK, json!({"error": code, "msg": msg}))
}

/// 405, the answer to a missing or unknown `api_key`.
fn unauthorized() -> Response {
    error(405, "Authorization required")
}

/// Alpha SMS's answers to a well-formed send.
struct AlphaSms;

impl Answers for AlphaSms {
    fn success(sent: &Sent) -> Value {
        json!({
            "error": 0,
            "msg": "Request successfully submitted",
            "data": {"request_id": numeric(&sent.id)},
        })
    }

    fn refusal(refusal: Refusal, _sent: &Sent) -> Response {
        match refusal {
            Refusal::Throttle => too_many_requests(),
            Refusal::ServerError => unavailable(),
            Refusal::InvalidNumber => error(416, "No valid number found"),
            Refusal::Rejected => error(417, "Insufficient balance"),
        }
    }
}

/// `POST|GET /sendsms` with `api_key`, `msg`, `to` and optionally `sender_id`.
async fn send(
    State(fake): State<Arc<Fake>>,
    method: Method,
    uri: Uri,
    form: Result<Form<Params>, FormRejection>,
) -> Response {
    let params = form_params(form);
    let received = Received {
        to: field(&params, "to"),
        text: field(&params, "msg"),
        sender: params.get("sender_id").cloned(),
        ..Received::new(&method, &uri, param_is(&params, "api_key", API_KEY))
    };
    fake.record(&received).await;
    if !received.authorized {
        return unauthorized();
    }
    if received.text.is_empty() || !is_msisdn(&received.to) {
        return error(400, "Missing or invalid parameter");
    }
    if bd_msisdn(&received.to).is_none() {
        return error(416, "No valid number found");
    }
    let id = fake.number_id().to_string();
    fake.answer::<AlphaSms>(Sent::new(id, &received)).await
}

/// `GET /report/request/{id}/?api_key=...`: one recipient, charged 0.25 per part.
async fn report(
    State(fake): State<Arc<Fake>>,
    Path(id): Path<String>,
    Query(query): Query<Params>,
) -> Response {
    if !param_is(&query, "api_key", API_KEY) {
        return unauthorized();
    }
    fake.looked_up();
    let Some(sent) = fake.sent_where(|sent| sent.id == id).into_iter().next() else {
        return error(404, "Resource not found");
    };
    let charge = format!("{:.4}", 0.25 * f64::from(sent.parts));
    reply_json(
        StatusCode::OK,
        json!({
            "error": 0,
            "msg": "Success",
            "data": {
                "request_id": numeric(&sent.id),
                "request_status": "Complete",
                "request_charge": charge,
                "recipients": [{
                    "number": bd_msisdn(&sent.to).unwrap_or_else(|| sent.to.clone()),
                    "charge": charge,
                    "status": fake.report_status("Sent"),
                }],
            },
        }),
    )
}

/// `GET /user/balance/?api_key=...`.
async fn balance(Query(query): Query<Params>) -> Response {
    if !param_is(&query, "api_key", API_KEY) {
        return unauthorized();
    }
    reply_json(
        StatusCode::OK,
        json!({"error": 0, "msg": "Success", "data": {"balance": "500.0000"}}),
    )
}
