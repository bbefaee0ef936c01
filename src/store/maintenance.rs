//! Maintenance statements: pruning counters and dead relays' rows, scrubbing codes, deleting what
//! is past its retention, and the record of every run.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{Result, Store, interval_ms};

/// Rows changed per statement, so a large backlog never becomes one long write.
const BATCH: i64 = 5_000;

/// Budget counters of windows that have ended, per-recipient windows that have ended, and the
/// circuit rows of relays that stopped writing them (a live relay rewrites its rows every 30 s).
const PRUNE: &str = r#"
WITH usage AS (
    DELETE FROM sms_budget_usage u USING sms_budgets b
     WHERE b.id = u.budget_id AND u.window_start + b.per <= now()
    RETURNING 1
), recipients AS (
    DELETE FROM sms_recipient_budget
     WHERE window_start <= now() - (SELECT recipient_window FROM sms_settings)
    RETURNING 1
), circuits AS (
    DELETE FROM sms_provider_circuits WHERE updated_at < now() - interval '10 minutes'
    RETURNING 1
)
SELECT (SELECT count(*) FROM usage) + (SELECT count(*) FROM recipients) + (SELECT count(*) FROM circuits)
"#;

/// Up to `$2` messages enqueued in the `$1` ms before the longest template validity (plus a
/// minute) ended, and past their own validity, lose their params (the code): nothing of theirs
/// can be sent any more. Message ids are time-ordered, so the range is read through the primary
/// key; `$1` bounds how far back a pass looks, beyond which the retention job takes over.
const SCRUB: &str = r#"
WITH bounds AS MATERIALIZED (
    SELECT now() - (SELECT coalesce(max(validity), interval '0') FROM sms_templates) - interval '1 minute' AS until
)
UPDATE sms_outbox SET params = '{}'
 WHERE id = ANY (ARRAY(
        SELECT o.id FROM sms_outbox o, bounds
         WHERE o.id >= sms_uuid_v7_floor(bounds.until - $1 * interval '1 millisecond')
           AND o.id < sms_uuid_v7_floor(bounds.until)
           AND o.params <> '{}' AND o.expires_at <= now()
         LIMIT $2
         FOR UPDATE SKIP LOCKED))
"#;

/// Up to `$2` messages enqueued more than `$1` ms ago.
const DELETE_MESSAGES: &str = r#"
DELETE FROM sms_outbox
 WHERE id = ANY (ARRAY(
        SELECT id FROM sms_outbox
         WHERE id < sms_uuid_v7_floor(now() - $1 * interval '1 millisecond')
         LIMIT $2))
"#;

/// Up to `$2` provider calls started more than `$1` ms ago (found through the block-range index).
const DELETE_ATTEMPTS: &str = r#"
DELETE FROM sms_attempts
 WHERE id = ANY (ARRAY(
        SELECT id FROM sms_attempts
         WHERE started_at < now() - $1 * interval '1 millisecond'
         LIMIT $2))
"#;

/// Up to `$2` receipts received more than `$1` ms ago.
const DELETE_RECEIPTS: &str = r#"
DELETE FROM sms_receipts
 WHERE id = ANY (ARRAY(
        SELECT id FROM sms_receipts
         WHERE received_at < now() - $1 * interval '1 millisecond'
         LIMIT $2))
"#;

/// Takes the slot `$2` of job `$1` for relay `$3`; no row when another relay has it.
const TAKE_SLOT: &str = r#"
INSERT INTO sms_maintenance_runs (job, slot, relay_id) VALUES ($1, $2, $3)
ON CONFLICT (job, slot) DO NOTHING
RETURNING id
"#;

/// Ends run `$1` with the rows it changed, or its error.
const FINISH_RUN: &str =
    "UPDATE sms_maintenance_runs SET finished_at = now(), rows = $2, error = $3 WHERE id = $1";

/// One job at a time across relays, also when a run outlasts its schedule: a session advisory
/// lock per job, on the connection that runs it.
const LOCK_JOB: &str =
    "SELECT pg_try_advisory_lock(hashtext('sms-relay maintenance'), hashtext($1))";
const UNLOCK_JOB: &str =
    "SELECT pg_advisory_unlock(hashtext('sms-relay maintenance'), hashtext($1))";

/// How long maintenance keeps what it keeps.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Messages (numbers, and codes until scrubbed), by enqueue time.
    pub messages: Duration,
    /// Provider calls (no numbers), by start time.
    pub attempts: Duration,
    /// Receipts (numbers masked), by arrival.
    pub receipts: Duration,
}

impl Store {
    /// Takes `job`'s `slot` for `relay_id`; `None` if another relay took it.
    pub async fn take_slot(
        &self,
        job: &str,
        slot: DateTime<Utc>,
        relay_id: &str,
    ) -> Result<Option<i64>> {
        let id = sqlx::query_scalar(TAKE_SLOT)
            .bind(job)
            .bind(slot)
            .bind(relay_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(id)
    }

    /// Records the end of run `run`: the rows it changed, or its error.
    pub async fn finish_run(&self, run: i64, rows: Option<i64>, error: Option<&str>) -> Result<()> {
        sqlx::query(FINISH_RUN)
            .bind(run)
            .bind(rows)
            .bind(error)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Runs `work` on one connection holding `job`'s lock; `Ok(None)` if another run holds it.
    pub async fn with_job_lock<T>(
        &self,
        job: &str,
        work: impl AsyncFnOnce(&mut PgConnection) -> Result<T>,
    ) -> Result<Option<T>> {
        let mut conn = self.pool.acquire().await?;
        let locked: bool = sqlx::query_scalar(LOCK_JOB)
            .bind(job)
            .fetch_one(&mut *conn)
            .await?;
        if !locked {
            return Ok(None);
        }
        let result = work(&mut conn).await;
        sqlx::query(UNLOCK_JOB)
            .bind(job)
            .execute(&mut *conn)
            .await?;
        result.map(Some)
    }
}

/// Prunes counters of ended windows and dead relays' circuit rows; returns the rows deleted.
pub async fn prune(conn: &mut PgConnection) -> Result<i64> {
    Ok(sqlx::query_scalar(PRUNE).fetch_one(conn).await?)
}

/// Scrubs the codes of messages that can no longer be sent, enqueued within `lookback` before
/// that; returns how many.
pub async fn scrub(conn: &mut PgConnection, lookback: Duration) -> Result<i64> {
    batched(conn, SCRUB, lookback).await
}

/// Deletes what is past `retention`; returns the rows deleted.
pub async fn expire(conn: &mut PgConnection, retention: Retention) -> Result<i64> {
    let mut total = batched(conn, DELETE_MESSAGES, retention.messages).await?;
    total += batched(conn, DELETE_ATTEMPTS, retention.attempts).await?;
    total += batched(conn, DELETE_RECEIPTS, retention.receipts).await?;
    Ok(total)
}

/// Runs `sql` (`$1` an age in ms, `$2` the batch) until a batch changes fewer than [`BATCH`].
async fn batched(conn: &mut PgConnection, sql: &'static str, age: Duration) -> Result<i64> {
    let mut total = 0;
    loop {
        let done = sqlx::query(sql)
            .bind(interval_ms(age))
            .bind(BATCH)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        total += i64::try_from(done).unwrap_or(i64::MAX);
        if done < BATCH as u64 {
            return Ok(total);
        }
    }
}
