//! The relay's own latency as `sms_report_pickup` shows it: how soon after its enqueue a message
//! reached a provider.

use super::{Result, Store};

/// One UTC day and template of `sms_report_pickup` (times in milliseconds; `None` where no
/// message has the span).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Pickup {
    /// UTC day of enqueue.
    pub day: chrono::NaiveDate,
    /// Template name.
    pub template: String,
    /// Messages with at least one provider call.
    pub messages: i64,
    /// Enqueue to first provider call: median.
    pub first_call_p50_ms: Option<f64>,
    /// Enqueue to first provider call: 99th percentile.
    pub first_call_p99_ms: Option<f64>,
    /// Enqueue to first provider call: longest.
    pub first_call_max_ms: Option<f64>,
    /// Enqueue to the first accepted call: median.
    pub accepted_p50_ms: Option<f64>,
    /// Enqueue to the first accepted call: 99th percentile.
    pub accepted_p99_ms: Option<f64>,
    /// Enqueue to the first accepted call: longest.
    pub accepted_max_ms: Option<f64>,
}

/// The view's rows, newest day first; its numeric columns read as float8 for printing.
const PICKUP: &str = r#"
SELECT day, template, messages,
       first_call_p50_ms::float8, first_call_p99_ms::float8, first_call_max_ms::float8,
       accepted_p50_ms::float8, accepted_p99_ms::float8, accepted_max_ms::float8
  FROM sms_report_pickup
 ORDER BY day DESC, template
"#;

impl Store {
    /// `sms_report_pickup`, every day it holds.
    pub async fn pickup(&self) -> Result<Vec<Pickup>> {
        let rows = sqlx::query_as(PICKUP).fetch_all(&self.pool).await?;
        Ok(rows)
    }
}
