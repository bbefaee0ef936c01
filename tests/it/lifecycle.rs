//! The message lifecycle the schema keeps: the state machine (`sms_transition_allowed`, refused
//! changes raise SR013), `sent_at`, a newer message withdrawing a pending resend, an operator's
//! retry and cancel (`sms_retry`, `sms_cancel`, refused with SR014), the params guard (SR012), and
//! whatever odd params an auth backend may write.

use chrono::{DateTime, Utc};
use proptest::{collection::vec, prelude::*, sample::select};
use serde_json::json;
use sms_relay::store::{
    ClaimedMessage, Disposition, EnqueueError, EnqueueRequest, Refusal, enqueue,
};
use uuid::Uuid;

use crate::{
    fakes::{FakeProvider, Kind},
    support::{
        TestApp, accepted_call, accepting, ended_round, failed_round, http_chain, otp_request,
        provider_config, quick_retries, sent_round,
    },
};

const NUMBER: &str = "+8801712345678";
const TRANSITION_REFUSED: &str = "SR013";
const UNSENDABLE_PARAMS: &str = "SR012";
const OPERATOR_REFUSED: &str = "SR014";

// ---------------------------------------------------------------------------------------------
// Bringing real messages into each state
// ---------------------------------------------------------------------------------------------

/// `sms_state`, in the enum's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Sent,
    Failed,
    Expired,
    Cancelled,
}

impl State {
    const ALL: [State; 5] = [
        State::Pending,
        State::Sent,
        State::Failed,
        State::Expired,
        State::Cancelled,
    ];

    fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Sent => "sent",
            State::Failed => "failed",
            State::Expired => "expired",
            State::Cancelled => "cancelled",
        }
    }

    /// An UPDATE of message `$1` to this state that keeps every other rule of the table
    /// (`finished_at` iff final, `sent_at` on a sent message and on no unsent one), so that the
    /// transition check is the only thing that can refuse it.
    fn update(self) -> &'static str {
        match self {
            State::Pending => {
                "UPDATE sms_outbox SET state = 'pending', finished_at = NULL, claimed_by = NULL, \
                 next_attempt_at = now() WHERE id = $1"
            }
            State::Sent => {
                "UPDATE sms_outbox SET state = 'sent', finished_at = now(), claimed_by = NULL, \
                 sent_at = coalesce(sent_at, now()) WHERE id = $1"
            }
            State::Failed => {
                "UPDATE sms_outbox SET state = 'failed', finished_at = now(), claimed_by = NULL, \
                 sent_at = NULL, last_error = 'test' WHERE id = $1"
            }
            State::Expired => {
                "UPDATE sms_outbox SET state = 'expired', finished_at = now(), claimed_by = NULL, \
                 sent_at = NULL, last_error = 'test' WHERE id = $1"
            }
            State::Cancelled => {
                "UPDATE sms_outbox SET state = 'cancelled', finished_at = now(), claimed_by = NULL, \
                 sent_at = NULL, last_error = 'test' WHERE id = $1"
            }
        }
    }
}

/// The state machine as the comment above `sms_transition_allowed` states it:
/// (from, to, was_sent), `None` for "any".
const COMMENTED_TABLE: [(State, State, Option<bool>); 9] = [
    (State::Pending, State::Sent, None),
    (State::Pending, State::Failed, Some(false)),
    (State::Pending, State::Expired, Some(false)),
    (State::Pending, State::Cancelled, Some(false)),
    (State::Failed, State::Sent, Some(false)),
    (State::Expired, State::Sent, Some(false)),
    (State::Cancelled, State::Sent, Some(false)),
    (State::Sent, State::Pending, Some(true)),
    (State::Failed, State::Pending, Some(false)),
];

/// Whether the commented table allows a change (staying in a state is always allowed).
fn commented_table_allows(from: State, to: State, was_sent: bool) -> bool {
    from == to
        || COMMENTED_TABLE
            .iter()
            .any(|&(f, t, w)| f == from && t == to && w.is_none_or(|w| w == was_sent))
}

/// A state a real message can be in, with whether a provider had accepted it before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// Enqueued.
    Pending,
    /// Claimed, and a provider accepted it.
    Sent,
    /// Sent, then put back for a resend (`sms_resend`).
    PendingResend,
    /// Enqueued, and claimed: a relay is sending it (waiting, held by the relay's session).
    Held,
    /// A resend, claimed.
    HeldResend,
    /// Claimed, and the relay gave up on it.
    Failed,
    /// Claimed, and its validity ended.
    Expired,
    /// Superseded by a newer message before it was claimed.
    Cancelled,
}

impl Start {
    /// The starts whose state a plain UPDATE may change (a held message is changed only by its
    /// relay's completion, which the raw table cannot tell apart).
    const ALL: [Start; 6] = [
        Start::Pending,
        Start::Sent,
        Start::PendingResend,
        Start::Failed,
        Start::Expired,
        Start::Cancelled,
    ];

    fn state(self) -> State {
        match self {
            Start::Pending | Start::PendingResend | Start::Held | Start::HeldResend => {
                State::Pending
            }
            Start::Sent => State::Sent,
            Start::Failed => State::Failed,
            Start::Expired => State::Expired,
            Start::Cancelled => State::Cancelled,
        }
    }

