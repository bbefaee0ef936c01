//! Maintenance statements: pruning counters and dead relays' rows, scrubbing codes, deleting what
//! is past its retention, and the record of every run.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{ResendRule, Result, Store, interval_ms};

/// Rows changed per statement, so a large backlog never becomes one long write.
const BATCH: i64 = 5_000;

// The jobs' statements are SQL functions that run as the schema owner (see the maintenance
// migration): the relay's role may run them without holding DELETE on messages, calls or
// receipts itself. Each batched one changes at most `$2` rows, `$1` being an age in ms.
const PRUNE: &str = "SELECT sms_maintain_prune()";
const SCRUB: &str = "SELECT sms_maintain_scrub($1 * interval '1 millisecond', $2)";
const DELETE_MESSAGES: &str =
    "SELECT sms_maintain_expire('messages', $1 * interval '1 millisecond', $2)";
const DELETE_ATTEMPTS: &str =
    "SELECT sms_maintain_expire('attempts', $1 * interval '1 millisecond', $2)";
const DELETE_RECEIPTS: &str =
    "SELECT sms_maintain_expire('receipts', $1 * interval '1 millisecond', $2)";
const DELETE_REFUSALS: &str =
    "SELECT sms_maintain_expire_refusals($1 * interval '1 millisecond', $2)";
/// Receipts of kind `$1` stored unmatched within `$3` ms, matched against `$2`'s attempts again,
/// resending by `$4` (most resends) and `$5` (the validity a resend needs, in ms).
const REMATCH: &str = "SELECT sms_maintain_rematch($1, $2, $3 * interval '1 millisecond', $4, \
                       $5 * interval '1 millisecond')";

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

/// Deletes what is past `retention`; returns the rows deleted. Refusal counts are report data
/// and go with the provider calls.
pub async fn expire(conn: &mut PgConnection, retention: Retention) -> Result<i64> {
    let mut total = batched(conn, DELETE_MESSAGES, retention.messages).await?;
    total += batched(conn, DELETE_ATTEMPTS, retention.attempts).await?;
    total += batched(conn, DELETE_REFUSALS, retention.attempts).await?;
    total += batched(conn, DELETE_RECEIPTS, retention.receipts).await?;
    Ok(total)
}

/// Matches again the receipts of kind `source` stored unmatched within `within` (most came
/// before their attempt was recorded) against the attempts of `providers`, resending by `rule`;
/// returns how many matched now.
pub async fn rematch(
    conn: &mut PgConnection,
    source: &str,
    providers: &[String],
    within: Duration,
    rule: ResendRule,
) -> Result<i64> {
    Ok(sqlx::query_scalar(REMATCH)
        .bind(source)
        .bind(providers)
        .bind(interval_ms(within))
        .bind(i32::try_from(rule.max_resends).unwrap_or(i32::MAX))
        .bind(interval_ms(rule.expiry_margin))
        .fetch_one(conn)
        .await?)
}

/// Runs `sql` (`$1` an age in ms, `$2` the batch) until a batch changes fewer than [`BATCH`].
async fn batched(conn: &mut PgConnection, sql: &'static str, age: Duration) -> Result<i64> {
    let mut total = 0;
    loop {
        let done: i64 = sqlx::query_scalar(sql)
            .bind(interval_ms(age))
            .bind(BATCH as i32)
            .fetch_one(&mut *conn)
            .await?;
        total += done;
        if done < BATCH {
            return Ok(total);
        }
    }
}
