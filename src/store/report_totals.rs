//! The report views summed over every day they hold: what `sms-relay demo` prints.

use super::{Result, Store};

/// One provider's calls, receipts and spend.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ProviderTotals {
    /// Provider name.
    pub provider: String,
    /// Calls, whatever their outcome.
    pub attempts: i64,
    /// Calls the provider accepted.
    pub accepted: i64,
    /// Accepted calls with a final delivery status.
    pub final_receipts: i64,
    /// Accepted calls delivered.
    pub delivered: i64,
    /// `delivered / final_receipts`, `None` before any final receipt.
    pub delivered_of_final: Option<f64>,
    /// Spend per currency, such as `62.750000 BDT`; `None` when no call had a price.
    pub cost: Option<String>,
}

/// One kind of failure and how often it happened (`sms_report_failures` without its days).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct FailureTotal {
    /// `attempt`, `receipt` or `message`.
    pub source: String,
    /// Provider called; `None` for messages.
    pub provider: Option<String>,
    /// The outcome, delivery status or message state.
    pub status: String,
    /// Error code, or the class of a message's last error.
    pub reason: Option<String>,
    /// Calls, receipts or messages.
    pub count: i64,
}

/// How codes fared beyond their final state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct MessageTotals {
    /// Messages enqueued.
    pub enqueued: i64,
    /// Of those, cancelled because a newer code for the same recipient and purpose came first.
    pub superseded: i64,
    /// Of those, expired before they could be sent.
    pub expired: i64,
    /// Messages with at least one provider call.
    pub called: i64,
    /// Of those, messages that needed a second provider within a round.
    pub with_fallback: i64,
    /// Of those, messages resent after an undelivered or missing receipt.
    pub with_resend: i64,
}

/// Delivery and spend per provider, from `sms_report_delivery_rate` and `sms_report_cost_daily`.
/// Counts add up across days, operators and templates; the ratio is taken again over the sums
/// with the views' own `sms_report_ratio`. Spend stays per currency, never converted.
const PROVIDER_TOTALS: &str = r#"
WITH delivery AS (
    SELECT provider,
           sum(attempts)::int8 AS attempts,
           sum(accepted)::int8 AS accepted,
           sum(final_receipts)::int8 AS final_receipts,
           sum(delivered)::int8 AS delivered
      FROM sms_report_delivery_rate
     GROUP BY provider
), spend AS (
    SELECT provider, string_agg(cost::text || ' ' || currency, ', ' ORDER BY currency) AS cost
      FROM (SELECT provider, currency, sum(cost) AS cost
              FROM sms_report_cost_daily
             WHERE currency IS NOT NULL
             GROUP BY provider, currency) per_currency
     GROUP BY provider
)
SELECT d.provider, d.attempts, d.accepted, d.final_receipts, d.delivered,
       sms_report_ratio(d.delivered, d.final_receipts)::float8 AS delivered_of_final,
       s.cost
  FROM delivery d
  LEFT JOIN spend s USING (provider)
 ORDER BY d.provider
"#;

/// `sms_report_failures` with its days added up, in the order of `sql/reports/failures.sql`.
const FAILURE_TOTALS: &str = r#"
SELECT source, provider, status, reason, sum(count)::int8 AS count
  FROM sms_report_failures
 GROUP BY source, provider, status, reason
 ORDER BY source, provider, status, count DESC, reason
"#;

/// `sms_report_expired_superseded` and `sms_report_fallback_resend` added up over their days
/// (one row even when both are empty).
const MESSAGE_TOTALS: &str = r#"
SELECT coalesce(e.enqueued, 0) AS enqueued,
       coalesce(e.superseded, 0) AS superseded,
       coalesce(e.expired, 0) AS expired,
       coalesce(f.called, 0) AS called,
       coalesce(f.with_fallback, 0) AS with_fallback,
       coalesce(f.with_resend, 0) AS with_resend
  FROM (SELECT sum(messages)::int8 AS enqueued,
               sum(superseded)::int8 AS superseded,
               sum(expired)::int8 AS expired
          FROM sms_report_expired_superseded) e,
       (SELECT sum(messages)::int8 AS called,
               sum(with_fallback)::int8 AS with_fallback,
               sum(with_resend)::int8 AS with_resend
          FROM sms_report_fallback_resend) f
"#;

impl Store {
    /// Delivery and spend per provider, over every day.
    pub async fn provider_totals(&self) -> Result<Vec<ProviderTotals>> {
        let rows = sqlx::query_as(PROVIDER_TOTALS)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows)
    }

    /// Every kind of failure and its count, over every day.
    pub async fn failure_totals(&self) -> Result<Vec<FailureTotal>> {
        let rows = sqlx::query_as(FAILURE_TOTALS).fetch_all(&self.pool).await?;
        Ok(rows)
    }

    /// Superseded, expired, fallback and resend counts, over every day.
    pub async fn message_totals(&self) -> Result<MessageTotals> {
        let totals = sqlx::query_as(MESSAGE_TOTALS).fetch_one(&self.pool).await?;
        Ok(totals)
    }
}
