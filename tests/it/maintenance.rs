//! Scheduled maintenance: `maintain --now` prunes, scrubs and applies the retention; relays share
//! the schedule so each slot runs once; a failed run is recorded and the next slot runs.

use sms_relay::maintenance::{Maintenance, MaintenanceSettings};
use tokio_util::sync::CancellationToken;

use crate::support::{
    TestApp,
    cli::{output, sms_relay, text},
    eventually,
};

/// A plain INSERT of an OTP whose id says it was enqueued `age` ago; returns the id.
async fn enqueued_ago(app: &TestApp, recipient: &str, age: &str) -> uuid::Uuid {
    sqlx::query_scalar(
        "INSERT INTO sms_outbox (id, recipient, template, params) \
         VALUES (sms_uuid_v7_floor(now() - $2::interval), $1, 'otp', '{\"code\": \"482913\"}') \
         RETURNING id",
    )
    .bind(recipient)
    .bind(age)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

async fn count(app: &TestApp, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&app.pool).await.unwrap()
}

#[tokio::test]
async fn maintain_now_prunes_scrubs_and_applies_the_retention() {
    let app = TestApp::new().await;
    // A code that expired an hour ago, one still valid, a message past its 30 days.
    let expired = enqueued_ago(&app, "+8801711000001", "2 hours").await;
    sqlx::query(
        "UPDATE sms_outbox SET created_at = now() - interval '2 hours', \
                expires_at = now() - interval '1 hour' WHERE id = $1",
    )
    .bind(expired)
    .execute(&app.pool)
    .await
    .unwrap();
    let valid = app.otp("+8801711000002", "482913").await;
    enqueued_ago(&app, "+8801711000003", "40 days").await;
    // A provider call past its 400 days, and a recent one.
    sqlx::query(
        "INSERT INTO sms_attempts (message_id, attempt_number, chain_step, provider, template, relay_id, \
                                   started_at, finished_at, outcome, segments, encoding) \
         SELECT $1, n, 1, 'p', 'otp', 'r', now() - age, now() - age, 'provider_error', 1, 'gsm7' \
           FROM (VALUES (1, interval '500 days'), (2, interval '1 day')) AS v(n, age)",
    )
    .bind(valid)
    .execute(&app.pool)
    .await
    .unwrap();
    // A budget window that ended, one still running, and a relay gone for an hour.
    sqlx::query(
        "INSERT INTO sms_budget_usage (budget_id, purpose, subject, window_start, backend, used) \
         SELECT min(id), 'otp', '*', w, 1, 5 FROM sms_budgets, \
                (VALUES (now() - interval '2 days'), (date_bin('1 hour', now(), timestamptz '2000-01-01'))) AS v(w) \
          GROUP BY w",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    // Refusal counts from 500 days ago and from today.
    sqlx::query(
        "INSERT INTO sms_refusals (day, purpose, sqlstate, backend, refused) \
         VALUES (current_date - 500, 'otp', 'SR016', 1, 9), (current_date, 'otp', 'SR016', 1, 4)",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO sms_provider_circuits (relay_id, provider, state, consecutive_failures, \
                                            recent_calls, recent_failures, updated_at) \
         VALUES ('gone', 'p', 'closed', 0, 0, 0, now() - interval '1 hour')",
    )
    .execute(&app.pool)
    .await
    .unwrap();

    let run = output(sms_relay(&app).args(["maintain", "--now"]));
    assert!(run.status.success(), "{}", text(&run.stderr));
    let printed = text(&run.stdout);
    for job in ["prune:", "scrub:", "retention:", "rematch:"] {
        assert!(printed.contains(job), "{printed}");
    }

    let params = |id| {
        sqlx::query_scalar::<_, String>("SELECT params::text FROM sms_outbox WHERE id = $1")
            .bind(id)
            .fetch_one(&app.pool)
    };
    assert_eq!(params(expired).await.unwrap(), "{}");
    assert_eq!(params(valid).await.unwrap(), r#"{"code": "482913"}"#);
    assert_eq!(count(&app, "SELECT count(*) FROM sms_outbox").await, 2);
    assert_eq!(count(&app, "SELECT count(*) FROM sms_attempts").await, 1);
    // Refusal counts go with the provider calls' retention.
    assert_eq!(
        count(&app, "SELECT sum(refused)::int8 FROM sms_refusals").await,
        4
    );
    // The running window stays, besides the ones the enqueues above counted in.
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM sms_budget_usage WHERE window_start < now() - interval '1 day'"
        )
        .await,
        0
    );
    assert_eq!(
        count(&app, "SELECT count(*) FROM sms_budget_usage WHERE used = 5").await,
        1
    );
    assert_eq!(
        count(&app, "SELECT count(*) FROM sms_provider_circuits").await,
        0
    );
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM sms_maintenance_runs WHERE finished_at IS NOT NULL AND error IS NULL"
        )
        .await,
        4
    );
}

