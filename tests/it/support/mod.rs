//! Test support: a PostgreSQL server for the run, a fresh database per test, relay builders.
//!
//! Without `DATABASE_URL` the first test starts a throwaway server (see `sms_relay::throwaway_pg`)
//! that goes away with the test process. With `DATABASE_URL` (a superuser URL) the tests create
//! their databases there and drop them when they pass.

pub mod cli;

use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
    process::Command,
    sync::{Arc, OnceLock},
    time::Duration,
};

use serde_json::json;
use sms_relay::{
    config::RelaySettings,
    db,
    providers::{AttemptRecord, Link, Provider, ProviderChain, Simulator, SimulatorSettings},
    relay::{Relay, RetryPolicy, RunReport, StopWhen},
    store::{ClaimedMessage, Disposition, EnqueueRequest, Finish, Store, enqueue},
    throwaway_pg::{Durability, ThrowawayPg},
};
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool};
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

struct Server {
    admin_url: String,
    _throwaway: Option<ThrowawayPg>,
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| match std::env::var("DATABASE_URL") {
        Ok(url) => Server {
            admin_url: url,
            _throwaway: None,
        },
        Err(_) => {
            let pg = ThrowawayPg::start(Durability::Fast).expect("start a throwaway PostgreSQL");
            Server {
                admin_url: pg.url("postgres"),
                _throwaway: Some(pg),
            }
        }
    })
}

/// A superuser URL for the server's maintenance database, for what a test cannot do from its own
/// database (such as altering it).
pub fn admin_url() -> &'static str {
    &server().admin_url
}

fn url_for(admin_url: &str, db: &str) -> String {
    let (base, _) = admin_url
        .rsplit_once('/')
        .expect("DATABASE_URL has a database path");
    format!("{base}/{db}")
}

/// A migrated database to clone tests from, named after the migrations' checksums.
async fn template() -> &'static str {
    static TEMPLATE: OnceCell<String> = OnceCell::const_new();
    TEMPLATE
        .get_or_init(|| async {
            let mut hasher = DefaultHasher::new();
            for m in db::MIGRATOR.iter() {
                m.checksum.hash(&mut hasher);
            }
            let name = format!("sms_relay_tpl_{:016x}", hasher.finish());
            let admin_url = &server().admin_url;
            let mut admin = PgConnection::connect(admin_url)
                .await
                .expect("connect as admin");
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                    .bind(&name)
                    .fetch_one(&mut admin)
                    .await
                    .unwrap();
            if !exists {
                let scratch = format!("sms_relay_tmp_{}", Uuid::new_v4().simple());
                sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {scratch}")))
                    .execute(&mut admin)
                    .await
                    .unwrap();
                let pool = db::connect(&url_for(admin_url, &scratch), 1).await.unwrap();
                db::migrate(&pool)
                    .await
                    .expect("migrations apply to an empty database");
                pool.close().await;
                // Another test process may have won the race; then ours is dropped.
                if sqlx::query(AssertSqlSafe(format!(
                    "ALTER DATABASE {scratch} RENAME TO {name}"
                )))
                .execute(&mut admin)
                .await
                .is_err()
                {
                    sqlx::query(AssertSqlSafe(format!("DROP DATABASE {scratch}")))
                        .execute(&mut admin)
                        .await
                        .unwrap();
                }
            }
            admin.close().await.unwrap();
            name
        })
        .await
}

/// A fresh, migrated database for one test.
pub struct TestDb {
    pub pool: PgPool,
    pub url: String,
    /// The database this suite created on the shared server (dropped when the test passes);
    /// `None` for one [`TestDb::attach`]ed.
    name: Option<String>,
}

impl TestDb {
    pub async fn new() -> Self {
        let template = template().await;
        let name = format!("sms_relay_test_{}", Uuid::new_v4().simple());
        let admin_url = &server().admin_url;
        let mut admin = PgConnection::connect(admin_url).await.unwrap();
        sqlx::query(AssertSqlSafe(format!(
            "CREATE DATABASE {name} TEMPLATE {template}"
        )))
        .execute(&mut admin)
        .await
        .unwrap();
        admin.close().await.unwrap();
        let url = url_for(admin_url, &name);
        let pool = db::connect(&url, 10).await.unwrap();
        Self {
            pool,
            url,
            name: Some(name),
        }
    }

    /// A migrated database this suite did not create (e.g. on a server of the test's own), used
    /// as it is and never dropped.
    pub async fn attach(url: &str) -> Self {
        let pool = db::connect(url, 10).await.unwrap();
        Self {
            pool,
            url: url.to_owned(),
            name: None,
        }
    }

