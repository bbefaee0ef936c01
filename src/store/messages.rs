//! What the operator's `messages` commands read and do: through the `sms_messages` and
//! `sms_message_receipts` views (numbers masked, no codes, no receipt payloads) and the
//! lifecycle's own events (`sms_retry()`, `sms_cancel()`).

use serde_json::{Map, Value};
use sqlx::types::Json;
use uuid::Uuid;

use super::{Result, Store, StoreError};

/// Why an operator's retry or cancel did not happen.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// The lifecycle refused it (SQLSTATE SR014), saying why: the message's state, its code's
    /// validity, or a relay sending it right now (only the last may pass if tried again later).
    #[error("refused: {0}")]
    Refused(String),
    /// The database could not be asked.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for EventError {
    fn from(error: sqlx::Error) -> Self {
        match error.as_database_error() {
            Some(db) if db.code().as_deref() == Some("SR014") => {
                EventError::Refused(db.message().to_owned())
            }
            _ => EventError::Store(StoreError(error)),
        }
    }
}

/// The newest messages matching the filters (`$1` state, `$2` window as interval text, `$3`
/// template, `$4` a provider that was called for it; each NULL for any), at most `$5`. The
/// window is read through the time-ordered ids (the primary key).
const LIST: &str = r#"
SELECT to_jsonb(x) FROM (
    SELECT m.id, m.state, m.template, m.purpose, m.recipient, m.operator,
           to_char(m.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') AS created_utc,
           m.rounds, m.resends,
           (SELECT a.provider FROM sms_attempts a WHERE a.message_id = m.id
             ORDER BY a.attempt_number DESC, a.chain_step DESC LIMIT 1) AS last_provider,
           m.last_error
      FROM sms_messages m
     WHERE m.id >= sms_uuid_v7_floor(now() - $2::interval)
       AND ($1::text IS NULL OR m.state = $1)
       AND ($3::text IS NULL OR m.template = $3)
       AND ($4::text IS NULL OR EXISTS (SELECT 1 FROM sms_attempts a
                                         WHERE a.message_id = m.id AND a.provider = $4))
     ORDER BY m.id DESC
     LIMIT $5) x
"#;

/// One message as operators see it.
const MESSAGE: &str = "SELECT to_jsonb(m) FROM sms_messages m WHERE m.id = $1";

/// Its provider calls, round by round.
const CALLS: &str = r#"
SELECT to_jsonb(x) FROM (
    SELECT attempt_number AS round, chain_step AS step, provider, cause, outcome::text AS outcome,
           started_at, round(latency_ms::numeric, 1) AS latency_ms, http_status, error_code,
           error_message, cost, currency, segments, encoding, delivery_status::text AS delivery_status,
           delivered_at, resend_reason
      FROM sms_attempts WHERE message_id = $1
     ORDER BY attempt_number, chain_step, started_at) x
"#;

/// The receipts matched to its calls.
const RECEIPTS: &str = r#"
SELECT to_jsonb(x) FROM (
    SELECT received_at, source, via, status_raw, delivery_status, error_code, result, resent
      FROM sms_message_receipts WHERE message_id = $1
     ORDER BY received_at, id) x
"#;

/// Retry: a failed message once more, or a waiting retry now (refused with SR014 and the reason).
const RETRY: &str = "SELECT sms_retry($1)";
/// Cancel a waiting message (refused with SR014 and the reason).
const CANCEL: &str = "SELECT sms_cancel($1, $2)";

/// What `messages list` filters on.
#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    /// Only this state.
    pub state: Option<String>,
    /// Enqueued within this window (interval text, e.g. `1 day`).
    pub since: String,
    /// Only this template.
    pub template: Option<String>,
    /// Only messages this provider was called for.
    pub provider: Option<String>,
    /// At most this many, newest first.
    pub limit: i64,
}

/// One message's whole history.
#[derive(Debug, Clone)]
pub struct MessageHistory {
    /// The message (number masked, no code).
    pub message: Map<String, Value>,
    /// Its provider calls, in order.
    pub calls: Vec<Map<String, Value>>,
    /// The receipts matched to them.
    pub receipts: Vec<Map<String, Value>>,
}

impl Store {
    /// The newest messages matching `filter`.
    pub async fn list_messages(&self, filter: &MessageFilter) -> Result<Vec<Map<String, Value>>> {
        let rows: Vec<Json<Map<String, Value>>> = sqlx::query_scalar(LIST)
            .bind(&filter.state)
            .bind(&filter.since)
            .bind(&filter.template)
            .bind(&filter.provider)
            .bind(filter.limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    /// Message `id` with its calls and receipts; `None` if there is no such message.
    pub async fn message_history(&self, id: Uuid) -> Result<Option<MessageHistory>> {
        let Some(Json(message)) = sqlx::query_scalar(MESSAGE)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let rows = async |sql: &'static str| -> Result<Vec<Map<String, Value>>> {
            let rows: Vec<Json<Map<String, Value>>> = sqlx::query_scalar(sql)
                .bind(id)
                .fetch_all(&self.pool)
                .await?;
            Ok(rows.into_iter().map(|r| r.0).collect())
        };
        Ok(Some(MessageHistory {
            message,
            calls: rows(CALLS).await?,
            receipts: rows(RECEIPTS).await?,
        }))
    }

    /// An operator's retry of message `id`.
    pub async fn retry_message(&self, id: Uuid) -> Result<(), EventError> {
        sqlx::query(RETRY).bind(id).execute(&self.pool).await?;
        Ok(())
    }

    /// An operator's cancel of message `id`, for `reason`.
    pub async fn cancel_message(&self, id: Uuid, reason: &str) -> Result<(), EventError> {
        sqlx::query(CANCEL)
            .bind(id)
            .bind(reason)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