    fn was_sent(self) -> bool {
        matches!(self, Start::Sent | Start::PendingResend | Start::HeldResend)
    }
}

/// Claims every due message; `id` must be the only one.
async fn claim(app: &TestApp, id: Uuid) -> ClaimedMessage {
    let claimed = app.claim(10).await;
    assert_eq!(
        claimed.iter().map(|m| m.id).collect::<Vec<_>>(),
        [id],
        "the claim took exactly this message"
    );
    claimed.into_iter().next().unwrap()
}

/// Claims `id` and records that a provider accepted it; returns the accepted attempt's id.
async fn send(app: &TestApp, id: Uuid) -> i64 {
    let m = claim(app, id).await;
    app.complete(&[sent_round(&m, vec![accepted_call(&m)])])
        .await;
    app.accepted_attempt(id).await.id
}

/// Puts the message of accepted attempt `attempt` back for a resend, as a missing receipt does.
async fn resend(app: &TestApp, attempt: i64) {
    let queued: bool =
        sqlx::query_scalar("SELECT sms_resend($1, 'no receipt', 1, interval '1 second')")
            .bind(attempt)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(queued, "sms_resend put the message back");
}

/// The whole row as text, to show that a refused change left it as it was.
async fn snapshot(app: &TestApp, id: Uuid) -> String {
    sqlx::query_scalar("SELECT to_jsonb(o)::text FROM sms_outbox o WHERE id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// A message in `start`, brought there by the relay's and the receipts' own statements.
async fn message_in(app: &TestApp, start: Start) -> Uuid {
    let id = app.otp(NUMBER, "482913").await;
    match start {
        Start::Pending => {}
        Start::Held => {
            claim(app, id).await;
        }
        Start::HeldResend => {
            let attempt = send(app, id).await;
            resend(app, attempt).await;
            claim(app, id).await;
        }
        Start::Sent => {
            send(app, id).await;
        }
        Start::PendingResend => {
            let attempt = send(app, id).await;
            resend(app, attempt).await;
        }
        Start::Failed => {
            let m = claim(app, id).await;
            app.complete(&[ended_round(&m, Disposition::Failed)]).await;
        }
        Start::Expired => {
            let m = claim(app, id).await;
            app.complete(&[ended_round(&m, Disposition::Expired)]).await;
        }
        Start::Cancelled => {
            app.otp(NUMBER, "551234").await;
        }
    }
    assert_eq!(
        (
            app.state_of(id).await.0,
            app.message(id).await.sent_at.is_some()
        ),
        (start.state().as_str().to_owned(), start.was_sent()),
        "setting up {start:?}"
    );
    app.assert_queue_follows_outbox().await;
    id
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Allowed,
    Refused,
}

/// Brings a message into `start`, then updates it to `to`: an allowed change takes, a refused one
/// fails with SR013 and leaves the row as it was.
async fn check(start: Start, to: State, verdict: Verdict) {
    let row = format!("{start:?} ({}) → {}", start.state().as_str(), to.as_str());
    let app = TestApp::new().await;
    let id = message_in(&app, start).await;
    let before = snapshot(&app, id).await;
    let result = sqlx::query(to.update()).bind(id).execute(&app.pool).await;
    match verdict {
        Verdict::Allowed => {
            let done = result.unwrap_or_else(|e| panic!("{row} should be allowed: {e}"));
            assert_eq!(done.rows_affected(), 1, "{row}");
            assert_eq!(app.state_of(id).await.0, to.as_str(), "{row}");
        }
        Verdict::Refused => {
            let error = match result {
                Ok(_) => panic!("{row} should be refused, but it took"),
                Err(error) => error,
            };
            assert_eq!(
                error.as_database_error().and_then(|e| e.code()).as_deref(),
                Some(TRANSITION_REFUSED),
                "{row}: {error}"
            );
            assert_eq!(
                snapshot(&app, id).await,
                before,
                "{row}: the row is unchanged"
            );
        }
    }
    app.assert_queue_follows_outbox().await;
}

/// One test per (start, target) pair, plus `ROWS` listing them for the coverage check.
macro_rules! transitions {
    ($($name:ident: $start:ident -> $to:ident $verdict:ident;)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                check(Start::$start, State::$to, Verdict::$verdict).await;
            }
        )*
        const ROWS: &[(Start, State, Verdict)] =
            &[$((Start::$start, State::$to, Verdict::$verdict)),*];
    };
}

