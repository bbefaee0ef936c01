//! Receipts in: recording them (matching, status order, resends), the no-receipt window, and
//! which attempts to ask a report API about.

use std::time::Duration;

use serde_json::Value;

use super::{MAX_COST_MICROS, Result, Store, interval_ms, is_data_error, pg_text};
use crate::{
    metrics,
    providers::{Receipt, fields::is_currency},
};

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

/// Totals of one [`Store::record_receipts`] call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Receipts that moved a status.
    pub applied: u32,
    /// Receipts older than what the attempt already knew.
    pub stale: u32,
    /// Receipts for messages we do not know (yet).
    pub unmatched: u32,
    /// Repeats of receipts already recorded.
    pub duplicate: u32,
    /// Receipts the database refused (left out; the others are recorded).
    pub refused: u32,
    /// Messages put back in the queue for a resend.
    pub resent: u32,
}

impl Recorded {
    fn add(&mut self, result: &str, resent: bool) {
        match result {
            "applied" => self.applied += 1,
            "stale" => self.stale += 1,
            "unmatched" => self.unmatched += 1,
            _ => self.duplicate += 1,
        }
        self.resent += u32::from(resent);
    }
}

/// A JSON value with NUL characters removed from every string (jsonb refuses `\u0000`).
fn without_nul(value: &Value) -> Value {
    match value {
        Value::String(s) => Value::String(pg_text(s).into_owned()),
        Value::Array(items) => Value::Array(items.iter().map(without_nul).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (pg_text(k).into_owned(), without_nul(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// A receipt's price in micros, if it fits `numeric(14, 6)` and has a currency code.
fn fitting_cost(r: &Receipt) -> Option<(i64, String)> {
    let cost = r.cost.as_ref()?;
    let currency = cost.currency.to_ascii_uppercase();
    let micros = cost
        .micros
        .checked_abs()
        .filter(|m| *m <= MAX_COST_MICROS)?;
    is_currency(&currency).then_some((micros, currency))
}

/// Stores and applies one receipt (`sms_record_receipt`); returns its result and whether it
/// queued a resend.
const RECORD: &str = "SELECT result, resent FROM sms_record_receipt($1, $2, $3, $4, $5, $6, $7, \
     $8::sms_delivery, $9, $10, $11, $12 / 1000000.0, $13, $14, $15, $16 * interval '1 millisecond')";

/// Attempts whose receipt should have come by now, whose message may still be resent: resend
/// through the next provider (`sms_resend` checks again under lock). Only attempts younger than
/// the window plus the longest template validity can belong to a message still valid, which
/// bounds the scan without keeping any state between passes.
///
/// A missing receipt means the code did not arrive only while the provider's receipts arrive
/// for other messages: an attempt is resent only if some receipt about the same provider came
/// after it was accepted. When none came, the receipt path itself is down (a webhook outage, a
/// broken proxy), every attempt looks unanswered at once, and resending them all would double
/// the spend for codes that most likely arrived; those are held off and counted instead.
const RESEND_UNANSWERED: &str = r#"
WITH window_start AS MATERIALIZED (
    SELECT now() - $5 * interval '1 millisecond'
               - (SELECT coalesce(max(validity), interval '0') FROM sms_templates) AS at
), last_receipt AS MATERIALIZED (
    SELECT x.provider, max(r.received_at) AS at
      FROM sms_receipts r
      JOIN sms_attempts x ON x.id = r.attempt_id
     WHERE r.received_at > (SELECT at FROM window_start) AND x.provider = ANY ($4)
     GROUP BY x.provider
), overdue AS (
    SELECT a.id, coalesce(l.at > a.finished_at, false) AS receipts_flow
      FROM sms_attempts a
      JOIN sms_outbox o ON o.id = a.message_id
      LEFT JOIN last_receipt l ON l.provider = a.provider
     WHERE a.outcome = 'accepted' AND (a.delivery_status IS NULL OR a.delivery_status IN ('queued', 'enroute'))
       AND a.provider = ANY ($4)
       AND a.finished_at <= now() - $5 * interval '1 millisecond'
       AND a.finished_at > (SELECT at FROM window_start)
       AND o.state = 'sent' AND o.attempts = a.attempt_number AND o.resends < $2
       AND o.expires_at > now() + $3 * interval '1 millisecond'
)
SELECT count(*) FILTER (WHERE receipts_flow AND sms_resend(id, $1, $2, $3 * interval '1 millisecond')),
       count(*) FILTER (WHERE NOT receipts_flow)
  FROM overdue
"#;

/// What one no-receipt pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Unanswered {
    /// Messages put back for a resend.
    pub resent: u64,
    /// Overdue attempts not resent because no receipt at all came from their provider since.
    pub held_off: u64,
}

/// Up to `$3` accepted attempts of providers `$1` whose final receipt is `$2` ms overdue become
/// `unknown`, found through `sms_attempts_awaiting_receipt_idx`. Rows a receipt is updating right
/// now are skipped (that receipt settles them).
const EXPIRE_RECEIPTS: &str = r#"
UPDATE sms_attempts SET delivery_status = 'unknown'
 WHERE id = ANY (ARRAY(
        SELECT id FROM sms_attempts
         WHERE outcome = 'accepted'
           AND (delivery_status IS NULL OR delivery_status IN ('queued', 'enroute'))
           AND provider = ANY ($1)
           AND finished_at <= now() - $2 * interval '1 millisecond'
         LIMIT $3
         FOR UPDATE SKIP LOCKED))
"#;

/// Accepted attempts still without a final receipt: the condition of
/// `sms_attempts_awaiting_receipt_idx`, so the count reads that partial index.
const AWAITING_RECEIPTS: &str = "SELECT count(*) FROM sms_attempts WHERE outcome = 'accepted' \
     AND (delivery_status IS NULL OR delivery_status IN ('queued', 'enroute'))";

impl Store {
    /// Records `receipts` from the provider kind `source`, matching them against attempts of the
    /// providers named in `providers`. Each receipt is one call of `sms_record_receipt`, atomic on
    /// its own: one the database refuses is left out and counted, and if the database fails part
    /// way, the provider's retry finds the recorded ones as duplicates. Receipts are taken in
    /// order of the provider's message id, so concurrent batches lock attempts in the same order.
    pub async fn record_receipts(
        &self,
        source: &str,
        via: Via,
        providers: &[String],
        receipts: &[Receipt],
        rule: ResendRule,
    ) -> Result<Recorded> {
        let mut ordered: Vec<&Receipt> = receipts.iter().collect();
        ordered.sort_by(|a, b| a.provider_message_id.cmp(&b.provider_message_id));
        let mut totals = Recorded::default();
        for r in ordered {
            let cost = fitting_cost(r);
            let recorded: std::result::Result<(String, bool), sqlx::Error> = sqlx::query_as(RECORD)
                .bind(source)
                .bind(via.as_str())
                .bind(providers)
                .bind(pg_text(&r.dedupe_key))
                .bind(pg_text(&r.provider_message_id))
                .bind(r.client_ref.as_deref().map(pg_text))
                .bind(pg_text(&r.status_raw))
                .bind(r.status.as_str())
                .bind(r.error_code.as_deref().map(pg_text))
                .bind(r.permanent)
                .bind(r.done_at)
                .bind(cost.as_ref().map(|c| c.0))
                .bind(cost.map(|c| c.1))
                .bind(without_nul(&r.payload))
                .bind(i32::try_from(rule.max_resends).unwrap_or(i32::MAX))
                .bind(interval_ms(rule.expiry_margin))
                .fetch_one(&self.pool)
                .await;
            match recorded {
                Ok((result, resent)) => {
                    if result == "unmatched" {
                        tracing::info!(source, provider_message_id = %r.provider_message_id,
                            "receipt for a message we do not know (yet); kept in sms_receipts");
                    }
                    metrics::receipts(source, r.status.as_str(), &result, 1);
                    totals.add(&result, resent);
                }
                Err(error) if is_data_error(&error) => {
                    tracing::warn!(source, provider_message_id = %r.provider_message_id,
                        "the database refused a receipt; left out");
                    totals.refused += 1;
                }
                Err(error) => return Err(error.into()),
            }
        }
        Ok(totals)
    }

    /// Resends messages whose latest accepted attempt, through one of `providers` (those that
    /// send receipts), finished more than `window` ago without a final receipt while receipts
    /// about that provider kept coming.
    pub async fn resend_unanswered(
        &self,
        providers: &[String],
        window: Duration,
        rule: ResendRule,
    ) -> Result<Unanswered> {
        let reason = format!("no delivery receipt within {} s", window.as_secs());
        let (resent, held_off): (i64, i64) = sqlx::query_as(RESEND_UNANSWERED)
            .bind(reason)
            .bind(i32::try_from(rule.max_resends).unwrap_or(i32::MAX))
            .bind(interval_ms(rule.expiry_margin))
            .bind(providers)
            .bind(interval_ms(window))
            .fetch_one(&self.pool)
            .await?;
        Ok(Unanswered {
            resent: u64::try_from(resent).unwrap_or(0),
            held_off: u64::try_from(held_off).unwrap_or(0),
        })
    }

    /// Marks accepted attempts of `providers` that got no final receipt within `window` as
    /// `unknown`, `batch` rows per statement until none is left, so a backlog of millions (the
    /// first pass after an outage) never becomes one long write that holds its rows from the
    /// receipts arriving meanwhile.
    pub async fn expire_receipts(
        &self,
        providers: &[String],
        window: Duration,
        batch: u32,
    ) -> Result<u64> {
        let mut total = 0;
        loop {
            let done = sqlx::query(EXPIRE_RECEIPTS)
                .bind(providers)
                .bind(interval_ms(window))
                .bind(i64::from(batch))
                .execute(&self.pool)
                .await?;
            total += done.rows_affected();
            if done.rows_affected() < u64::from(batch) {
                return Ok(total);
            }
        }
    }

    /// Picks up to `limit` accepted attempts of `provider` still waiting for a final receipt, at
    /// least `settle` old and younger than `give_up`, marks them asked and returns their
    /// provider message ids. An attempt is asked again after `every`, or after as long as it had
    /// been waiting when last asked if that is longer (so the asking backs off geometrically);
    /// never asked ones come first.
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
                                   OR receipt_checked_at <= now() - greatest($3 * interval '1 millisecond', \
                                                                             receipt_checked_at - finished_at)) \
                            ORDER BY receipt_checked_at NULLS FIRST, finished_at \
                            LIMIT $5 FOR UPDATE SKIP LOCKED) \
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

    /// How many accepted attempts still wait for a final receipt.
    pub async fn awaiting_receipts(&self) -> Result<i64> {
        let awaiting = sqlx::query_scalar(AWAITING_RECEIPTS)
            .fetch_one(&self.pool)
            .await?;
        Ok(awaiting)
    }

    /// Whether the database answers and the schema is in place (for `/readyz`).
    pub async fn ready(&self) -> Result<()> {
        sqlx::query("SELECT 1 FROM sms_receipts LIMIT 0")
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
