//! The relay's webhook endpoints in a test: a configuration that asks providers for receipts at
//! [`PUBLIC`], served on a free local port.

use sms_relay::{
    config::{Config, WebhookSettings},
    providers::ProviderConfig,
    receipts::server,
    store::Store,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::settings;

/// The public URL the providers are told to call (and Twilio signs).
pub const PUBLIC: &str = "https://relay.example.com";

/// The relay's configuration for `providers`, receipts at [`PUBLIC`], no resends.
pub fn config_for(providers: Vec<ProviderConfig>) -> Config {
    let mut config = Config {
        providers,
        webhooks: WebhookSettings {
            public_base_url: Some(PUBLIC.into()),
            ..WebhookSettings::default()
        },
        relay: settings(),
        ..Config::default()
    };
    config.receipts.max_resends = 0;
    config.receipts.poll_interval_ms = 100;
    config
}

/// Serves the webhook endpoints for `config` over `store` on a free local port; returns their
/// base URL.
pub async fn serve(config: &Config, store: Store) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = config.webhooks(store).router();
    tokio::spawn(server::serve(
        listener,
        router,
        (&config.webhooks).into(),
        CancellationToken::new(),
    ));
    base
}
