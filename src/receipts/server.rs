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
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::sync::CancellationToken;

use super::{
    Receipt, ReceiptError, infobip,
    signature::{self, VonageMethod},
    twilio, vonage,
    watch::resend_rule,
};
use crate::{
    config::Config,
    providers::{Credential, ProviderKind},
    store::{ResendRule, Store, Via},
};

/// Credentials that webhooks of one provider kind may present, one per configured entry.
struct Accounts<T> {
    /// Names of the entries of this kind: receipts match attempts of these providers.
    names: Vec<String>,
    /// The entries' webhook credentials (entries without any are left out).
    keys: Vec<T>,
}

impl<T> Default for Accounts<T> {
    fn default() -> Self {
        Self {
            names: Vec::new(),
            keys: Vec::new(),
        }
    }
}

/// What the webhook handlers share.
pub struct Webhooks {
    store: Store,
    /// Receipt writes in progress at once: at most half the relay's pool, so a flood of
    /// receipts cannot starve claims and completions.
    writers: Semaphore,
    rule: ResendRule,
    public_base_url: Option<String>,
    max_body_bytes: usize,
    twilio: Accounts<Credential>,
    vonage: Accounts<(Credential, VonageMethod)>,
    infobip: Accounts<(String, Credential)>,
}

impl Webhooks {
    /// The endpoints for the providers in `config`, recording into `store`.
    pub fn new(config: &Config, store: Store) -> Self {
        let mut hooks = Self {
            store,
            writers: Semaphore::new((config.database.max_connections as usize / 2).max(1)),
            rule: resend_rule(config),
            public_base_url: config
                .webhooks
                .public_base_url
                .as_ref()
                .map(|u| u.trim_end_matches('/').to_owned()),
            max_body_bytes: config.webhooks.max_body_bytes,
            twilio: Accounts::default(),
            vonage: Accounts::default(),
            infobip: Accounts::default(),
        };
        for p in &config.providers {
            match &p.kind {
                ProviderKind::Twilio(s) => {
                    hooks.twilio.names.push(p.name.clone());
                    hooks.twilio.keys.push(s.auth_token.clone());
                }
                ProviderKind::Vonage(s) => {
                    hooks.vonage.names.push(p.name.clone());
                    hooks.vonage.keys.extend(
                        s.signature_secret
                            .clone()
                            .map(|secret| (secret, s.signature_method)),
                    );
                }
                ProviderKind::Infobip(s) => {
                    hooks.infobip.names.push(p.name.clone());
                    if let (Some(user), Some(password)) = (&s.receipt_username, &s.receipt_password)
                    {
                        hooks.infobip.keys.push((user.clone(), password.clone()));
                    }
                }
                _ => {}
            }
        }
        for (kind, names, keys) in [
            ("vonage", &hooks.vonage.names, hooks.vonage.keys.len()),
            ("infobip", &hooks.infobip.names, hooks.infobip.keys.len()),
        ] {
            if !names.is_empty() && keys == 0 {
                tracing::warn!(
                    kind,
                    "no webhook credentials configured: every {kind} receipt will be refused \
                    (set signature_secret for Vonage, receipt_username/receipt_password for Infobip)"
                );
            }
        }
        hooks
    }