transitions! {
    // pending, never sent
    pending_to_sent_when_never_sent: Pending -> Sent Allowed;
    pending_to_cancelled_when_never_sent: Pending -> Cancelled Allowed;
    pending_to_failed_when_never_sent: Pending -> Failed Allowed;
    pending_to_expired_when_never_sent: Pending -> Expired Allowed;
    // pending resend of a sent message
    pending_resend_to_sent: PendingResend -> Sent Allowed;
    pending_resend_to_cancelled_is_refused: PendingResend -> Cancelled Refused;
    pending_resend_to_failed_is_refused: PendingResend -> Failed Refused;
    pending_resend_to_expired_is_refused: PendingResend -> Expired Refused;
    // sent
    sent_to_pending: Sent -> Pending Allowed;
    sent_to_failed_is_refused: Sent -> Failed Refused;
    sent_to_expired_is_refused: Sent -> Expired Refused;
    sent_to_cancelled_is_refused: Sent -> Cancelled Refused;
    // failed comes back for an operator's retry; an unsent end turns sent when a late acceptance
    // is recorded; nothing else leaves a final state
    failed_to_pending_when_never_sent: Failed -> Pending Allowed;
    failed_to_sent_when_never_sent: Failed -> Sent Allowed;
    failed_to_expired_is_refused: Failed -> Expired Refused;
    failed_to_cancelled_is_refused: Failed -> Cancelled Refused;
    expired_to_pending_is_refused: Expired -> Pending Refused;
    expired_to_sent_when_never_sent: Expired -> Sent Allowed;
    expired_to_failed_is_refused: Expired -> Failed Refused;
    expired_to_cancelled_is_refused: Expired -> Cancelled Refused;
    cancelled_to_pending_is_refused: Cancelled -> Pending Refused;
    cancelled_to_sent_when_never_sent: Cancelled -> Sent Allowed;
    cancelled_to_failed_is_refused: Cancelled -> Failed Refused;
    cancelled_to_expired_is_refused: Cancelled -> Expired Refused;
}

