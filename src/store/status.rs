//! What `sms-relay status` shows: the queue by state, its oldest due message, attempts by outcome.
//! Every count reads what is waiting (`sms_queue`) or the last day (through
//! the time-ordered message ids and the block-range index on attempts), so it costs the same at
//! millions of finished messages.

use super::{Result, Store};
use crate::providers::{Measure, Per};

/// Messages in one state.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StateCount {
    /// `sms_state` label.
    pub state: String,
    /// Number of messages.
    pub count: i64,
}

/// Attempts of one provider with one outcome.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AttemptCount {
    /// Provider name.
    pub provider: String,
    /// `sms_outcome` label.
    pub outcome: String,
    /// Number of attempts.
    pub count: i64,
}

/// A snapshot of the queue.
#[derive(Debug, Clone)]
pub struct Status {
    /// Messages per state (every state a message can be in listed, zeros included): every
    /// waiting one, and the ones enqueued in the last 24 hours that have ended.
    pub states: Vec<StateCount>,
    /// Waiting messages a relay is sending right now (held by its claim).
    pub in_flight: i64,
    /// How long the oldest due message has been waiting, in seconds.
    pub oldest_due_age_s: Option<f64>,
    /// Provider calls of the last 24 hours per provider and outcome.
    pub attempts: Vec<AttemptCount>,
}

impl Status {
    /// Messages in `state`.
    pub fn count(&self, state: &str) -> i64 {
        self.states
            .iter()
            .find(|s| s.state == state)
            .map_or(0, |s| s.count)
    }

    /// Messages in any state.
    pub fn total(&self) -> i64 {
        self.states.iter().map(|s| s.count).sum()
    }
}

/// Calls each of `$1` got accepted since the UTC day began, and since the hour began, and what
/// they cost, per currency (none where no cost is known), found through the block-range index
/// on `started_at`.
const ACCEPTED_TODAY: &str = "SELECT provider, currency::text AS currency, count(*) AS messages, \
            coalesce(sum(cost) * 1000000, 0)::int8 AS cost_micros, \
            count(*) FILTER (WHERE started_at >= date_trunc('hour', now())) AS messages_hour, \
            coalesce(sum(cost) FILTER (WHERE started_at >= date_trunc('hour', now())) * 1000000, 0)::int8 \
                AS cost_micros_hour \
       FROM sms_attempts \
      WHERE outcome = 'accepted' AND provider = ANY ($1) AND started_at >= date_trunc('day', now(), 'UTC') \
      GROUP BY provider, currency";

/// What one provider's accepted calls came to today in one currency.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AcceptedToday {
    /// Provider name.
    pub provider: String,
    /// ISO 4217 code of their cost; `None` for calls without one.
    pub currency: Option<String>,
    /// Accepted calls.
    pub messages: i64,
    /// Their cost in millionths of the currency.
    pub cost_micros: i64,
    /// Of those, accepted this UTC hour.
    pub messages_hour: i64,
    /// Their cost.
    pub cost_micros_hour: i64,
}

impl AcceptedToday {
    /// What counts against a cap of `measure` per `per` in this row (0 for another currency).
    pub fn used(&self, measure: &Measure, per: Per) -> i64 {
        let (messages, cost) = match per {
            Per::Hour => (self.messages_hour, self.cost_micros_hour),
            Per::Day => (self.messages, self.cost_micros),
        };
        match measure {
            Measure::Messages => messages,
            Measure::Spend(currency) if self.currency.as_ref() == Some(currency) => cost,
            Measure::Spend(_) => 0,
        }
    }
}

/// Every state with its count: `pending` from the queue of waiting messages, the
/// others over the messages enqueued in the last 24 hours (a range of the time-ordered ids).
const STATES: &str = r#"
SELECT s.state::text AS state,
       CASE WHEN s.state = 'pending' THEN (SELECT count(*) FROM sms_queue)
            ELSE coalesce(d.count, 0) END AS count
  FROM unnest(enum_range(NULL::sms_state)) AS s(state)
  LEFT JOIN (SELECT state, count(*) AS count FROM sms_outbox
              WHERE id >= sms_uuid_v7_floor(now() - interval '1 day') AND state <> 'pending'
              GROUP BY state) d ON d.state = s.state
 WHERE s.state <> 'sending'
 ORDER BY s.state
"#;

impl Store {
    /// What each of `providers` accepted today (UTC) across every relay, per currency.
    pub async fn accepted_today(&self, providers: &[String]) -> Result<Vec<AcceptedToday>> {
        Ok(sqlx::query_as(ACCEPTED_TODAY)
            .bind(providers)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Whether the outbox holds no message at all.
    pub async fn is_empty(&self) -> Result<bool> {
        Ok(
            sqlx::query_scalar("SELECT NOT EXISTS (SELECT 1 FROM sms_outbox)")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Reads the queue's state.
    pub async fn status(&self) -> Result<Status> {
        let states = sqlx::query_as::<_, StateCount>(STATES)
            .fetch_all(&self.pool)
            .await?;
        let in_flight =
            sqlx::query_scalar("SELECT coalesce(sum(messages), 0)::int8 FROM sms_holds")
                .fetch_one(&self.pool)
                .await?;
        let oldest_due_age_s: Option<f64> = sqlx::query_scalar(
            "SELECT CASE WHEN due <= now() THEN extract(epoch FROM now() - due)::float8 END \
               FROM (SELECT min(next_attempt_at) AS due FROM sms_queue) d",
        )
        .fetch_one(&self.pool)
        .await?;
        let attempts = sqlx::query_as::<_, AttemptCount>(
            "SELECT provider, outcome::text AS outcome, count(*) AS count FROM sms_attempts \
              WHERE started_at >= now() - interval '1 day' \
              GROUP BY provider, outcome ORDER BY provider, outcome",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(Status {
            states,
            in_flight,
            oldest_due_age_s,
            attempts,
        })
    }
}
