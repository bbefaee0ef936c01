//! What the metrics read from the database at each scrape: reads of the waiting part of the queue
//! (`sms_queue`), the holds, the live relays and the budgets, all bounded by what
//! is waiting or configured, never by the history.

use super::{Result, Store};

/// Waiting messages, those due now, and how long the oldest due one has waited (0 when none is
/// due), read from `sms_queue`, which holds waiting messages only.
const QUEUE: &str = "SELECT count(*) AS waiting, \
            count(*) FILTER (WHERE next_attempt_at <= now()) AS due, \
            coalesce(extract(epoch FROM now() - min(next_attempt_at) FILTER (WHERE next_attempt_at <= now())), 0)::float8 \
                AS oldest_due_age_s \
       FROM sms_queue";

/// Messages held by relays right now, and relay processes connected to this database (each
/// keeps one claim session named `sms-relay <id>`).
const RELAYS: &str = "SELECT (SELECT coalesce(sum(messages), 0)::int8 FROM sms_holds) AS in_flight, \
            (SELECT count(*) FROM pg_stat_activity \
              WHERE datname = current_database() AND application_name LIKE 'sms-relay %') AS relays";

/// Each budget's use in its current window, summed over its subjects' rows, per purpose and
/// subject; budgets counted per caller are left out (their subjects are digests of caller keys,
/// an unbounded set).
const BUDGETS: &str = r#"
SELECT b.id AS budget, b.scope,
       -- A prefix as long as a number is shown masked: a label never carries a phone number.
       CASE WHEN b.scope = 'prefix' AND length(u.subject) >= 10 THEN sms_mask(u.subject) ELSE u.subject END AS subject,
       u.purpose, CASE WHEN b.per = interval '1 hour' THEN 'hour' ELSE 'day' END AS per,
       sum(u.used)::float8 AS used_messages, b.max_messages::float8 AS max_messages,
       sum(u.spent)::float8 AS used_cost, b.max_cost::float8 AS max_cost, b.currency::text AS currency
  FROM sms_budgets b
  JOIN sms_budget_usage u ON u.budget_id = b.id
 WHERE b.scope <> 'caller' AND u.window_start = date_bin(b.per, now(), timestamptz '2000-01-01 00:00:00+00')
 GROUP BY b.id, b.scope, u.subject, u.purpose, b.per, b.max_messages, b.max_cost, b.currency
"#;

/// Per provider, of the calls accepted in the last hour whose receipts are final, the share
/// delivered (found through the block-range index on `started_at`).
const DELIVERY: &str = r#"
SELECT provider,
       (count(*) FILTER (WHERE delivery_status = 'delivered'))::float8 / count(*) AS ratio
  FROM sms_attempts
 WHERE started_at >= now() - interval '1 hour' AND outcome = 'accepted'
   AND delivery_status IN ('delivered', 'undelivered', 'failed', 'expired')
 GROUP BY provider
"#;

/// One provider's delivery ratio over the last hour.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct DeliveryGauge {
    /// Provider name.
    pub provider: String,
    /// Delivered ÷ accepted calls with a final receipt.
    pub ratio: f64,
}

/// The queue as a scrape sees it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct QueueGauges {
    /// Messages waiting to be sent (due or not).
    pub waiting: i64,
    /// Of those, the ones due now.
    pub due: i64,
    /// How long the oldest due message has waited, in seconds.
    pub oldest_due_age_s: f64,
}

/// Relays and what they hold.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RelayGauges {
    /// Messages being sent right now.
    pub in_flight: i64,
    /// Relay processes connected.
    pub relays: i64,
}

/// One budget's use in its current window.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct BudgetGauge {
    /// `sms_budgets.id`.
    pub budget: i32,
    /// `sms_budgets.scope`.
    pub scope: String,
    /// `*`, a prefix, an operator or a template.
    pub subject: String,
    /// The purpose counted.
    pub purpose: String,
    /// `hour` or `day`.
    pub per: String,
    /// Codes counted.
    pub used_messages: f64,
    /// Its limit in codes, if any.
    pub max_messages: Option<f64>,
    /// Estimated cost counted.
    pub used_cost: f64,
    /// Its limit in money, if any.
    pub max_cost: Option<f64>,
    /// The currency of the money limit.
    pub currency: Option<String>,
}

impl Store {
    /// The waiting queue.
    pub async fn queue_gauges(&self) -> Result<QueueGauges> {
        Ok(sqlx::query_as(QUEUE).fetch_one(&self.pool).await?)
    }

    /// The relays and their holds.
    pub async fn relay_gauges(&self) -> Result<RelayGauges> {
        Ok(sqlx::query_as(RELAYS).fetch_one(&self.pool).await?)
    }

    /// Each provider's delivery ratio over the last hour.
    pub async fn delivery_gauges(&self) -> Result<Vec<DeliveryGauge>> {
        Ok(sqlx::query_as(DELIVERY).fetch_all(&self.pool).await?)
    }

    /// Every budget's use in its current window.
    pub async fn budget_gauges(&self) -> Result<Vec<BudgetGauge>> {
        Ok(sqlx::query_as(BUDGETS).fetch_all(&self.pool).await?)
    }
}
