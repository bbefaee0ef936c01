//! The relay loop: claim order, holds, concurrency, wake-ups, graceful shutdown.

use std::{sync::Arc, time::Duration};

use sms_relay::{
    providers::{
        Accepted, BoxFuture, Link, OutgoingSms, Provider, ProviderChain, SendError,
        SimulatorSettings,
    },
    relay::{Relay, StopWhen},
    store::{Ahead, ClaimedMessage, Disposition, EnqueueRequest, Store},
};
use tokio_util::sync::CancellationToken;

use crate::support::{
    TestApp, accepting, chain, ended_round, eventually, otp_request, quick_retries,
    run_relay_until_idle, settings, simulator, within,
};

#[tokio::test]
async fn claims_by_priority_then_earliest_deadline() {
    let app = TestApp::new().await;
    let late = app.otp("+8801711111111", "482913").await;
    let soon = app
        .enqueue(&EnqueueRequest {
            template: "admin_2fa".into(),
            ..otp_request("+8801722222222", "222222")
        })
        .await;
    let urgent = app
        .enqueue(&EnqueueRequest {
            priority: Some(0),
            ..otp_request("+8801733333333", "333333")
        })
        .await;
    let mut order = Vec::new();
    for _ in 0..3 {
        let claimed = app.claim(1).await;
        order.push(claimed[0].id);
    }
    assert_eq!(order, [urgent, soon, late]);
    assert!(app.claim(10).await.is_empty());
}

#[tokio::test]
async fn a_claim_short_of_its_limit_says_when_the_next_free_message_comes_due() {
    let app = TestApp::new().await;
    let one = app.relay_session("one");
    let nothing = one.claim(10, &[], &[]).await.unwrap();
    assert!(nothing.messages.is_empty());
    assert_eq!(nothing.ahead, Ahead::Nothing);

    app.otp("+8801711111111", "111111").await;
    app.otp("+8801722222222", "222222").await;
    let full = one.claim(1, &[], &[]).await.unwrap();
    assert_eq!((full.messages.len(), full.ahead), (1, Ahead::More));
    let mut held = vec![full.messages[0].seq];
    let short = one.claim(10, &held, &[]).await.unwrap();
    assert_eq!((short.messages.len(), short.ahead), (1, Ahead::Nothing));
    held.push(short.messages[0].seq);

    // Due in a minute, and due in ten seconds but held by another relay (its retry recorded, its
    // hold not yet given back): the first is the next one this relay could send. Each starts a
    // hold group of its own, so that a relay holding one holds neither of the others.
    app.next_hold_group().await;
    let later = app.otp("+8801733333333", "333333").await;
    app.next_hold_group().await;
    let theirs = app.otp("+8801744444444", "444444").await;
    let two = app.relay_session("two");
    sqlx::query(
        "UPDATE sms_outbox SET next_attempt_at = now() + interval '1 minute' WHERE id = $1",
    )
    .bind(later)
    .execute(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        two.claim(10, &[], &[]).await.unwrap().messages[0].id,
        theirs
    );
    sqlx::query("UPDATE sms_outbox SET next_attempt_at = now() + interval '10 s' WHERE id = $1")
        .bind(theirs)
        .execute(&app.pool)
        .await
        .unwrap();
    let waiting = one.claim(10, &held, &[]).await.unwrap();
    assert!(waiting.messages.is_empty());
    let Ahead::DueIn(ms) = waiting.ahead else {
        panic!("expected a due time, got {:?}", waiting.ahead);
    };
    // Theirs is due in 10 s at most; the minute-away one, in more (unless this test stalled 50 s).
    assert!(ms > 10_000.0 && ms <= 60_000.0, "{ms} ms");
}

/// One OTP, claimed by relay `relay_id`'s claim session (returned): it holds the message until it
/// is closed.
async fn claimed_by_live_relay(app: &TestApp, relay_id: &str) -> (uuid::Uuid, Store) {
    let id = app.otp("+8801712345678", "482913").await;
    let session = app.relay_session(relay_id);
    let claimed = session.claim(10, &[], &[]).await.unwrap().messages;
    assert_eq!(claimed.len(), 1);
    (id, session)
}

