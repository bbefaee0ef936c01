//! Connecting to PostgreSQL and applying the embedded migrations.

use std::time::Duration;

use sqlx::{
    PgPool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
};

/// The migrations under `migrations/`, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Opens a pool of at most `max_connections`.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    connect_with(url.parse()?, max_connections).await
}

/// Opens a pool for `sms-relay run`, whose statements are bounded: one stuck behind a lock or on a
/// sick server fails (and is retried, or its rows are put back) instead of holding claimed
/// messages until their lease runs out.
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