    /// The routes: `POST /webhooks/twilio`, `GET|POST /webhooks/vonage`, `POST /webhooks/infobip`,
    /// `GET /healthz`, `GET /readyz`.
    pub fn router(self) -> Router {
        let limit = self.max_body_bytes;
        Router::new()
            .route("/webhooks/twilio", post(twilio_hook))
            .route("/webhooks/vonage", get(vonage_hook).post(vonage_hook))
            .route("/webhooks/infobip", post(infobip_hook))
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(ready))
            .layer(DefaultBodyLimit::max(limit))
            .with_state(Arc::new(self))
    }

    async fn record(&self, source: &str, names: &[String], receipts: &[Receipt]) -> Response {
        let Ok(Ok(_slot)) = tokio::time::timeout(WRITER_WAIT, self.writers.acquire()).await else {
            tracing::warn!(source, "too many receipts at once; the provider will retry");
            return refuse(StatusCode::SERVICE_UNAVAILABLE, "busy");
        };
        match self
            .store
            .record_receipts(source, Via::Webhook, names, receipts, self.rule)
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

fn malformed(source: &str, error: &ReceiptError) -> Response {
    // Debug formatting escapes whatever the sender put in a field name.
    tracing::info!(source, ?error, "malformed receipt refused");
    refuse(StatusCode::BAD_REQUEST, &error.to_string())
}

fn pairs(bytes: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(bytes).into_owned().collect()
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
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

async fn twilio_hook(
    State(hooks): State<Arc<Webhooks>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    ReceiptBody(body): ReceiptBody,
) -> Response {
    let Some(given) = header_text(&headers, "x-twilio-signature") else {
        return refuse(StatusCode::UNAUTHORIZED, "X-Twilio-Signature missing");
    };
    // Twilio signs the URL it called: our public URL, or else what the Host header says.
    let base = match (&hooks.public_base_url, header_text(&headers, "host")) {
        (Some(base), _) => base.clone(),
        (None, Some(host)) => format!("http://{host}"),
        (None, None) => return refuse(StatusCode::FORBIDDEN, "cannot tell the signed URL"),
    };
    let url = match query {
        Some(q) => format!("{base}/webhooks/twilio?{q}"),
        None => format!("{base}/webhooks/twilio"),
    };
    let params = pairs(&body);
    let signed = hooks
        .twilio
        .keys
        .iter()
        .any(|token| signature::twilio_valid(token.expose(), &url, &params, given));
    if !signed {
        tracing::warn!("Twilio receipt with a bad signature refused");
        return refuse(StatusCode::FORBIDDEN, "signature does not match");
    }
    match twilio::parse(&params) {
        Ok(receipt) => {
            hooks
                .record("twilio", &hooks.twilio.names, &[receipt])
                .await
        }
        Err(error) => malformed("twilio", &error),
    }
}

async fn vonage_hook(
    State(hooks): State<Arc<Webhooks>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    ReceiptBody(body): ReceiptBody,
) -> Response {
    let json = header_text(&headers, header::CONTENT_TYPE.as_str())
        .is_some_and(|t| t.starts_with("application/json"));
    let params = if json {
        match vonage::params_from_json(&body) {
            Ok(params) => params,
            Err(error) => return malformed("vonage", &error),
        }
    } else if body.is_empty() {
        pairs(query.unwrap_or_default().as_bytes())
    } else {
        pairs(&body)
    };
    if !params.iter().any(|(k, _)| k == "sig") {
        return refuse(StatusCode::UNAUTHORIZED, "sig missing");
    }
    let signed = hooks
        .vonage
        .keys
        .iter()
        .any(|(secret, method)| signature::vonage_valid(*method, secret.expose(), &params));
    if !signed {
        tracing::warn!("Vonage receipt with a bad signature refused");
        return refuse(StatusCode::FORBIDDEN, "signature does not match");
    }
    match vonage::parse(&params) {
        Ok(receipt) => {
            hooks
                .record("vonage", &hooks.vonage.names, &[receipt])
                .await
        }
        Err(error) => malformed("vonage", &error),
    }
}

/// Whether `authorization` is Basic auth with one of `accounts`' user and password. Both sides
/// are hashed before the constant-time comparison, so not even their lengths leak.
fn basic_auth_matches(authorization: &str, accounts: &[(String, Credential)]) -> bool {
    let Some((scheme, encoded)) = authorization.split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let given = Sha256::digest(&decoded);
    accounts.iter().any(|(user, password)| {
        let expected = Sha256::digest(format!("{user}:{}", password.expose()));
        bool::from(expected.ct_eq(&given))
    })
}

async fn infobip_hook(
    State(hooks): State<Arc<Webhooks>>,
    headers: HeaderMap,
    ReceiptBody(body): ReceiptBody,
) -> Response {
    let Some(authorization) = header_text(&headers, header::AUTHORIZATION.as_str()) else {
        return refuse(StatusCode::UNAUTHORIZED, "Authorization missing");
    };
    if !basic_auth_matches(authorization, &hooks.infobip.keys) {
        tracing::warn!("Infobip receipt with wrong credentials refused");
        return refuse(StatusCode::FORBIDDEN, "credentials do not match");
    }
    match infobip::parse(&body) {
        Ok(receipts) => {
            hooks
                .record("infobip", &hooks.infobip.names, &receipts)
                .await
        }
        Err(error) => malformed("infobip", &error),
    }
}
