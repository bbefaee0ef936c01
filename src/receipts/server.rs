//! The HTTP side of `sms-relay run`: receipt webhooks per provider kind, `/healthz` and `/readyz`.
//!
//! Every webhook is authenticated before anything is parsed or stored: Twilio by
//! `X-Twilio-Signature`, Vonage by its signed-webhook `sig`, Infobip by Basic auth. Answers:
//! 200 once the receipts are recorded (also for repeats and for messages we do not know, so the
//! provider stops retrying), 400 for a body that is too large or not the provider's format,
//! 401 without credentials, 403 with wrong ones, 503 when the database cannot take it (the
//! provider will retry).

use std::sync::Arc;

use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, FromRequest, RawQuery, Request, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{MethodRouter, get, post},
};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::sync::CancellationToken;

use super::settings::WebhookSettings;
use crate::{
    providers::{
        ProviderConfig, Receipt, WEBHOOKS,
        webhook::{Webhook, WebhookError, WebhookRequest},
    },
    store::{ResendRule, Store, Via},
};

/// What the webhook handlers share.
pub struct Webhooks {
    store: Store,
    /// Receipt writes in progress at once, so a flood of receipts cannot starve claims and
    /// completions of database connections.
    writers: Semaphore,
    rule: ResendRule,
    public_base_url: Option<String>,
    max_body_bytes: usize,
    /// The configured provider entries: each webhook checks credentials against those of its kind.
    providers: Vec<ProviderConfig>,
}

impl Webhooks {
    /// The endpoints for `providers`, recording into `store` with at most `writers` receipt
    /// writes at once and resending by `rule`.
    pub fn new(
        settings: &WebhookSettings,
        providers: &[ProviderConfig],
        rule: ResendRule,
        writers: usize,
        store: Store,
    ) -> Self {
        for hook in WEBHOOKS {
            let entries = providers.iter().filter(|p| p.kind.label() == hook.kind);
            let mut entries = entries.peekable();
            if entries.peek().is_some()
                && !entries.any(|p| (hook.has_credentials)(p.kind.settings()))
            {
                tracing::warn!(
                    kind = hook.kind,
                    "no webhook credentials configured: every {} receipt will be refused",
                    hook.kind
                );
            }
        }
        Self {
            store,
            writers: Semaphore::new(writers.max(1)),
            rule,
            public_base_url: settings
                .public_base_url
                .as_ref()
                .map(|u| u.trim_end_matches('/').to_owned()),
            max_body_bytes: settings.max_body_bytes,
            providers: providers.to_vec(),
        }
    }

    /// The routes: `/webhooks/<kind>` for every provider kind with a receipt webhook (POST, and
    /// GET where the provider may use it), `GET /healthz`, `GET /readyz`.
    pub fn router(self) -> Router {
        let limit = self.max_body_bytes;
        WEBHOOKS
            .iter()
            .fold(Router::new(), |router, hook| {
                router.route(&format!("/webhooks/{}", hook.kind), hook_route(hook))
            })
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(ready))
            .layer(DefaultBodyLimit::max(limit))
            .with_state(Arc::new(self))
    }

    /// Checks and parses one webhook request with `hook`, then records its receipts.
    async fn receive(
        &self,
        hook: &Webhook,
        query: Option<String>,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Response {
        // The URL the provider called, as it signs it: our public URL, or else what Host says.
        let host = headers.get("host").and_then(|v| v.to_str().ok());
        let base = match (&self.public_base_url, host) {
            (Some(base), _) => Some(base.clone()),
            (None, Some(host)) => Some(format!("http://{host}")),
            (None, None) => None,
        };
        let url = base.map(|base| match &query {
            Some(q) => format!("{base}/webhooks/{}?{q}", hook.kind),
            None => format!("{base}/webhooks/{}", hook.kind),
        });
        let request = WebhookRequest {
            url,
            query: query.as_deref(),
            headers,
            body,
        };
        let received = {
            let entries: Vec<_> = self.providers.iter().map(|p| p.kind.settings()).collect();
            (hook.receive)(&entries, &request)
        };
        match received {
            Ok(receipts) => self.record(hook.kind, &receipts).await,
            Err(WebhookError::Unauthenticated(why)) => refuse(StatusCode::UNAUTHORIZED, why),
            Err(WebhookError::Forbidden(why)) => {
                tracing::warn!(kind = hook.kind, why, "receipt webhook refused");
                refuse(StatusCode::FORBIDDEN, why)
            }
            Err(WebhookError::Malformed(error)) => {
                // Debug formatting escapes whatever the sender put in a field name.
                tracing::info!(source = hook.kind, ?error, "malformed receipt refused");
                refuse(StatusCode::BAD_REQUEST, &error.to_string())
            }
        }
    }

    async fn record(&self, source: &str, receipts: &[Receipt]) -> Response {
        let Ok(Ok(_slot)) = tokio::time::timeout(WRITER_WAIT, self.writers.acquire()).await else {
            tracing::warn!(source, "too many receipts at once; the provider will retry");
            return refuse(StatusCode::SERVICE_UNAVAILABLE, "busy");
        };
        let names: Vec<String> = self
            .providers
            .iter()
            .filter(|p| p.kind.label() == source)
            .map(|p| p.name.clone())
            .collect();
        match self
            .store
            .record_receipts(source, Via::Webhook, &names, receipts, self.rule)
            .await
        {
            Ok(totals) => {
                tracing::debug!(source, ?totals, "receipts recorded");
                StatusCode::OK.into_response()
            }
            Err(error) => {
                tracing::warn!(%error, source, "cannot record receipts; the provider will retry");
                refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "cannot record receipts now",
                )
            }
        }
    }
}

/// The route of one provider kind's webhook.
fn hook_route(hook: &'static Webhook) -> MethodRouter<Arc<Webhooks>> {
    let handler = move |State(hooks): State<Arc<Webhooks>>,
                        RawQuery(query): RawQuery,
                        headers: HeaderMap,
                        ReceiptBody(body): ReceiptBody| async move {
        hooks.receive(hook, query, &headers, &body).await
    };
    if hook.accepts_get {
        get(handler).post(handler)
    } else {
        post(handler)
    }
}

/// Longest a receipt waits for a database slot before it is answered 503.
const WRITER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves `router` on `listener` until `cancel` fires.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
}

fn refuse(status: StatusCode, why: &str) -> Response {
    (status, format!("{why}\n")).into_response()
}

/// A receipt body within `max_body_bytes`; a larger or unreadable one is answered 400.
struct ReceiptBody(Bytes);

impl<S: Send + Sync> FromRequest<S> for ReceiptBody {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        Bytes::from_request(request, state)
            .await
            .map(ReceiptBody)
            .map_err(|rejection| {
                tracing::info!(%rejection, "receipt body refused");
                refuse(StatusCode::BAD_REQUEST, &rejection.body_text())
            })
    }
}

async fn ready(State(hooks): State<Arc<Webhooks>>) -> Response {
    match hooks.store.ready().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(error) => {
            tracing::warn!(%error, "not ready");
            refuse(StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
        }
    }
}
