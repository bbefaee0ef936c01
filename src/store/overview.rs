//! What the operator page reads: each provider's last hour, delivery and cost per provider and
//! operator over the last day, the latest messages that ended unsent, the relays' holds and the
//! latest maintenance runs. Every read is bounded by a time window (the block-range index on
//! attempts, the time-ordered message ids) or a small table.

use chrono::{DateTime, Utc};

use super::{Result, Store};

/// Each provider's calls in the last hour: how many, how many accepted, and the latency.
const PROVIDERS_LAST_HOUR: &str = r#"
SELECT provider, count(*) AS calls, count(*) FILTER (WHERE outcome = 'accepted') AS accepted,
       coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms), 0)::float8 AS p50_ms,
       coalesce(percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms), 0)::float8 AS p95_ms
  FROM sms_attempts
 WHERE started_at >= now() - interval '1 hour'
 GROUP BY provider ORDER BY provider
"#;

/// Accepted calls, their delivered receipts and their cost, per provider, operator and currency,
/// over the last 24 hours.
const DELIVERY_LAST_DAY: &str = r#"
SELECT provider, coalesce(operator, 'unknown') AS operator,
       count(*) FILTER (WHERE outcome = 'accepted') AS accepted,
       count(*) FILTER (WHERE delivery_status = 'delivered') AS delivered,
       coalesce(sum(cost), 0)::float8 AS cost, currency::text AS currency
  FROM sms_attempts
 WHERE started_at >= now() - interval '1 day'
 GROUP BY provider, operator, currency
HAVING count(*) FILTER (WHERE outcome = 'accepted') > 0
 ORDER BY provider, operator, currency
"#;

/// The latest messages enqueued in the last 24 hours that ended failed or expired.
const LATEST_UNSENT: &str = r#"
SELECT id::text AS id, state, template, recipient, finished_at, coalesce(last_error, '') AS reason
  FROM sms_messages
 WHERE id >= sms_uuid_v7_floor(now() - interval '1 day') AND state IN ('failed', 'expired')
 ORDER BY finished_at DESC NULLS LAST
 LIMIT 20
"#;

/// Messages each relay holds right now.
const HOLDS: &str = "SELECT relay, messages FROM sms_holds ORDER BY relay";

/// Each job's latest run, and the latest failed runs of any job (the rematch job alone runs six
/// times a minute, so a plain "latest runs" would show nothing else).
const LATEST_RUNS: &str = r#"
SELECT * FROM (
    (SELECT DISTINCT ON (job) job, slot, relay_id, finished_at, rows, error
       FROM sms_maintenance_runs ORDER BY job, slot DESC)
    UNION
    (SELECT job, slot, relay_id, finished_at, rows, error
       FROM sms_maintenance_runs WHERE error IS NOT NULL ORDER BY id DESC LIMIT 5)
) runs ORDER BY slot DESC
"#;

/// One provider's last hour.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ProviderHour {
    /// Provider name.
    pub provider: String,
    /// Calls.
    pub calls: i64,
    /// Of those, accepted.
    pub accepted: i64,
    /// Median call latency, ms.
    pub p50_ms: f64,
    /// 95th percentile call latency, ms.
    pub p95_ms: f64,
}

/// Delivery and cost of one provider to one operator in one currency, over the last day.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct DeliveryDay {
    /// Provider name.
    pub provider: String,
    /// Destination operator.
    pub operator: String,
    /// Accepted calls.
    pub accepted: i64,
    /// Of those, with a delivered receipt.
    pub delivered: i64,
    /// Their cost.
    pub cost: f64,
    /// Its currency, if any call had a price.
    pub currency: Option<String>,
}

/// A message that ended unsent (number masked).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Unsent {
    /// Message id.
    pub id: String,
    /// `failed` or `expired`.
    pub state: String,
    /// Template.
    pub template: String,
    /// The number, masked.
    pub recipient: String,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// Why.
    pub reason: String,
}

/// Messages one relay holds.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RelayHolds {
    /// The relay's claim session name.
    pub relay: String,
    /// Messages it is sending.
    pub messages: i64,
}

/// One maintenance run.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Run {
    /// The job.
    pub job: String,
    /// The scheduled time it ran for.
    pub slot: DateTime<Utc>,
    /// The relay that ran it.
    pub relay_id: String,
    /// When it ended (none while running).
    pub finished_at: Option<DateTime<Utc>>,
    /// Rows it changed.
    pub rows: Option<i64>,
    /// Why it failed.
    pub error: Option<String>,
}

impl Store {
    /// Each provider's calls in the last hour.
    pub async fn providers_last_hour(&self) -> Result<Vec<ProviderHour>> {
        Ok(sqlx::query_as(PROVIDERS_LAST_HOUR)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Delivery and cost per provider and operator over the last day.
    pub async fn delivery_last_day(&self) -> Result<Vec<DeliveryDay>> {
        Ok(sqlx::query_as(DELIVERY_LAST_DAY)
            .fetch_all(&self.pool)
            .await?)
    }

    /// The latest messages of the last day that ended failed or expired.
    pub async fn latest_unsent(&self) -> Result<Vec<Unsent>> {
        Ok(sqlx::query_as(LATEST_UNSENT).fetch_all(&self.pool).await?)
    }

    /// What each relay holds right now.
    pub async fn holds(&self) -> Result<Vec<RelayHolds>> {
        Ok(sqlx::query_as(HOLDS).fetch_all(&self.pool).await?)
    }

    /// Each job's latest run and the latest failures.
    pub async fn latest_runs(&self) -> Result<Vec<Run>> {
        Ok(sqlx::query_as(LATEST_RUNS).fetch_all(&self.pool).await?)
    }
}
