//! Vonage's delivery receipt: a GET query, a POST form or a flat POST JSON object, one per
//! message part, signed with the account's signature secret.

use std::any::Any;

use chrono::Utc;
use serde_json::Value;

use super::{VonageSettings, signature};
use crate::providers::{
    Delivery, KindSettings, Receipt, ReceiptError,
    webhook::{
        Webhook, WebhookError, WebhookRequest, authenticated_by_body, field, form_pairs,
        params_json,
    },
};

/// Vonage's receipt webhook: GET or POST, signed by one of the entries' signature secrets.
pub const WEBHOOK: Webhook = Webhook {
    kind: "vonage",
    accepts_get: true,
    authenticate: authenticated_by_body,
    receive,
    has_credentials: |entry| settings(entry).is_some_and(|s| s.signature_secret.is_some()),
};

/// Reads the params (JSON body, form body, or the query string of a GET), checks `sig` with each
/// Vonage entry's signature secret and method, then parses them.
fn receive(
    entries: &[&dyn KindSettings],
    request: &WebhookRequest<'_>,
) -> Result<Vec<Receipt>, WebhookError> {
    let json = request
        .header("content-type")
        .is_some_and(|t| t.starts_with("application/json"));
    let params = if json {
        params_from_json(request.body)?
    } else if request.body.is_empty() {
        form_pairs(request.query.unwrap_or_default().as_bytes())
    } else {
        form_pairs(request.body)
    };
    if !params.iter().any(|(k, _)| k == "sig") {
        return Err(WebhookError::Unauthenticated("sig missing"));
    }
    let signed = entries
        .iter()
        .filter_map(|entry| settings(*entry))
        .filter_map(|s| Some((s.signature_secret.as_ref()?, s.signature_method)))
        .any(|(secret, method)| signature::vonage_valid(method, secret.expose(), &params));
    if !signed {
        return Err(WebhookError::Forbidden("signature does not match"));
    }
    if !fresh(&params, Utc::now().timestamp()) {
        return Err(WebhookError::Forbidden(
            "timestamp outside the replay window",
        ));
    }
    Ok(vec![parse(&params)?])
}

/// How far a signed receipt's `timestamp` (Unix seconds, part of what is signed) may be from our
/// clock: a captured receipt replayed later is refused.
const REPLAY_WINDOW_S: i64 = 300;

/// Whether `params` carry a `timestamp` within [`REPLAY_WINDOW_S`] of `now`.
fn fresh(params: &[(String, String)], now: i64) -> bool {
    field(params, "timestamp")
        .and_then(|t| t.parse::<i64>().ok())
        .is_some_and(|t| t.abs_diff(now) <= REPLAY_WINDOW_S.unsigned_abs())
}

/// Keys left out of the stored payload: the credentials and the signing noise.
const NOT_STORED: [&str; 4] = ["sig", "api-key", "nonce", "timestamp"];

/// Parses a receipt's params (query, form, or [`params_from_json`]) into a [`Receipt`].
pub fn parse(params: &[(String, String)]) -> Result<Receipt, ReceiptError> {
    let message_id = field(params, "messageId").ok_or(ReceiptError::Missing("messageId"))?;
    let status = field(params, "status").ok_or(ReceiptError::Missing("status"))?;
    let err_code = field(params, "err-code").unwrap_or_default();
    Ok(Receipt {
        provider_message_id: message_id.to_owned(),
        client_ref: field(params, "client-ref").map(str::to_owned),
        status_raw: status.to_owned(),
        status: delivery(status),
        error_code: (err_code != "0" && !err_code.is_empty()).then(|| err_code.to_owned()),
        // Absent subscriber (permanent), barred, opted out, age restriction, blocked by carrier.
        permanent: matches!(err_code, "3" | "4" | "9" | "13" | "14"),
        done_at: None,
        cost: None,
        dedupe_key: format!("vonage:{message_id}:{status}:{err_code}"),
        // The recipient is kept masked: matching needs only the message id.
        payload: params_json(params, &NOT_STORED, &["msisdn"]),
    })
}

/// `entry`'s settings if it is a Vonage entry.
fn settings(entry: &dyn KindSettings) -> Option<&VonageSettings> {
    (entry as &dyn Any).downcast_ref()
}

/// A POST JSON receipt's flat object as params, so the signature can be checked before
/// parsing: strings as they are, numbers and booleans as their JSON text; anything else
/// (not an object, null, nested values) is [`ReceiptError::Malformed`].
pub fn params_from_json(body: &[u8]) -> Result<Vec<(String, String)>, ReceiptError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ReceiptError::Malformed(format!("not JSON: {e}")))?;
    let Value::Object(object) = value else {
        return Err(ReceiptError::Malformed("not a JSON object".into()));
    };
    object
        .into_iter()
        .map(|(key, value)| match value {
            Value::String(text) => Ok((key, text)),
            Value::Number(_) | Value::Bool(_) => Ok((key, value.to_string())),
            _ => Err(ReceiptError::Malformed(format!("{key} is not a scalar"))),
        })
        .collect()
}

