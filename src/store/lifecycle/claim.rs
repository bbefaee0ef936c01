//! Claiming due messages: one statement, SKIP LOCKED, lease, round + 1.

use std::time::Duration;

use uuid::Uuid;

use crate::store::{Result, Store};

/// A message this relay now holds until its lease runs out.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedMessage {
    /// `sms_outbox.id`.
    pub id: Uuid,
    /// `sms_outbox.seq`: short, unique, the base of the calls' client references.
    pub seq: i64,
    /// E.164 recipient.
    pub recipient: String,
    /// Template name.
    pub template: String,
    /// Template locale.
    pub locale: String,
    /// Template parameters as JSON text (they hold the code). Decoded per message by the relay, so
    /// one row the decoder cannot read fails alone instead of failing the whole claim.
    pub params: String,
    /// The template body, `None` if the template was deleted.
    pub body: Option<String>,
    /// The most parts the template allows one message, `None` if the template was deleted.
    pub max_parts: Option<i16>,
    /// This claim's round number (`sms_outbox.attempts` after the claim).
    pub round: i32,
    /// A newer message for the same recipient and purpose exists.
    pub superseded: bool,
    /// Validity left at claim time, by the database's clock, in milliseconds.
    pub remaining_ms: f64,
    /// Set when a receipt (or its absence) put this sent message back: why.
    pub resend_reason: Option<String>,
    /// The provider whose attempt was not delivered; the round starts with the next one.
    pub resend_skip: Option<String>,
}

/// Rows become claimable when due: waiting ones (new, or retry time reached) in priority then
/// deadline order through `sms_outbox_claim_idx`, then claimed ones whose lease ran out through
/// `sms_outbox_lease_idx` (the second runs only if the first left room). The `MATERIALIZED`
/// CTE keeps `LIMIT … FOR UPDATE SKIP LOCKED` from being flattened into the UPDATE, and
/// `id = ANY(ARRAY(…))` keeps the UPDATE a primary-key lookup under generic plans too (a join on
/// the CTE becomes a sequential scan when `LIMIT $1` is unknown). A re-claimed message (lease ran
/// out) for which a newer one was enqueued comes back `superseded`.
const CLAIM: &str = r#"
WITH waiting AS MATERIALIZED (
    SELECT id FROM sms_outbox
     WHERE state = 'pending' AND next_attempt_at <= now()
     ORDER BY priority, expires_at
     LIMIT $1
     FOR UPDATE SKIP LOCKED
), lapsed AS MATERIALIZED (
    SELECT id FROM sms_outbox
     WHERE state = 'sending' AND next_attempt_at <= now()
     ORDER BY next_attempt_at
     LIMIT $1
     FOR UPDATE SKIP LOCKED
), due AS (
    -- Read on demand: `lapsed` runs only if `waiting` left room.
    SELECT id FROM waiting UNION ALL SELECT id FROM lapsed LIMIT $1
)
UPDATE sms_outbox o
   SET state = 'sending',
       attempts = o.attempts + 1,
       next_attempt_at = now() + $2 * interval '1 millisecond',
       claimed_by = $3
 WHERE o.id = ANY (ARRAY(SELECT id FROM due))
RETURNING o.id, o.seq, o.recipient, o.template, o.locale, o.params::text AS params,
          (SELECT t.body FROM sms_templates t WHERE t.name = o.template AND t.locale = o.locale) AS body,
          (SELECT t.max_parts FROM sms_templates t WHERE t.name = o.template AND t.locale = o.locale) AS max_parts,
          o.attempts AS round,
          CASE WHEN o.attempts > 1 THEN EXISTS (
              SELECT 1 FROM sms_outbox n
               WHERE n.recipient = o.recipient AND n.purpose = o.purpose AND n.supersede
                 AND n.seq > o.seq)
          ELSE false END AS superseded,
          (extract(epoch FROM o.expires_at - now()) * 1000)::float8 AS remaining_ms,
          o.resend_reason, o.resend_skip
"#;

impl Store {
    /// Claims up to `limit` due messages for `lease`, in priority then deadline order.
    pub async fn claim(
        &self,
        limit: u32,
        lease: Duration,
        relay_id: &str,
    ) -> Result<Vec<ClaimedMessage>> {
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        let rows = sqlx::query_as::<_, ClaimedMessage>(CLAIM)
            .bind(i64::from(limit))
            .bind(lease_ms as f64)
            .bind(relay_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows)
    }
}