/// Settings that run only `prune`, every second.
fn prune_every_second() -> MaintenanceSettings {
    MaintenanceSettings {
        prune: "* * * * * *".into(),
        scrub: String::new(),
        retention: String::new(),
        ..MaintenanceSettings::default()
    }
}

#[tokio::test]
async fn two_relays_run_each_slot_once() {
    let app = TestApp::new().await;
    let settings = prune_every_second();
    let cancel = CancellationToken::new();
    let relays: Vec<_> = ["relay-a", "relay-b"]
        .into_iter()
        .map(|id| {
            let maintenance = Maintenance::new(&settings, id, app.store());
            tokio::spawn(maintenance.run_scheduled(cancel.clone()))
        })
        .collect();
    eventually(async || count(&app, "SELECT count(*) FROM sms_maintenance_runs").await >= 3).await;
    cancel.cancel();
    for relay in relays {
        relay.await.unwrap();
    }
    // Each scheduled second was run once, by one relay or the other, and on the second itself
    // (both relays name a slot by its scheduled time, not by when they woke).
    assert_eq!(
        count(
            &app,
            "SELECT count(*) - count(DISTINCT slot) FROM sms_maintenance_runs"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM sms_maintenance_runs \
              WHERE slot <> date_trunc('second', slot) OR job <> 'prune' OR error IS NOT NULL"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn a_failed_run_is_recorded_and_the_next_slot_runs() {
    let app = TestApp::new().await;
    sqlx::query("ALTER TABLE sms_budget_usage RENAME TO sms_budget_usage_away")
        .execute(&app.pool)
        .await
        .unwrap();
    let cancel = CancellationToken::new();
    let maintenance = Maintenance::new(&prune_every_second(), "relay-a", app.store());
    let scheduler = tokio::spawn(maintenance.run_scheduled(cancel.clone()));

    eventually(async || {
        count(
            &app,
            "SELECT count(*) FROM sms_maintenance_runs WHERE error IS NOT NULL",
        )
        .await
            > 0
    })
    .await;
    sqlx::query("ALTER TABLE sms_budget_usage_away RENAME TO sms_budget_usage")
        .execute(&app.pool)
        .await
        .unwrap();
    eventually(async || {
        count(
            &app,
            "SELECT count(*) FROM sms_maintenance_runs \
              WHERE error IS NULL AND finished_at IS NOT NULL \
                AND slot > (SELECT max(slot) FROM sms_maintenance_runs WHERE error IS NOT NULL)",
        )
        .await
            > 0
    })
    .await;
    cancel.cancel();
    scheduler.await.unwrap();
    let error: String = sqlx::query_scalar(
        "SELECT error FROM sms_maintenance_runs WHERE error IS NOT NULL ORDER BY slot LIMIT 1",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(error.contains("sms_budget_usage"), "{error}");
}

#[test]
fn schedules_are_six_field_cron_expressions() {
    let mut settings = MaintenanceSettings::default();
    assert_eq!(settings.validate(), Ok(()));
    settings.scrub = "*/5 * * * *".into();
    let error = settings.validate().unwrap_err();
    assert!(error.contains("maintenance.scrub"), "{error}");
    settings.scrub = String::new();
    assert_eq!(settings.validate(), Ok(()));
}

#[tokio::test]
async fn the_reports_give_the_same_figures_after_maintenance() {
    let app = TestApp::new().await;
    crate::support::reports::fixture(&app).await;
    let report = || output(sms_relay(&app).args(["report", "--since", "7d", "--format", "json"]));
    let before = report();
    assert!(before.status.success(), "{}", text(&before.stderr));

    let run = output(sms_relay(&app).args(["maintain", "--now"]));
    assert!(run.status.success(), "{}", text(&run.stderr));
    // The fixture's messages were enqueued a moment ago (their ids say so) and only dated back,
    // so the scrub leaves them for a later pass; what it will do to them is done here.
    let scrubbed = sqlx::query("UPDATE sms_outbox SET params = '{}' WHERE expires_at <= now()")
        .execute(&app.pool)
        .await
        .unwrap();
    assert!(scrubbed.rows_affected() > 0);

    let after = report();
    assert_eq!(text(&after.stdout), text(&before.stdout));
}
