//! Enqueueing through `sms_enqueue()`, the same function the auth backend calls.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

/// One message to enqueue; `None` fields take the function's defaults.
#[derive(Debug, Clone, Default)]
pub struct EnqueueRequest {
    /// E.164 recipient.
    pub recipient: String,
    /// Template name.
    pub template: String,
    /// Template parameters.
    pub params: serde_json::Value,
    /// Template locale (default `en`).
    pub locale: Option<String>,
    /// Validity end (default: now + the template's validity).
    pub expires_at: Option<DateTime<Utc>>,
    /// A second enqueue with the same key returns the first id.
    pub idempotency_key: Option<String>,
    /// 0 (most urgent) to 9; default 5.
    pub priority: Option<i32>,
    /// Supersede group (default: the template name); budgets count per purpose.
    pub purpose: Option<String>,
    /// Who asked (client IP, account, device), counted against the caller budget; never stored.
    pub caller: Option<String>,
}

/// Why `sms_enqueue()` refused a message; each has its own SQLSTATE (see the migration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// SR001
    InvalidRecipient,
    /// SR002
    UnknownTemplate,
    /// SR003
    ParamsNotObject,
    /// SR004
    MissingPlaceholder,
    /// SR005
    ExpiryInPast,
    /// SR006
    ExpiryBeyondValidity,
    /// SR007
    RecipientNotAllowed,
    /// SR008
    RateLimited,
    /// SR009
    NotPending,
    /// SR010
    InvalidPriority,
    /// SR011
    InvalidIdempotencyKey,
    /// SR012: params has keys that are no placeholder, or a value too long or with control characters.
    UnsendableParams,
    /// SR015: the caller key is over its limit.
    CallerLimited,
    /// SR016: a budget of this purpose is spent (everything, a prefix, an operator, a template).
    BudgetSpent,
    /// SR017: a params value does not have the shape its template requires.
    BadShape,
    /// SR018: a fictional number (demo and bench only), from a session that did not ask for them.
    Fictional,
}

impl Refusal {
    const ALL: [(Refusal, &'static str); 16] = [
        (Refusal::InvalidRecipient, "SR001"),
        (Refusal::UnknownTemplate, "SR002"),
        (Refusal::ParamsNotObject, "SR003"),
        (Refusal::MissingPlaceholder, "SR004"),
        (Refusal::ExpiryInPast, "SR005"),
        (Refusal::ExpiryBeyondValidity, "SR006"),
        (Refusal::RecipientNotAllowed, "SR007"),
        (Refusal::RateLimited, "SR008"),
        (Refusal::NotPending, "SR009"),
        (Refusal::InvalidPriority, "SR010"),
        (Refusal::InvalidIdempotencyKey, "SR011"),
        (Refusal::UnsendableParams, "SR012"),
        (Refusal::CallerLimited, "SR015"),
        (Refusal::BudgetSpent, "SR016"),
        (Refusal::BadShape, "SR017"),
        (Refusal::Fictional, "SR018"),
    ];

    /// The SQLSTATE the database raises for this refusal.
    pub fn sqlstate(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(r, _)| *r == self)
            .map_or("", |(_, code)| code)
    }

    /// The refusal a SQLSTATE stands for.
    pub fn from_sqlstate(code: &str) -> Option<Self> {
        Self::ALL.iter().find(|(_, c)| *c == code).map(|(r, _)| *r)
    }
}

/// Enqueue failed.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    /// The input was refused; retrying the same input will not help.
    #[error("{message} (SQLSTATE {})", reason.sqlstate())]
    Refused {
        /// Which rule refused it.
        reason: Refusal,
        /// The database's message (never contains the number or the params).
        message: String,
    },
    /// The database failed; may be worth retrying.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
}

impl From<sqlx::Error> for EnqueueError {
    fn from(error: sqlx::Error) -> Self {
        if let Some(db) = error.as_database_error()
            && let Some(reason) = db.code().as_deref().and_then(Refusal::from_sqlstate)
        {
            return EnqueueError::Refused {
                reason,
                message: db.message().to_owned(),
            };
        }
        EnqueueError::Database(error)
    }
}

/// Calls `sms_enqueue()` on `executor` (a pool, a connection, or the caller's transaction).
pub async fn enqueue<'e, E: PgExecutor<'e>>(
    executor: E,
    req: &EnqueueRequest,
) -> Result<Uuid, EnqueueError> {
    let id = sqlx::query_scalar(
        "SELECT sms_enqueue(recipient => $1, template => $2, params => $3, expires_at => $4, \
         idempotency_key => $5, priority => coalesce($6, 5), locale => coalesce($7, 'en'), purpose => $8, \
         caller => $9)",
    )
    .bind(&req.recipient)
    .bind(&req.template)
    .bind(&req.params)
    .bind(req.expires_at)
    .bind(&req.idempotency_key)
    .bind(req.priority)
    .bind(&req.locale)
    .bind(&req.purpose)
    .bind(&req.caller)
    .fetch_one(executor)
    .await?;
    Ok(id)
}
