//! What a relay holds: the messages it is sending, as session advisory locks on its claim
//! connection.
//!
//! A claim writes nothing; `sms_claim()` takes a lock once per message on the connection that runs
//! it, and the relay gives it back once per message when the message's round is recorded. Sixteen
//! consecutive messages share one lock (`sms_hold_key(seq)`), so they fill one entry of the
//! server's shared lock table. PostgreSQL drops a
//! session's locks the moment its connection ends, so the messages of a relay process that dies
//! (crash, SIGKILL, OOM kill) are claimable by the others at once. A lost machine or a network
//! partition closes no socket: the TCP keepalive the relay sets on its claim connection ends that
//! session after the lease instead.

use crate::store::{Result, Store};

/// What a relay's claim connection calls itself in `pg_stat_activity` (and the `sms_holds` view).
pub fn presence_name(relay_id: &str) -> String {
    format!("{PRESENCE_PREFIX}{relay_id}")
}

const PRESENCE_PREFIX: &str = "sms-relay ";

/// The longest relay id whose presence name PostgreSQL keeps whole (`application_name` is cut at
/// 63 bytes).
pub const MAX_RELAY_ID_LEN: usize = 63 - PRESENCE_PREFIX.len();

/// Entries in PostgreSQL's shared lock table: every session's locks, advisory ones included,
/// share it, and a full table makes any statement that needs one more lock fail.
const LOCK_TABLE_SIZE: &str = "SELECT current_setting('max_locks_per_transaction')::int8 \
    * (current_setting('max_connections')::int8 + current_setting('max_prepared_transactions')::int8)";

impl Store {
    /// Gives back every hold of this connection's session except one per message of `keep` (the
    /// seqs of the messages the relay is sending): the holds a claim took before it failed. Must
    /// run on the claim connection. Returns how many it gave back.
    pub async fn unhold_all_but(&self, keep: &[i64]) -> Result<i64> {
        let released = sqlx::query_scalar("SELECT sms_unhold_all_but($1)")
            .bind(keep)
            .fetch_one(&self.pool)
            .await?;
        Ok(released)
    }

    /// How many locks the whole server can hold at once.
    pub async fn lock_table_size(&self) -> Result<i64> {
        let size = sqlx::query_scalar(LOCK_TABLE_SIZE)
            .fetch_one(&self.pool)
            .await?;
        Ok(size)
    }

    /// Messages some relay could still send: waiting (due now or later) or being sent.
    pub async fn owed(&self) -> Result<i64> {
        let owed = sqlx::query_scalar("SELECT count(*) FROM sms_queue")
            .fetch_one(&self.pool)
            .await?;
        Ok(owed)
    }
}
