//! A relay's rounds by hand, without running a relay: claiming due messages (held by the test's
//! own claim session) and recording how their rounds ended, as relay [`RELAY`], and making waiting
//! messages due.

use chrono::Utc;
use sms_relay::{
    providers::{AttemptRecord, Outcome},
    store::{ClaimedMessage, Disposition, Finish},
};
use uuid::Uuid;

use super::TestApp;

/// The relay id rounds by hand are claimed and recorded as.
pub const RELAY: &str = "r";

impl TestApp {
    /// Claims up to `n` due messages; they stay held until their rounds are recorded.
    pub async fn claim(&self, n: u32) -> Vec<ClaimedMessage> {
        let sending = self.hands_sending.lock().unwrap().clone();
        let claimed = self.hands.claim(n, &sending, &[]).await.unwrap().messages;
        (self.hands_sending.lock().unwrap()).extend(claimed.iter().map(|m| m.seq));
        claimed
    }

    /// Records `rounds` as [`RELAY`] and gives their holds back, as its completer and its next
    /// claim do.
    pub async fn complete(&self, rounds: &[Finish]) {
        self.store()
            .complete(rounds, RELAY, 0, false)
            .await
            .unwrap();
        let ids: Vec<Uuid> = rounds.iter().map(|r| r.id).collect();
        let seqs: Vec<i64> = sqlx::query_scalar("SELECT seq FROM sms_outbox WHERE id = ANY ($1)")
            .bind(&ids)
            .fetch_all(&self.pool)
            .await
            .unwrap();
        self.hands_sending
            .lock()
            .unwrap()
            .retain(|seq| !seqs.contains(seq));
        self.hands.claim(0, &[], &seqs).await.unwrap();
    }

    /// Makes every waiting message due now, as if its retry time had come.
    pub async fn make_due(&self) {
        sqlx::query("UPDATE sms_outbox SET next_attempt_at = now()")
            .execute(&self.pool)
            .await
            .unwrap();
    }
}

/// A round of the claimed message `m` in which every provider failed ("provider down"), asking
/// for a retry.
pub fn failed_round(m: &ClaimedMessage) -> Finish {
    Finish {
        disposition: Disposition::Retry,
        delay_ms: 10,
        reason: Some("provider down".into()),
        segments: None,
        ..sent_round(m, Vec::new())
    }
}

/// A round of the claimed message `m` that a provider accepted, with its provider calls.
pub fn sent_round(m: &ClaimedMessage, attempts: Vec<AttemptRecord>) -> Finish {
    Finish {
        id: m.id,
        round: m.round,
        holder: m.holder(),
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

/// The end of `m`'s round without a provider call, as `disposition`, for the reason "test".
pub fn ended_round(m: &ClaimedMessage, disposition: Disposition) -> Finish {
    Finish {
        disposition,
        reason: Some("test".into()),
        segments: None,
        ..sent_round(m, Vec::new())
    }
}

/// A call of `m`'s round to the provider `sim` that was accepted, as its first step.
pub fn accepted_call(m: &ClaimedMessage) -> AttemptRecord {
    AttemptRecord {
        provider: "sim".into(),
        chain_step: 1,
        client_ref: format!("{}r{}s1", m.seq, m.round),
        started_at: Utc::now(),
        finished_at: Utc::now(),
        outcome: Outcome::Accepted,
        http_status: Some(200),
        error_code: None,
        error_message: None,
        provider_message_id: Some(format!("SM{}r{}", m.seq, m.round)),
        cost: None,
    }
}
