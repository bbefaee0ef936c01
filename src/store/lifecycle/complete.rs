//! Recording a batch of finished sends: attempt rows plus the messages' new states, one statement.

use std::borrow::Cow;

use uuid::Uuid;

use super::claim::Holder;
use crate::store::{MAX_COST_MICROS, Result, Store, pg_text};
use crate::{
    domain::Segments,
    providers::{AttemptRecord, fields::is_currency},
};

/// What becomes of a claimed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// A provider accepted it.
    Sent,
    /// It can never be sent (bad recipient, unrenderable, out of rounds).
    Failed,
    /// Its validity ended before it could be sent.
    Expired,
    /// A newer message superseded it.
    Cancelled,
    /// Every provider failed; try again after `delay_ms` (the database turns this into `expired`
    /// if that is past the validity, or `cancelled` if the message was superseded meanwhile).
    Retry,
    /// This relay gave the message back unsent (shutdown); it is due again at once.
    Release,
}

impl Disposition {
    /// How the round ended, as the completion statement (and the metrics) name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::Sent => "sent",
            Disposition::Failed => "failed",
            Disposition::Expired => "expired",
            Disposition::Cancelled => "cancelled",
            Disposition::Retry => "retry",
            Disposition::Release => "release",
        }
    }

    /// Whether the message comes back to the queue.
    pub fn reschedules(self) -> bool {
        matches!(self, Disposition::Retry | Disposition::Release)
    }
}

/// The end of one claimed round of one message.
#[derive(Debug, Clone)]
pub struct Finish {
    /// Message id.
    pub id: Uuid,
    /// The round this relay claimed; the update applies only if the message is still before it.
    pub round: i32,
    /// The session that held the message for this round.
    pub holder: Holder,
    /// New state.
    pub disposition: Disposition,
    /// Wait before the retry (Retry only).
    pub delay_ms: i64,
    /// Why it did not end `sent`.
    pub reason: Option<String>,
    /// Template name, copied to the attempt rows for reports.
    pub template: String,
    /// Encoding and parts of the rendered text.
    pub segments: Option<Segments>,
    /// The provider calls made in this round.
    pub attempts: Vec<AttemptRecord>,
    /// Why this round is a resend (copied to its attempts), if it is one.
    pub resend_reason: Option<String>,
    /// The destination's country (`sms_attempts.country`).
    pub country: String,
    /// The destination's operator (`sms_attempts.operator`).
    pub operator: &'static str,
}

impl Finish {
    /// Why the `index`-th call of this round was made (`sms_attempts.cause`).
    fn cause(&self, index: usize) -> &'static str {
        match (index, self.round, &self.resend_reason) {
            (1.., _, _) => "fallback",
            (0, _, Some(_)) => "resend",
            (0, ..=1, None) => "first",
            (0, _, None) => "retry",
        }
    }
}

