//! The circuit breakers' state as each relay last wrote it, for `sms-relay status`.

use chrono::{DateTime, Utc};

use super::{Result, Store};
use crate::providers::CircuitSnapshot;

/// One relay's view of one provider's circuit.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CircuitRow {
    /// The relay that holds this breaker.
    pub relay_id: String,
    /// Provider name.
    pub provider: String,
    /// `closed`, `open` or `half_open`.
    pub state: String,
    /// Failed calls in a row.
    pub consecutive_failures: i32,
    /// Calls in the failure-rate window.
    pub recent_calls: i32,
    /// Failed calls in that window.
    pub recent_failures: i32,
    /// When an open circuit lets a probe through.
    pub retry_at: Option<DateTime<Utc>>,
    /// When the relay wrote this row.
    pub updated_at: DateTime<Utc>,
}

impl Store {
    /// Writes this relay's breakers (one statement).
    pub async fn save_circuits(
        &self,
        relay_id: &str,
        circuits: &[(String, CircuitSnapshot)],
    ) -> Result<()> {
        let time = |t: Option<std::time::SystemTime>| t.map(DateTime::<Utc>::from);
        sqlx::query(
            "INSERT INTO sms_provider_circuits AS c (relay_id, provider, state, consecutive_failures, \
                    recent_calls, recent_failures, opened_at, retry_at, updated_at) \
             SELECT $1, * , now() FROM unnest($2::text[], $3::text[], $4::int[], $5::int[], $6::int[], \
                    $7::timestamptz[], $8::timestamptz[]) \
             ON CONFLICT (relay_id, provider) DO UPDATE SET state = excluded.state, \
                    consecutive_failures = excluded.consecutive_failures, \
                    recent_calls = excluded.recent_calls, recent_failures = excluded.recent_failures, \
                    opened_at = excluded.opened_at, retry_at = excluded.retry_at, updated_at = now()",
        )
        .bind(relay_id)
        .bind(circuits.iter().map(|c| c.0.clone()).collect::<Vec<_>>())
        .bind(circuits.iter().map(|c| c.1.state.as_str()).collect::<Vec<_>>())
        .bind(circuits.iter().map(|c| c.1.consecutive_failures as i32).collect::<Vec<_>>())
        .bind(circuits.iter().map(|c| c.1.recent_calls as i32).collect::<Vec<_>>())
        .bind(circuits.iter().map(|c| c.1.recent_failures as i32).collect::<Vec<_>>())
        .bind(circuits.iter().map(|c| time(c.1.opened_at)).collect::<Vec<_>>())
        .bind(circuits.iter().map(|c| time(c.1.retry_at)).collect::<Vec<_>>())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Removes this relay's rows (it is stopping).
    pub async fn drop_circuits(&self, relay_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM sms_provider_circuits WHERE relay_id = $1")
            .bind(relay_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every relay's breakers written in the last ten minutes (older rows belong to relays that
    /// died), newest relay first.
    pub async fn circuits(&self) -> Result<Vec<CircuitRow>> {
        let rows = sqlx::query_as::<_, CircuitRow>(
            "SELECT relay_id, provider, state, consecutive_failures, recent_calls, recent_failures, \
                    retry_at, updated_at \
               FROM sms_provider_circuits WHERE updated_at > now() - interval '10 minutes' \
              ORDER BY relay_id, provider",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }
}
