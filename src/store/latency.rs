//! How soon after an enqueue the relay reached a provider, which no report view measures (they
//! time delivery to the phone, which waits on the receipts).

use super::{Result, Store};

/// Percentiles of one span, in milliseconds; `None` when no message has it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct LatencyPercentiles {
    /// What was timed.
    pub span: String,
    /// Median.
    pub p50: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// Longest.
    pub max: Option<f64>,
}

/// Per message: its enqueue (`created_at`) to its first provider call, and to the first call a
/// provider accepted, whatever rounds that took. Messages no provider was called for (superseded
/// while pending) are left out; those never accepted count in the first span only.
const PICKUP: &str = r#"
WITH per_message AS (
    SELECT extract(epoch FROM min(a.started_at) - o.created_at) * 1000 AS first_call,
           extract(epoch FROM min(a.finished_at) FILTER (WHERE a.outcome = 'accepted') - o.created_at) * 1000 AS accepted
      FROM sms_outbox o
      JOIN sms_attempts a ON a.message_id = o.id
     GROUP BY o.id, o.created_at
)
SELECT 'enqueue -> first provider call' AS span,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY first_call) AS p50,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY first_call) AS p95,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY first_call) AS p99,
       max(first_call)::float8 AS max
  FROM per_message
UNION ALL
SELECT 'enqueue -> accepted (incl. retries)',
       percentile_cont(0.5) WITHIN GROUP (ORDER BY accepted),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY accepted),
       percentile_cont(0.99) WITHIN GROUP (ORDER BY accepted),
       max(accepted)::float8
  FROM per_message
 WHERE accepted IS NOT NULL
"#;

impl Store {
    /// Enqueue to first provider call, and enqueue to acceptance, over every message.
    pub async fn pickup_latency(&self) -> Result<Vec<LatencyPercentiles>> {
        let rows = sqlx::query_as(PICKUP).fetch_all(&self.pool).await?;
        Ok(rows)
    }
}
