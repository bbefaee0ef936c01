//! Claiming due messages: one statement that holds them for this session and writes nothing.

use chrono::{DateTime, Utc};
use sqlx::{Row, postgres::PgRow};
use uuid::Uuid;

use crate::store::{Result, Store};

/// A message this relay holds until its round is recorded.
#[derive(Debug, Clone)]
pub struct ClaimedMessage {
    /// `sms_outbox.id`.
    pub id: Uuid,
    /// `sms_outbox.seq`: short, unique, the base of the calls' client references.
    pub seq: i64,
    /// E.164 recipient.
    pub recipient: String,
    /// Template name.
    pub template: String,
    /// Template locale.
    pub locale: String,
    /// Template parameters as JSON text (they hold the code). Decoded per message by the relay, so
    /// one row the decoder cannot read fails alone instead of failing the whole claim.
    pub params: String,
    /// The template body, `None` if the template was deleted.
    pub body: Option<String>,
    /// The most parts the template allows one message, `None` if the template was deleted.
    pub max_parts: Option<i16>,
    /// This claim's round number (one more than the rounds `sms_outbox.attempts` counts).
    pub round: i32,
    /// A newer message for the same recipient and purpose superseded it.
    pub superseded: bool,
    /// Validity left at claim time, by the database's clock, in milliseconds.
    pub remaining_ms: f64,
    /// Set when a receipt (or its absence) put this sent message back: why.
    pub resend_reason: Option<String>,
    /// The provider whose attempt was not delivered; the round starts with the next one.
    pub resend_skip: Option<String>,
    /// The claim session's backend pid.
    pub holder: i32,
    /// When the claim session began (a pid alone may be reused by a later session).
    pub holder_since: DateTime<Utc>,
    /// The key of the hold's lock, which consecutive messages share: one lock-table entry
    /// however many of them the session holds.
    pub hold: i32,
}

/// The session that holds a claimed message: its round is recorded as this relay's only while
/// that session lives (and so still holds the message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    /// Backend pid.
    pub pid: i32,
    /// Backend start.
    pub since: DateTime<Utc>,
}

impl ClaimedMessage {
    /// Reads one of `sms_claim()`'s message rows by position, in the function's column order:
    /// a claim returns hundreds of rows, and looking each column up by name cost more than
    /// decoding it.
    fn decode(row: &PgRow) -> sqlx::Result<Self> {
        Ok(Self {
            id: row.try_get(0)?,
            seq: row.try_get(1)?,
            recipient: row.try_get(2)?,
            template: row.try_get(3)?,
            locale: row.try_get(4)?,
            params: row.try_get(5)?,
            body: row.try_get(6)?,
            max_parts: row.try_get(7)?,
            round: row.try_get(8)?,
            superseded: row.try_get(9)?,
            remaining_ms: row.try_get(10)?,
            resend_reason: row.try_get(11)?,
            resend_skip: row.try_get(12)?,
            holder: row.try_get(13)?,
            holder_since: row.try_get(14)?,
            hold: row.try_get(HOLD)?,
        })
    }

    /// The session holding this message.
    pub fn holder(&self) -> Holder {
        Holder {
            pid: self.holder,
            since: self.holder_since,
        }
    }
}

/// What a claim saw beyond the messages it took.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Ahead {
    /// It took as many as asked for: more may be due now.
    More,
    /// Every due message no relay holds is taken; the next waiting one comes due in this many
    /// milliseconds (by the database's clock).
    DueIn(f64),
    /// Every due message no relay holds is taken, and none waits to come due later.
    Nothing,
}

/// One claim's result.
#[derive(Debug)]
pub struct Claim {
    /// The messages now held, in priority then deadline order.
    pub messages: Vec<ClaimedMessage>,
    /// When to look again.
    pub ahead: Ahead,
}

/// The claim runs as `sms_claim()`, so that the holds it takes, the re-read of the held rows with a
/// fresh snapshot, the giving back of holds no longer needed and the look at when the next message
/// comes due happen in one round trip, on the connection that keeps the holds. Below the limit,
/// its last row has no message, only `next_due_ms`.
const CLAIM: &str = "SELECT * FROM sms_claim($1, $2, $3)";
/// The position of `next_due_ms` in `sms_claim()`'s rows.
const NEXT_DUE_MS: usize = 15;
/// The position of `hold` in `sms_claim()`'s rows.
const HOLD: usize = 16;

impl Store {
    /// Claims up to `limit` due messages, in priority then deadline order, other than those this
    /// session holds already (`sending`, by seq), after giving back the holds on `done` (the seqs
    /// of messages whose round is recorded). Must run on the claim connection: the claimed
    /// messages are held by its session.
    pub async fn claim(&self, limit: u32, sending: &[i64], done: &[i64]) -> Result<Claim> {
        let rows = sqlx::query(CLAIM)
            .bind(i32::try_from(limit).unwrap_or(i32::MAX))
            .bind(sending)
            .bind(done)
            .fetch_all(&self.pool)
            .await?;
        let mut claim = Claim {
            messages: Vec::with_capacity(rows.len()),
            ahead: Ahead::More,
        };
        for row in &rows {
            if row.try_get::<Option<Uuid>, _>(0)?.is_some() {
                claim.messages.push(ClaimedMessage::decode(row)?);
            } else {
                claim.ahead = match row.try_get::<Option<f64>, _>(NEXT_DUE_MS)? {
                    Some(ms) => Ahead::DueIn(ms),
                    None => Ahead::Nothing,
                };
            }
        }
        Ok(claim)
    }
}
