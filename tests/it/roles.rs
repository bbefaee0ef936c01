//! `sql/roles.sql`: the auth backend may only enqueue, analysts read reports and attempts but no
//! phone numbers, and the relay runs with its own role.
//!
//! Roles are cluster-wide and these tests run side by side in several databases, so each applies
//! the file (twice: it must be idempotent) to its own database, where the privileges live, and
//! tolerates roles that another test created.

use std::{
    collections::HashMap,
    process::{Child, Command, Stdio},
    time::Duration,
};

use sms_relay::{
    providers::{Delivery, Receipt},
    relay::{Relay, StopWhen},
    store::{ResendRule, Store, Via},
};
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool, postgres::PgPoolOptions};
use tokio_util::sync::CancellationToken;

use crate::support::{
    TestApp, accepting, chain, quick_retries,
    reports::{fixture, report_files, reports_dir},
    settings, within,
};

const ROLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/sql/roles.sql");

/// `psql -f sql/roles.sql` on `app`, as an operator runs it.
fn psql_roles(app: &TestApp) -> Child {
    Command::new("psql")
        .arg(&app.url)
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", ROLES])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run psql")
}

#[track_caller]
fn assert_applied(child: Child) {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "psql -f sql/roles.sql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Applies sql/roles.sql to `app` twice: it must be idempotent.
fn apply_roles(app: &TestApp) {
    for _ in 0..2 {
        assert_applied(psql_roles(app));
    }
}

/// A connection to `app` acting as `role`.
async fn connect_as(app: &TestApp, role: &str) -> PgConnection {
    let mut conn = PgConnection::connect(&app.url).await.unwrap();
    set_role(&mut conn, role).await.unwrap();
    conn
}

async fn set_role(conn: &mut PgConnection, role: &str) -> sqlx::Result<()> {
    sqlx::raw_sql(AssertSqlSafe(format!("SET ROLE {role}")))
        .execute(conn)
        .await?;
    Ok(())
}

#[track_caller]
fn assert_denied(result: Result<impl std::fmt::Debug, sqlx::Error>, sql: &str) {
    let error = result.expect_err(sql);
    assert_eq!(
        error.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("42501"),
        "{sql}: {error}"
    );
}

/// A receipt recorded through the relay's own function (a write path).
const RECORD_RECEIPT: &str = "SELECT sms_record_receipt('twilio', 'webhook', ARRAY['p'], 'k', 'SM1', NULL, \
     'delivered', 'delivered', NULL, false, NULL, NULL, NULL, '{}', 1, interval '0')";

async fn denied(conn: &mut PgConnection, sql: &'static str) {
    assert_denied(sqlx::query(sql).execute(&mut *conn).await, sql);
}

#[tokio::test]
async fn analysts_read_reports_and_attempts_but_no_numbers() {
    let app = TestApp::new().await;
    fixture(&app).await;
    apply_roles(&app);
    let mut analyst = connect_as(&app, "sms_analyst").await;

    // Every report file, as `sms-relay report` runs it, plus the schema check it starts with.
    for name in report_files() {
        let sql = std::fs::read_to_string(reports_dir().join(format!("{name}.sql")))
            .unwrap()
            .replace(":'since'", "$1");
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind("7 days")
            .fetch_all(&mut analyst)
            .await
            .unwrap_or_else(|e| panic!("report {name} as sms_analyst: {e}"));
        assert!(!rows.is_empty(), "report {name} is empty");
    }
    let attempts: i64 = sqlx::query_scalar("SELECT count(*) FROM sms_attempts")
        .fetch_one(&mut analyst)
        .await
        .unwrap();
    assert_eq!(attempts, 15);
    let schema: Option<i64> =
        sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(&mut analyst)
            .await
            .unwrap();
    assert!(schema.is_some());

    for sql in [
        "SELECT recipient FROM sms_outbox",
        "SELECT count(*) FROM sms_outbox",
        "SELECT * FROM sms_receipts",
        "SELECT * FROM sms_recipient_budget",
        "SELECT sms_enqueue('+8801711111111', 'otp', '{\"code\": \"482913\"}')",
        "INSERT INTO sms_outbox (recipient, template, params) VALUES ('+8801711111111', 'otp', '{\"code\": \"482913\"}')",
        "UPDATE sms_attempts SET cost = 0",
        "DELETE FROM sms_attempts",
        "SELECT sms_resend(1, 'x', 1, interval '0')",
        "SELECT sms_apply_receipt(1, ARRAY['p'], 1, interval '0')",
        RECORD_RECEIPT,
    ] {
        denied(&mut analyst, sql).await;
    }
}

#[tokio::test]
async fn the_auth_backend_may_enqueue_and_nothing_else() {
    let app = TestApp::new().await;
    apply_roles(&app);
    // A relay sleeping, so the commit-time wake-up trigger has something to read and notify.
    sqlx::query("INSERT INTO sms_relay_sleepers (relay_id) VALUES ('sleeper')")
        .execute(&app.pool)
        .await
        .unwrap();
    let mut auth = connect_as(&app, "sms_auth").await;

    // Each statement commits on its own: the guard, supersede and (deferred) wake-up triggers run.
    let first: uuid::Uuid = sqlx::query_scalar(
        "SELECT sms_enqueue('+8801711111111', 'otp', '{\"code\": \"482913\"}', idempotency_key => 'k1')",
    )
    .fetch_one(&mut auth)
    .await
    .expect("sms_auth enqueues");
    let again: uuid::Uuid = sqlx::query_scalar(
        "SELECT sms_enqueue('+8801711111111', 'otp', '{\"code\": \"000000\"}', idempotency_key => 'k1')",
    )
    .fetch_one(&mut auth)
    .await
    .unwrap();
    assert_eq!(again, first, "the idempotency lookup works without SELECT");
    // The refusal-returning enqueue too: a bad number comes back as its SQLSTATE, counted.
    let refused: Option<String> = sqlx::query_scalar(
        "SELECT (sms_try_enqueue('0171', 'otp', '{\"code\": \"482913\"}')).refused",
    )
    .fetch_one(&mut auth)
    .await
    .expect("sms_auth calls sms_try_enqueue");
    assert_eq!(refused.as_deref(), Some("SR001"));
    sqlx::query(
        "INSERT INTO sms_outbox (recipient, template, params, priority) \
         VALUES ('+8801711111111', 'otp', '{\"code\": \"482914\"}', 1)",
    )
    .execute(&mut auth)
    .await
    .expect("sms_auth inserts");
    // The guard still refuses bad input with its own SQLSTATE, not a permission error.
    let refused = sqlx::query("SELECT sms_enqueue('01711111111', 'otp', '{\"code\": \"482913\"}')")
        .execute(&mut auth)
        .await
        .unwrap_err();
    assert_eq!(
        refused
            .as_database_error()
            .and_then(|e| e.code())
            .as_deref(),
        Some("SR001")
    );

    assert_eq!(
        app.states().await,
        HashMap::from([("cancelled".into(), 1), ("pending".into(), 1)]),
        "the INSERT superseded the enqueued message"
    );
    assert_eq!(app.state_of(first).await.0, "cancelled");

    for sql in [
        "SELECT id FROM sms_outbox",
        "SELECT 1 FROM sms_outbox LIMIT 0",
        "SELECT count(*) FROM sms_attempts",
        "SELECT * FROM sms_report_cost_daily",
        "SELECT * FROM sms_templates",
        "SELECT * FROM sms_recipient_budget",
        "INSERT INTO sms_outbox (recipient, template, params) VALUES ('+8801711111112', 'otp', '{\"code\": \"482913\"}') RETURNING id",
        "INSERT INTO sms_outbox (recipient, template, params, state) VALUES ('+8801711111112', 'otp', '{\"code\": \"482913\"}', 'sent')",
        "UPDATE sms_outbox SET priority = 0",
        "DELETE FROM sms_outbox",
        "SELECT sms_resend(1, 'x', 1, interval '0')",
        "SELECT sms_apply_receipt(1, ARRAY['p'], 1, interval '0')",
        RECORD_RECEIPT,
    ] {
        denied(&mut auth, sql).await;
    }
}

/// A pool whose every connection (the relay's LISTEN connection included) acts as `role`, with
/// the budgets applying as they do to a relay that is no superuser.
async fn pool_as(app: &TestApp, role: &'static str) -> PgPool {
    PgPoolOptions::new()
        .max_connections(5)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                set_role(conn, role).await?;
                sqlx::query("SET sms.lift_budgets = off")
                    .execute(conn)
                    .await?;
                Ok(())
            })
        })
        .connect(&app.url)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_relay_runs_as_its_own_role() {
    let app = TestApp::new().await;
    apply_roles(&app);
    let ids = app.otps(3).await;
    let pool = pool_as(&app, "sms_relay_worker").await;

    let sim = accepting("sim");
    let relay = Relay::new(
        Store::new(pool.clone()),
        chain([sim.clone()]),
        settings(),
        quick_retries(),
    );
    within(60, relay.run(StopWhen::Idle, CancellationToken::new()))
        .await
        .expect("the relay runs as sms_relay_worker");
    assert_eq!(sim.sent(), 3);
    for &id in &ids {
        assert_eq!(app.state_of(id).await.0, "sent");
    }
    let status = Store::new(pool.clone())
        .status()
        .await
        .expect("status as sms_relay_worker");
    assert_eq!(status.count("sent"), 3);
    // What /metrics and the operator page read, as the relay's role.
    let store = Store::new(pool.clone());
    store.queue_gauges().await.expect("queue gauges");
    store.relay_gauges().await.expect("relay gauges");
    store.budget_gauges().await.expect("budget gauges");
    store.delivery_gauges().await.expect("delivery gauges");
    store.holds().await.expect("holds");
    store.providers_last_hour().await.expect("providers");
    store.delivery_last_day().await.expect("delivery");
    store.latest_unsent().await.expect("latest unsent");
    store.latest_runs().await.expect("maintenance runs");
    store.circuits().await.expect("circuits");
    let located: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sms_attempts WHERE country = 'BD' AND operator = 'Grameenphone'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(located, 3, "attempt rows carry country and operator");

    // Receipts: one says undelivered, which records it, updates the attempt and queues a resend.
    let (attempt, provider_message_id): (i64, String) =
        sqlx::query_as("SELECT id, provider_message_id FROM sms_attempts WHERE message_id = $1")
            .bind(ids[0])
            .fetch_one(&pool)
            .await
            .unwrap();
    let receipt = Receipt {
        provider_message_id: provider_message_id.clone(),
        client_ref: None,
        status_raw: "undelivered".into(),
        status: Delivery::Undelivered,
        error_code: Some("30003".into()),
        permanent: false,
        done_at: None,
        cost: None,
        dedupe_key: format!("roles-test:{provider_message_id}"),
        payload: serde_json::json!({}),
    };
    let rule = ResendRule {
        max_resends: 1,
        expiry_margin: Duration::ZERO,
    };
    let store = Store::new(pool.clone());
    let recorded = store
        .record_receipts("simulator", Via::Webhook, &["sim".into()], &[receipt], rule)
        .await
        .expect("record receipts as sms_relay_worker");
    assert_eq!((recorded.applied, recorded.resent), (1, 1));
    assert_eq!(app.state_of(ids[0]).await.0, "pending");
    store
        .expire_receipts(&["sim".into()], Duration::ZERO, 100)
        .await
        .expect("the no-receipt window as sms_relay_worker");
    store
        .due_for_report(
            "sim",
            Duration::ZERO,
            Duration::ZERO,
            Duration::from_secs(3600),
            10,
        )
        .await
        .expect("report polling as sms_relay_worker");
    let status: Option<String> =
        sqlx::query_scalar("SELECT delivery_status::text FROM sms_attempts WHERE id = $1")
            .bind(attempt)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(status.as_deref(), Some("undelivered"));

    let mut worker = pool.acquire().await.unwrap();
    for sql in [
        "SELECT sms_enqueue('+8801711111111', 'otp', '{\"code\": \"482913\"}')",
        "INSERT INTO sms_outbox (recipient, template, params) VALUES ('+8801711111111', 'otp', '{\"code\": \"482913\"}')",
        "SELECT * FROM sms_recipient_budget",
        "UPDATE sms_templates SET body = 'x'",
        "DELETE FROM sms_attempts",
    ] {
        denied(&mut worker, sql).await;
    }
}

