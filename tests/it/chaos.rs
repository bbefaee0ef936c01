//! Chaos: relays SIGKILLed alone and at random, their database connections terminated,
//! PostgreSQL restarted, a provider that takes a request and never answers,
//! `run --until-idle` after a relay died, and the holds of a claim that failed part way.
//!
//! Every test checks that nothing is lost (each message ends `sent`, or final with a reason) and
//! that the duplicates (journal lines beyond one per message id) are at most the messages that
//! were in flight (waiting and held by a relay) when the faults struck. A fault strikes with the
//! outbox frozen: the test holds `LOCK TABLE sms_outbox IN ACCESS EXCLUSIVE MODE` while it counts
//! and then kills, terminates or restarts, so no relay claims or records anything between the
//! count and the fault.
//!
//! The relays' leases are ten minutes, far beyond any wait here: a dead relay's messages come back
//! because its session ended, never through a lease running out.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use rand::RngExt as _;
use serde_json::json;
use sms_relay::{
    config::RelaySettings,
    relay::{Relay, RetryPolicy},
    store::{Store, presence_name},
    throwaway_pg::{Durability, ThrowawayPg},
};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::{
    fakes::{FakeProvider, Kind, Scenario},
    support::{
        TestApp,
        cli::{
            RelayProcess, Scratch, duplicate_sends, journal_counts, journaling_config, output,
            sms_relay, sms_relay_at, text, unique_id,
        },
        eventually, http_chain, provider_config, quick_retries, run_relay_until_drained, settings,
        within,
    },
};

/// Ten minutes: no lease runs out during a test.
const LEASE_MS: u64 = 600_000;

/// A relay config whose simulator takes `latency_ms` per send and appends every message it sends
/// to the journal; each relay holds at most `max_in_flight` messages.
fn chaos_config(scratch: &Scratch, latency_ms: u64, max_in_flight: u32) -> (PathBuf, PathBuf) {
    let relay_keys =
        format!("lease_ms = {LEASE_MS}\nbatch_size = 25\nmax_in_flight = {max_in_flight}");
    journaling_config(scratch, &relay_keys, latency_ms)
}

/// What was in flight at a fault.
pub(crate) struct InFlight {
    /// Waiting messages held by a relay, whichever.
    pub count: i64,
    /// Those the relay hit by the fault held.
    held_by_victim: Vec<Uuid>,
}

/// Opens a connection to `url` and freezes the outbox: until [`thaw`], no relay can claim or
/// record a round.
pub(crate) async fn freeze(url: &str) -> PgConnection {
    let mut conn = PgConnection::connect(url).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE sms_outbox IN ACCESS EXCLUSIVE MODE")
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

pub(crate) async fn thaw(mut conn: PgConnection) {
    sqlx::raw_sql("COMMIT").execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}

/// The messages in flight now (waiting and held), and which of them `victim` holds. A held
/// message that is no longer waiting was recorded, and only its hold is left to give back.
pub(crate) async fn in_flight(conn: &mut PgConnection, victim: &str) -> InFlight {
    let (count, held_by_victim): (i64, Vec<Uuid>) = sqlx::query_as(
        "SELECT count(*), coalesce(array_agg(o.id) FILTER (WHERE a.application_name = $1), '{}') \
           FROM pg_locks l \
           JOIN pg_stat_activity a ON a.pid = l.pid \
           JOIN sms_outbox o ON sms_hold_key(o.seq) = l.objid::int8::int4 \
          WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 \
            AND l.classid = 1397576497::oid AND l.database = a.datid AND o.state = 'pending'",
    )
    .bind(presence_name(victim))
    .fetch_one(conn)
    .await
    .unwrap();
    InFlight {
        count,
        held_by_victim,
    }
}

/// Terminates every backend named in `names` and waits until each is gone; returns how many.
async fn terminate_backends(conn: &mut PgConnection, names: &[String]) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 10000)) \
           FROM pg_stat_activity WHERE application_name = ANY ($1) AND pid <> pg_backend_pid()",
    )
    .bind(names)
    .fetch_one(conn)
    .await
    .unwrap()
}