#[tokio::test]
async fn a_dead_relays_claims_go_back_at_once_and_a_live_ones_stay() {
    let app = TestApp::new().await;
    let (id, ghost) = claimed_by_live_relay(&app, "ghost").await;

    let sim = app.send_due().await;
    assert_eq!(sim.sent(), 0, "a live relay's claim is left to it");
    assert_eq!(app.state_of(id).await.0, "pending");
    assert_eq!(app.held().await, 1);

    // The ghost dies: its session ends, and its hold with it.
    ghost.pool().close().await;
    app.run_chain_until_drained(chain([sim.clone()]), quick_retries())
        .await;
    assert_eq!(sim.sent(), 1);
    assert_eq!(app.state_of(id).await.0, "sent");
    assert_eq!(
        app.attempts_of(id).await,
        [("sim".into(), 1, 1, "accepted".into())],
        "the ghost's round was never recorded: the survivor's is the first"
    );
    assert_eq!(app.held().await, 0, "the survivor gave its hold back");
}

#[tokio::test]
async fn a_claim_takes_no_message_another_session_holds_and_writes_nothing() {
    let app = TestApp::new().await;
    let (id, _alive) = claimed_by_live_relay(&app, "one").await;
    let before: String = sqlx::query_scalar("SELECT to_jsonb(o)::text FROM sms_outbox o")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let other = app.relay_session("two");
    assert!(other.claim(10, &[], &[]).await.unwrap().messages.is_empty());
    let after: String = sqlx::query_scalar("SELECT to_jsonb(o)::text FROM sms_outbox o")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(before, after, "claims leave the row as it was");
    assert_eq!(app.state_of(id).await.0, "pending");
}

/// The lock-table entries and waiting messages a relay session's holds cover, from `sms_holds`.
async fn holds_of(app: &TestApp, relay_id: &str) -> (i64, i64) {
    sqlx::query_as(
        "SELECT coalesce(sum(holds), 0)::int8, coalesce(sum(messages), 0)::int8 \
           FROM sms_holds WHERE relay = 'sms-relay ' || $1",
    )
    .bind(relay_id)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn consecutive_messages_share_one_lock_and_other_relays_pass_over_their_group() {
    let app = TestApp::new().await;
    let size: i64 = app.count("SELECT sms_hold_group_size()::int8").await;
    app.next_hold_group().await;
    let n = size + 4;
    app.otps(usize::try_from(n).unwrap()).await;
    let (one, two) = (app.relay_session("one"), app.relay_session("two"));
    let first = one.claim(10, &[], &[]).await.unwrap().messages;
    assert_eq!(first.len(), 10);
    assert_eq!(
        holds_of(&app, "one").await,
        (1, size),
        "one entry covers the whole group"
    );

    // The rest of the group is the first relay's to send; the next group is free.
    let second = two.claim(100, &[], &[]).await.unwrap().messages;
    assert_eq!(second.len(), 4);
    assert!(second.iter().all(|m| m.hold != first[0].hold));
    let sending: Vec<i64> = first.iter().map(|m| m.seq).collect();
    let rest = one.claim(100, &sending, &[]).await.unwrap().messages;
    assert_eq!(rest.len(), usize::try_from(size).unwrap() - 10);
    assert!(rest.iter().all(|m| m.hold == first[0].hold));
    assert_eq!(holds_of(&app, "one").await.0, 1, "no new entry for them");

    // Each message is given back once: the lock goes with the last of them.
    let all: Vec<i64> = sending
        .iter()
        .chain(rest.iter().map(|m| &m.seq))
        .copied()
        .collect();
    one.claim(0, &all[1..], &all[..1]).await.unwrap();
    assert_eq!(holds_of(&app, "one").await.0, 1);
    one.claim(0, &[], &all[1..]).await.unwrap();
    assert_eq!(holds_of(&app, "one").await, (0, 0));
}

/// A test provider's acceptance of the call with `reference`.
fn accepted(reference: &str) -> Result<Accepted, SendError> {
    Ok(Accepted {
        provider_message_id: reference.to_owned(),
        http_status: Some(200),
        cost: None,
        note: None,
    })
}

/// Accepts every message after a short wait, noting which of `groups` (message → group) have
/// messages in flight at once.
struct GroupsInFlight {
    groups: std::collections::HashMap<uuid::Uuid, usize>,
    in_flight: std::sync::Mutex<Vec<usize>>,
    most: std::sync::atomic::AtomicUsize,
}

impl Provider for GroupsInFlight {
    fn name(&self) -> &str {
        "groups"
    }

    fn reaches_phones(&self) -> bool {
        false
    }

    fn send<'a>(
        &'a self,
        sms: &'a OutgoingSms,
        reference: &'a str,
    ) -> BoxFuture<'a, Result<Accepted, SendError>> {
        let group = self.groups[&sms.message_id];
        {
            let mut in_flight = self.in_flight.lock().unwrap();
            in_flight.push(group);
            let mut distinct = in_flight.clone();
            distinct.sort_unstable();
            distinct.dedup();
            self.most
                .fetch_max(distinct.len(), std::sync::atomic::Ordering::SeqCst);
        }
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let mut in_flight = self.in_flight.lock().unwrap();
            let at = in_flight.iter().position(|g| *g == group).unwrap();
            in_flight.swap_remove(at);
            accepted(reference)
        })
    }
}

