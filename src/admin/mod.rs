//! The operators' listener, apart from the public webhooks: `GET /metrics` in the Prometheus
//! text format, with the queue, the relays, the budgets and the circuits read at each scrape, and
//! `GET /`, the operator page.

pub mod page;
pub mod settings;

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

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
    seen: Mutex<Seen>,
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
            seen: Mutex::default(),
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

    /// Each provider's caps against what every relay got accepted in their windows.
    async fn cap_uses(&self) -> store::Result<Vec<CapUse>> {
        let names: Vec<String> = self.chain.names().into_iter().map(str::to_owned).collect();
        let today = self.store.accepted_today(&names).await?;
        Ok(self
            .chain
            .caps()
            .map(|(provider, cap)| {
                let used: i64 = today
                    .iter()
                    .filter(|t| t.provider == provider)
                    .map(|t| t.used(cap.measure(), cap.per()))
                    .sum();
                CapUse {
                    provider: provider.to_owned(),
                    measure: cap.measure().clone(),
                    per: cap.per(),
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

    /// Sets the gauges read from the database; the in-process metrics render regardless. A
    /// budget or provider seen at an earlier scrape and absent now reads as unused, or as no
    /// ratio, rather than keeping its last value.
    async fn refresh(&self) {
        for (provider, snapshot) in self.chain.circuits() {
            metrics::circuit(&provider, snapshot.state.as_str(), &CircuitState::NAMES);
        }
        let read = async {
            let queue = self.store.queue_gauges().await?;
            metrics::queue(queue.waiting, queue.due, queue.oldest_due_age_s);
            let relays = self.store.relay_gauges().await?;
            metrics::relays(relays.in_flight, relays.relays);
            let ratios = self.store.delivery_gauges().await?;
            let mut budgets: Vec<(metrics::BudgetLabels, f64, f64)> = Vec::new();
            for b in self.store.budget_gauges().await? {
                let labels = |unit: &str| {
                    [
                        ("budget", b.budget.to_string()),
                        ("scope", b.scope.clone()),
                        ("subject", b.subject.clone()),
                        ("purpose", b.purpose.clone()),
                        ("per", b.per.clone()),
                        ("unit", unit.to_owned()),
                    ]
                };
                if let Some(limit) = b.max_messages {
                    budgets.push((labels("messages"), b.used_messages, limit));
                }
                if let (Some(limit), Some(currency)) = (b.max_cost, &b.currency) {
                    budgets.push((labels(currency), b.used_cost, limit));
                }
            }
            // A provider's caps are its budget: scope `provider`, every purpose.
            for cap in self.cap_uses().await? {
                let (unit, scale) = match &cap.measure {
                    Measure::Messages => ("messages".to_owned(), 1.0),
                    Measure::Spend(currency) => (currency.clone(), 1e6),
                };
                let labels = [
                    ("budget", "provider".to_owned()),
                    ("scope", "provider".to_owned()),
                    ("subject", cap.provider),
                    ("purpose", "*".to_owned()),
                    ("per", cap.per.as_str().to_owned()),
                    ("unit", unit),
                ];
                budgets.push((labels, cap.used as f64 / scale, cap.limit as f64 / scale));
            }
            Ok::<_, store::StoreError>((ratios, budgets))
        };
        let up = match read.await {
            Ok((ratios, budgets)) => {
                let mut seen = lock(&self.seen);
                let providers: HashSet<String> =
                    ratios.iter().map(|d| d.provider.clone()).collect();
                for gone in seen.ratios.difference(&providers) {
                    metrics::delivery_ratio(gone, None);
                }
                for d in &ratios {
                    metrics::delivery_ratio(&d.provider, Some(d.ratio));
                }
                let labels: HashSet<metrics::BudgetLabels> =
                    budgets.iter().map(|(l, ..)| l.clone()).collect();
                for gone in seen.budgets.difference(&labels) {
                    metrics::budget_unused(gone);
                }
                for (labels, used, limit) in &budgets {
                    metrics::budget(labels, *used, *limit);
                }
                seen.ratios.extend(providers);
                seen.budgets.extend(labels);
                true
            }
            Err(error) => {
                tracing::warn!(%error, "metrics: cannot read the queue");
                false
            }
        };
        metrics::database_up(up);
    }
}

/// The label sets the database-read gauges have had, so that one absent now is reset.
#[derive(Default)]
struct Seen {
    ratios: HashSet<String>,
    budgets: HashSet<metrics::BudgetLabels>,
}

/// Locks `seen`, whatever a panicking holder left.
fn lock(seen: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
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