/// Returns, for each message the round's update applied to, its new state, its enqueue time and
/// whether it had been sent before this round (for the relay's metrics).
///
/// The UPDATE is fenced on `state = 'pending' AND attempts = round - 1` and on the holding session
/// being alive: then it still holds the message, so nothing else moved it. A round whose session
/// ended meanwhile (the connection dropped, the server restarted) may have been claimed again by
/// another relay, so only its acceptance is recorded: a message a provider accepted is sent,
/// whatever the other round makes of it, even one that ended it unsent already (`late`). The
/// attempt rows are inserted either way (the provider calls happened), and at most once: a retried
/// write (`$31`, after a try whose outcome is unknown) skips the calls already recorded. A first
/// try inserts without that check, as the unique call key would refuse a duplicate anyway. A retry turns into `cancelled` if a newer message for the same recipient and purpose
/// superseded it meanwhile (`superseded_by`), or into `expired` if it would come due too late. A
/// message a provider accepted before (`sent_at`, a resend round) never ends unsent: such an end
/// leaves it `sent` (the schema's transition check refuses anything else).
const COMPLETE: &str = r#"
WITH f AS (
    SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::bigint[], $5::text[], $29::int[],
                         $30::timestamptz[])
        AS f(id, round, disposition, delay_ms, reason, holder, holder_since)
), alive AS MATERIALIZED (
    SELECT a.pid, a.backend_start FROM pg_stat_activity a WHERE a.pid IN (SELECT holder FROM f)
), orphaned AS MATERIALIZED (
    -- Rounds whose holding session has ended (nearly always none).
    SELECT f.id FROM f
     WHERE f.disposition = 'sent'
       AND NOT EXISTS (SELECT 1 FROM alive WHERE alive.pid = f.holder AND alive.backend_start = f.holder_since)
), late AS (
    UPDATE sms_outbox o
       SET state = 'sent', sent_at = now(), finished_at = now(),
           last_error = concat('sent after all, by a round whose relay had lost its claim; before: ', o.last_error)
      FROM orphaned
     WHERE o.id = orphaned.id AND o.sent_at IS NULL AND o.state IN ('failed', 'expired', 'cancelled')
), updated AS (
    -- One pass: the decision reads the locked row itself (one primary-key lookup per message).
    UPDATE sms_outbox o
       SET (state, attempts, next_attempt_at, finished_at, sent_at, last_error, resend_reason, resend_of) = (
            SELECT CASE WHEN d.again THEN 'pending' ELSE d.disposition END::sms_state,
                   f.round,
                   CASE WHEN d.again THEN now() + f.delay_ms * interval '1 millisecond' ELSE o.next_attempt_at END,
                   CASE WHEN d.again THEN NULL ELSE now() END,
                   CASE WHEN d.disposition = 'sent' THEN coalesce(o.sent_at, now()) ELSE o.sent_at END,
                   d.reason,
                   -- A resend round's reason is on its attempts now; a released round keeps it.
                   CASE WHEN f.disposition = 'release' THEN o.resend_reason END,
                   -- Until the resend is final, a delivered receipt for the attempt it replaces withdraws it.
                   CASE WHEN d.again THEN o.resend_of END
              FROM (SELECT disposition, disposition IN ('retry', 'release') AS again,
                           CASE WHEN lost THEN concat('resend not sent: ', reason) ELSE reason END AS reason
                      FROM (SELECT CASE WHEN lost THEN 'sent' WHEN superseded THEN 'cancelled'
                                        WHEN too_late THEN 'expired' ELSE f.disposition END AS disposition,
                                   lost,
                                   CASE WHEN superseded THEN concat('superseded by a newer message; last error: ', f.reason)
                                        WHEN too_late THEN concat('validity ends before the next retry; last error: ', f.reason)
                                        ELSE f.reason END AS reason
                              FROM (SELECT superseded, too_late,
                                           -- A message sent before (a resend round) never ends unsent.
                                           o.sent_at IS NOT NULL
                                               AND (superseded OR too_late OR f.disposition IN ('failed', 'expired', 'cancelled'))
                                               AS lost
                                      FROM (SELECT f.disposition = 'retry' AND o.superseded_by IS NOT NULL AS superseded,
                                                   f.disposition = 'retry'
                                                       AND now() + (f.delay_ms + $6) * interval '1 millisecond' >= o.expires_at
                                                       AS too_late) s) l) c) d)
      FROM f
     WHERE o.id = f.id AND o.state = 'pending' AND o.attempts = f.round - 1
       AND (f.disposition = 'sent'
            OR EXISTS (SELECT 1 FROM alive WHERE alive.pid = f.holder AND alive.backend_start = f.holder_since))
    RETURNING o.id, o.state, o.created_at, coalesce(o.sent_at < now(), false) AS sent_before
), inserted AS (
INSERT INTO sms_attempts (message_id, attempt_number, chain_step, provider, template, relay_id,
                          started_at, finished_at, outcome, http_status, error_code, error_message,
                          provider_message_id, segments, encoding, cost, currency, client_ref,
                          cause, resend_reason, country, operator)
SELECT a.message_id, a.attempt_number, a.chain_step, a.provider, a.template, $7,
       a.started_at, a.finished_at, a.outcome::sms_outcome, a.http_status, a.error_code, a.error_message,
       a.provider_message_id, a.segments, a.encoding, a.cost_micros / 1000000.0, a.currency, a.client_ref,
       a.cause, a.resend_reason, a.country, a.operator
  FROM unnest($8::uuid[], $9::int[], $10::int[], $11::text[], $12::text[], $13::timestamptz[],
              $14::timestamptz[], $15::text[], $16::int2[], $17::text[], $18::text[], $19::text[],
              $20::int2[], $21::text[], $22::int8[], $23::text[], $24::text[], $25::text[], $26::text[],
              $27::text[], $28::text[])
    AS a(message_id, attempt_number, chain_step, provider, template, started_at,
         finished_at, outcome, http_status, error_code, error_message,
         provider_message_id, segments, encoding, cost_micros, currency, client_ref,
         cause, resend_reason, country, operator)
 WHERE NOT $31
    OR NOT EXISTS (SELECT 1 FROM sms_attempts x
                    WHERE (x.message_id, x.attempt_number, x.chain_step, x.started_at)
                          = (a.message_id, a.attempt_number, a.chain_step, a.started_at))
)
SELECT id, state::text AS state, created_at, sent_before FROM updated
"#;

/// What a recorded round made of its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundEnd {
    /// Message id.
    pub id: Uuid,
    /// Its state now (`pending` again for a retry or a release).
    pub state: String,
    /// When it was enqueued.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Whether a provider had accepted it before this round (a resend, or a retry of one).
    pub sent_before: bool,
}

/// A row of the completion's result, read by position: looking up each of a batch's columns by
/// name cost more than decoding it.
type EndRow = (Uuid, String, chrono::DateTime<chrono::Utc>, bool);