/// SIGKILLs `victim` with the outbox frozen and returns what was in flight just before (counted
/// first: the victim's holds end with its session). Its backends are ended before the thaw: a
/// statement it sent just before dying and that waits for the lock would otherwise land after it
/// (which a real crash allows too, but here it would blur what the victim held at the kill).
async fn sigkill(url: &str, victim: &mut RelayProcess) -> InFlight {
    let mut conn = freeze(url).await;
    let at_kill = in_flight(&mut conn, &victim.id).await;
    victim.kill();
    terminate_backends(&mut conn, &victim.backend_names()).await;
    thaw(conn).await;
    at_kill
}

async fn all_sent(app: &TestApp, n: usize) -> bool {
    app.states().await.get("sent").copied() == Some(n as i64)
}

/// Distinct messages the journal shows sent.
fn journaled(journal: &Path) -> usize {
    journal_counts(journal).len()
}

/// Every message of `ids` ended `sent` and reached the provider, and the journal holds at most
/// `in_flight` sends beyond one per message. Returns the duplicates.
async fn assert_nothing_lost(app: &TestApp, ids: &[Uuid], journal: &Path, in_flight: i64) -> usize {
    assert_eq!(app.unsent().await, 0, "states: {:?}", app.states().await);
    let counts = journal_counts(journal);
    let missing = ids
        .iter()
        .filter(|id| !counts.contains_key(&id.to_string()))
        .count();
    assert_eq!(
        missing, 0,
        "messages marked sent that never reached the provider"
    );
    assert_eq!(counts.len(), ids.len(), "the journal shows unknown ids");
    let duplicates = duplicate_sends(&counts);
    assert!(
        duplicates as i64 <= in_flight,
        "{duplicates} duplicates but only {in_flight} were in flight at the faults"
    );
    duplicates
}

#[tokio::test]
async fn a_sigkilled_relays_claims_are_sent_by_the_survivor_long_before_its_lease_ends() {
    let app = TestApp::new().await;
    let scratch = Scratch::new();
    let (config, journal) = chaos_config(&scratch, 250, 100);
    let ids = app.otps(2_000).await;
    let mut victim = RelayProcess::start(&app.url, &unique_id("victim"), &config, &scratch);
    let survivor_id = unique_id("survivor");
    let survivor = RelayProcess::start(&app.url, &survivor_id, &config, &scratch);

    eventually(async || journaled(&journal) >= 400).await;
    let at_kill = sigkill(&app.url, &mut victim).await;
    assert!(
        !at_kill.held_by_victim.is_empty(),
        "the kill should catch the victim with sends in flight"
    );
    assert!(
        app.states().await.get("pending").copied().unwrap_or(0) > 0,
        "the kill came mid-burst"
    );

    // The hang guard (60 s) is far below the ten-minute lease: the victim's holds ended with it.
    eventually(async || all_sent(&app, ids.len()).await).await;
    let mut by_survivor = 0;
    for &id in &at_kill.held_by_victim {
        let attempts = app.attempts(id).await;
        if attempts
            .iter()
            .any(|a| a.round == 1 && a.relay_id == survivor_id && a.outcome == "accepted")
        {
            by_survivor += 1;
        }
    }
    assert_eq!(
        by_survivor,
        at_kill.held_by_victim.len(),
        "every message the victim held was sent by the survivor (the victim's round was never recorded)"
    );
    assert_nothing_lost(&app, &ids, &journal, at_kill.count).await;
    assert!(survivor.stop().await.success());
}

#[tokio::test]
async fn four_relays_killed_and_restarted_at_random_lose_nothing() {
    let app = TestApp::new().await;
    let scratch = Scratch::new();
    let (config, journal) = chaos_config(&scratch, 300, 50);
    let ids = app.otps(3_000).await;
    let mut relays: Vec<RelayProcess> = (0..4)
        .map(|i| RelayProcess::start(&app.url, &unique_id(&format!("r{i}")), &config, &scratch))
        .collect();

    let mut in_flight_at_kills = 0;
    for (kill, threshold) in [300, 900, 1_500, 2_100].into_iter().enumerate() {
        eventually(async || journaled(&journal) >= threshold).await;
        let victim = rand::rng().random_range(0..relays.len());
        let at_kill = sigkill(&app.url, &mut relays[victim]).await;
        eprintln!(
            "kill {kill}: relay {} with {} in flight ({} its own)",
            relays[victim].id,
            at_kill.count,
            at_kill.held_by_victim.len()
        );
        in_flight_at_kills += at_kill.count;
        // A restarted process is a new relay (as the default id, host-pid, is).
        relays[victim] = RelayProcess::start(
            &app.url,
            &unique_id(&format!("r{victim}k{kill}")),
            &config,
            &scratch,
        );
    }

    eventually(async || all_sent(&app, ids.len()).await).await;
    assert_nothing_lost(&app, &ids, &journal, in_flight_at_kills).await;
    for relay in relays {
        assert!(relay.stop().await.success());
    }
}

