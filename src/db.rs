//! Connecting to PostgreSQL and applying the embedded migrations.

use std::time::Duration;

use serde::Deserialize;

use sqlx::{
    PgPool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
};

/// `[database]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// PostgreSQL URL; `DATABASE_URL` overrides it.
    pub url: Option<String>,
    /// Pool size, including the connection held for LISTEN (at least 2).
    pub max_connections: u32,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: None,
            max_connections: 8,
        }
    }
}

impl DatabaseSettings {
    /// Checks the pool size.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_connections < 2 {
            return Err(
                "database.max_connections must be at least 2 (one is held for LISTEN)".into(),
            );
        }
        Ok(())
    }
}

/// The migrations under `migrations/`, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Opens a pool of at most `max_connections`.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    connect_with(url.parse()?, max_connections).await
}

/// Opens a pool whose sessions lift the enqueue budgets (`sms.lift_budgets`, honoured for
/// superusers only): for load generators that enqueue floods on purpose.
pub async fn connect_lifting_budgets(
    url: &str,
    max_connections: u32,
) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    connect_with(
        options.options([("sms.lift_budgets", "on")]),
        max_connections,
    )
    .await
}

/// Opens a pool for `demo` and `bench`: its sessions may enqueue fictional numbers
/// (`sms.fictional`), which the relay hands to the simulator only; with `lift_budgets`, they lift
/// the enqueue budgets too (honoured for superusers only), for a load generator's floods.
pub async fn connect_tool(
    url: &str,
    max_connections: u32,
    lift_budgets: bool,
) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    let options = options.options([("sms.fictional", "on")]);
    let options = if lift_budgets {
        options.options([("sms.lift_budgets", "on")])
    } else {
        options
    };
    connect_with(options, max_connections).await
}

/// Opens a pool for `sms-relay run`, whose statements are bounded: one stuck behind a lock or on a
/// sick server fails and is retried (a claim that failed gives its holds back) instead of keeping
/// the relay waiting with messages held.
pub async fn connect_relay(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    let bounded = options.options([("statement_timeout", "30s"), ("lock_timeout", "5s")]);
    connect_with(bounded, max_connections).await
}

async fn connect_with(
    options: PgConnectOptions,
    max_connections: u32,
) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
}

/// Applies any migrations the database does not have yet (safe to run from several relays).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}