/// Column arrays for the attempt rows of a batch, borrowing the batch's text.
#[derive(Default)]
struct AttemptColumns<'a> {
    message_id: Vec<Uuid>,
    attempt_number: Vec<i32>,
    chain_step: Vec<i32>,
    provider: Vec<Cow<'a, str>>,
    template: Vec<&'a str>,
    started_at: Vec<chrono::DateTime<chrono::Utc>>,
    finished_at: Vec<chrono::DateTime<chrono::Utc>>,
    outcome: Vec<&'static str>,
    http_status: Vec<Option<i16>>,
    error_code: Vec<Option<Cow<'a, str>>>,
    error_message: Vec<Option<Cow<'a, str>>>,
    provider_message_id: Vec<Option<Cow<'a, str>>>,
    segments: Vec<i16>,
    encoding: Vec<&'static str>,
    cost_micros: Vec<Option<i64>>,
    currency: Vec<Option<String>>,
    client_ref: Vec<Cow<'a, str>>,
    cause: Vec<&'static str>,
    resend_reason: Vec<Option<Cow<'a, str>>>,
    country: Vec<Cow<'a, str>>,
    operator: Vec<&'static str>,
}

impl<'a> AttemptColumns<'a> {
    /// Adds one attempt, bent to fit the table's constraints so one odd value cannot fail the
    /// whole batch: clock steps, negative prices (Twilio reports prices negative), absurd prices,
    /// odd currencies.
    fn push(&mut self, finish: &'a Finish, segments: Segments, index: usize, a: &'a AttemptRecord) {
        let cost = a.cost.as_ref().and_then(|c| {
            let currency = c.currency.to_ascii_uppercase();
            let micros = c.micros.checked_abs().filter(|m| *m <= MAX_COST_MICROS);
            micros
                .filter(|_| is_currency(&currency))
                .map(|m| (m, currency))
        });
        self.message_id.push(finish.id);
        self.attempt_number.push(finish.round);
        self.chain_step.push(a.chain_step);
        self.provider.push(pg_text(&a.provider));
        self.template.push(&finish.template);
        self.started_at.push(a.started_at);
        self.finished_at.push(a.finished_at.max(a.started_at));
        self.outcome.push(a.outcome.as_str());
        self.http_status
            .push(a.http_status.and_then(|s| i16::try_from(s).ok()));
        self.error_code.push(a.error_code.as_deref().map(pg_text));
        self.error_message
            .push(a.error_message.as_deref().map(pg_text));
        self.provider_message_id
            .push(a.provider_message_id.as_deref().map(pg_text));
        self.segments
            .push(i16::try_from(segments.parts).unwrap_or(i16::MAX).max(1));
        self.encoding.push(segments.encoding.as_str());
        self.cost_micros.push(cost.as_ref().map(|c| c.0));
        self.currency.push(cost.map(|c| c.1));
        self.client_ref.push(pg_text(&a.client_ref));
        self.cause.push(finish.cause(index));
        self.resend_reason
            .push(finish.resend_reason.as_deref().map(pg_text));
        self.country.push(pg_text(&finish.country));
        self.operator.push(finish.operator);
    }
}

impl Store {
    /// Records a batch of finished rounds. `expiry_margin_ms` is the validity a retry must still
    /// have when it comes due; `retried` says an earlier try of this write may have committed.
    /// Returns what became of the messages whose rounds still held them.
    pub async fn complete(
        &self,
        batch: &[Finish],
        relay_id: &str,
        expiry_margin_ms: i64,
        retried: bool,
    ) -> Result<Vec<RoundEnd>> {
        let mut cols = AttemptColumns::default();
        for finish in batch {
            if let Some(segments) = finish.segments {
                for (index, attempt) in finish.attempts.iter().enumerate() {
                    cols.push(finish, segments, index, attempt);
                }
            }
        }
        let rows: Vec<EndRow> = sqlx::query_as(COMPLETE)
            .bind(batch.iter().map(|f| f.id).collect::<Vec<_>>())
            .bind(batch.iter().map(|f| f.round).collect::<Vec<_>>())
            .bind(
                batch
                    .iter()
                    .map(|f| f.disposition.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(batch.iter().map(|f| f.delay_ms).collect::<Vec<_>>())
            .bind(
                batch
                    .iter()
                    .map(|f| f.reason.as_deref().map(pg_text))
                    .collect::<Vec<_>>(),
            )
            .bind(expiry_margin_ms)
            .bind(relay_id)
            .bind(cols.message_id)
            .bind(cols.attempt_number)
            .bind(cols.chain_step)
            .bind(cols.provider)
            .bind(cols.template)
            .bind(cols.started_at)
            .bind(cols.finished_at)
            .bind(cols.outcome)
            .bind(cols.http_status)
            .bind(cols.error_code)
            .bind(cols.error_message)
            .bind(cols.provider_message_id)
            .bind(cols.segments)
            .bind(cols.encoding)
            .bind(cols.cost_micros)
            .bind(cols.currency)
            .bind(cols.client_ref)
            .bind(cols.cause)
            .bind(cols.resend_reason)
            .bind(cols.country)
            .bind(cols.operator)
            .bind(batch.iter().map(|f| f.holder.pid).collect::<Vec<_>>())
            .bind(batch.iter().map(|f| f.holder.since).collect::<Vec<_>>())
            .bind(retried)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(id, state, created_at, sent_before)| RoundEnd {
                id,
                state,
                created_at,
                sent_before,
            })
            .collect())
    }
}
