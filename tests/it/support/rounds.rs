//! A relay's rounds by hand: how a claimed message's round ended, to record without running a
//! relay.

use sms_relay::{
    providers::AttemptRecord,
    store::{ClaimedMessage, Disposition, Finish},
};
use uuid::Uuid;

/// A round of `id` in which every provider failed ("provider down"), asking for a retry.
pub fn failed_round(id: Uuid, round: i32) -> Finish {
    Finish {
        id,
        round,
        disposition: Disposition::Retry,
        delay_ms: 10,
        reason: Some("provider down".into()),
        template: "otp".into(),
        segments: None,
        attempts: Vec::new(),
        resend_reason: None,
        country: "BD".into(),
        operator: "Grameenphone",
    }
}

/// A round of the claimed message `m` that a provider accepted, with its provider calls.
pub fn sent_round(m: &ClaimedMessage, attempts: Vec<AttemptRecord>) -> Finish {
    Finish {
        id: m.id,
        round: m.round,
        disposition: Disposition::Sent,
        delay_ms: 0,
        reason: None,
        template: "otp".into(),
        segments: Some(sms_relay::domain::segments::count("x")),
        attempts,
        resend_reason: None,
        country: "BD".into(),
        operator: "Grameenphone",
    }
}