#[tokio::test]
async fn a_relay_whose_lock_table_share_is_full_waits_for_a_recording_and_sends_every_message() {
    let app = TestApp::new().await;
    let mut groups = std::collections::HashMap::new();
    for (group, suffix) in ["1", "2", "3"].into_iter().enumerate() {
        app.next_hold_group().await;
        for id in app.otps_ending_in(3, suffix).await {
            groups.insert(id, group);
        }
    }
    let provider = Arc::new(GroupsInFlight {
        groups: groups.clone(),
        in_flight: std::sync::Mutex::new(Vec::new()),
        most: std::sync::atomic::AtomicUsize::new(0),
    });
    let relay = Relay::new(
        app.store(),
        Arc::new(ProviderChain::new(vec![Link::new(provider.clone())])),
        sms_relay::config::RelaySettings {
            max_locks: Some(1),
            ..settings()
        },
        quick_retries(),
    );
    crate::support::run_relay_until_drained(relay).await;
    for id in groups.keys() {
        assert_eq!(app.state_of(*id).await.0, "sent");
    }
    assert_eq!(
        provider.most.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one lock-table entry: never two groups in flight at once"
    );
}

/// Runs a relay with `settings` as `run --until-idle` does, bounded by `bound`; it must fail.
async fn run_until_drained_fails(
    app: &TestApp,
    settings: sms_relay::config::RelaySettings,
    bound: Duration,
) -> sms_relay::relay::RelayError {
    let relay = Relay::new(
        app.store(),
        chain([accepting("sim")]),
        settings,
        quick_retries(),
    );
    within(
        60,
        relay.run(StopWhen::Drained(bound), CancellationToken::new()),
    )
    .await
    .unwrap_err()
}

