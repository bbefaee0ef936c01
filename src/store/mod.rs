//! Every SQL statement the relay runs lives in this module.

mod bench;
mod circuits;
mod countries;
mod delivery;
mod enqueue;
mod gauges;
mod latency;
mod lifecycle;
pub mod maintenance;
mod messages;
mod overview;
mod report_totals;
mod reports;
mod schema;
mod status;
mod templates;
mod wakeup;

use std::{borrow::Cow, time::Duration};

use sqlx::PgPool;

pub use circuits::CircuitRow;
pub use delivery::{Recorded, ResendRule, Unanswered, Via};
pub use enqueue::{EnqueueError, EnqueueRequest, Refusal, enqueue};
pub use gauges::{BudgetGauge, DeliveryGauge, QueueGauges, RelayGauges};
pub use latency::Pickup;
pub use lifecycle::{
    Ahead, Claim, ClaimedMessage, Disposition, Finish, Holder, MAX_RELAY_ID_LEN, RoundEnd,
    presence_name,
};
pub use messages::{EventError, MessageFilter, MessageHistory};
pub use overview::{DeliveryDay, ProviderHour, RelayHolds, Run, Unsent};
pub use report_totals::{FailureTotal, MessageTotals, ProviderTotals};
pub use reports::ReportRows;
pub use status::{AcceptedToday, AttemptCount, StateCount, Status};
pub use templates::TemplateRow;
pub use wakeup::WAKEUP_CHANNEL;

/// Errors from the store: the database was unreachable or refused a statement. Worth retrying
/// after a pause unless the schema is missing (run `sms-relay migrate`).
#[derive(Debug, thiserror::Error)]
#[error("database error: {0}")]
pub struct StoreError(#[from] pub sqlx::Error);

impl StoreError {
    /// Whether the database refused the data itself (SQLSTATE class 22 or 23): sending the same
    /// statement again will fail again, unlike a lost connection or a timeout.
    pub fn is_data_error(&self) -> bool {
        is_data_error(&self.0)
    }

    /// Whether a unique key refused the row: when a write is retried after a try whose outcome
    /// was unknown, that try committed meanwhile, and a further retry finds its rows.
    pub fn is_duplicate(&self) -> bool {
        self.0
            .as_database_error()
            .is_some_and(|db| db.is_unique_violation())
    }
}

/// See [`StoreError::is_data_error`].
fn is_data_error(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|db| db.code())
        .is_some_and(|code| code.starts_with("22") || code.starts_with("23"))
}

/// The largest cost `numeric(14, 6)` holds, in micros; a larger reported price is dropped.
const MAX_COST_MICROS: i64 = 99_999_999_999_999;

/// Text as PostgreSQL accepts it: no NUL characters (copied only if it had some).
fn pg_text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', ""))
    } else {
        Cow::Borrowed(s)
    }
}

/// Result alias for store calls.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The relay's view of the database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    /// Wraps a pool.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The underlying pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// A duration as the milliseconds a statement multiplies `interval '1 millisecond'` by.
pub(crate) fn interval_ms(d: Duration) -> f64 {
    d.as_millis() as f64
}
