//! Infobip's delivery report webhook: a JSON batch `{"results":[…]}` of up to 100 reports, sent
//! with the Basic auth credentials configured for it.

use base64::Engine;
use chrono::{DateTime, Utc};
use std::any::Any;

use reqwest::header::HeaderMap;
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::InfobipSettings;
use crate::domain::recipient::mask;
use crate::providers::{
    Cost, Delivery, KindSettings, Receipt, ReceiptError,
    pricing::parse_micros,
    webhook::{Webhook, WebhookError, WebhookRequest, header},
};

/// Infobip's receipt webhook: a JSON POST with one of the entries' receipt user and password.
pub const WEBHOOK: Webhook = Webhook {
    kind: "infobip",
    accepts_get: false,
    authenticate,
    receive,
    has_credentials: |entry| {
        settings(entry)
            .is_some_and(|s| s.receipt_username.is_some() && s.receipt_password.is_some())
    },
};

/// Parses the batch (its Basic auth passed [`authenticate`]).
fn receive(
    _entries: &[&dyn KindSettings],
    request: &WebhookRequest<'_>,
) -> Result<Vec<Receipt>, WebhookError> {
    Ok(parse(request.body)?)
}

/// Checks the Basic auth against each Infobip entry's receipt credentials.
fn authenticate(entries: &[&dyn KindSettings], headers: &HeaderMap) -> Result<(), WebhookError> {
    let Some(authorization) = header(headers, "authorization") else {
        return Err(WebhookError::Unauthenticated("Authorization missing"));
    };
    let accounts = entries.iter().filter_map(|entry| {
        let s = settings(*entry)?;
        Some((
            s.receipt_username.as_deref()?,
            s.receipt_password.as_ref()?.expose(),
        ))
    });
    if !basic_auth_matches(authorization, accounts) {
        return Err(WebhookError::Forbidden("credentials do not match"));
    }
    Ok(())
}

/// `entry`'s settings if it is an Infobip entry.
fn settings(entry: &dyn KindSettings) -> Option<&InfobipSettings> {
    (entry as &dyn Any).downcast_ref()
}

/// Whether `authorization` is Basic auth with one of `accounts`' user and password. Both sides
/// are hashed before the constant-time comparison, so not even their lengths leak.
fn basic_auth_matches<'a>(
    authorization: &str,
    mut accounts: impl Iterator<Item = (&'a str, &'a str)>,
) -> bool {
    let Some((scheme, encoded)) = authorization.split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let given = Sha256::digest(&decoded);
    accounts.any(|(user, password)| {
        let expected = Sha256::digest(format!("{user}:{password}"));
        bool::from(expected.ct_eq(&given))
    })
}

/// Parses a delivery report batch; any bad report refuses the whole batch, naming its index.
pub fn parse(body: &[u8]) -> Result<Vec<Receipt>, ReceiptError> {
    parse_each(body)?.collect()
}

/// Parses a batch report by report: the good ones, and an error for each bad one. Only a body
/// that is not a batch at all is an error. For pulled reports, which Infobip returns only once.
pub fn parse_lenient(body: &[u8]) -> Result<(Vec<Receipt>, Vec<ReceiptError>), ReceiptError> {
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    for report in parse_each(body)? {
        match report {
            Ok(receipt) => good.push(receipt),
            Err(error) => bad.push(error),
        }
    }
    Ok((good, bad))
}

fn parse_each(
    body: &[u8],
) -> Result<impl Iterator<Item = Result<Receipt, ReceiptError>>, ReceiptError> {
    let batch: Value = serde_json::from_slice(body)
        .map_err(|e| ReceiptError::Malformed(format!("not JSON: {e}")))?;
    let Some(Value::Array(results)) = batch.get("results").cloned() else {
        return Err(ReceiptError::Malformed("no results array".into()));
    };
    Ok(results
        .into_iter()
        .enumerate()
        .map(|(index, report)| parse_report(&report).map_err(|e| at_index(index, e))))
}

/// A report's error as the batch's, naming the report's index.
fn at_index(index: usize, error: ReceiptError) -> ReceiptError {
    let why = match error {
        ReceiptError::Malformed(why) => why,
        missing @ ReceiptError::Missing(_) => missing.to_string(),
    };
    ReceiptError::Malformed(format!("results[{index}]: {why}"))
}