#[tokio::test]
async fn a_relay_refuses_to_fill_more_than_a_quarter_of_the_lock_table() {
    let app = TestApp::new().await;
    let id = app.otp("+8801712345678", "482913").await;
    let size = app.store().lock_table_size().await.unwrap();
    let too_many = u32::try_from(size / 4 + 1).unwrap();
    let error = run_until_drained_fails(
        &app,
        sms_relay::config::RelaySettings {
            max_locks: Some(too_many),
            ..settings()
        },
        Duration::from_secs(5),
    )
    .await;
    assert!(
        matches!(error, sms_relay::relay::RelayError::LockTable { max_locks, .. } if max_locks == too_many),
        "{error}"
    );
    assert_eq!(app.state_of(id).await.0, "pending", "nothing was claimed");
    assert_eq!(app.held().await, 0);
}
#[tokio::test]
async fn until_drained_waits_for_another_relays_claim_and_gives_up_at_its_bound() {
    let app = TestApp::new().await;
    let (id, _alive) = claimed_by_live_relay(&app, "other").await;
    let error = run_until_drained_fails(&app, settings(), Duration::from_millis(300)).await;
    assert!(
        matches!(
            error,
            sms_relay::relay::RelayError::StillOwed { owed: 1, .. }
        ),
        "{error}"
    );
    assert_eq!(app.state_of(id).await.0, "pending");
    assert_eq!(app.held().await, 1, "still the other relay's");
}

/// One OTP in the same round of two relays: the first ("lost") claimed it and its session ended
/// mid-round (a network cut, a restarted server), then the second ("fresh", whose session is
/// returned and stays open) claimed it again. Returns the message, both claims and that session.
async fn claimed_again_after_a_lost_session(
    app: &TestApp,
) -> (uuid::Uuid, ClaimedMessage, ClaimedMessage, Store) {
    let id = app.otp("+8801712345678", "482913").await;
    let lost = app.relay_session("lost");
    let stale = lost.claim(1, &[], &[]).await.unwrap().messages.remove(0);
    lost.pool().close().await;
    let took_over = app.relay_session("fresh");
    let fresh = took_over
        .claim(1, &[], &[])
        .await
        .unwrap()
        .messages
        .remove(0);
    (id, stale, fresh, took_over)
}

#[tokio::test]
async fn a_relay_that_lost_its_claim_cannot_overwrite_the_round_of_the_relay_that_took_over() {
    let app = TestApp::new().await;
    let (id, stale, fresh, _took_over) = claimed_again_after_a_lost_session(&app).await;
    assert_eq!((stale.round, fresh.round), (1, 1));

    let store = app.store();
    store
        .complete(
            &[ended_round(&stale, Disposition::Failed)],
            "lost",
            0,
            false,
        )
        .await
        .unwrap();
    assert_eq!(
        app.state_of(id).await.0,
        "pending",
        "the lost relay's end of the round is not recorded"
    );
    store
        .complete(&[ended_round(&fresh, Disposition::Sent)], "fresh", 0, false)
        .await
        .unwrap();
    assert_eq!(app.state_of(id).await.0, "sent");
}

#[tokio::test]
async fn an_acceptance_by_a_relay_that_lost_its_claim_makes_the_message_sent_after_all() {
    let app = TestApp::new().await;
    let (id, stale, fresh, _took_over) = claimed_again_after_a_lost_session(&app).await;

    let store = app.store();
    store
        .complete(
            &[ended_round(&fresh, Disposition::Failed)],
            "fresh",
            0,
            false,
        )
        .await
        .unwrap();
    assert_eq!(app.state_of(id).await.0, "failed");
    store
        .complete(&[ended_round(&stale, Disposition::Sent)], "lost", 0, false)
        .await
        .unwrap();
    let (state, reason) = app.state_of(id).await;
    assert_eq!(state, "sent", "a provider accepted it: {reason:?}");
    assert!(reason.unwrap().starts_with("sent after all"));
    assert!(app.message(id).await.sent_at.is_some());
}