#[tokio::test]
async fn a_relay_whose_backends_are_terminated_keeps_going() {
    let app = TestApp::new().await;
    let scratch = Scratch::new();
    let (config, journal) = chaos_config(&scratch, 250, 100);
    let ids = app.otps(2_000).await;
    let mut relay = RelayProcess::start(&app.url, &unique_id("terminated"), &config, &scratch);

    let mut in_flight_at_faults = 0;
    for threshold in [300, 900, 1_500] {
        eventually(async || journaled(&journal) >= threshold).await;
        let mut conn = freeze(&app.url).await;
        let at_fault = in_flight(&mut conn, &relay.id).await;
        let terminated = terminate_backends(&mut conn, &relay.backend_names()).await;
        thaw(conn).await;
        assert!(terminated >= 2, "the pool and the claim connection");
        in_flight_at_faults += at_fault.count;
    }

    eventually(async || all_sent(&app, ids.len()).await).await;
    assert!(relay.is_running(), "the relay survived its connections");
    assert_nothing_lost(&app, &ids, &journal, in_flight_at_faults).await;
    assert!(relay.stop().await.success());
}

/// Stops a PostgreSQL server that [`restart`] restarted: it is no longer the child of its
/// `ThrowawayPg` watchdog, which would stop only the old process and delete the directory under
/// the new one.
struct Restarted {
    pg_ctl: PathBuf,
    data: PathBuf,
}

