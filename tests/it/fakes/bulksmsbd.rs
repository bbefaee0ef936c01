//! Fake BulkSMSBD: `api_key` sends as a form body or query string, HTTP 200
//! with a `response_code`, and the balance. No lookup.

use std::sync::Arc;

use axum::{
    Form, Router,
    extract::{Query, State, rejection::FormRejection},
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
const API_KEY: &str = "Kx7bQ2mZ9pL4vR8tW3nY";

/// `api_key`.
pub(super) fn credentials() -> Vec<(&'static str, String)> {
    vec![("api_key", API_KEY.to_owned())]
}

/// Send and balance routes.
pub(super) fn router() -> Router<Arc<Fake>> {
    Router::new()
        .route("/api/smsapi", get(send).post(send))
        .route("/api/getBalanceApi", get(balance))
}

/// HTTP 200 with an error `response_code`.
fn code(response_code: u16, error_message: &str) -> Response {
    reply_json(
        StatusCode::OK,
        json!({"response_code": response_code, "error_message": error_message}),
    )
}

/// 1011, the answer to an unknown `api_key`.
fn unauthorized() -> Response {
    code(1011, "User Id not found")
}

/// BulkSMSBD's answers to a well-formed send.
struct BulkSmsBd;

impl Answers for BulkSmsBd {
    fn success(sent: &Sent) -> Value {
        json!({
            "response_code": 202,
            "message_id": numeric(&sent.id),
            "success_message": "SMS Submitted Successfully 1",
            "error_message": "",
        })
    }

    fn refusal(refusal: Refusal, _sent: &Sent) -> Response {
        match refusal {
            Refusal::Throttle => too_many_requests(),
            Refusal::ServerError => unavailable(),
            Refusal::InvalidNumber => code(1001, "Invalid Number"),
            Refusal::Rejected => code(1007, "Balance Insufficient"),
        }
    }
}

/// `GET|POST /api/smsapi` with `api_key`, `type`, `number`, `senderid`, `message`.
async fn send(
    State(fake): State<Arc<Fake>>,
    method: Method,
    uri: Uri,
    Query(mut params): Query<Params>,
    form: Result<Form<Params>, FormRejection>,
) -> Response {
    params.extend(form_params(form));
    let received = Received {
        to: field(&params, "number"),
        text: field(&params, "message"),
        sender: params.get("senderid").cloned(),
        ..Received::new(&method, &uri, param_is(&params, "api_key", API_KEY))
    };
    fake.record(&received).await;
    if !received.authorized {
        return unauthorized();
    }
    if received.text.is_empty()
        || received.sender.as_deref().is_none_or(str::is_empty)
        || !is_msisdn(&received.to)
    {
        return code(1003, "Required fields missing");
    }
    if bd_msisdn(&received.to).is_none() {
        return code(1001, "Invalid Number");
    }
    let id = fake.number_id().to_string();
    fake.answer::<BulkSmsBd>(Sent::new(id, &received)).await
}

/// `GET /api/getBalanceApi?api_key=...`.
async fn balance(Query(query): Query<Params>) -> Response {
    if !param_is(&query, "api_key", API_KEY) {
        return unauthorized();
    }
    reply_json(
        StatusCode::OK,
        json!({"response_code": 202, "balance": "1234.5600"}),
    )
}