#[tokio::test]
async fn four_relays_send_five_thousand_messages_once_each() {
    let app = TestApp::new().await;
    app.otps(5_000).await;
    let sim = accepting("sim");
    let relays = (0..4).map(|_| {
        let relay = Relay::new(
            app.store(),
            chain([sim.clone()]),
            sms_relay::config::RelaySettings {
                batch_size: 50,
                ..settings()
            },
            quick_retries(),
        );
        tokio::spawn(relay.run(StopWhen::Idle, CancellationToken::new()))
    });
    let reports = within(120, futures_join(relays)).await;
    let claimed: u64 = reports.iter().map(|r| r.claimed).sum();

    assert_eq!(
        sim.sent(),
        5_000,
        "the simulator was called once per message"
    );
    assert_eq!(claimed, 5_000);
    assert_eq!(app.states().await.get("sent"), Some(&5_000));
    assert!(
        reports.iter().filter(|r| r.claimed > 0).count() >= 2,
        "work was shared: {reports:?}"
    );
    assert_eq!(app.attempt_count().await, 5_000);
}

async fn futures_join(
    handles: impl Iterator<
        Item = tokio::task::JoinHandle<
            Result<sms_relay::relay::RunReport, sms_relay::relay::RelayError>,
        >,
    >,
) -> Vec<sms_relay::relay::RunReport> {
    let mut reports = Vec::new();
    for handle in handles.collect::<Vec<_>>() {
        reports.push(handle.await.unwrap().unwrap());
    }
    reports
}

#[tokio::test]
async fn a_commit_wakes_an_idle_relay_before_its_poll_interval() {
    let app = TestApp::new().await;
    let sim = accepting("sim");
    let relay = Relay::new(
        app.store(),
        chain([sim.clone()]),
        sms_relay::config::RelaySettings {
            poll_interval_ms: 30_000,
            ..settings()
        },
        quick_retries(),
    );
    let cancel = CancellationToken::new();
    let running = tokio::spawn(relay.run(StopWhen::Cancelled, cancel.clone()));
    // Wait until the relay has gone idle and registered for wake-ups.
    eventually(async || app.sleeping_relays().await == 1).await;

    let id = app.otp("+8801712345678", "482913").await;
    // Without the NOTIFY the relay would sleep for 30 s; the hang guard is 20 s.
    within(20, eventually(async || app.state_of(id).await.0 == "sent")).await;
    cancel.cancel();
    within(20, running).await.unwrap().unwrap();
    assert_eq!(app.sleeping_relays().await, 0, "deregistered on stop");
}

#[tokio::test]
async fn shutdown_lets_in_flight_sends_finish_and_leaves_nothing_stuck() {
    let app = TestApp::new().await;
    app.otps(20).await;
    let sim = simulator(
        "slow",
        SimulatorSettings {
            latency_ms: 300,
            ..SimulatorSettings::default()
        },
    );
    let relay = Relay::new(
        app.store(),
        chain([sim.clone()]),
        settings(),
        quick_retries(),
    );
    let cancel = CancellationToken::new();
    let running = tokio::spawn(relay.run(StopWhen::Cancelled, cancel.clone()));
    eventually(async || sim.calls() == 20).await;
    cancel.cancel();
    within(20, running).await.unwrap().unwrap();

    assert_eq!(app.states().await.get("sent"), Some(&20));
    assert_eq!(sim.sent(), 20);
}

#[tokio::test]
async fn sends_outlasting_the_grace_are_released_and_sent_later() {
    let app = TestApp::new().await;
    let id = app.otp("+8801712345678", "482913").await;
    let stuck = simulator(
        "stuck",
        SimulatorSettings {
            latency_ms: 60_000,
            ..SimulatorSettings::default()
        },
    );
    let relay = Relay::new(
        app.store(),
        chain([stuck.clone()]),
        sms_relay::config::RelaySettings {
            shutdown_grace_ms: 100,
            ..settings()
        },
        quick_retries(),
    );
    let cancel = CancellationToken::new();
    let running = tokio::spawn(relay.run(StopWhen::Cancelled, cancel.clone()));
    eventually(async || stuck.calls() == 1).await;
    cancel.cancel();
    within(20, running).await.unwrap().unwrap();

    let (state, reason) = app.state_of(id).await;
    assert_eq!(state, "pending");
    assert!(reason.unwrap().contains("outcome unknown"));
    assert_eq!(
        app.attempts_of(id).await,
        [("stuck".into(), 1, 1, "unknown".into())]
    );

    app.send_due().await;
    assert_eq!(app.state_of(id).await.0, "sent");
}