/// Maps an Infobip status group and id to the canonical status.
pub fn delivery(group_id: i64, id: i64) -> Delivery {
    match (group_id, id) {
        (1, 26) => Delivery::Queued,
        (0 | 1, _) => Delivery::Enroute,
        (2, _) => Delivery::Undelivered,
        (3, _) => Delivery::Delivered,
        (4, 29) => Delivery::Unknown,
        (4, _) => Delivery::Expired,
        (5, _) => Delivery::Failed,
        _ => Delivery::Unknown,
    }
}

/// One report of the batch.
fn parse_report(report: &Value) -> Result<Receipt, ReceiptError> {
    if !report.is_object() {
        return Err(ReceiptError::Malformed("not an object".into()));
    }
    let message_id = text(report, "messageId")?;
    let status = present(report, "status")?;
    let group_id = integer(status, "groupId", "status.groupId")?;
    let status_id = integer(status, "id", "status.id")?;
    let (error_id, error_code, permanent) = error(report)?;
    let status_raw = match status.get("name").and_then(Value::as_str) {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => format!("{group_id}/{status_id}"),
    };
    Ok(Receipt {
        provider_message_id: message_id.to_owned(),
        client_ref: Some(message_id.to_owned()),
        status_raw,
        status: delivery(group_id, status_id),
        error_code,
        permanent,
        done_at: report
            .get("doneAt")
            .and_then(Value::as_str)
            .and_then(done_at),
        cost: cost(report),
        dedupe_key: format!("infobip:{message_id}:{status_id}:{error_id}"),
        payload: without_number(report),
    })
}

/// The report as stored: its recipient (`to`) kept masked, since matching needs only the ids.
fn without_number(report: &Value) -> Value {
    let mut stored = report.clone();
    if let Some(to) = stored.get_mut("to")
        && let Some(number) = to.as_str()
    {
        *to = Value::String(mask(number));
    }
    stored
}

/// The error id (0 when there is no error object), when it is not 0 its name (else id), and
/// whether Infobip marks it `permanent`.
fn error(report: &Value) -> Result<(i64, Option<String>, bool), ReceiptError> {
    let Some(error) = report.get("error").filter(|e| !e.is_null()) else {
        return Ok((0, None, false));
    };
    let id = integer(error, "id", "error.id")?;
    if id == 0 {
        return Ok((0, None, false));
    }
    let code = match error.get("name").and_then(Value::as_str) {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => id.to_string(),
    };
    let permanent = error
        .get("permanent")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok((id, Some(code), permanent))
}

/// `doneAt` (`2025-01-01T14:00:04.000+0000`) in UTC; `None` when it does not parse.
fn done_at(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z")
        .ok()
        .map(|at| at.with_timezone(&Utc))
}

/// `price.pricePerMessage` × `messageCount` (v2 `smsCount`, default 1) in `price.currency`;
/// `None` unless both are there and the currency is a three-letter code.
fn cost(report: &Value) -> Option<Cost> {
    let price = report.get("price")?;
    let currency = price.get("currency")?.as_str()?;
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_alphabetic()) {
        return None;
    }
    let per_message = match price.get("pricePerMessage")? {
        Value::Number(amount) => parse_micros(&amount.to_string())?,
        Value::String(amount) => parse_micros(amount)?,
        _ => return None,
    };
    let count = ["messageCount", "smsCount"]
        .iter()
        .find_map(|key| report.get(*key).and_then(Value::as_u64))
        .map_or(Some(1), |count| i64::try_from(count).ok())?;
    Some(Cost {
        micros: per_message.checked_mul(count)?,
        currency: currency.to_ascii_uppercase(),
    })
}

/// A field that must be there and not null.
fn present<'a>(object: &'a Value, key: &'static str) -> Result<&'a Value, ReceiptError> {
    object
        .get(key)
        .filter(|value| !value.is_null())
        .ok_or(ReceiptError::Missing(key))
}

/// A non-empty string field.
fn text<'a>(object: &'a Value, key: &'static str) -> Result<&'a str, ReceiptError> {
    match present(object, key)?.as_str() {
        Some("") => Err(ReceiptError::Missing(key)),
        Some(text) => Ok(text),
        None => Err(ReceiptError::Malformed(format!("{key} is not a string"))),
    }
}