    pub fn store(&self) -> Store {
        Store::new(self.pool.clone())
    }

    /// A connection that stands for a live relay named `relay_id`, as its LISTEN connection does.
    pub async fn presence(&self, relay_id: &str) -> PgConnection {
        let options: sqlx::postgres::PgConnectOptions = self.url.parse().unwrap();
        PgConnection::connect_with(
            &options.application_name(&sms_relay::store::presence_name(relay_id)),
        )
        .await
        .unwrap()
    }

    /// Enqueues an English OTP for `recipient` with `code`.
    pub async fn otp(&self, recipient: &str, code: &str) -> Uuid {
        enqueue(&self.pool, &otp_request(recipient, code))
            .await
            .expect("enqueue")
    }

    /// Enqueues `n` OTPs to distinct numbers in one transaction each, returning their ids.
    pub async fn otps(&self, n: usize) -> Vec<Uuid> {
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT sms_enqueue('+88017' || lpad(i::text, 8, '0'), 'otp', jsonb_build_object('code', lpad(i::text, 6, '0'))) \
               FROM generate_series(1, $1) AS i",
        )
        .bind(n as i32)
        .fetch_all(&self.pool)
        .await
        .unwrap();
        ids
    }

    /// Messages per state.
    pub async fn states(&self) -> HashMap<String, i64> {
        sqlx::query_as::<_, (String, i64)>(
            "SELECT state::text, count(*) FROM sms_outbox GROUP BY 1",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
    }

    pub async fn state_of(&self, id: Uuid) -> (String, Option<String>) {
        sqlx::query_as("SELECT state::text, last_error FROM sms_outbox WHERE id = $1")
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// (provider, chain_step, outcome) of every attempt for `id`, in order.
    pub async fn attempts_of(&self, id: Uuid) -> Vec<(String, i32, i32, String)> {
        sqlx::query_as(
            "SELECT provider, attempt_number, chain_step, outcome::text FROM sms_attempts \
              WHERE message_id = $1 ORDER BY attempt_number, chain_step",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }

    /// Enqueues an English OTP for `recipient` that expires in `secs` seconds.
    pub async fn otp_expiring_in(&self, recipient: &str, secs: i64) -> Uuid {
        let request = EnqueueRequest {
            expires_at: Some(chrono::Utc::now() + chrono::TimeDelta::seconds(secs)),
            ..otp_request(recipient, "1")
        };
        enqueue(&self.pool, &request).await.expect("enqueue")
    }

    /// Runs `sql` with `$1` bound to `recipient`.
    pub async fn exec_for(&self, sql: &'static str, recipient: &str) {
        sqlx::query(sql)
            .bind(recipient)
            .execute(&self.pool)
            .await
            .unwrap();
    }

    pub async fn count(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = &self.name else {
            return;
        };
        if std::thread::panicking() {
            eprintln!("kept database {name} for inspection");
            return;
        }
        let _ = Command::new("psql")
            .arg(&server().admin_url)
            .args(["-q", "-c"])
            .arg(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .status();
    }
}

pub fn otp_request(recipient: &str, code: &str) -> EnqueueRequest {
    EnqueueRequest {
        recipient: recipient.into(),
        template: "otp".into(),
        params: json!({ "code": code }),
        ..EnqueueRequest::default()
    }
}

/// A round of `id` in which every provider failed ("provider down"), asking for a retry.
pub fn failed_round(id: Uuid, round: i32) -> Finish {
    Finish {
        id,
        round,
        disposition: Disposition::Retry,
        delay_ms: 10,
        reason: Some("provider down".into()),
        template: "otp".into(),
        segments: None,
        attempts: Vec::new(),
        resend_reason: None,
        country: "BD".into(),
        operator: "Grameenphone",
    }
}

/// A round of the claimed message `m` that a provider accepted, with its provider calls.
pub fn sent_round(m: &ClaimedMessage, attempts: Vec<AttemptRecord>) -> Finish {
    Finish {
        id: m.id,
        round: m.round,
        disposition: Disposition::Sent,
        delay_ms: 0,
        reason: None,
        template: "otp".into(),
        segments: Some(sms_relay::domain::segments::count("x")),
        attempts,
        resend_reason: None,
        country: "BD".into(),
        operator: "Grameenphone",
    }
}

/// Relay settings for tests: quick polls and short leases, no expiry margin.
pub fn settings() -> RelaySettings {
    RelaySettings {
        relay_id: Some(format!("test-{}", Uuid::new_v4().simple())),
        poll_interval_ms: 50,
        lease_ms: 10_000,
        expiry_margin_ms: 0,
        shutdown_grace_ms: 5_000,
        ..RelaySettings::default()
    }
}

/// A quick retry schedule: 20 ms, 40 ms, … capped at 100 ms.
pub fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        base_ms: 20,
        cap_ms: 100,
        ..RetryPolicy::default()
    }
}

pub fn simulator(name: &str, settings: SimulatorSettings) -> Arc<Simulator> {
    Arc::new(Simulator::new(name, settings).unwrap())
}

pub fn accepting(name: &str) -> Arc<Simulator> {
    simulator(name, SimulatorSettings::default())
}

pub fn failing(name: &str) -> Arc<Simulator> {
    simulator(
        name,
        SimulatorSettings {
            provider_error: 1.0,
            ..SimulatorSettings::default()
        },
    )
}

pub fn chain(providers: impl AsRef<[Arc<Simulator>]>) -> Arc<ProviderChain> {
    Arc::new(ProviderChain::new(
        providers
            .as_ref()
            .iter()
            .map(|p| Link::new(p.clone() as Arc<dyn Provider>))
            .collect(),
    ))
}

/// The `[[providers]]` entry for an adapter pointed at `fake` (see
/// [`crate::fakes::FakeProvider::provider_entry`]), with `extra` keys on top.
pub fn provider_config(
    fake: &crate::fakes::FakeProvider,
    name: &str,
    extra: serde_json::Value,
) -> sms_relay::providers::ProviderConfig {
    let mut entry = fake.provider_entry(name);
    if let serde_json::Value::Object(extra) = extra {
        for (key, value) in extra {
            entry[key] = value;
        }
    }
    serde_json::from_value(entry).expect("a valid provider entry")
}

/// The chain `sms-relay run` would build from `configs`, asking for receipts at
/// `https://relay.example.com`.
pub fn http_chain(configs: &[sms_relay::providers::ProviderConfig]) -> Arc<ProviderChain> {
    Arc::new(
        sms_relay::providers::from_config(
            configs,
            Some("https://relay.example.com"),
            sms_relay::providers::UnknownPolicy::FallOver,
        )
        .expect("the chain builds"),
    )
}

/// Runs one relay with `chain` over `db` until nothing is due or in flight.
pub async fn run_chain_until_idle(
    db: &TestDb,
    chain: Arc<ProviderChain>,
    policy: RetryPolicy,
) -> RunReport {
    let relay = Relay::new(db.store(), chain, settings(), policy);
    within(60, relay.run(StopWhen::Idle, CancellationToken::new()))
        .await
        .expect("relay runs")
}

/// Runs one relay over `db` through `chain` until nothing is owed (no message pending or claimed,
/// retries included).
pub async fn run_chain_until_drained(
    db: &TestDb,
    chain: Arc<ProviderChain>,
    policy: RetryPolicy,
) -> RunReport {
    run_relay_until_drained(Relay::new(db.store(), chain, settings(), policy)).await
}

/// Runs `relay` until nothing is owed, failing the test if something still is after 30 s.
pub async fn run_relay_until_drained(relay: Relay) -> RunReport {
    within(
        60,
        relay.run(
            StopWhen::Drained(Duration::from_secs(30)),
            CancellationToken::new(),
        ),
    )
    .await
    .expect("nothing is left owed")
}

/// Runs one relay over `db` with `providers` until nothing is due or in flight.
pub async fn run_until_idle(
    db: &TestDb,
    providers: impl AsRef<[Arc<Simulator>]>,
    policy: RetryPolicy,
) -> RunReport {
    run_chain_until_idle(db, chain(providers), policy).await
}

/// Runs a relay with one accepting simulator named `sim` until nothing is due; returns the
/// simulator, which counts what it sent.
pub async fn send_due(db: &TestDb) -> Arc<Simulator> {
    let sim = accepting("sim");
    run_until_idle(db, [sim.clone()], quick_retries()).await;
    sim
}

/// Awaits `fut`, failing the test if it takes more than `secs` (a hang guard, not a speed test).
pub async fn within<T>(secs: u64, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .expect("did not finish in time")
}

/// Polls `check` every 20 ms until it is true (hang guard: 60 s).
pub async fn eventually<F: AsyncFnMut() -> bool>(mut check: F) {
    within(60, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}
