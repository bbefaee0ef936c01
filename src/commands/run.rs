//! `sms-relay run`

use tokio_util::sync::CancellationToken;

use super::{CommandError, build_relay, connect_migrated};
use crate::{config::Config, relay::StopWhen, shutdown};

/// Serves until a signal (or until idle).
pub(super) async fn run(config: &Config, url: &str, until_idle: bool) -> Result<(), CommandError> {
    let pool = connect_migrated(url, config.database.max_connections).await?;
    let relay = build_relay(config, pool)?;
    let cancel = CancellationToken::new();
    shutdown::cancel_on_signal(cancel.clone())?;
    let stop = if until_idle {
        StopWhen::Idle
    } else {
        StopWhen::Cancelled
    };
    relay.run(stop, cancel).await?;
    Ok(())
}
