//! The real `sms-relay` binary: crash safety under SIGKILL, graceful SIGTERM, the CLI surface,
//! logs that never carry a full number, and one clock when the host's is wrong.

use std::process::Stdio;

use crate::chaos::{freeze, in_flight, thaw};
use crate::support::{
    TestApp,
    cli::{
        Scratch, duplicate_sends, free_address, journal_counts, journaling_config, output,
        sms_relay, sms_relay_with_clock, spawn_run, stop, text,
    },
    eventually,
};

#[tokio::test]
async fn sigkill_mid_burst_loses_nothing_and_duplicates_at_most_what_was_in_flight() {
    let app = TestApp::new().await;
    let scratch = Scratch::new();
    let (config, journal) = journaling_config(
        &scratch,
        "lease_ms = 10000\nbatch_size = 50\nmax_in_flight = 200",
        300,
    );
    let ids = app.otps(3_000).await;

    let mut first = spawn_run(&app, &config, &scratch.path("first.log"));
    eventually(async || journal_counts(&journal).len() >= 500).await;
    // Counted with the outbox frozen, just before the kill: the holds end with the process.
    let mut frozen = freeze(&app.url).await;
    let in_flight_at_kill = in_flight(&mut frozen, "").await.count;
    first.kill().unwrap();
    first.wait().unwrap();
    thaw(frozen).await;
    assert!(
        in_flight_at_kill > 0,
        "the kill should catch sends in flight"
    );
    assert!(
        app.states().await.get("pending").copied().unwrap_or(0) > 0,
        "the kill came mid-burst"
    );

    let second = spawn_run(&app, &config, &scratch.path("second.log"));
    eventually(async || app.states().await.get("sent") == Some(&3_000)).await;
    let status = stop(second).await;
    assert!(status.success(), "SIGTERM is a clean exit: {status:?}");

    let counts = journal_counts(&journal);
    assert!(
        ids.iter().all(|id| counts.contains_key(&id.to_string())),
        "every message reached the provider"
    );
    let duplicates = duplicate_sends(&counts);
    assert!(
        duplicates as i64 <= in_flight_at_kill,
        "{duplicates} duplicates but only {in_flight_at_kill} were in flight"
    );
    assert_eq!(app.unsent().await, 0);

    for log in ["first.log", "second.log"] {
        let logged = std::fs::read_to_string(scratch.path(log)).unwrap();
        assert!(
            logged.contains("round finished"),
            "debug logging was on in {log}"
        );
        assert!(!logged.contains("+8801"), "{log} shows a full phone number");
    }
}

#[tokio::test]
async fn help_explains_every_subcommand() {
    let app = TestApp::new().await;
    let help = text(&output(sms_relay(&app).arg("--help")).stdout);
    for command in [
        "migrate",
        "run",
        "enqueue",
        "status",
        "providers",
        "send-test",
        "report",
        "demo",
        "bench",
    ] {
        assert!(help.contains(command), "--help lacks {command}:\n{help}");
    }
    let run_help = text(&output(sms_relay(&app).args(["run", "--help"])).stdout);
    assert!(run_help.contains("--until-idle"));
}

#[tokio::test]
async fn operator_commands_enqueue_run_until_idle_and_report_status() {
    let app = TestApp::new().await;
    let migrate = output(sms_relay(&app).arg("migrate"));
    assert!(
        migrate.status.success(),
        "migrate is repeatable: {}",
        text(&migrate.stderr)
    );

    let enqueued = output(sms_relay(&app).args([
        "enqueue",
        "--to",
        "+8801712345678",
        "--param",
        "code=482913",
    ]));
    assert!(enqueued.status.success(), "{}", text(&enqueued.stderr));
    let id: uuid::Uuid = text(&enqueued.stdout)
        .trim()
        .parse()
        .expect("enqueue prints the id");

    let refused =
        output(sms_relay(&app).args(["enqueue", "--to", "01712345678", "--param", "code=1"]));
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("SR001"),
        "{}",
        text(&refused.stderr)
    );

    let run = output(sms_relay(&app).args(["run", "--until-idle"]));
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert_eq!(app.state_of(id).await.0, "sent");

    let status = text(&output(sms_relay(&app).arg("status")).stdout);
    assert!(
        status.contains("sent") && status.contains("simulator") && status.contains("accepted"),
        "{status}"
    );
}

#[tokio::test]
async fn run_refuses_an_unmigrated_database_and_bad_settings() {
    let app = TestApp::new().await;
    let bad = output(
        sms_relay(&app)
            .args(["run", "--until-idle"])
            .env("SMS_RELAY__RELAY__BATCH_SIZE", "0"),
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad.stderr).contains("batch_size"),
        "{}",
        text(&bad.stderr)
    );

    sqlx::query("DROP TABLE _sqlx_migrations")
        .execute(&app.pool)
        .await
        .unwrap();
    let unmigrated = output(sms_relay(&app).args(["run", "--until-idle"]));
    assert_eq!(unmigrated.status.code(), Some(1));
    assert!(
        text(&unmigrated.stderr).contains("sms-relay migrate"),
        "{}",
        text(&unmigrated.stderr)
    );
}

