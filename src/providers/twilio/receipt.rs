//! Twilio's StatusCallback: a form POST per status transition, signed with the auth token.

use std::any::Any;

use super::{TwilioSettings, signature};
use crate::providers::{
    Delivery, KindSettings, Receipt, ReceiptError,
    webhook::{Webhook, WebhookError, WebhookRequest, field, form_pairs, header, params_json},
};

/// Twilio's receipt webhook: a form POST signed with the auth token of one of the entries.
pub const WEBHOOK: Webhook = Webhook {
    kind: "twilio",
    accepts_get: false,
    authenticate: |_, headers| match header(headers, SIGNATURE_HEADER) {
        Some(_) => Ok(()),
        None => Err(WebhookError::Unauthenticated("X-Twilio-Signature missing")),
    },
    receive,
    has_credentials: |_| true,
};

/// The header Twilio signs its requests in.
const SIGNATURE_HEADER: &str = "x-twilio-signature";

/// Checks `X-Twilio-Signature` over the URL Twilio called and the form, with each Twilio entry's
/// auth token, then parses the form.
fn receive(
    entries: &[&dyn KindSettings],
    request: &WebhookRequest<'_>,
) -> Result<Vec<Receipt>, WebhookError> {
    let Some(given) = request.header(SIGNATURE_HEADER) else {
        return Err(WebhookError::Unauthenticated("X-Twilio-Signature missing"));
    };
    let Some(url) = &request.url else {
        return Err(WebhookError::Forbidden("cannot tell the signed URL"));
    };
    let params = form_pairs(request.body);
    let signed = entries
        .iter()
        .filter_map(|entry| (*entry as &dyn Any).downcast_ref::<TwilioSettings>())
        .map(|s| &s.auth_token)
        .any(|token| signature::twilio_valid(token.expose(), url, &params, given));
    if !signed {
        return Err(WebhookError::Forbidden("signature does not match"));
    }
    Ok(vec![parse(&params)?])
}

/// Parses a StatusCallback form into a [`Receipt`].
pub fn parse(params: &[(String, String)]) -> Result<Receipt, ReceiptError> {
    let sid = field(params, "MessageSid")
        .or_else(|| field(params, "SmsSid"))
        .ok_or(ReceiptError::Missing("MessageSid"))?;
    let status = field(params, "MessageStatus")
        .or_else(|| field(params, "SmsStatus"))
        .ok_or(ReceiptError::Missing("MessageStatus"))?;
    let error_code = field(params, "ErrorCode").filter(|code| *code != "0");
    Ok(Receipt {
        provider_message_id: sid.to_owned(),
        client_ref: None,
        status_raw: status.to_owned(),
        status: delivery(status),
        error_code: error_code.map(str::to_owned),
        // Opted out (STOP), number not in service, landline or unreachable carrier.
        permanent: matches!(error_code, Some("21610" | "30005" | "30006")),
        done_at: None,
        cost: None,
        dedupe_key: format!("twilio:{sid}:{status}:{}", error_code.unwrap_or_default()),
        // The recipient is kept masked: matching needs only the message id.
        payload: params_json(params, &[], &["To"]),
    })
}

/// Maps a Twilio message status to the canonical status; case-insensitive.
pub fn delivery(status: &str) -> Delivery {
    match status.to_ascii_lowercase().as_str() {
        "queued" | "accepted" | "scheduled" | "sending" => Delivery::Queued,
        "sent" => Delivery::Enroute,
        "delivered" | "read" => Delivery::Delivered,
        "undelivered" | "partially_delivered" => Delivery::Undelivered,
        "failed" | "canceled" => Delivery::Failed,
        _ => Delivery::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::providers::examples::{TWILIO_SID as SID, pairs, twilio_status_callback as example};
    use crate::providers::webhook::params_json;

    #[test]
    fn parses_the_documented_example() {
        let receipt = parse(&example()).unwrap();
        let expected = Receipt {
            provider_message_id: SID.into(),
            client_ref: None,
            status_raw: "undelivered".into(),
            status: Delivery::Undelivered,
            error_code: Some("30003".into()),
            permanent: false,
            done_at: None,
            cost: None,
            dedupe_key: format!("twilio:{SID}:undelivered:30003"),
            payload: json!({
                "MessageSid": SID,
                "SmsSid": SID,
                "MessageStatus": "undelivered",
                "SmsStatus": "undelivered",
                "ErrorCode": "30003",
                "To": "+880••••••••78",
                "From": "Glamora",
                "AccountSid": "AC00000000000000000000000000000001",
                "ApiVersion": "2010-04-01",
                "RawDlrDoneDate": "2501011400",
            }),
        };
        assert_eq!(receipt, expected);
    }

    #[test]
    fn maps_every_status() {
        let table = [
            ("queued", Delivery::Queued),
            ("accepted", Delivery::Queued),
            ("scheduled", Delivery::Queued),
            ("sending", Delivery::Queued),
            ("sent", Delivery::Enroute),
            ("delivered", Delivery::Delivered),
            ("read", Delivery::Delivered),
            ("undelivered", Delivery::Undelivered),
            ("partially_delivered", Delivery::Undelivered),
            ("failed", Delivery::Failed),
            ("canceled", Delivery::Failed),
            ("receiving", Delivery::Unknown),
            ("received", Delivery::Unknown),
            ("bogus", Delivery::Unknown),
            ("", Delivery::Unknown),
            ("DELIVERED", Delivery::Delivered),
        ];
        for (status, expected) in table {
            assert_eq!(delivery(status), expected, "{status}");
        }
    }

    #[test]
    fn falls_back_to_the_sms_fields() {
        let params = pairs(&[("MessageSid", ""), ("SmsSid", "SM1"), ("SmsStatus", "sent")]);
        let receipt = parse(&params).unwrap();
        assert_eq!(receipt.provider_message_id, "SM1");
        assert_eq!(receipt.status, Delivery::Enroute);
        assert_eq!(receipt.dedupe_key, "twilio:SM1:sent:");
    }

    #[test]
    fn requires_sid_and_status() {
        let no_sid = pairs(&[("MessageStatus", "sent"), ("SmsSid", "")]);
        assert_eq!(parse(&no_sid), Err(ReceiptError::Missing("MessageSid")));
        let no_status = pairs(&[("MessageSid", "SM1"), ("MessageStatus", "")]);
        assert_eq!(
            parse(&no_status),
            Err(ReceiptError::Missing("MessageStatus"))
        );
        assert_eq!(parse(&[]), Err(ReceiptError::Missing("MessageSid")));
    }

    #[test]
    fn zero_or_empty_error_code_is_no_error() {
        for code in ["0", ""] {
            let params = pairs(&[
                ("MessageSid", "SM1"),
                ("MessageStatus", "delivered"),
                ("ErrorCode", code),
            ]);
            let receipt = parse(&params).unwrap();
            assert_eq!(receipt.error_code, None, "{code}");
            assert_eq!(receipt.dedupe_key, "twilio:SM1:delivered:");
        }
    }

    #[test]
    fn repeated_keys_become_arrays() {
        let params = pairs(&[("A", "1"), ("B", "2"), ("A", "3"), ("A", "4"), ("C", "5")]);
        assert_eq!(
            params_json(&params, &["C"], &[]),
            json!({"A": ["1", "3", "4"], "B": "2"})
        );
    }
}
