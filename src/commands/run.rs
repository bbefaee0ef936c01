//! `sms-relay run`: the relay, plus the receipt webhooks and health endpoints, the no-receipt
//! sweeper and the report poller beside it.

use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{CommandError, build_relay, migrated};
use crate::{
    admin::Admin, config::Config, db, metrics, receipts::server, relay::StopWhen, shutdown,
    store::Store,
};

/// Serves until a signal, or (`until_idle`: the longest wait) until nothing is owed.
pub(super) async fn run(
    config: &Config,
    url: &str,
    until_idle: Option<Duration>,
) -> Result<(), CommandError> {
    let pool = migrated(db::connect_relay(url, config.database.max_connections).await?).await?;
    let store = Store::new(pool.clone());
    let relay = build_relay(config, pool)?;
    let cancel = CancellationToken::new();
    shutdown::cancel_on_signal(cancel.clone())?;
    // Stopped after the relay, so receipts keep coming in while in-flight sends finish.
    let beside = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    if !config.webhooks.listen.is_empty() {
        let listener = listen("webhooks", &config.webhooks.listen).await?;
        tracing::info!(address = %listener.local_addr()?, "serving receipt webhooks, /healthz and /readyz");
        let router = config.webhooks(store.clone()).router();
        let stop = beside.clone();
        let limits = (&config.webhooks).into();
        tasks.spawn(async move {
            if let Err(error) = server::serve(listener, router, limits, stop).await {
                tracing::error!(%error, "the webhook server stopped");
            }
        });
    }
    if !config.admin.listen.is_empty() {
        let handle = metrics::install().map_err(std::io::Error::other)?;
        tasks.spawn(metrics::upkeep(handle.clone(), beside.clone()));
        let listener = listen("admin", &config.admin.listen).await?;
        tracing::info!(address = %listener.local_addr()?, "serving /metrics");
        let admin = Admin::new(
            store.clone(),
            relay.chain(),
            handle,
            config.admin.token.clone(),
        );
        let stop = beside.clone();
        tasks.spawn(async move {
            let served = axum::serve(listener, admin.router())
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "the admin server stopped");
            }
        });
    }
    tasks.spawn(config.sweeper(store.clone()).run(beside.clone()));
    tasks.spawn(
        config
            .maintenance(store.clone())
            .run_scheduled(beside.clone()),
    );
    let poller = config.poller(&relay.chain(), store);
    if !poller.is_empty() {
        tasks.spawn(poller.run(beside.clone()));
    }
    let stop = until_idle.map_or(StopWhen::Cancelled, StopWhen::Drained);
    // On the runtime's workers rather than the main thread: the claim loop trades wake-ups with
    // the sends and the recorder hundreds of times a second, and each one that crosses to a
    // thread outside the runtime costs a futex wake-up of that thread.
    let result = match tokio::spawn(relay.run(stop, cancel)).await {
        Ok(result) => result,
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    };
    beside.cancel();
    tasks.join_all().await;
    result?;
    Ok(())
}

/// Binds `address`, the `listen` of section `section`.
async fn listen(section: &'static str, address: &str) -> Result<TcpListener, CommandError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| CommandError::Listen {
            section,
            address: address.to_owned(),
            source,
        })
}