#[tokio::test]
async fn demo_and_bench_refuse_a_database_that_holds_messages() {
    let app = TestApp::new().await;
    let live = app.otp("+8801712345678", "482913").await;
    for args in [
        vec!["demo", "--logins", "10"],
        vec!["bench", "--drain", "10", "--seconds", "1"],
    ] {
        let refused = output(sms_relay(&app).args(&args));
        assert_eq!(refused.status.code(), Some(1), "{args:?}");
        assert!(
            text(&refused.stderr).contains("needs a database without messages"),
            "{}",
            text(&refused.stderr)
        );
    }
    assert_eq!(app.message_count().await, 1);
    assert_eq!(app.state_of(live).await.0, "pending");
}

#[tokio::test]
async fn demo_settles_every_committed_login_and_reports_it() {
    let app = TestApp::new().await;
    let demo = output(
        sms_relay(&app)
            .args(["demo", "--logins", "200"])
            .env_remove("RUST_LOG"),
    );
    assert!(demo.status.success(), "{}", text(&demo.stderr));
    assert!(
        !text(&demo.stderr).contains("WARN"),
        "the demo's own output is not interleaved with warnings: {}",
        text(&demo.stderr)
    );
    let report = text(&demo.stdout);
    for section in [
        "rolled back (no SMS)",
        "refused: not E.164 (SR001)",
        "message state",
        "sim-local",
        "p99",
    ] {
        assert!(
            report.contains(section),
            "report lacks {section:?}:\n{report}"
        );
    }
    // Every committed message ended in a final state; rolled-back and refused logins left nothing.
    assert_eq!(app.owed().await, 0);
    // The logins the auth table says were committed, each with its own number.
    let committed: i64 = report
        .lines()
        .filter(|line| line.contains("| committed"))
        .filter_map(|line| line.split('|').nth(2)?.trim().parse::<i64>().ok())
        .sum();
    assert!(committed > 0, "no committed logins in:\n{report}");
    assert_eq!(
        committed,
        app.count("SELECT count(DISTINCT recipient) FROM sms_outbox")
            .await
    );
    assert!(
        app.states().await.get("cancelled").copied().unwrap_or(0) > 0,
        "resends superseded"
    );
    assert!(
        !report.contains("+8801"),
        "the report shows no phone numbers"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM sms_outbox WHERE NOT sms_fictional(recipient)")
            .await,
        0,
        "the demo's numbers can never reach a subscriber"
    );
}

#[tokio::test]
async fn bench_runs_and_reports_its_measures() {
    let app = TestApp::new().await;
    let bench = output(
        sms_relay(&app)
            .args(["bench", "--drain", "300", "--rate", "100", "--seconds", "1"])
            .env("RUST_LOG", "warn"),
    );
    assert!(bench.status.success(), "{}", text(&bench.stderr));
    let report = text(&bench.stdout);
    for measure in [
        "drain 300 messages",
        "commit -> provider call at 100/s, p50",
        "peak RSS",
    ] {
        assert!(
            report.contains(measure),
            "report lacks {measure:?}:\n{report}"
        );
    }
    assert_eq!(
        app.states().await.get("sent"),
        Some(&400),
        "every benchmark message was sent"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM sms_outbox WHERE NOT sms_fictional(recipient)")
            .await,
        0,
        "the benchmark's numbers can never reach a subscriber"
    );

    let again = output(sms_relay(&app).args(["bench", "--drain", "10"]));
    assert_eq!(
        again.status.code(),
        Some(1),
        "bench refuses a non-empty outbox"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_health_and_readiness_and_refuses_a_taken_address() {
    let app = TestApp::new().await;
    let scratch = Scratch::new();
    let config = scratch.path("relay.toml");
    std::fs::write(&config, "[relay]\npoll_interval_ms = 100\n").unwrap();
    let address = free_address();
    let relay = sms_relay(&app)
        .args(["run", "--config"])
        .arg(&config)
        .env("SMS_RELAY__WEBHOOKS__LISTEN", &address)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(scratch.path("run.log")).unwrap())
        .spawn()
        .unwrap();
    let get = async |path: &str| {
        reqwest::get(format!("http://{address}{path}"))
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    eventually(async || get("/healthz").await == 200).await;
    assert_eq!(get("/readyz").await, 200);

    // A second relay on the same address says why it cannot start.
    let second = output(
        sms_relay(&app)
            .args(["run", "--config"])
            .arg(&config)
            .env("SMS_RELAY__WEBHOOKS__LISTEN", &address),
    );
    assert!(!second.status.success());
    assert!(
        text(&second.stderr).contains("cannot listen on"),
        "{}",
        text(&second.stderr)
    );

    let status = stop(relay).await;
    assert!(status.success());
    assert_eq!(
        get("/healthz").await,
        0,
        "the server stopped with the relay"
    );
}

#[tokio::test]
async fn a_relay_whose_host_clock_is_a_minute_behind_stamps_attempts_on_the_database_clock() {
    let app = TestApp::new().await;
    let id = app.otp("+8801712345678", "482913").await;
    let out = output(sms_relay_with_clock(&app, "-60s").args(["run", "--until-idle"]));
    let log = text(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("this host's clock differs from the database's"),
        "the relay says its host clock is off: {log}"
    );
    assert_eq!(app.state_of(id).await.0, "sent");
    // On the host's clock the call would have started a minute before the message existed.
    let (in_order, attempts): (bool, i64) = sqlx::query_as(
        "SELECT bool_and(o.created_at <= a.started_at AND a.started_at <= a.finished_at \
                         AND a.finished_at <= now()), count(*) \
           FROM sms_attempts a JOIN sms_outbox o ON o.id = a.message_id",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(attempts, 1);
    assert!(
        in_order,
        "enqueue <= call start <= call end <= now, all on the database's clock"
    );
}
