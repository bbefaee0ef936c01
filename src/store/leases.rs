//! Giving claims back before their lease runs out: a dead relay's at once, and this relay's own
//! when a claim's rows never reached it.
//!
//! A running relay keeps one connection open whose `application_name` is its
//! [`presence_name`]. PostgreSQL ends a backend as soon as its client's socket closes, so once a
//! relay process dies (crash, SIGKILL, OOM) its name leaves `pg_stat_activity` within
//! milliseconds, and any other relay puts its claimed messages back in the queue. A lost machine
//! or a network partition closes no socket: for those the lease is the backstop.

use uuid::Uuid;

use super::{Result, Store};

/// What a relay's presence connection calls itself in `pg_stat_activity`.
pub fn presence_name(relay_id: &str) -> String {
    format!("{PRESENCE_PREFIX}{relay_id}")
}

const PRESENCE_PREFIX: &str = "sms-relay ";

/// The longest relay id whose presence name PostgreSQL keeps whole (`application_name` is cut at
/// 63 bytes).
pub const MAX_RELAY_ID_LEN: usize = 63 - PRESENCE_PREFIX.len();

/// Messages claimed by a relay that has no presence connection any more. `pg_stat_activity` is read
/// once (materialized), and the claimer is re-checked on the locked row, so a message another
/// relay claimed meanwhile is left alone. Only leases still running are touched: an expired one is
/// claimable anyway.
const RESCUE: &str = r#"
WITH live AS MATERIALIZED (
    SELECT coalesce(array_agg(application_name), '{}') AS names
      FROM pg_stat_activity WHERE starts_with(application_name, $1)
)
UPDATE sms_outbox o
   SET state = 'pending', next_attempt_at = now(), claimed_by = NULL,
       last_error = 'put back: the relay that claimed it is gone'
  FROM live
 WHERE o.state = 'sending' AND o.next_attempt_at > now()
   AND ($1 || o.claimed_by) <> ALL (live.names)
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
    /// Puts the messages of relays that are gone back in the queue, due now; returns how many.
    pub async fn rescue_orphans(&self) -> Result<u64> {
        let done = sqlx::query(RESCUE)
            .bind(PRESENCE_PREFIX)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
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
