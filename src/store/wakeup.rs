//! Idle relays register in `sms_relay_sleepers`; while any fresh registration exists, inserts NOTIFY.

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::{Result, Store};
use crate::domain::DbClock;

/// The channel `sms_outbox` inserts notify on.
pub const WAKEUP_CHANNEL: &str = "sms_relay_wakeup";

/// Every registration, stale ones included: the sweep of relays gone for an hour runs only when a
/// relay registers.
const SLEEPING_RELAYS: &str = "SELECT count(*) FROM sms_relay_sleepers";

impl Store {
    /// Marks this relay idle (or refreshes the mark), and drops marks of relays gone for an hour.
    pub async fn register_sleeper(&self, relay_id: &str) -> Result<()> {
        sqlx::query(
            "WITH gone AS (DELETE FROM sms_relay_sleepers WHERE since < now() - interval '1 hour') \
             INSERT INTO sms_relay_sleepers (relay_id) VALUES ($1) \
             ON CONFLICT (relay_id) DO UPDATE SET since = now()",
        )
        .bind(relay_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// How many relays are registered idle.
    pub async fn sleeping_relays(&self) -> Result<i64> {
        let sleeping = sqlx::query_scalar(SLEEPING_RELAYS)
            .fetch_one(&self.pool)
            .await?;
        Ok(sleeping)
    }

    /// Marks this relay busy: inserts need not notify on its behalf.
    pub async fn deregister_sleeper(&self, relay_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM sms_relay_sleepers WHERE relay_id = $1")
            .bind(relay_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Reads the database's clock against this host's monotonic one (the instant halfway through
    /// the round trip is taken as the moment the database read its time).
    pub async fn db_clock(&self) -> Result<DbClock> {
        let before = Instant::now();
        let db_time: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
            .fetch_one(&self.pool)
            .await?;
        let after = Instant::now();
        Ok(DbClock::new(before + (after - before) / 2, db_time))
    }

    /// Wakes every listening relay (after releasing messages that are due at once).
    pub async fn wake_relays(&self) -> Result<()> {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(WAKEUP_CHANNEL)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Vacuums the queue so the claim index sheds the dead entries every finished message leaves
    /// behind. Skipped if another VACUUM holds the table; needs the table's owner.
    pub async fn vacuum_queue(&self) -> Result<()> {
        sqlx::query("VACUUM (SKIP_LOCKED, INDEX_CLEANUP ON, PARALLEL 0) sms_queue")
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