/// An integer field of `object`, called `name` in errors.
fn integer(object: &Value, key: &str, name: &'static str) -> Result<i64, ReceiptError> {
    match object.get(key).filter(|value| !value.is_null()) {
        None => Err(ReceiptError::Missing(name)),
        Some(value) => value
            .as_i64()
            .ok_or_else(|| ReceiptError::Malformed(format!("{name} is not an integer"))),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;

    const EXAMPLE: &str = r#"{"results":[{"bulkId":"BULK-1","messageId":"att_01","to":"8801712345678","sender":"Glamora",
 "sentAt":"2025-01-01T14:00:00.000+0000","doneAt":"2025-01-01T14:00:04.000+0000","messageCount":1,
 "mccMnc":"47001","callbackData":"attempt=att_01","price":{"pricePerMessage":0.0301,"currency":"EUR"},
 "status":{"groupId":3,"groupName":"DELIVERED","id":5,"name":"DELIVERED_TO_HANDSET","description":"Message delivered to handset"},
 "error":{"groupId":0,"groupName":"OK","id":0,"name":"NO_ERROR","description":"No Error","permanent":false}}]}"#;

    fn example_report() -> Value {
        let batch: Value = serde_json::from_str(EXAMPLE).unwrap();
        batch["results"][0].clone()
    }

    fn batch_of(reports: Vec<Value>) -> Vec<u8> {
        json!({ "results": reports }).to_string().into_bytes()
    }

    fn parse_one(report: Value) -> Receipt {
        let mut receipts = parse(&batch_of(vec![report])).unwrap();
        assert_eq!(receipts.len(), 1);
        receipts.remove(0)
    }

    #[test]
    fn parses_the_documented_example() {
        let receipts = parse(EXAMPLE.as_bytes()).unwrap();
        let expected = Receipt {
            provider_message_id: "att_01".into(),
            client_ref: Some("att_01".into()),
            status_raw: "DELIVERED_TO_HANDSET".into(),
            status: Delivery::Delivered,
            error_code: None,
            permanent: false,
            done_at: Some(Utc.with_ymd_and_hms(2025, 1, 1, 14, 0, 4).unwrap()),
            cost: Some(Cost {
                micros: 30_100,
                currency: "EUR".into(),
            }),
            dedupe_key: "infobip:att_01:5:0".into(),
            payload: {
                let mut stored = example_report();
                stored["to"] = json!("8801•••••••78");
                stored
            },
        };
        assert_eq!(receipts, vec![expected]);
    }

    #[test]
    fn maps_every_status() {
        let table = [
            ((1, 26), Delivery::Queued),
            ((1, 7), Delivery::Enroute),
            ((1, 3), Delivery::Enroute),
            ((0, 0), Delivery::Enroute),
            ((2, 9), Delivery::Undelivered),
            ((2, 4), Delivery::Undelivered),
            ((2, 31), Delivery::Undelivered),
            ((3, 5), Delivery::Delivered),
            ((3, 2), Delivery::Delivered),
            ((4, 15), Delivery::Expired),
            ((4, 29), Delivery::Unknown),
            ((4, 87), Delivery::Expired),
            ((5, 8), Delivery::Failed),
            ((5, 20), Delivery::Failed),
            ((5, 87), Delivery::Failed),
            ((6, 5), Delivery::Unknown),
            ((-1, 26), Delivery::Unknown),
        ];
        for ((group, id), expected) in table {
            assert_eq!(delivery(group, id), expected, "{group}/{id}");
        }
    }

    #[test]
    fn reports_errors_by_name_or_id() {
        let mut report = example_report();
        report["status"] = json!({"groupId": 2, "id": 9});
        report["error"] =
            json!({"groupId": 1, "id": 629, "name": "EC_DEST_ADDRESS_UNABLE_TO_RECEIVE_SMS"});
        let receipt = parse_one(report.clone());
        assert_eq!(receipt.status, Delivery::Undelivered);
        assert_eq!(receipt.status_raw, "2/9");
        assert_eq!(
            receipt.error_code.as_deref(),
            Some("EC_DEST_ADDRESS_UNABLE_TO_RECEIVE_SMS")
        );
        assert_eq!(receipt.dedupe_key, "infobip:att_01:9:629");
        report["error"] = json!({"id": 34, "name": ""});
        assert_eq!(parse_one(report.clone()).error_code.as_deref(), Some("34"));
        report["error"] = Value::Null;
        let receipt = parse_one(report);
        assert_eq!(
            (receipt.error_code, receipt.dedupe_key),
            (None, "infobip:att_01:9:0".into())
        );
    }

    #[test]
    fn cost_multiplies_parts_exactly() {
        let cases = [
            (
                json!({"messageCount": 3}),
                json!(0.0301),
                "EUR",
                Some(90_300),
            ),
            (json!({"smsCount": 2}), json!(0.0301), "EUR", Some(60_200)),
            (json!({}), json!("0.0333"), "usd", Some(33_300)),
            (json!({"messageCount": 1}), json!(0.0301), "EURO", None),
            (json!({"messageCount": 1}), json!(null), "EUR", None),
            (json!({"messageCount": 1}), json!(true), "EUR", None),
        ];
        for (counts, per_message, currency, micros) in cases {
            let mut report = example_report();
            let object = report.as_object_mut().unwrap();
            object.remove("messageCount");
            object.extend(counts.as_object().unwrap().clone());
            object.insert(
                "price".into(),
                json!({"pricePerMessage": per_message, "currency": currency}),
            );
            let cost = parse_one(report).cost;
            assert_eq!(
                cost.as_ref().map(|c| c.micros),
                micros,
                "{per_message} {currency}"
            );
            if let Some(cost) = cost {
                assert_eq!(cost.currency, currency.to_ascii_uppercase());
            }
        }
        let mut report = example_report();
        report.as_object_mut().unwrap().remove("price");
        assert_eq!(parse_one(report).cost, None);
    }

    #[test]
    fn done_at_is_optional_and_lenient() {
        let stamp = |at| Some(Utc.with_ymd_and_hms(2025, 1, 1, 14, 0, at).unwrap());
        assert_eq!(done_at("2025-01-01T14:00:04.000+0000"), stamp(4));
        assert_eq!(done_at("2025-01-01T20:00:05.000+0600"), stamp(5));
        assert_eq!(done_at("2025-01-01T14:00:06+0000"), stamp(6));
        assert_eq!(done_at("2025-01-01T14:00:04.000"), None);
        assert_eq!(done_at("yesterday"), None);
        let mut report = example_report();
        report["doneAt"] = json!("not a time");
        assert_eq!(parse_one(report).done_at, None);
    }

    #[test]
    fn status_name_is_optional() {
        let mut report = example_report();
        report["status"] = json!({"groupId": 1, "id": 26});
        let receipt = parse_one(report);
        assert_eq!(
            (receipt.status_raw.as_str(), receipt.status),
            ("1/26", Delivery::Queued)
        );
    }

    #[test]
    fn missing_fields_refuse_the_batch() {
        let cases: [(&str, Value, &str); 7] = [
            ("messageId", Value::Null, "receipt lacks messageId"),
            ("messageId", json!(""), "receipt lacks messageId"),
            ("messageId", json!(7), "messageId is not a string"),
            ("status", Value::Null, "receipt lacks status"),
            ("status", json!({"id": 5}), "receipt lacks status.groupId"),
            (
                "status",
                json!({"groupId": 3, "id": "5"}),
                "status.id is not an integer",
            ),
            ("error", json!({"name": "X"}), "receipt lacks error.id"),
        ];
        for (key, value, why) in cases {
            let mut report = example_report();
            report[key] = value;
            let expected = format!("results[0]: {why}");
            assert_eq!(
                parse(&batch_of(vec![report])),
                Err(ReceiptError::Malformed(expected)),
                "{key}"
            );
        }
    }

    #[test]
    fn one_bad_report_refuses_the_batch() {
        let mut bad = example_report();
        bad.as_object_mut().unwrap().remove("status");
        let body = batch_of(vec![example_report(), example_report(), bad]);
        assert_eq!(
            parse(&body),
            Err(ReceiptError::Malformed(
                "results[2]: receipt lacks status".into()
            ))
        );
        let body = batch_of(vec![example_report(), json!("text")]);
        assert_eq!(
            parse(&body),
            Err(ReceiptError::Malformed("results[1]: not an object".into()))
        );
    }

    #[test]
    fn malformed_bodies_are_refused() {
        let bodies: [&[u8]; 4] = [
            b"not json",
            b"[]",
            br#"{"results":{}}"#,
            br#"{"reports":[]}"#,
        ];
        for body in bodies {
            assert!(
                matches!(parse(body), Err(ReceiptError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(parse(br#"{"results":[]}"#), Ok(vec![]));
    }

    #[test]
    fn pulled_reports_are_read_one_by_one() {
        let good = json!({"messageId": "a", "status": {"groupId": 3, "id": 5}});
        let bad = json!({"messageId": "b"});
        let body = json!({"results": [good, bad, good]}).to_string();
        let (receipts, errors) = parse_lenient(body.as_bytes()).unwrap();
        assert_eq!(receipts.len(), 2);
        assert_eq!(
            errors,
            [ReceiptError::Malformed(
                "results[1]: receipt lacks status".into()
            )]
        );
        assert!(
            parse(body.as_bytes()).is_err(),
            "a webhook batch is all or nothing"
        );
        assert!(parse_lenient(b"[]").is_err());
    }
}
