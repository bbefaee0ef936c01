//! The HTTP side of `sms-relay run`: receipt webhooks per provider kind, `/healthz` and `/readyz`.
//!
//! Every webhook is authenticated before anything is parsed or stored: Twilio by
//! `X-Twilio-Signature`, Vonage by its signed-webhook `sig`, Infobip by Basic auth (checked, like
//! a missing Twilio signature, before the body is read). Answers: 200 once the receipts are
//! recorded (also for repeats and for messages we do not know, so the provider stops retrying),
//! 400 for a body that is too large or not the provider's format, 401 without credentials, 403
//! with wrong ones, 408 for a body that does not arrive in time, 503 when the database cannot take
//! it (the provider will retry).
//!
//! The listener itself bounds what a client can hold: connections at once, and the time to send
//! a request's headers.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    extract::{Request, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{MethodRouter, get, post},
};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Semaphore, task::JoinSet, time::Instant};
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
    body_timeout: Duration,
    /// The configured provider entries: each webhook checks credentials against those of its kind.
    providers: Vec<ProviderConfig>,
    refusals: RefusalLog,
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
            body_timeout: settings.body_timeout(),
            providers: providers.to_vec(),
            refusals: RefusalLog::default(),
        }
    }

    /// The routes: `/webhooks/<kind>` for every provider kind with a receipt webhook (POST, and
    /// GET where the provider may use it), `GET /healthz`, `GET /readyz`.
    pub fn router(self) -> Router {
        WEBHOOKS
            .iter()
            .fold(Router::new(), |router, hook| {
                router.route(&format!("/webhooks/{}", hook.kind), hook_route(hook))
            })
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(ready))
            .with_state(Arc::new(self))
    }

    /// Checks and parses one webhook request with `hook`, then records its receipts. What the
    /// headers alone can refuse is refused before the body is read.
    async fn receive(&self, hook: &Webhook, request: Request) -> Response {
        let (parts, body) = request.into_parts();
        let headers = &parts.headers;
        let authenticated = {
            let entries: Vec<_> = self.providers.iter().map(|p| p.kind.settings()).collect();
            (hook.authenticate)(&entries, headers)
        };
        if let Err(error) = authenticated {
            return self.refused(hook.kind, error);
        }
        let stated = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if stated.is_some_and(|length| length > self.max_body_bytes as u64) {
            return refuse(StatusCode::BAD_REQUEST, "body larger than the limit");
        }
        let read = axum::body::to_bytes(body, self.max_body_bytes);
        let body = match tokio::time::timeout(self.body_timeout, read).await {
            Ok(Ok(body)) => body,
            Ok(Err(error)) => {
                tracing::info!(source = hook.kind, %error, "receipt body refused");
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "body larger than the limit or cut off",
                );
            }
            Err(_) => {
                return refuse(
                    StatusCode::REQUEST_TIMEOUT,
                    "the body did not arrive in time",
                );
            }
        };
        let query = parts.uri.query();
        // The URL the provider called, as it signs it: our public URL, or else what Host says.
        let host = headers.get("host").and_then(|v| v.to_str().ok());
        let base = match (&self.public_base_url, host) {
            (Some(base), _) => Some(base.clone()),
            (None, Some(host)) => Some(format!("http://{host}")),
            (None, None) => None,
        };
        let url = base.map(|base| match query {
            Some(q) => format!("{base}/webhooks/{}?{q}", hook.kind),
            None => format!("{base}/webhooks/{}", hook.kind),
        });
        let request = WebhookRequest {
            url,
            query,
            headers,
            body: &body,
        };
        let received = {
            let entries: Vec<_> = self.providers.iter().map(|p| p.kind.settings()).collect();
            (hook.receive)(&entries, &request)
        };
        match received {
            Ok(receipts) => self.record(hook.kind, &receipts).await,
            Err(error) => self.refused(hook.kind, error),
        }
    }

    /// The answer to a refused request, logged at most every few seconds per flood.
    fn refused(&self, kind: &str, error: WebhookError) -> Response {
        let (status, why) = match &error {
            WebhookError::Unauthenticated(why) => (StatusCode::UNAUTHORIZED, why.to_string()),
            WebhookError::Forbidden(why) => (StatusCode::FORBIDDEN, why.to_string()),
            WebhookError::Malformed(error) => (StatusCode::BAD_REQUEST, error.to_string()),
        };
        if let Some(suppressed) = self.refusals.admit() {
            // Debug formatting escapes whatever the sender put in a field name.
            tracing::warn!(kind, %status, ?error, suppressed, "receipt webhook refused");
        }
        refuse(status, &why)
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
    let handler = move |State(hooks): State<Arc<Webhooks>>, request: Request| async move {
        hooks.receive(hook, request).await
    };
    if hook.accepts_get {
        get(handler).post(handler)
    } else {
        post(handler)
    }
}

/// Refused requests are logged at most once per this interval; the log line counts the others.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Rate-limits the refusal log, so a flood of forged receipts cannot flood the logs too.
#[derive(Default)]
struct RefusalLog {
    /// When a refusal was last logged, and how many were not logged since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl RefusalLog {
    /// `Some(refusals not logged since the last line)` if this one should be logged.
    fn admit(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (last, suppressed) = &mut *state;
        match last {
            Some(at) if at.elapsed() < REFUSAL_LOG_EVERY => {
                *suppressed += 1;
                None
            }
            _ => {
                *last = Some(Instant::now());
                Some(std::mem::take(suppressed))
            }
        }
    }
}

/// Longest a receipt waits for a database slot before it is answered 503.
const WRITER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// What one client may hold of the listener.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Longest a connection may take to send a request's headers; then it is closed.
    pub header_timeout: Duration,
}

impl From<&WebhookSettings> for ConnectionLimits {
    fn from(settings: &WebhookSettings) -> Self {
        Self {
            max_connections: settings.max_connections,
            header_timeout: settings.header_timeout(),
        }
    }
}

/// Serves `router` on `listener` until `cancel` fires, within `limits`; then stops accepting,
/// lets each open connection finish its request, and returns once they are closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let slot = tokio::select! {
            () = cancel.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, or a connection reset before it was taken.
                    tracing::warn!(%error, "cannot accept a webhook connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let service = TowerToHyperService::new(router.clone());
        let cancel = cancel.clone();
        connections.spawn(async move {
            let _slot = slot;
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            let served = tokio::select! {
                served = connection.as_mut() => served,
                () = cancel.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = served {
                tracing::debug!(%error, "webhook connection ended");
            }
        });
    }
    connections.join_all().await;
    Ok(())
}

fn refuse(status: StatusCode, why: &str) -> Response {
    (status, format!("{why}\n")).into_response()
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
