//! What happened to messages: a message's row, its provider calls (attempts) with their
//! receipts' verdicts, the stored receipts, and counts over the outbox.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::TestApp;

/// A message's row in `sms_outbox`, as far as the tests look at it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Message {
    pub state: String,
    pub last_error: Option<String>,
    /// Rounds finished so far (`attempts`).
    pub rounds: i32,
    /// Resends queued and not withdrawn.
    pub resends: i32,
    /// The attempt a waiting resend follows.
    pub resend_of: Option<i64>,
    pub resend_reason: Option<String>,
    pub sent_at: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
    pub next_attempt_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub superseded_by: Option<Uuid>,
}

/// One provider call of a message (a row of `sms_attempts`), with what receipts said of it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Attempt {
    pub id: i64,
    pub provider: String,
    /// The message's round (`attempt_number`).
    pub round: i32,
    /// The provider's place in the round (`chain_step`).
    pub step: i32,
    /// first, fallback, retry or resend.
    pub cause: Option<String>,
    pub resend_reason: Option<String>,
    pub outcome: String,
    pub http_status: Option<i16>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub provider_message_id: Option<String>,
    pub client_ref: Option<String>,
    pub template: String,
    pub relay_id: String,
    pub segments: i16,
    pub encoding: String,
    /// As text, e.g. `0.250000`.
    pub cost: Option<String>,
    pub currency: Option<String>,
    pub finished_at: DateTime<Utc>,
    pub latency_ms: f64,
    pub delivery_status: Option<String>,
    pub delivery_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// When a report API was last asked about it.
    pub receipt_checked_at: Option<DateTime<Utc>>,
}

/// A receipt as stored in `sms_receipts`: what it did.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredReceipt {
    /// applied, stale or unmatched.
    pub result: String,
    /// It put the message back for a resend.
    pub resent: bool,
}

const ATTEMPT: &str = "SELECT id, provider, attempt_number AS round, chain_step AS step, cause, \
    resend_reason, outcome::text AS outcome, http_status, error_code, error_message, \
    provider_message_id, client_ref, template, relay_id, segments, encoding, cost::text AS cost, \
    currency::text AS currency, finished_at, latency_ms, delivery_status::text AS delivery_status, \
    delivery_error, delivered_at, receipt_checked_at FROM sms_attempts";

/// Waiting messages missing from `sms_queue` or different there, and queue rows of messages that
/// are not waiting; then the messages per state.
const STATES: &str = r#"
SELECT (SELECT count(*)
          FROM (SELECT seq, id, priority, expires_at, next_attempt_at FROM sms_outbox WHERE state = 'pending') o
          FULL JOIN sms_queue q USING (seq)
         WHERE o.seq IS NULL OR q.seq IS NULL
            OR (o.id, o.priority, o.expires_at, o.next_attempt_at)
               IS DISTINCT FROM (q.id, q.priority, q.expires_at, q.next_attempt_at)),
       coalesce(array_agg(s.state), '{}'), coalesce(array_agg(s.n), '{}')
  FROM (SELECT state::text AS state, count(*) AS n FROM sms_outbox GROUP BY 1) s
"#;

impl TestApp {
    /// Message `id`'s row.
    pub async fn message(&self, id: Uuid) -> Message {
        sqlx::query_as(
            "SELECT state::text AS state, last_error, attempts AS rounds, resends, \
                    resend_of, resend_reason, sent_at, expires_at, next_attempt_at, finished_at, \
                    superseded_by \
               FROM sms_outbox WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    /// (state, last_error) of message `id`.
    pub async fn state_of(&self, id: Uuid) -> (String, Option<String>) {
        let m = self.message(id).await;
        (m.state, m.last_error)
    }

    /// Every provider call of message `id`, in order (round, then place in the round).
    pub async fn attempts(&self, id: Uuid) -> Vec<Attempt> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{ATTEMPT} WHERE message_id = $1 ORDER BY attempt_number, chain_step, id"
        )))
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }

    /// (provider, round, chain step, outcome) of every provider call of message `id`, in order.
    pub async fn attempts_of(&self, id: Uuid) -> Vec<(String, i32, i32, String)> {
        self.attempts(id)
            .await
            .into_iter()
            .map(|a| (a.provider, a.round, a.step, a.outcome))
            .collect()
    }

    /// Message `id`'s first provider call.
    pub async fn first_attempt(&self, id: Uuid) -> Attempt {
        self.attempts(id)
            .await
            .into_iter()
            .next()
            .expect("the message has an attempt")
    }

    /// The attempt whose row id is `attempt`.
    pub async fn attempt(&self, attempt: i64) -> Attempt {
        sqlx::query_as(sqlx::AssertSqlSafe(format!("{ATTEMPT} WHERE id = $1")))
            .bind(attempt)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Message `id`'s latest call that a provider accepted.
    pub async fn accepted_attempt(&self, id: Uuid) -> Attempt {
        self.attempts(id)
            .await
            .into_iter()
            .rfind(|a| a.outcome == "accepted")
            .expect("a provider accepted the message")
    }

    /// (delivery status, delivery error, whether delivered_at is set) of attempt `attempt`.
    pub async fn delivery_of(&self, attempt: i64) -> (Option<String>, Option<String>, bool) {
        let a = self.attempt(attempt).await;
        (
            a.delivery_status,
            a.delivery_error,
            a.delivered_at.is_some(),
        )
    }

    /// Every stored receipt, oldest first.
    pub async fn receipts(&self) -> Vec<StoredReceipt> {
        sqlx::query_as("SELECT result, resent FROM sms_receipts ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }

    /// The result (applied, stale, unmatched) of every stored receipt, oldest first.
    pub async fn receipt_results(&self) -> Vec<String> {
        self.receipts()
            .await
            .into_iter()
            .map(|r| r.result)
            .collect()
    }

    /// Messages per state. Read in one statement with a check that `sms_queue` holds exactly the
    /// waiting messages, as they are: every test that counts states also checks that the queue
    /// followed every change it made.
    pub async fn states(&self) -> HashMap<String, i64> {
        let (mismatched, states, counts): (i64, Vec<String>, Vec<i64>) =
            sqlx::query_as(STATES).fetch_one(&self.pool).await.unwrap();
        assert_eq!(mismatched, 0, "sms_queue differs from the waiting messages");
        states.into_iter().zip(counts).collect()
    }

    /// Asserts that `sms_queue` holds exactly the waiting messages, as they are.
    pub async fn assert_queue_follows_outbox(&self) {
        self.states().await;
    }

    /// Messages in the outbox, whatever their state.
    pub async fn message_count(&self) -> i64 {
        self.states().await.values().sum()
    }

    /// Messages still owed: pending (waiting, or being sent).
    pub async fn owed(&self) -> i64 {
        self.states().await.get("pending").copied().unwrap_or(0)
    }

    /// Messages some relay is sending right now (held by its claim session).
    pub async fn held(&self) -> i64 {
        sqlx::query_scalar("SELECT coalesce(sum(messages), 0)::int8 FROM sms_holds")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Messages not `sent`.
    pub async fn unsent(&self) -> i64 {
        let states = self.states().await;
        states
            .iter()
            .filter(|(state, _)| *state != "sent")
            .map(|(_, n)| n)
            .sum()
    }

    /// Provider calls recorded, for every message.
    pub async fn attempt_count(&self) -> i64 {
        self.count("SELECT count(*) FROM sms_attempts").await
    }

    /// Relays registered as idle and waiting for a wake-up.
    pub async fn sleeping_relays(&self) -> i64 {
        self.count("SELECT count(*) FROM sms_relay_sleepers").await
    }
}