/// `sms_queue` is derived from the messages' state by a trigger, whoever changes them: a plain
/// INSERT, a retry rescheduled by a round, an UPDATE by hand of the claim order's columns, one
/// statement ending some messages and leaving others, a DELETE.
#[tokio::test]
async fn the_queue_holds_exactly_the_waiting_messages_whoever_changes_them() {
    let app = TestApp::new().await;
    let retried = app.otp(NUMBER, "482913").await;
    let kept = app.otp("+8801812345678", "551234").await;
    sqlx::query(
        "INSERT INTO sms_outbox (recipient, template, params, purpose) \
         VALUES ('+8801912345678', 'otp', '{\"code\": \"112233\"}', 'login')",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let plain: Uuid =
        sqlx::query_scalar("SELECT id FROM sms_outbox WHERE recipient = '+8801912345678'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    app.assert_queue_follows_outbox().await;
    assert_eq!(app.count("SELECT count(*) FROM sms_queue").await, 3);

    let claimed = app.claim(1).await;
    assert_eq!(claimed[0].id, retried);
    app.complete(&[failed_round(&claimed[0])]).await;
    app.assert_queue_follows_outbox().await;

    sqlx::query("UPDATE sms_outbox SET priority = 1, next_attempt_at = now() + interval '1 hour'")
        .execute(&app.pool)
        .await
        .unwrap();
    app.assert_queue_follows_outbox().await;

    sqlx::query(
        "UPDATE sms_outbox SET state = CASE WHEN id = $1 THEN 'cancelled' ELSE state END, \
             finished_at = CASE WHEN id = $1 THEN now() END, next_attempt_at = now()",
    )
    .bind(retried)
    .execute(&app.pool)
    .await
    .unwrap();
    app.assert_queue_follows_outbox().await;
    assert_eq!(app.count("SELECT count(*) FROM sms_queue").await, 2);

    sqlx::query("DELETE FROM sms_outbox WHERE id = $1")
        .bind(plain)
        .execute(&app.pool)
        .await
        .unwrap();
    app.assert_queue_follows_outbox().await;
    let left: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM sms_queue")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(left, [kept]);
    assert_eq!(
        claim(&app, kept).await.round,
        1,
        "the claim walks the queue"
    );
}

/// One INSERT of two codes for the same recipient: the second supersedes the first inside the
/// statement, and only the second waits. A change of a message's `seq` is refused; a TRUNCATE
/// empties the queue too.
#[tokio::test]
async fn the_queue_follows_a_superseding_multi_row_insert_and_a_truncate() {
    let app = TestApp::new().await;
    sqlx::query(
        "INSERT INTO sms_outbox (recipient, template, params, purpose) \
         VALUES ($1, 'otp', '{\"code\": \"111111\"}', 'login'), \
                ($1, 'otp', '{\"code\": \"222222\"}', 'login')",
    )
    .bind(NUMBER)
    .execute(&app.pool)
    .await
    .unwrap();
    app.assert_queue_follows_outbox().await;
    assert_eq!(app.count("SELECT count(*) FROM sms_queue").await, 1);
    let waiting: String = sqlx::query_scalar(
        "SELECT o.params ->> 'code' FROM sms_queue q JOIN sms_outbox o ON o.id = q.id",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(waiting, "222222");

    let id: Uuid = sqlx::query_scalar("SELECT id FROM sms_queue")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        app.refusal("UPDATE sms_outbox SET seq = seq + 1000 WHERE id = $1", id)
            .await,
        TRANSITION_REFUSED
    );

    sqlx::query("TRUNCATE sms_outbox")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(app.count("SELECT count(*) FROM sms_queue").await, 0);
}

#[tokio::test]
async fn no_message_is_ever_in_the_retired_sending_state() {
    let app = TestApp::new().await;
    let id = app.otp(NUMBER, "482913").await;
    assert_eq!(
        app.refusal("UPDATE sms_outbox SET state = 'sending' WHERE id = $1", id)
            .await,
        TRANSITION_REFUSED
    );
    let inserted = sqlx::query(
        "INSERT INTO sms_outbox (recipient, template, params, state) \
         VALUES ('+8801712345679', 'otp', '{\"code\": \"482913\"}', 'sending')",
    )
    .execute(&app.pool)
    .await;
    assert!(inserted.is_err(), "nothing enters the retired state");
}

#[test]
fn the_row_tests_cover_every_start_and_target_as_the_comment_says() {
    for start in Start::ALL {
        for to in State::ALL.into_iter().filter(|&to| to != start.state()) {
            let rows: Vec<_> = ROWS
                .iter()
                .filter(|&&(s, t, _)| s == start && t == to)
                .collect();
            assert_eq!(rows.len(), 1, "{start:?} → {to:?}: one row test");
            let expected = if commented_table_allows(start.state(), to, start.was_sent()) {
                Verdict::Allowed
            } else {
                Verdict::Refused
            };
            assert_eq!(rows[0].2, expected, "{start:?} → {to:?}");
        }
    }
    // Every row of the comment's table is exercised by a row test that expects it to be allowed.
    for (from, to, was_sent) in COMMENTED_TABLE {
        assert!(
            ROWS.iter().any(|&(s, t, v)| s.state() == from
                && t == to
                && was_sent.is_none_or(|w| w == s.was_sent())
                && v == Verdict::Allowed),
            "{from:?} → {to:?} ({was_sent:?})"
        );
    }
}

#[tokio::test]
async fn sms_transition_allowed_is_the_commented_table() {
    let app = TestApp::new().await;
    for from in State::ALL {
        for to in State::ALL {
            for was_sent in [false, true] {
                let allowed: bool = sqlx::query_scalar(
                    "SELECT sms_transition_allowed($1::sms_state, $2::sms_state, $3)",
                )
                .bind(from.as_str())
                .bind(to.as_str())
                .bind(was_sent)
                .fetch_one(&app.pool)
                .await
                .unwrap();
                assert_eq!(
                    allowed,
                    commented_table_allows(from, to, was_sent),
                    "{from:?} → {to:?}, was_sent {was_sent}"
                );
            }
        }
    }
}

/// A resend of a sent message, claimed: (its id, the claimed round, its sent_at).
async fn claimed_resend(app: &TestApp) -> (Uuid, ClaimedMessage, Option<DateTime<Utc>>) {
    let id = app.otp(NUMBER, "482913").await;
    let attempt = send(app, id).await;
    let first_sent = app.message(id).await.sent_at;
    assert!(first_sent.is_some());
    resend(app, attempt).await;
    let m = claim(app, id).await;
    assert_eq!(m.resend_reason.as_deref(), Some("no receipt"));
    (id, m, first_sent)
}

#[tokio::test]
async fn a_resend_the_relay_cannot_send_leaves_the_message_sent() {
    for disposition in [
        Disposition::Failed,
        Disposition::Expired,
        Disposition::Cancelled,
    ] {
        let app = TestApp::new().await;
        let (id, m, first_sent) = claimed_resend(&app).await;
        // The completion statement turns the unsent end of a resend round into `sent` instead of
        // running into the transition check.
        app.complete(&[ended_round(&m, disposition)]).await;
        let (state, last_error) = app.state_of(id).await;
        assert_eq!(state, "sent", "{disposition:?}");
        assert_eq!(
            last_error.as_deref(),
            Some("resend not sent: test"),
            "{disposition:?}"
        );
        assert_eq!(app.message(id).await.sent_at, first_sent, "{disposition:?}");
    }
    // A retry of a resend goes back to the queue, with its sent_at.
    let app = TestApp::new().await;
    let (id, m, first_sent) = claimed_resend(&app).await;
    app.complete(&[ended_round(&m, Disposition::Retry)]).await;
    assert_eq!(app.state_of(id).await.0, "pending");
    assert_eq!(app.message(id).await.sent_at, first_sent);
}

#[tokio::test]
async fn sent_at_is_set_once() {
    let app = TestApp::new().await;
    let id = message_in(&app, Start::PendingResend).await;
    let cleared = sqlx::query("UPDATE sms_outbox SET sent_at = NULL WHERE id = $1")
        .bind(id)
        .execute(&app.pool)
        .await;
    assert!(cleared.is_err(), "sent_at of a sent message was cleared");
    let moved =
        sqlx::query("UPDATE sms_outbox SET sent_at = sent_at + interval '1 second' WHERE id = $1")
            .bind(id)
            .execute(&app.pool)
            .await;
    assert!(moved.is_err(), "sent_at of a sent message was changed");

    let never_sent = message_in(&app, Start::Pending).await;
    let stamped = sqlx::query("UPDATE sms_outbox SET sent_at = now() WHERE id = $1")
        .bind(never_sent)
        .execute(&app.pool)
        .await;
    assert!(
        stamped.is_err(),
        "a waiting message got sent_at without becoming sent"
    );
}

// ---------------------------------------------------------------------------------------------
// A newer code while a resend waits
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_newer_code_withdraws_a_waiting_resend_and_the_message_stays_sent() {
    let app = TestApp::new().await;
    let old = app.otp(NUMBER, "111111").await;
    let attempt = send(&app, old).await;
    let first_sent = app.message(old).await.sent_at;
    assert!(first_sent.is_some());
    resend(&app, attempt).await;
    assert_eq!(app.state_of(old).await.0, "pending");

    let newer = app.otp(NUMBER, "222222").await;

    let m = app.message(old).await;
    assert_eq!(
        (
            m.state,
            m.sent_at,
            m.last_error,
            m.superseded_by,
            m.resend_of,
            m.resend_reason,
            m.finished_at.is_some()
        ),
        (
            "sent".into(),
            first_sent,
            Some("resend withdrawn: superseded by a newer message".into()),
            Some(newer),
            None,
            None,
            true
        ),
        "the old message is back to sent (not cancelled), sent_at as it was"
    );
    assert_eq!(app.state_of(newer).await.0, "pending");
    assert_eq!(
        app.message(old).await.resends,
        0,
        "a withdrawn resend is not counted"
    );

    // The relay sends the newer code, and nothing more of the old one.
    let sim = app.send_due().await;
    assert_eq!(sim.sent(), 1);
    assert_eq!(app.state_of(newer).await.0, "sent");
    assert_eq!(app.state_of(old).await.0, "sent");
    assert_eq!(app.message(old).await.sent_at, first_sent);
    assert_eq!(
        app.attempts_of(old).await.len(),
        1,
        "the resend never went out"
    );
}

// ---------------------------------------------------------------------------------------------
// An operator's retry and cancel (SR014)
// ---------------------------------------------------------------------------------------------

/// Runs an operator event on `id`; `Err` holds the SQLSTATE of a refusal.
async fn operator(app: &TestApp, sql: &'static str, id: Uuid) -> Result<(), String> {
    sqlx::query(sql)
        .bind(id)
        .execute(&app.pool)
        .await
        .map(|_| ())
        .map_err(|e| {
            e.as_database_error()
                .and_then(|d| d.code())
                .map(|c| c.into_owned())
                .unwrap_or_else(|| e.to_string())
        })
}

const RETRY: &str = "SELECT sms_retry($1)";
const CANCEL: &str = "SELECT sms_cancel($1, 'customer asked')";

/// `sql` refused with SR014 for a message in each of `starts`, and the row left as it was.
async fn refused_for(sql: &'static str, starts: &[Start]) {
    for &start in starts {
        let app = TestApp::new().await;
        let id = message_in(&app, start).await;
        let before = snapshot(&app, id).await;
        assert_eq!(
            operator(&app, sql, id).await,
            Err(OPERATOR_REFUSED.to_owned()),
            "{sql} for {start:?}"
        );
        assert_eq!(
            snapshot(&app, id).await,
            before,
            "{sql} for {start:?}: unchanged"
        );
    }
}

#[tokio::test]
async fn an_operator_retry_gives_a_failed_message_one_more_round_and_the_relay_sends_it() {
    let app = TestApp::new().await;
    let id = message_in(&app, Start::Failed).await;
    operator(&app, RETRY, id).await.unwrap();
    let (state, last_error) = app.state_of(id).await;
    assert_eq!(state, "pending");
    assert_eq!(
        last_error.as_deref(),
        Some("retried by an operator; before: test")
    );

    let sim = app.send_due().await;
    assert_eq!(sim.sent(), 1);
    assert_eq!(app.state_of(id).await.0, "sent");
    assert_eq!(
        app.attempts_of(id).await,
        [("sim".into(), 2, 1, "accepted".into())],
        "the retry is the message's second round"
    );
}

#[tokio::test]
async fn an_operator_retry_brings_a_waiting_retry_forward() {
    let app = TestApp::new().await;
    let id = app.otp(NUMBER, "482913").await;
    sqlx::query(
        "UPDATE sms_outbox SET next_attempt_at = now() + interval '1 minute' WHERE id = $1",
    )
    .bind(id)
    .execute(&app.pool)
    .await
    .unwrap();
    assert!(app.claim(10).await.is_empty());
    operator(&app, RETRY, id).await.unwrap();
    claim(&app, id).await;
}

#[tokio::test]
async fn an_operator_retry_is_refused_for_a_message_sent_in_flight_or_closed() {
    refused_for(
        RETRY,
        &[
            Start::Held,
            Start::Sent,
            Start::PendingResend,
            Start::HeldResend,
            Start::Expired,
            Start::Cancelled,
        ],
    )
    .await;
}

#[tokio::test]
async fn an_operator_retry_is_refused_once_the_code_is_no_longer_valid() {
    let app = TestApp::new().await;
    let id = message_in(&app, Start::Failed).await;
    sqlx::query("UPDATE sms_outbox SET expires_at = now() + interval '1 second' WHERE id = $1")
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        operator(&app, RETRY, id).await,
        Err(OPERATOR_REFUSED.to_owned())
    );
    assert_eq!(app.state_of(id).await.0, "failed");
    assert_eq!(
        operator(&app, RETRY, Uuid::nil()).await,
        Err(OPERATOR_REFUSED.to_owned()),
        "an unknown id"
    );
}

#[tokio::test]
async fn an_operator_cancel_ends_a_waiting_message_and_the_relay_leaves_it() {
    let app = TestApp::new().await;
    let id = app.otp(NUMBER, "482913").await;
    operator(&app, CANCEL, id).await.unwrap();
    assert_eq!(
        app.state_of(id).await,
        (
            "cancelled".into(),
            Some("cancelled by an operator: customer asked".into())
        )
    );
    let sim = app.send_due().await;
    assert_eq!(sim.sent(), 0);
}

#[tokio::test]
async fn an_operator_cancel_of_a_waiting_resend_withdraws_it_and_the_message_stays_sent() {
    let app = TestApp::new().await;
    let id = message_in(&app, Start::PendingResend).await;
    let first_sent = app.message(id).await.sent_at;
    operator(&app, CANCEL, id).await.unwrap();
    assert_eq!(
        app.state_of(id).await,
        (
            "sent".into(),
            Some("resend withdrawn by an operator: customer asked".into())
        )
    );
    assert_eq!(app.message(id).await.sent_at, first_sent);
    assert_eq!(
        app.message(id).await.resends,
        0,
        "a withdrawn resend is not counted"
    );
    let sim = app.send_due().await;
    assert_eq!(sim.sent(), 0, "the resend never went out");
}

#[tokio::test]
async fn an_operator_cancel_is_refused_in_flight_once_closed_and_without_a_reason() {
    refused_for(
        CANCEL,
        &[
            Start::Held,
            Start::HeldResend,
            Start::Sent,
            Start::Failed,
            Start::Expired,
            Start::Cancelled,
        ],
    )
    .await;
    refused_for("SELECT sms_cancel($1, ' ')", &[Start::Pending]).await;
}

// ---------------------------------------------------------------------------------------------
// The params guard (SR012)
// ---------------------------------------------------------------------------------------------

/// `sms_enqueue()` with `params` given as JSON text, which PostgreSQL parses.
const ENQUEUE_TEXT: &str =
    "SELECT sms_enqueue(recipient => $1, template => $2, params => $3::text::jsonb, locale => $4)";
/// A plain INSERT with `params` given as JSON text.
const INSERT_TEXT: &str = "INSERT INTO sms_outbox (recipient, template, locale, params) \
                           VALUES ($1, $2, $3, $4::text::jsonb) RETURNING id";

/// Enqueues an `otp`/`en` message with raw JSON `params` by `sms_enqueue()` or by a plain INSERT.
async fn enqueue_text(
    app: &TestApp,
    by_insert: bool,
    recipient: &str,
    template: (&str, &str),
    params: &str,
) -> Result<Uuid, sqlx::Error> {
    let (name, locale) = template;
    if by_insert {
        sqlx::query_scalar(INSERT_TEXT)
            .bind(recipient)
            .bind(name)
            .bind(locale)
            .bind(params)
            .fetch_one(&app.pool)
            .await
    } else {
        sqlx::query_scalar(ENQUEUE_TEXT)
            .bind(recipient)
            .bind(name)
            .bind(params)
            .bind(locale)
            .fetch_one(&app.pool)
            .await
    }
}

#[tokio::test]
async fn unsendable_params_are_refused_with_sr012_and_the_limits_are_accepted() {
    let app = TestApp::new().await;
    // The general limits, whatever shape a template asks of its values (SR017, tested apart).
    app.any_param_shape().await;
    let refused = [
        (
            "an extra key",
            r#"{"code": "482913", "extra": "x"}"#.to_owned(),
        ),
        (
            "a 65-character string",
            format!(r#"{{"code": "{}"}}"#, "7".repeat(65)),
        ),
        (
            "a string with a newline",
            r#"{"code": "4829\n13"}"#.to_owned(),
        ),
        ("a string with a tab", r#"{"code": "4829\t13"}"#.to_owned()),
        ("an empty string", r#"{"code": ""}"#.to_owned()),
        (
            "a 21-digit number",
            r#"{"code": 123456789012345678901}"#.to_owned(),
        ),
        (
            "a number whose text is 401 digits",
            r#"{"code": 1e400}"#.to_owned(),
        ),
        (
            "a nested object as an extra key",
            r#"{"code": "482913", "meta": {"a": {"b": [1, 2]}}}"#.to_owned(),
        ),
    ];
    let accepted = [
        (
            "a 64-character string",
            format!(r#"{{"code": "{}"}}"#, "7".repeat(64)),
        ),
        (
            "64 three-byte characters",
            format!(r#"{{"code": "{}"}}"#, "€".repeat(64)),
        ),
        (
            "a 20-digit number",
            r#"{"code": 12345678901234567890}"#.to_owned(),
        ),
    ];
    let mut ids = Vec::new();
    for (path, by_insert) in [("sms_enqueue", false), ("INSERT", true)] {
        let rows_before = app.message_count().await;
        for (i, (what, params)) in refused.iter().enumerate() {
            let recipient = format!("+88017100001{i:02}");
            let Err(error) = enqueue_text(&app, by_insert, &recipient, ("otp", "en"), params).await
            else {
                panic!("{path}: {what} should be refused");
            };
            let db_error = error.as_database_error().expect("a database error");
            assert_eq!(
                db_error.code().as_deref(),
                Some(UNSENDABLE_PARAMS),
                "{path}: {what}: {error}"
            );
            assert!(
                !db_error.message().contains("482913") && !db_error.message().contains("7777"),
                "{path}: {what}: the params leaked into: {}",
                db_error.message()
            );
        }
        assert_eq!(
            app.message_count().await,
            rows_before,
            "{path}: a refusal left a row"
        );
        for (i, (what, params)) in accepted.iter().enumerate() {
            let recipient = format!("+88017200{}{i:02}", u8::from(by_insert));
            let id = enqueue_text(&app, by_insert, &recipient, ("otp", "en"), params)
                .await
                .unwrap_or_else(|e| panic!("{path}: {what} is accepted: {e}"));
            ids.push(id);
        }
    }

    // The library maps SR012 to its refusal.
    let error = enqueue(
        &app.pool,
        &EnqueueRequest {
            params: json!({"code": "482913", "extra": "x"}),
            ..otp_request(NUMBER, "")
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            error,
            EnqueueError::Refused {
                reason: Refusal::UnsendableParams,
                ..
            }
        ),
        "{error}"
    );

    // What the guard lets through, the relay sends.
    let sim = app.send_due().await;
    for id in ids {
        assert_eq!(app.state_of(id).await.0, "sent");
    }
    assert_eq!(sim.sent(), 6);
}

#[tokio::test]
async fn a_numeric_param_is_sent_as_enqueued() {
    let app = TestApp::new().await;
    app.any_param_shape().await;
    let fake = FakeProvider::start(Kind::Twilio).await;
    let numbers = [
        "12345678901234567890",
        "99999999999999999999",
        "-9999999999999999999",
        "1.10",
        "0.12345678901234567",
    ];
    for (i, number) in numbers.iter().enumerate() {
        let recipient = format!("+88017120000{}", 10 + i);
        enqueue_text(
            &app,
            false,
            &recipient,
            ("otp", "en"),
            &format!(r#"{{"code": {number}}}"#),
        )
        .await
        .unwrap();
    }
    app.run_chain_until_idle(
        http_chain(&[provider_config(&fake, "twilio", json!({}))]),
        quick_retries(),
    )
    .await;
    let received = fake.received();
    let mut wrong = Vec::new();
    for (i, number) in numbers.iter().enumerate() {
        let to = format!("+88017120000{}", 10 + i);
        let text = received
            .iter()
            .find(|r| r.to == to)
            .map(|r| r.text.clone())
            .unwrap_or_default();
        if !text.contains(&format!("code is {number}.")) {
            wrong.push(format!("{number} was sent as {text:?}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

// ---------------------------------------------------------------------------------------------
// Odd params from the auth backend
// ---------------------------------------------------------------------------------------------

/// String pieces beyond the ordinary: escapes PostgreSQL refuses (NUL, lone surrogates),
/// control characters, escapes that decode to ordinary text, RTL and zero-width marks, emoji,
/// combining characters, separators, the byte-order mark and the last code point.
const ODD_PIECES: &[&str] = &[
    "\\u0000",
    "\\ud800",
    "\\udc00",
    "\\ud800\\udc00",
    "\\ud83d\\ude00",
    "\\u0041",
    "\\n",
    "\\t",
    "\\u001f",
    "\\u007f",
    "\\u0085",
    "\\\"",
    "\\\\",
    "\\/",
    "\u{200f}",
    "\u{202e}",
    "\u{200d}",
    "\u{1f600}",
    "\u{1f1e7}\u{1f1e9}",
    "e\u{301}\u{301}\u{301}",
    "\u{2028}",
    "\u{85}",
    "\u{feff}",
    "\u{fffd}",
    "\u{10ffff}",
    "ß",
    "\u{fdfa}",
];

/// Number texts at and past the edges: beyond what numeric or f64 hold, negative zero, more
/// digits than the guard allows, precision an f64 drops, and things JSON does not call numbers.
const ODD_NUMBERS: &[&str] = &[
    "1e400",
    "-1e400",
    "1e-400",
    "-0",
    "-0.0",
    "0e0",
    "1E+19",
    "1e20",
    "12345678901234567890",
    "99999999999999999999",
    "-9999999999999999999",
    "18446744073709551616",
    "1.10",
    "0.1",
    "1e1000000",
    "NaN",
    "Infinity",
    "-Infinity",
    "01",
    "+1",
    ".5",
    "5.",
    "0x10",
    "1_000",
];

/// The text of a JSON string literal (sometimes not valid JSON: raw characters are unescaped).
fn json_string() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => "[a-z0-9]{1,8}",
        2 => any::<char>().prop_map(|c| {
            let quoted = serde_json::to_string(&c.to_string()).unwrap();
            quoted[1..quoted.len() - 1].to_owned()
        }),
        1 => any::<char>().prop_map(|c| c.to_string()),
        3 => select(ODD_PIECES).prop_map(str::to_owned),
        1 => (1usize..200).prop_map(|n| "9".repeat(n)),
    ];
    vec(piece, 0..10).prop_map(|pieces| format!("\"{}\"", pieces.concat()))
}

fn json_number() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(ODD_NUMBERS).prop_map(str::to_owned),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => any::<f64>().prop_map(|f| format!("{f:e}")),
        1 => "-?[1-9][0-9]{15,60}",
        1 => "-?[0-9]\\.[0-9]{1,30}[eE][+-]?[0-9]{1,4}",
    ]
}

fn json_scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => json_string(),
        3 => json_number(),
        1 => select(&["true", "false", "null", "[]", "{}"][..]).prop_map(str::to_owned),
    ]
}

fn json_key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just("\"code\"".to_owned()),
        2 => select(
            &[
                "\"Code\"",
                "\"code \"",
                "\"\"",
                "\"code\\u0000\"",
                "\"\\u200fcode\"",
                "\"co\\u0064e\"",
                "\"minutes\"",
            ][..]
        )
        .prop_map(str::to_owned),
        1 => json_string(),
    ]
}

fn json_object(members: &[(String, String)]) -> String {
    let members: Vec<String> = members.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!("{{{}}}", members.join(", "))
}

fn json_value() -> impl Strategy<Value = String> {
    json_scalar().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(|items| format!("[{}]", items.join(","))),
            vec((json_key(), inner), 0..4).prop_map(|members| json_object(&members)),
        ]
    })
}

/// Arrays or objects nested up to 250 levels deep.
fn json_deep() -> impl Strategy<Value = String> {
    (1usize..=250, any::<bool>()).prop_map(|(depth, arrays)| {
        if arrays {
            format!("{}\"1\"{}", "[".repeat(depth), "]".repeat(depth))
        } else {
            format!("{}\"1\"{}", "{\"code\": ".repeat(depth), "}".repeat(depth))
        }
    })
}

/// Params as an auth backend might write them, as JSON text (not always valid JSON).
fn odd_params() -> impl Strategy<Value = String> {
    prop_oneof![
        5 => json_scalar().prop_map(|v| format!("{{\"code\": {v}}}")),
        2 => (json_scalar(), vec((json_key(), json_value()), 1..4)).prop_map(|(code, extra)| {
            let mut members = vec![("\"code\"".to_owned(), code)];
            members.extend(extra);
            json_object(&members)
        }),
        1 => vec((json_key(), json_value()), 0..4).prop_map(|members| json_object(&members)),
        1 => json_value(),
        1 => json_deep().prop_map(|d| format!("{{\"code\": \"1\", \"deep\": {d}}}")),
        1 => json_deep().prop_map(|d| format!("{{\"code\": {d}}}")),
        1 => json_deep(),
        1 => (json_value(), any::<prop::sample::Index>(), "[,:}\\]\" ]{0,3}").prop_map(
            |(v, cut, tail)| {
                let ends: Vec<usize> = v.char_indices().map(|(i, _)| i).collect();
                format!("{{\"code\": {}{tail}", &v[..ends[cut.index(ends.len())]])
            }
        ),
    ]
}

/// (params text, by a plain INSERT instead of sms_enqueue(), template and locale)
fn odd_row() -> impl Strategy<Value = (String, bool, (&'static str, &'static str))> {
    (
        odd_params(),
        any::<bool>(),
        select(&[("otp", "en"), ("otp", "bn"), ("admin_2fa", "en")][..]),
    )
}

/// Enqueues `rows` next to two ordinary OTPs and runs the relay once: every row the database
/// accepted ends final, and the ordinary OTPs are sent in the same run.
async fn odd_params_case(
    rows: Vec<(String, bool, (&'static str, &'static str))>,
) -> Result<(), TestCaseError> {
    let app = TestApp::new().await;
    let ordinary = [
        app.otp("+8801900000001", "482913").await,
        app.otp("+8801900000002", "551234").await,
    ];
    let mut accepted = Vec::new();
    for (i, (params, by_insert, template)) in rows.iter().enumerate() {
        let recipient = format!("+8801800{i:06}");
        // Whatever PostgreSQL refuses (bad JSON, NUL, a guard) is simply not enqueued.
        if let Ok(id) = enqueue_text(&app, *by_insert, &recipient, *template, params).await {
            accepted.push((id, params.clone()));
        }
    }
    prop_assert_eq!(
        app.message_count().await,
        i64::try_from(accepted.len() + ordinary.len()).unwrap(),
        "only accepted rows are in the outbox"
    );

    let sim = accepting("sim");
    app.run_until_idle([sim], quick_retries()).await;

    for (id, params) in &accepted {
        let (state, last_error) = app.state_of(*id).await;
        prop_assert!(
            state == "sent" || (state == "failed" && last_error.is_some()),
            "params {} ended {} ({:?})",
            params,
            state,
            last_error
        );
    }
    for id in ordinary {
        prop_assert_eq!(app.state_of(id).await.0, "sent", "an ordinary OTP");
    }
    prop_assert_eq!(app.owed().await, 0, "nothing is left pending or sending");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        // Each case is a database and a relay run: few cases, a bounded shrink, and no
        // regression file written next to the sources.
        max_shrink_iters: 32,
        failure_persistence: None,
        ..ProptestConfig::with_cases(16)
    })]

    #[test]
    fn odd_params_are_refused_or_end_final_beside_ordinary_otps(rows in vec(odd_row(), 1..8)) {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(odd_params_case(rows))?;
    }
}
