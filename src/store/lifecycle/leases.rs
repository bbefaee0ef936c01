//! Giving claims back before their lease runs out: a dead relay's at once, and this relay's own
//! when a claim's rows never reached it.
//!
//! A running relay keeps one connection open whose `application_name` is its
//! [`presence_name`]. PostgreSQL ends a backend as soon as its client's socket closes, so once a
//! relay process dies (crash, SIGKILL, OOM) its name leaves `pg_stat_activity` within
//! milliseconds, and the other relays put its claimed messages back in the queue once two of
//! their passes in a row found it gone (a live relay whose presence connection is being
//! re-established keeps its claims). A lost machine or a network partition closes no socket: for
//! those the lease is the backstop.

use uuid::Uuid;

use crate::store::{Result, Store};

/// What a relay's presence connection calls itself in `pg_stat_activity`.
pub fn presence_name(relay_id: &str) -> String {
    format!("{PRESENCE_PREFIX}{relay_id}")
}

const PRESENCE_PREFIX: &str = "sms-relay ";

/// The longest relay id whose presence name PostgreSQL keeps whole (`application_name` is cut at
/// 63 bytes).
pub const MAX_RELAY_ID_LEN: usize = 63 - PRESENCE_PREFIX.len();

/// Finds the relays (other than `$2`) that hold claims but have no presence connection to this
/// database, and puts back the claims of those among them that the previous pass found gone too
/// (`$3`). `pg_stat_activity` is read once; the claimer is re-checked on each locked row, so a
/// message another relay claimed meanwhile is left alone. Only leases still running are touched:
/// an expired one is claimable anyway.
const RESCUE: &str = r#"
WITH live AS MATERIALIZED (
    SELECT coalesce(array_agg(application_name), '{}') AS names
      FROM pg_stat_activity
     WHERE datname = current_database() AND starts_with(application_name, $1)
), absent AS MATERIALIZED (
    SELECT DISTINCT o.claimed_by
      FROM sms_outbox o, live
     WHERE o.state = 'sending' AND o.next_attempt_at > now() AND o.claimed_by <> $2
       AND ($1 || o.claimed_by) <> ALL (live.names)
), rescued AS (
    UPDATE sms_outbox o
       SET state = 'pending', next_attempt_at = now(), claimed_by = NULL,
           last_error = 'put back: the relay that claimed it is gone'
     WHERE o.state = 'sending' AND o.next_attempt_at > now() AND o.claimed_by = ANY ($3)
       AND o.claimed_by IN (SELECT claimed_by FROM absent)
    RETURNING 1
)
SELECT coalesce((SELECT array_agg(claimed_by) FROM absent), '{}'), (SELECT count(*) FROM rescued)
"#;

/// This relay's claimed messages that it does not hold: a claim committed but its rows never
/// arrived (the connection dropped while reading them), or a round could not be recorded.
const RELEASE_UNHELD: &str = r#"
UPDATE sms_outbox
   SET state = 'pending', next_attempt_at = now(), claimed_by = NULL,
       last_error = 'put back: its claim did not reach the relay'
 WHERE state = 'sending' AND next_attempt_at > now() AND claimed_by = $1 AND id <> ALL ($2)
"#;

impl Store {
    /// One rescue pass for relay `me`: puts back, due now, the claims of the relays in `suspects`
    /// (found gone by the previous pass) that are still gone. Returns how many messages it put
    /// back and the relays found gone this time (the next pass's suspects).
    pub async fn rescue_orphans(
        &self,
        me: &str,
        suspects: &[String],
    ) -> Result<(i64, Vec<String>)> {
        let (gone, rescued): (Vec<String>, i64) = sqlx::query_as(RESCUE)
            .bind(PRESENCE_PREFIX)
            .bind(me)
            .bind(suspects)
            .fetch_one(&self.pool)
            .await?;
        Ok((rescued, gone))
    }

    /// Puts back this relay's claimed messages other than `held`; returns how many.
    pub async fn release_unheld(&self, relay_id: &str, held: &[Uuid]) -> Result<u64> {
        let done = sqlx::query(RELEASE_UNHELD)
            .bind(relay_id)
            .bind(held)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Messages some relay could still send: pending (due now or later) or claimed.
    pub async fn owed(&self) -> Result<i64> {
        let owed = sqlx::query_scalar(
            "SELECT count(*) FROM sms_outbox WHERE state IN ('pending', 'sending')",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(owed)
    }
}