impl Drop for Restarted {
    fn drop(&mut self) {
        let _ = as_data_owner(&self.pg_ctl)
            .arg("stop")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// `program`, run as the data directory's owner (as `ThrowawayPg` runs its server).
fn as_data_owner(program: &Path) -> Command {
    let root = std::fs::metadata("/proc/self").unwrap().uid() == 0;
    sms_relay::throwaway_pg::as_server_user(program, root)
}

/// Where the server behind `conn` keeps its data and its `pg_ctl`.
async fn server_paths(conn: &mut PgConnection) -> (PathBuf, PathBuf) {
    let data: String = sqlx::query_scalar("SELECT current_setting('data_directory')")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    let data = PathBuf::from(data);
    let pid_file = std::fs::read_to_string(data.join("postmaster.pid")).unwrap();
    let postmaster = pid_file.lines().next().unwrap().trim();
    let postgres = std::fs::read_link(format!("/proc/{postmaster}/exe")).unwrap();
    (postgres.with_file_name("pg_ctl"), data)
}

/// `pg_ctl restart -m fast`: every session ends, a shutdown checkpoint is written, and the server
/// comes back on the same port with the same settings.
fn restart(pg_ctl: &Path, data: &Path) -> Restarted {
    let out = as_data_owner(pg_ctl)
        .arg("restart")
        .arg("-D")
        .arg(data)
        .args(["-m", "fast", "-w", "-t", "60", "-l"])
        .arg(data.with_file_name("restarted.log"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pg_ctl restart: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    Restarted {
        pg_ctl: pg_ctl.to_owned(),
        data: data.to_owned(),
    }
}

#[tokio::test]
async fn a_postgresql_restart_mid_burst_loses_nothing() {
    // A server of this test's own: the shared one serves the other tests.
    let pg = ThrowawayPg::start(Durability::Fast).expect("start a throwaway PostgreSQL");
    let url = pg.url("postgres");
    let migrate = output(sms_relay_at(&url).arg("migrate"));
    assert!(migrate.status.success(), "{}", text(&migrate.stderr));
    let app = TestApp::attach(&url).await;
    let scratch = Scratch::new();
    let (config, journal) = chaos_config(&scratch, 250, 100);
    let ids = app.otps(2_000).await;
    let mut relay = RelayProcess::start(&url, &unique_id("restart"), &config, &scratch);

    eventually(async || journaled(&journal) >= 400).await;
    let mut conn = freeze(&url).await;
    let (pg_ctl, data) = server_paths(&mut conn).await;
    let at_restart = in_flight(&mut conn, &relay.id).await;
    // Still frozen: the shutdown ends every session, this one (and its lock) last.
    let _restarted = tokio::task::spawn_blocking(move || restart(&pg_ctl, &data))
        .await
        .unwrap();
    drop(conn);
    assert!(at_restart.count > 0, "the restart caught sends in flight");

    eventually(async || all_sent(&app, ids.len()).await).await;
    assert!(relay.is_running(), "the relay survived the restart");
    assert_nothing_lost(&app, &ids, &journal, at_restart.count).await;
    assert!(relay.stop().await.success());
}

#[tokio::test]
async fn a_provider_that_never_answers_costs_at_most_one_duplicate_and_ends_with_a_reason() {
    let app = TestApp::new().await;
    let fake = FakeProvider::start(Kind::Vonage).await;
    // Takes the request, remembers the message, and answers in an hour.
    fake.set_slow_delay(Duration::from_secs(3_600));
    let number = |i: usize, scenario: Scenario| format!("+8801712{i:04}{}", scenario.suffix());
    let mut hanging = Vec::new();
    let mut answered = Vec::new();
    for i in 0..20 {
        answered.push((
            number(i, Scenario::Accept),
            app.otp(&number(i, Scenario::Accept), "551234").await,
        ));
        if i % 5 == 0 {
            hanging.push((
                number(i, Scenario::Slow),
                app.otp(&number(i, Scenario::Slow), "551234").await,
            ));
        }
    }
    // The HTTP timeout is far beyond the lease: the round's deadline is what ends the wait.
    let chain = http_chain(&[provider_config(
        &fake,
        "vonage",
        json!({
            "timeout_ms": 120_000,
            "circuit": { "consecutive_failures": 100, "window": 100, "failure_rate": 1.0 },
        }),
    )]);
    let relay = Relay::new(
        app.store(),
        chain,
        RelaySettings {
            lease_ms: 1_500,
            ..settings()
        },
        RetryPolicy {
            max_rounds: 2,
            ..quick_retries()
        },
    );
    run_relay_until_drained(relay).await;

    let calls_to = |number: &str| {
        fake.received()
            .iter()
            .filter(|r| r.to.trim_start_matches('+') == number.trim_start_matches('+'))
            .count()
    };
    for (number, id) in &hanging {
        let (state, reason) = app.state_of(*id).await;
        assert_eq!(state, "failed");
        let reason = reason.unwrap_or_default();
        assert!(
            reason.contains("gave up after 2 rounds") && reason.contains("outran its lease"),
            "{reason}"
        );
        assert_eq!(
            app.attempts_of(*id).await,
            [
                ("vonage".into(), 1, 1, "unknown".into()),
                ("vonage".into(), 2, 1, "unknown".into())
            ]
        );
        let calls = calls_to(number);
        assert!(
            (1..=2).contains(&calls),
            "{calls} calls: at most one duplicate"
        );
    }
    for (number, id) in &answered {
        assert_eq!(app.state_of(*id).await.0, "sent");
        assert_eq!(calls_to(number), 1);
    }
}

#[tokio::test]
async fn run_until_idle_after_a_relay_died_sends_its_claims_and_exits_0() {
    let app = TestApp::new().await;
    let scratch = Scratch::new();
    let (config, journal) = chaos_config(&scratch, 250, 100);
    let ids = app.otps(1_500).await;
    let mut victim = RelayProcess::start(&app.url, &unique_id("victim"), &config, &scratch);
    eventually(async || journaled(&journal) >= 300).await;
    let at_kill = sigkill(&app.url, &mut victim).await;
    assert!(!at_kill.held_by_victim.is_empty());

    let mut until_idle = sms_relay(&app);
    until_idle
        .args(["run", "--until-idle", "--max-wait", "120", "--config"])
        .arg(&config);
    let run = within(
        150,
        tokio::task::spawn_blocking(move || output(&mut until_idle)),
    )
    .await
    .unwrap();
    assert!(
        run.status.success(),
        "{:?}: {}",
        run.status,
        text(&run.stderr)
    );
    assert_eq!(app.owed().await, 0);
    assert_nothing_lost(&app, &ids, &journal, at_kill.count).await;
}

#[tokio::test]
async fn a_relay_restarted_under_the_same_id_gets_its_old_claims_back() {
    let app = TestApp::new().await;
    let scratch = Scratch::new();
    let (config, journal) = chaos_config(&scratch, 250, 100);
    let ids = app.otps(1_000).await;
    // A fixed relay id, as a container restarted after a crash has: same hostname, and the relay
    // is PID 1 again (the default id is host-pid).
    let id = unique_id("same");
    let mut first = RelayProcess::start(&app.url, &id, &config, &scratch);
    eventually(async || journaled(&journal) >= 200).await;
    let at_kill = sigkill(&app.url, &mut first).await;
    assert!(!at_kill.held_by_victim.is_empty());

    let second = RelayProcess::start(&app.url, &id, &config, &scratch);
    // Far below the ten-minute lease.
    eventually(async || all_sent(&app, ids.len()).await).await;
    assert_nothing_lost(&app, &ids, &journal, at_kill.count).await;
    assert!(second.stop().await.success());
}

/// Claims up to `n` due messages on `session`, returning their seqs.
async fn claim_seqs(session: &Store, n: u32) -> Vec<i64> {
    let claimed = session.claim(n, &[], &[]).await.unwrap().messages;
    claimed.into_iter().map(|m| m.seq).collect()
}

#[tokio::test]
async fn a_failed_claims_holds_are_given_back_and_the_messages_being_sent_stay_held() {
    let app = TestApp::new().await;
    app.otps_ending_in(4, "1").await;
    app.next_hold_group().await;
    app.otps_ending_in(2, "2").await;
    let mine = app.relay_session("r1");
    let theirs = app.relay_session("r2");
    let sending = claim_seqs(&mine, 4).await;
    assert_eq!(claim_seqs(&theirs, 2).await.len(), 2);
    assert_eq!(app.held().await, 6);

    // r1 is sending its first message; the other three holds a failed claim left behind. Their
    // lock stays, for the message being sent, and no other relay can take them yet.
    let given_back = mine.unhold_all_but(&sending[..1]).await.unwrap();
    assert_eq!(given_back, 3);
    let third = app.relay_session("r3");
    assert!(claim_seqs(&third, 10).await.is_empty());
    // It is held once, for that one message: giving that back lets the whole group go, and r2's
    // two stay held.
    mine.claim(0, &[], &sending[..1]).await.unwrap();
    assert_eq!(
        claim_seqs(&third, 10).await,
        sending,
        "r1's four are claimable, r2's are not"
    );
}
#[tokio::test]
async fn a_claimed_message_found_finished_or_gone_when_read_again_is_let_go_and_not_returned() {
    let app = TestApp::new().await;
    let ids = app.otps(4).await;
    // The queue still lists the first two, but one is finished and the other deleted: what a
    // claim's re-read finds when another relay finished a message after the claim's walk passed
    // it. (Writing as a replica leaves the queue as it was.)
    let mut tx = app.pool.begin().await.unwrap();
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE sms_outbox SET state = 'sent', sent_at = now(), finished_at = now() WHERE id = $1",
    )
    .bind(ids[0])
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query("DELETE FROM sms_outbox WHERE id = $1")
        .bind(ids[1])
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let session = app.relay_session("r1");
    let mut claimed: Vec<Uuid> = (session.claim(10, &[], &[]).await.unwrap().messages)
        .into_iter()
        .map(|m| m.id)
        .collect();
    claimed.sort();
    let mut waiting = ids[2..].to_vec();
    waiting.sort();
    assert_eq!(claimed, waiting, "only the messages still waiting");
    // Only their holds are kept: giving those two back leaves the session holding nothing.
    let seqs: Vec<i64> = sqlx::query_scalar("SELECT seq FROM sms_outbox WHERE id = ANY ($1)")
        .bind(&claimed)
        .fetch_all(&app.pool)
        .await
        .unwrap();
    session.claim(0, &[], &seqs).await.unwrap();
    assert_eq!(app.held().await, 0, "and only their holds were kept");
}
