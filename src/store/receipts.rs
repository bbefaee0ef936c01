//! Receipts in: recording them (matching, status order, resends), the no-receipt window, and
//! which attempts to ask a report API about.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Result, Store};
use crate::receipts::Receipt;

/// Where a receipt came from (`sms_receipts.via`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A provider called our webhook.
    Webhook,
    /// We asked a report API.
    Poll,
}

impl Via {
    fn as_str(self) -> &'static str {
        match self {
            Via::Webhook => "webhook",
            Via::Poll => "poll",
        }
    }
}

/// When a message may be sent again after its attempt was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResendRule {
    /// Most resends per message.
    pub max_resends: u32,
    /// Validity a message must have left to be resent.
    pub expiry_margin: Duration,
}

/// What became of one receipt (`sms_receipts.result`, or `Duplicate` when it was a repeat).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptResult {
    /// It moved the attempt's delivery status.
    Applied,
    /// The attempt already had this or a later status.
    Stale,
    /// No accepted attempt of the source's providers has this id.
    Unmatched,
    /// The same receipt was recorded before.
    Duplicate,
}

/// Totals of one [`Store::record_receipts`] call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Receipts that moved a status.
    pub applied: u32,
    /// Receipts older than what the attempt already knew.
    pub stale: u32,
    /// Receipts for messages we do not know.
    pub unmatched: u32,
    /// Repeats of receipts already recorded.
    pub duplicate: u32,
    /// Messages put back in the queue for a resend.
    pub resent: u32,
}

impl Recorded {
    fn add(&mut self, result: ReceiptResult, resent: bool) {
        match result {
            ReceiptResult::Applied => self.applied += 1,
            ReceiptResult::Stale => self.stale += 1,
            ReceiptResult::Unmatched => self.unmatched += 1,
            ReceiptResult::Duplicate => self.duplicate += 1,
        }
        self.resent += u32::from(resent);
    }
}

fn interval_ms(d: Duration) -> f64 {
    d.as_millis() as f64
}

/// Attempts whose receipt should have come by now, and the message's validity still allows
/// another send: resend through the next provider.
const RESEND_UNANSWERED: &str = r#"
SELECT count(*) FILTER (WHERE sms_resend(a.id, $1, $2, $3 * interval '1 millisecond'))
  FROM sms_attempts a
 WHERE a.outcome = 'accepted' AND (a.delivery_status IS NULL OR a.delivery_status IN ('queued', 'enroute'))
   AND a.finished_at > $4 AND a.finished_at <= $5
   AND a.provider = ANY ($6)
"#;

impl Store {
    /// Records `receipts` from the provider kind `source`, matching them against attempts of the
    /// providers named in `providers`. Each receipt is one call of `sms_record_receipt`, in order,
    /// in one transaction.
    pub async fn record_receipts(
        &self,
        source: &str,
        via: Via,
        providers: &[String],
        receipts: &[Receipt],
        rule: ResendRule,
    ) -> Result<Recorded> {
        let mut tx = self.pool.begin().await?;
        let mut totals = Recorded::default();
        for r in receipts {
            let (result, resent): (String, bool) = sqlx::query_as(
                "SELECT result, resent FROM sms_record_receipt($1, $2, $3, $4, $5, $6, $7, \
                 $8::sms_delivery, $9, $10, $11 / 1000000.0, $12, $13, $14, $15 * interval '1 millisecond')",
            )
            .bind(source)
            .bind(via.as_str())
            .bind(providers)
            .bind(&r.dedupe_key)
            .bind(&r.provider_message_id)
            .bind(&r.client_ref)
            .bind(&r.status_raw)
            .bind(r.status.as_str())
            .bind(&r.error_code)
            .bind(r.done_at)
            .bind(r.cost.as_ref().map(|c| c.micros))
            .bind(r.cost.as_ref().map(|c| c.currency.as_str()))
            .bind(&r.payload)
            .bind(i32::try_from(rule.max_resends).unwrap_or(i32::MAX))
            .bind(interval_ms(rule.expiry_margin))
            .fetch_one(&mut *tx)
            .await?;
            let result = match result.as_str() {
                "applied" => ReceiptResult::Applied,
                "stale" => ReceiptResult::Stale,
                "unmatched" => ReceiptResult::Unmatched,
                _ => ReceiptResult::Duplicate,
            };
            if result == ReceiptResult::Unmatched {
                tracing::info!(source, provider_message_id = %r.provider_message_id,
                    "receipt for a message we do not know; kept in sms_receipts");
            }
            totals.add(result, resent);
        }
        tx.commit().await?;
        Ok(totals)
    }

    /// Resends messages whose latest accepted attempt, through one of `providers` (those that
    /// send receipts), finished in `(after, until]` without a final receipt. Returns how many
    /// went back to the queue.
    pub async fn resend_unanswered(
        &self,
        providers: &[String],
        after: DateTime<Utc>,
        until: DateTime<Utc>,
        window: Duration,
        rule: ResendRule,
    ) -> Result<u64> {
        let reason = format!("no delivery receipt within {} s", window.as_secs());
        let (count,): (i64,) = sqlx::query_as(RESEND_UNANSWERED)
            .bind(reason)
            .bind(i32::try_from(rule.max_resends).unwrap_or(i32::MAX))
            .bind(interval_ms(rule.expiry_margin))
            .bind(after)
            .bind(until)
            .bind(providers)
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Marks accepted attempts that got no final receipt within `window` as `unknown`.
    pub async fn expire_receipts(&self, window: Duration) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE sms_attempts SET delivery_status = 'unknown' \
              WHERE outcome = 'accepted' \
                AND (delivery_status IS NULL OR delivery_status IN ('queued', 'enroute')) \
                AND finished_at <= now() - $1 * interval '1 millisecond'",
        )
        .bind(interval_ms(window))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Picks up to `limit` accepted attempts of `provider` still waiting for a final receipt,
    /// at least `settle` old and younger than `give_up`, not asked about within `every`; marks
    /// them asked and returns their provider message ids.
    pub async fn due_for_report(
        &self,
        provider: &str,
        settle: Duration,
        every: Duration,
        give_up: Duration,
        limit: u32,
    ) -> Result<Vec<String>> {
        let ids = sqlx::query_scalar(
            "UPDATE sms_attempts SET receipt_checked_at = now() \
              WHERE id IN (SELECT id FROM sms_attempts \
                            WHERE outcome = 'accepted' \
                              AND (delivery_status IS NULL OR delivery_status IN ('queued', 'enroute')) \
                              AND provider = $1 \
                              AND finished_at <= now() - $2 * interval '1 millisecond' \
                              AND finished_at > now() - $4 * interval '1 millisecond' \
                              AND (receipt_checked_at IS NULL \
                                   OR receipt_checked_at <= now() - $3 * interval '1 millisecond') \
                            ORDER BY finished_at LIMIT $5 FOR UPDATE SKIP LOCKED) \
             RETURNING provider_message_id",
        )
        .bind(provider)
        .bind(interval_ms(settle))
        .bind(interval_ms(every))
        .bind(interval_ms(give_up))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(ids)
    }

    /// Whether the database answers and the schema is in place (for `/readyz`).
    pub async fn ready(&self) -> Result<()> {
        sqlx::query("SELECT 1 FROM sms_receipts LIMIT 0")
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
