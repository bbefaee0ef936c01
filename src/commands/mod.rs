//! One module per subcommand; [`execute`] dispatches.

mod bench;
mod demo;
mod enqueue;
mod maintain;
mod messages;
mod output;
mod provider_check;
mod report;
mod run;
mod status;
mod templates;

use std::sync::Arc;

use sqlx::PgPool;

use crate::{
    cli::{Cli, Command, ProvidersCommand, TemplatesCommand},
    config::{Config, ConfigError},
    db,
    domain::RenderError,
    providers::{self, BuildError},
    relay::{Relay, RelayError},
    store::{EnqueueError, EventError, Store, StoreError},
    throwaway_pg::{Durability, ThrowawayPg, ThrowawayPgError},
};

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No database URL anywhere.
    #[error("no database: set DATABASE_URL, --database-url or [database] url")]
    NoDatabase,
    /// The schema is missing or older than this binary.
    #[error("the database schema is not up to date: run `sms-relay migrate` first")]
    NotMigrated,
    /// Connecting or querying failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A store call failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The relay could not run.
    #[error(transparent)]
    Relay(#[from] RelayError),
    /// The enqueue was refused or failed.
    #[error("enqueue: {0}")]
    Enqueue(#[from] EnqueueError),
    /// The throwaway PostgreSQL did not start.
    #[error(transparent)]
    ThrowawayPg(#[from] ThrowawayPgError),
    /// An operator tool failed.
    #[error(transparent)]
    Tool(#[from] provider_check::ToolError),
    /// A provider entry could not be built.
    #[error(transparent)]
    Provider(#[from] BuildError),
    /// A listener's address could not be bound.
    #[error("cannot listen on {address} ([{section}] listen): {source}")]
    Listen {
        /// The config section (`webhooks`, `admin`).
        section: &'static str,
        /// The configured address.
        address: String,
        /// Why (often: the port is taken).
        source: std::io::Error,
    },
    /// A load generator was pointed at a database that already holds messages.
    #[error(
        "{tool} needs a database without messages (its floods of codes to fictional numbers would \
         mix with real traffic and its figures): unset DATABASE_URL for a throwaway server, point \
         it at a scratch database{force}"
    )]
    NotEmpty {
        /// The command.
        tool: &'static str,
        /// How to insist, where the command allows it.
        force: &'static str,
    },
    /// `maintain` was given a job that does not exist.
    #[error("no maintenance job {0:?} (prune, scrub, retention, rematch)")]
    UnknownJob(String),
    /// No message has this id.
    #[error("no message {0}")]
    NoSuchMessage(uuid::Uuid),
    /// No template has this name and locale.
    #[error("no template {0:?} in locale {1:?}")]
    NoSuchTemplate(String, String),
    /// The params given for a preview do not render the template.
    #[error("cannot render the template: {0}")]
    Render(#[from] RenderError),
    /// An operator's retry or cancel did not happen.
    #[error(transparent)]
    Event(#[from] EventError),
    /// A maintenance job failed (its run is recorded with the error).
    #[error("maintenance job {job} failed: {error}")]
    MaintenanceFailed {
        /// The job.
        job: &'static str,
        /// What went wrong.
        error: String,
    },
    /// A file or signal handler could not be set up.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs the command the user asked for.
pub async fn execute(cli: Cli) -> Result<(), CommandError> {
    let config = Config::load(cli.config.as_deref())?;
    let url = cli.database_url.or_else(|| config.database.url.clone());
    match cli.command {
        Command::Migrate => {
            let pool = db::connect(&url.ok_or(CommandError::NoDatabase)?, 2).await?;
            db::migrate(&pool).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Run(args) => {
            run::run(
                &config,
                &url.ok_or(CommandError::NoDatabase)?,
                args.until_idle
                    .then(|| std::time::Duration::from_secs(args.max_wait)),
            )
            .await
        }
        Command::Enqueue(args) => {
            enqueue::enqueue(&url.ok_or(CommandError::NoDatabase)?, args).await
        }
        Command::Status => status::status(&url.ok_or(CommandError::NoDatabase)?).await,
        Command::Report(args) => report::report(&url.ok_or(CommandError::NoDatabase)?, args).await,
        Command::Providers(ProvidersCommand::Check) => provider_check::check(&config).await,
        Command::SendTest(args) => provider_check::send_test(&config, args).await,
        Command::Demo(args) => demo::demo(url, args).await,
        Command::Bench(args) => bench::bench(&config, url, args).await,
        Command::Maintain(args) => {
            maintain::maintain(&config, &url.ok_or(CommandError::NoDatabase)?, args).await
        }
        Command::Messages(command) => {
            messages::messages(&url.ok_or(CommandError::NoDatabase)?, command).await
        }
        Command::Segments(args) => templates::segments(&config, args),
        Command::Templates(TemplatesCommand::Preview(args)) => {
            templates::preview(&config, &url.ok_or(CommandError::NoDatabase)?, args).await
        }
    }
}

/// Connects and checks that every embedded migration has been applied.
async fn connect_migrated(url: &str, max_connections: u32) -> Result<PgPool, CommandError> {
    migrated(db::connect(url, max_connections).await?).await
}

/// `pool`, once its database has every migration.
async fn migrated(pool: PgPool) -> Result<PgPool, CommandError> {
    let latest = db::MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    // Any error (no history table, no access) reads as not migrated.
    let applied = Store::new(pool.clone())
        .applied_migration()
        .await
        .unwrap_or(None);
    if applied.unwrap_or(0) < latest {
        return Err(CommandError::NotMigrated);
    }
    Ok(pool)
}

/// A relay over `pool` built from `config`.
fn build_relay(config: &Config, pool: PgPool) -> Result<Relay, CommandError> {
    let chain = providers::from_config(
        &config.providers,
        config.webhooks.public_base_url.as_deref(),
        config.relay.on_unknown,
    )?;
    Ok(Relay::new(
        Store::new(pool),
        Arc::new(chain),
        config.relay.clone(),
        config.retry.clone(),
    ))
}

/// Refuses a database that already holds messages, unless `force`.
async fn require_empty(
    store: &Store,
    tool: &'static str,
    force: Option<bool>,
) -> Result<(), CommandError> {
    if force == Some(true) || store.is_empty().await? {
        return Ok(());
    }
    Err(CommandError::NotEmpty {
        tool,
        force: if force.is_some() {
            ", or pass --force"
        } else {
            ""
        },
    })
}

/// Whether a command's enqueues count against the budgets.
enum Budgets {
    /// They do, as the auth backend's.
    Apply,
    /// They do not: a load generator (needs a superuser).
    Lift,
}

/// Connects to `url`, or, without one, to a new throwaway PostgreSQL (kept alive by the returned
/// guard), with sessions that may enqueue the fictional numbers; then applies the migrations.
async fn database_or_throwaway(
    url: Option<String>,
    durability: Durability,
    max_connections: u32,
    budgets: Budgets,
) -> Result<(Option<ThrowawayPg>, PgPool), CommandError> {
    if url.is_none() {
        eprintln!(
            "DATABASE_URL is not set: starting a throwaway PostgreSQL from this machine's binaries"
        );
    }
    let (server, url) =
        tokio::task::spawn_blocking(move || ThrowawayPg::unless_given(url, durability))
            .await
            .map_err(std::io::Error::other)??;
    let lift = matches!(budgets, Budgets::Lift);
    let pool = db::connect_tool(&url, max_connections, lift).await?;
    db::migrate(&pool).await?;
    Ok((server, pool))
}