#[tokio::test]
async fn the_relay_vacuums_the_queue_after_a_burst() {
    let app = TestApp::new().await;
    app.otps(200).await;
    let relay = Relay::new(
        app.store(),
        chain([accepting("sim")]),
        sms_relay::config::RelaySettings {
            vacuum_every: 100,
            ..settings()
        },
        quick_retries(),
    );
    run_relay_until_idle(relay).await;
    eventually(async || {
        app.count(
            "SELECT (vacuum_count)::int8 FROM pg_stat_user_tables WHERE relname = 'sms_queue'",
        )
        .await
            > 0
    })
    .await;
}

#[tokio::test]
async fn attempts_carry_country_and_operator_as_the_sql_functions_derive_them() {
    let app = TestApp::new().await;
    sqlx::query("INSERT INTO sms_allowed_prefixes (prefix) VALUES ('+44'), ('+1')")
        .execute(&app.pool)
        .await
        .unwrap();
    let numbers = [
        "+8801312345601",
        "+8801412345601",
        "+8801512345601",
        "+8801612345601",
        "+8801712345601",
        "+8801812345601",
        "+8801912345601",
        "+8801112345601",
        "+447412345601",
        "+12025550101",
    ];
    for number in numbers {
        app.otp(number, "482913").await;
    }
    app.run_until_idle([accepting("sim")], quick_retries())
        .await;
    // The relay computes them in Rust; the SQL functions (for old rows and for analysts) agree.
    let rows: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT a.country, sms_country(o.recipient), a.operator, sms_operator(o.recipient) \
           FROM sms_attempts a JOIN sms_outbox o ON o.id = a.message_id ORDER BY o.recipient",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), numbers.len());
    for (country, sql_country, operator, sql_operator) in &rows {
        assert_eq!((country, operator), (sql_country, sql_operator));
    }
    let seen: Vec<&str> = rows.iter().map(|r| r.2.as_str()).collect();
    assert_eq!(
        seen,
        [
            "international",
            "international",
            "other BD",
            "Grameenphone",
            "Banglalink",
            "Teletalk",
            "Robi",
            "Grameenphone",
            "Robi",
            "Banglalink"
        ]
    );
    let countries: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(&countries[..3], ["US", "GB", "BD"]);
}

/// Accepts every message but one, and panics on that one.
struct PanicsOn(uuid::Uuid);

impl Provider for PanicsOn {
    fn name(&self) -> &str {
        "panics"
    }

    fn reaches_phones(&self) -> bool {
        false
    }

    fn send<'a>(
        &'a self,
        sms: &'a OutgoingSms,
        reference: &'a str,
    ) -> BoxFuture<'a, Result<Accepted, SendError>> {
        assert_ne!(
            sms.message_id, self.0,
            "this provider panics on this message"
        );
        Box::pin(async move { accepted(reference) })
    }
}

#[tokio::test]
async fn a_message_whose_send_panics_fails_after_its_last_round_and_the_rest_are_sent() {
    let app = TestApp::new().await;
    let ids = app.otps(5).await;
    let chain = Arc::new(ProviderChain::new(vec![Link::new(Arc::new(PanicsOn(
        ids[2],
    )))]));
    let policy = quick_retries();
    app.run_chain_until_drained(chain, policy.clone()).await;

    let poison = app.message(ids[2]).await;
    assert_eq!(poison.state, "failed");
    assert!(
        poison
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("panicked")),
        "{:?}",
        poison.last_error
    );
    assert_eq!(u32::try_from(poison.rounds).unwrap(), policy.max_rounds);
    for id in [ids[0], ids[1], ids[3], ids[4]] {
        assert_eq!(app.state_of(id).await.0, "sent");
    }
    assert_eq!(app.held().await, 0, "no message is left held");
}
