//! Delivery receipts as every provider's parser produces them: one canonical [`Delivery`] status
//! per receipt, whatever words the provider uses.

use chrono::{DateTime, Utc};

/// Canonical delivery status, stored as `sms_attempts.delivery_status` (`sms_delivery` in SQL).
///
/// `Queued` and `Enroute` are intermediate; the others are final. `Unknown` is final but weak: a
/// later final receipt replaces it (it is also what an attempt without any receipt becomes after
/// `receipts.unknown_after_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Delivery {
    /// The provider holds it and has not handed it to a carrier yet.
    Queued,
    /// Handed to the carrier (or buffered there); no handset report yet.
    Enroute,
    /// The carrier reports it delivered.
    Delivered,
    /// The carrier reports it not delivered (phone off, unreachable, filtered).
    Undelivered,
    /// The provider refused or dropped it before any carrier had it.
    Failed,
    /// Its validity ran out before it could be delivered.
    Expired,
    /// No one knows: the provider says so, or no final receipt came in time.
    Unknown,
}

impl Delivery {
    /// The SQL label.
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Queued => "queued",
            Delivery::Enroute => "enroute",
            Delivery::Delivered => "delivered",
            Delivery::Undelivered => "undelivered",
            Delivery::Failed => "failed",
            Delivery::Expired => "expired",
            Delivery::Unknown => "unknown",
        }
    }

    /// Whether the code did not arrive and never will through this attempt, so a resend through
    /// another provider may help.
    pub fn calls_for_resend(self) -> bool {
        matches!(
            self,
            Delivery::Undelivered | Delivery::Failed | Delivery::Expired
        )
    }
}

/// One receipt, parsed from a webhook or a report API.
#[derive(Debug, Clone, PartialEq)]
pub struct Receipt {
    /// The provider's message id (Twilio `MessageSid`, Vonage `messageId`, Infobip `messageId`,
    /// Alpha SMS `request_id`).
    pub provider_message_id: String,
    /// Our client reference, where the receipt echoes it (Vonage `client-ref`, Infobip
    /// `messageId`, which we set to our reference).
    pub client_ref: Option<String>,
    /// The provider's own status word or code, as received.
    pub status_raw: String,
    /// [`Self::status_raw`] mapped to the canonical status.
    pub status: Delivery,
    /// The provider's receipt error code, if the receipt carries one other than "no error".
    pub error_code: Option<String>,
    /// The error says the number itself cannot receive (opted out, not in service, barred): no
    /// other provider will do better, so no resend.
    pub permanent: bool,
    /// When the carrier finished with the message, where the receipt says so with a time zone.
    pub done_at: Option<DateTime<Utc>>,
    /// Price the receipt reports for the whole message, if any.
    pub cost: Option<super::Cost>,
    /// Identifies this receipt among repeats: the same key twice is one receipt.
    pub dedupe_key: String,
    /// The receipt as received, for audit (`sms_receipts.payload`).
    pub payload: serde_json::Value,
}

/// Why a receipt payload was refused. Never worth retrying: the same bytes fail the same way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// A field the provider always sends is missing or empty.
    #[error("receipt lacks {0}")]
    Missing(&'static str),
    /// The body is not the provider's documented format.
    #[error("receipt is malformed: {0}")]
    Malformed(String),
}