/// Maps a Vonage DLR status to the canonical status; case-insensitive.
pub fn delivery(status: &str) -> Delivery {
    match status.to_ascii_lowercase().as_str() {
        "delivered" => Delivery::Delivered,
        "expired" => Delivery::Expired,
        "failed" => Delivery::Undelivered,
        "rejected" => Delivery::Failed,
        "accepted" | "buffered" => Delivery::Enroute,
        _ => Delivery::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::providers::examples::{pairs, vonage_dlr as example};

    #[test]
    fn parses_the_documented_get_example() {
        let receipt = parse(&example()).unwrap();
        let expected = Receipt {
            provider_message_id: "0A0000001234567B".into(),
            client_ref: None,
            status_raw: "delivered".into(),
            status: Delivery::Delivered,
            error_code: None,
            permanent: false,
            done_at: None,
            cost: None,
            dedupe_key: "vonage:0A0000001234567B:delivered:0".into(),
            payload: json!({
                "msisdn": "8801•••••••78",
                "to": "Glamora",
                "network-code": "47001",
                "messageId": "0A0000001234567B",
                "price": "0.03330000",
                "status": "delivered",
                "scts": "2501011400",
                "err-code": "0",
                "message-timestamp": "2025-01-01 14:00:05",
            }),
        };
        assert_eq!(receipt, expected);
    }

    #[test]
    fn keeps_error_and_client_ref_and_drops_signing_keys() {
        let mut params = example();
        params[5].1 = "failed".into();
        params[7].1 = "2".into();
        params.extend(pairs(&[
            ("client-ref", "att_01"),
            ("timestamp", "1735740005"),
            ("nonce", "n"),
            ("sig", "abc"),
        ]));
        let receipt = parse(&params).unwrap();
        assert_eq!(receipt.status, Delivery::Undelivered);
        assert_eq!(receipt.error_code.as_deref(), Some("2"));
        assert_eq!(receipt.client_ref.as_deref(), Some("att_01"));
        assert_eq!(receipt.dedupe_key, "vonage:0A0000001234567B:failed:2");
        let payload = receipt.payload.as_object().unwrap();
        assert_eq!(payload["client-ref"], "att_01");
        for key in NOT_STORED {
            assert!(!payload.contains_key(key), "{key}");
        }
    }

    #[test]
    fn maps_every_status() {
        let table = [
            ("delivered", Delivery::Delivered),
            ("expired", Delivery::Expired),
            ("failed", Delivery::Undelivered),
            ("rejected", Delivery::Failed),
            ("accepted", Delivery::Enroute),
            ("buffered", Delivery::Enroute),
            ("unknown", Delivery::Unknown),
            ("bogus", Delivery::Unknown),
            ("Delivered", Delivery::Delivered),
        ];
        for (status, expected) in table {
            assert_eq!(delivery(status), expected, "{status}");
        }
    }

    #[test]
    fn requires_message_id_and_status() {
        let no_id = pairs(&[("status", "delivered"), ("messageId", "")]);
        assert_eq!(parse(&no_id), Err(ReceiptError::Missing("messageId")));
        let no_status = pairs(&[("messageId", "X")]);
        assert_eq!(parse(&no_status), Err(ReceiptError::Missing("status")));
    }

    #[test]
    fn missing_err_code_is_no_error() {
        let params = pairs(&[
            ("messageId", "X"),
            ("status", "buffered"),
            ("client-ref", ""),
        ]);
        let receipt = parse(&params).unwrap();
        assert_eq!(receipt.error_code, None);
        assert_eq!(receipt.client_ref, None);
        assert_eq!(receipt.dedupe_key, "vonage:X:buffered:");
    }

    #[test]
    fn json_bodies_become_params() {
        let body =
            br#"{"messageId":"X","status":"delivered","err-code":0,"price":"0.0333","flag":true}"#;
        let mut params = params_from_json(body).unwrap();
        params.sort();
        let expected = pairs(&[
            ("err-code", "0"),
            ("flag", "true"),
            ("messageId", "X"),
            ("price", "0.0333"),
            ("status", "delivered"),
        ]);
        assert_eq!(params, expected);
        assert_eq!(parse(&params).unwrap().error_code, None);
    }

    #[test]
    fn malformed_json_is_refused() {
        let bodies: [&[u8]; 5] = [
            b"not json",
            b"[1,2]",
            br#"{"messageId":null}"#,
            br#"{"messageId":"X","nested":{"a":1}}"#,
            br#"{"messageId":"X","list":[1]}"#,
        ];
        for body in bodies {
            assert!(
                matches!(params_from_json(body), Err(ReceiptError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn only_a_recent_timestamp_is_fresh() {
        let now = 1_735_740_005;
        for (timestamp, fresh_now) in [
            (Some("1735740005"), true),
            (Some("1735739705"), true),
            (Some("1735740305"), true),
            (Some("1735739704"), false),
            (Some("1735740306"), false),
            (Some("not a number"), false),
            (Some(""), false),
            (None, false),
        ] {
            let params = match timestamp {
                Some(t) => pairs(&[("messageId", "X"), ("timestamp", t)]),
                None => pairs(&[("messageId", "X")]),
            };
            assert_eq!(fresh(&params, now), fresh_now, "{timestamp:?}");
        }
    }
}