#[tokio::test]
async fn operators_see_the_queue_but_no_number_or_code() {
    let app = TestApp::new().await;
    apply_roles(&app);
    let ids = app.otps(3).await;
    let one = ids[0].to_string();
    let login = format!("oncall_{}", uuid::Uuid::new_v4().simple());
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE ROLE {login} LOGIN IN ROLE sms_operator"
    )))
    .execute(&app.pool)
    .await
    .unwrap();
    let mut url = reqwest::Url::parse(&app.url).unwrap();
    url.set_username(&login).unwrap();
    let url = url.to_string();

    for args in [
        vec!["status"],
        vec!["report", "--since", "1d"],
        vec!["maintain", "--now"],
        vec!["messages", "list"],
        vec!["messages", "show", &one],
        vec!["templates", "preview", "otp"],
        vec!["messages", "cancel", &one, "--reason", "on-call test"],
    ] {
        let run = crate::support::cli::output(crate::support::cli::sms_relay_at(&url).args(&args));
        assert!(
            run.status.success(),
            "{args:?} as an operator: {}",
            crate::support::cli::text(&run.stderr)
        );
    }
    let mut operator = PgConnection::connect(&url).await.unwrap();
    for sql in [
        "SELECT params FROM sms_outbox",
        "SELECT recipient FROM sms_outbox",
        "SELECT * FROM sms_outbox",
        "SELECT * FROM sms_receipts",
        "SELECT * FROM sms_recipient_budget",
        "UPDATE sms_outbox SET state = 'cancelled'",
        "DELETE FROM sms_attempts",
    ] {
        denied(&mut operator, sql).await;
    }
    operator.close().await.unwrap();
    sqlx::raw_sql(AssertSqlSafe(format!("DROP ROLE {login}")))
        .execute(&app.pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn concurrent_runs_in_several_databases_succeed() {
    // On a fresh server the roles do not exist yet, and these runs race to create them.
    let dbs = [
        TestApp::new().await,
        TestApp::new().await,
        TestApp::new().await,
    ];
    let runs: Vec<Child> = dbs.iter().map(psql_roles).collect();
    for run in runs {
        assert_applied(run);
    }
    let roles: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_roles \
          WHERE rolname IN ('sms_auth', 'sms_relay_worker', 'sms_analyst') AND NOT rolcanlogin",
    )
    .fetch_one(&dbs[0].pool)
    .await
    .unwrap();
    assert_eq!(roles, 3);
}
