//! The operators' listener, apart from the public webhooks: `GET /metrics` in the Prometheus
//! text format, with the queue, the relays, the budgets and the circuits read at each scrape, and
//! `GET /`, the operator page.

pub mod page;
pub mod settings;

use std::sync::Arc;

use axum::{
    Router,
    extract::{Request, State},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{Html, IntoResponse, Response},
    routing::get,
};
use metrics_exporter_prometheus::PrometheusHandle;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

pub use settings::AdminSettings;

use crate::{
    metrics,
    providers::{CircuitState, ProviderChain, cap::Measure},
    store::{self, Store},
};
use page::{CapUse, Page};

/// What the admin routes read.
pub struct Admin {
    store: Store,
    chain: Arc<ProviderChain>,
    handle: PrometheusHandle,
    token: Option<SecretString>,
}

impl Admin {
    /// The admin routes over `store` and `chain`, rendering through `handle`, asking for `token`
    /// if one is set.
    pub fn new(
        store: Store,
        chain: Arc<ProviderChain>,
        handle: PrometheusHandle,
        token: Option<SecretString>,
    ) -> Self {
        Self {
            store,
            chain,
            handle,
            token,
        }
    }

    /// `GET /metrics` and `GET /`, behind the token when one is set.
    pub fn router(self) -> Router {
        let admin = Arc::new(self);
        Router::new()
            .route("/", get(operator_page))
            .route("/metrics", get(scrape))
            .route_layer(middleware::from_fn_with_state(admin.clone(), authorize))
            .with_state(admin)
    }

    /// Each provider's daily caps against what every relay got accepted today.
    async fn cap_uses(&self) -> store::Result<Vec<CapUse>> {
        let names: Vec<String> = self.chain.names().into_iter().map(str::to_owned).collect();
        let today = self.store.accepted_today(&names).await?;
        Ok(self
            .chain
            .caps()
            .map(|(provider, cap)| {
                let of_provider = today.iter().filter(|t| t.provider == provider);
                let used = match cap.measure() {
                    Measure::Messages => of_provider.map(|t| t.messages).sum::<i64>(),
                    Measure::Spend(currency) => of_provider
                        .filter(|t| t.currency.as_deref() == Some(currency.as_str()))
                        .map(|t| t.cost_micros)
                        .sum(),
                };
                CapUse {
                    provider: provider.to_owned(),
                    measure: cap.measure().clone(),
                    used: u64::try_from(used).unwrap_or(0),
                    limit: cap.limit(),
                }
            })
            .collect())
    }

    /// Reads what the operator page shows.
    async fn page(&self) -> store::Result<Page> {
        Ok(Page {
            at: chrono::Utc::now(),
            status: self.store.status().await?,
            holds: self.store.holds().await?,
            circuits: self.store.circuits().await?,
            providers: self.store.providers_last_hour().await?,
            caps: self.cap_uses().await?,
            budgets: self.store.budget_gauges().await?,
            delivery: self.store.delivery_last_day().await?,
            unsent: self.store.latest_unsent().await?,
            runs: self.store.latest_runs().await?,
        })
    }

    /// Sets the gauges read from the database; the in-process metrics render regardless.
    async fn refresh(&self) {
        for (provider, snapshot) in self.chain.circuits() {
            metrics::circuit(&provider, snapshot.state.as_str(), &CircuitState::NAMES);
        }
        let read = async {
            let queue = self.store.queue_gauges().await?;
            metrics::queue(queue.waiting, queue.due, queue.oldest_due_age_s);
            let relays = self.store.relay_gauges().await?;
            metrics::relays(relays.in_flight, relays.relays);
            for d in self.store.delivery_gauges().await? {
                metrics::delivery_ratio(&d.provider, d.ratio);
            }
            for b in self.store.budget_gauges().await? {
                let labels = [
                    ("scope", b.scope),
                    ("subject", b.subject),
                    ("purpose", b.purpose),
                    ("per", b.per),
                ];
                if let Some(limit) = b.max_messages {
                    metrics::budget(labels.clone(), "messages", b.used_messages, limit);
                }
                if let (Some(limit), Some(currency)) = (b.max_cost, b.currency) {
                    metrics::budget(labels, &currency, b.used_cost, limit);
                }
            }
            // A provider's daily caps are its budget: scope `provider`, every purpose.
            for cap in self.cap_uses().await? {
                let labels = [
                    ("scope", "provider".to_owned()),
                    ("subject", cap.provider),
                    ("purpose", "*".to_owned()),
                    ("per", "day".to_owned()),
                ];
                match cap.measure {
                    Measure::Messages => {
                        metrics::budget(labels, "messages", cap.used as f64, cap.limit as f64);
                    }
                    Measure::Spend(currency) => metrics::budget(
                        labels,
                        &currency,
                        cap.used as f64 / 1e6,
                        cap.limit as f64 / 1e6,
                    ),
                }
            }
            Ok::<(), store::StoreError>(())
        };
        let up = match read.await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%error, "metrics: cannot read the queue");
                false
            }
        };
        metrics::database_up(up);
    }
}

/// Refuses a request without the bearer token, when one is set.
async fn authorize(State(admin): State<Arc<Admin>>, request: Request, next: Next) -> Response {
    if let Some(token) = &admin.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !bool::from(given.as_bytes().ct_eq(token.expose_secret().as_bytes())) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "a bearer token is required\n",
            )
                .into_response();
        }
    }
    next.run(request).await
}

async fn operator_page(State(admin): State<Arc<Admin>>) -> Response {
    match admin.page().await {
        Ok(page) => Html(page::render(&page).into_string()).into_response(),
        Err(error) => {
            tracing::warn!(%error, "operator page: cannot read the database");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot read the database: {error}\n"),
            )
                .into_response()
        }
    }
}

async fn scrape(State(admin): State<Arc<Admin>>) -> Response {
    admin.refresh().await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        admin.handle.render(),
    )
        .into_response()
}
