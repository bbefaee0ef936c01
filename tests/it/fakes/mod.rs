//! Fake SMS provider servers for the adapter tests.
//!
//! Each fake speaks one provider's wire format as the provider documents it, checks the
//! credentials on every request the way the real API does, and lets the last two digits of the
//! destination number pick a [`Scenario`]. The plumbing every fake shares lives here; each provider
//! file holds only its routes, request parsing, credential check and answer bodies.

mod alpha_sms;
mod bulksmsbd;
mod infobip;
mod ssl_wireless;
mod twilio;
mod vonage;

use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Form, Router,
    body::Body,
    extract::rejection::FormRejection,
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use chrono::{DateTime, Utc};
use rand::RngExt as _;
use serde_json::Value;
use sms_relay::domain::segments;
use tokio::{net::TcpListener, task::JoinHandle};
use uuid::Uuid;

/// The provider a fake imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Twilio Programmable Messaging.
    Twilio,
    /// Vonage (Nexmo) SMS API.
    Vonage,
    /// Infobip SMS v3.
    Infobip,
    /// SSL Wireless Push SMS API v3.
    SslWireless,
    /// BulkSMSBD.
    BulkSmsBd,
    /// Alpha SMS, sms.net.bd.
    AlphaSms,
}

impl Kind {
    /// The `kind = "..."` value of a `[[providers]]` entry for this provider.
    pub fn config_kind(self) -> &'static str {
        match self {
            Kind::Twilio => "twilio",
            Kind::Vonage => "vonage",
            Kind::Infobip => "infobip",
            Kind::SslWireless => "ssl_wireless",
            Kind::BulkSmsBd => "bulksmsbd",
            Kind::AlphaSms => "alpha_sms",
        }
    }
}

/// What a destination number asks the fake to do, chosen by its last two digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scenario {
    /// `01` and every unlisted suffix: the provider's success answer with a fresh message id.
    Accept,
    /// `02`: the provider's throttling answer.
    Throttle,
    /// `03`: HTTP 503.
    ServerError,
    /// `04`: the provider's invalid-number answer.
    InvalidNumber,
    /// `05`: a provider-side refusal (balance, quota, IP allow-list, trial account).
    Rejected,
    /// `06`: the success status with an HTML body.
    Garbage,
    /// `07`: the success status with the success JSON cut off after 20 bytes (message accepted).
    Truncated,
    /// `08`: accepted, but answered only after the slow delay.
    Slow,
    /// `09`: accepted, then the connection is dropped without a complete response.
    Drop,
}

impl Scenario {
    /// Every scenario, in suffix order.
    pub const ALL: [Scenario; 9] = [
        Scenario::Accept,
        Scenario::Throttle,
        Scenario::ServerError,
        Scenario::InvalidNumber,
        Scenario::Rejected,
        Scenario::Garbage,
        Scenario::Truncated,
        Scenario::Slow,
        Scenario::Drop,
    ];

    /// The scenario the last two digits of `number` pick (`Accept` for unlisted suffixes).
    pub fn for_number(number: &str) -> Scenario {
        let suffix = number
            .get(number.len().saturating_sub(2)..)
            .unwrap_or_default();
        Scenario::ALL
            .into_iter()
            .find(|scenario| scenario.suffix() == suffix)
            .unwrap_or(Scenario::Accept)
    }

    /// The two final digits that pick this scenario.
    pub fn suffix(self) -> &'static str {
        match self {
            Scenario::Accept => "01",
            Scenario::Throttle => "02",
            Scenario::ServerError => "03",
            Scenario::InvalidNumber => "04",
            Scenario::Rejected => "05",
            Scenario::Garbage => "06",
            Scenario::Truncated => "07",
            Scenario::Slow => "08",
            Scenario::Drop => "09",
        }
    }
}

/// One send request the fake received (whatever the scenario, including refused auth).
#[derive(Debug, Clone)]
pub struct Received {
    /// `POST` or `GET`.
    pub method: String,
    /// The request path, without the query string.
    pub path: String,
    /// The destination exactly as sent (`+8801712000001` or `8801712000001`); empty if missing.
    pub to: String,
    /// The message text as sent; empty if missing.
    pub text: String,
    /// `From` / `from` / `sender` / `senderid` / `sender_id`; SSL Wireless: the `sid`.
    pub sender: Option<String>,
    /// Our client reference: Vonage `client-ref`, Infobip `destinations[].messageId`, SSL `csms_id`.
    pub reference: Option<String>,
    /// Twilio `StatusCallback`, Vonage `callback`, Infobip `webhooks.delivery.url`.
    pub callback: Option<String>,
    /// The time-to-live asked for: Twilio `ValidityPeriod` (s), Vonage `ttl` (ms), Infobip
    /// `options.validityPeriod` (minutes).
    pub ttl: Option<Duration>,
    /// Whether the credentials were right.
    pub authorized: bool,
    /// When the request arrived.
    pub at: std::time::Instant,
    /// When the request arrived, by the wall clock (to hold a TTL against `expires_at`).
    pub arrived: DateTime<Utc>,
}

impl Received {
    /// A record of a request to `uri` whose message fields the provider file fills in.
    fn new(method: &Method, uri: &Uri, authorized: bool) -> Received {
        Received {
            method: method.to_string(),
            path: uri.path().to_owned(),
            to: String::new(),
            text: String::new(),
            sender: None,
            reference: None,
            callback: None,
            ttl: None,
            authorized,
            at: std::time::Instant::now(),
            arrived: Utc::now(),
        }
    }
}

/// A message the fake accepted: what status lookups and duplicate checks find.
#[derive(Debug, Clone)]
struct Sent {
    /// The provider's message id (for Vonage: the first part's).
    id: String,
    /// The destination as sent.
    to: String,
    /// The message text.
    text: String,
    /// The sender as sent.
    sender: Option<String>,
    /// Our client reference, if the provider takes one.
    reference: Option<String>,
    /// Billed parts.
    parts: u16,
    /// When the fake accepted it.
    at: DateTime<Utc>,
}

impl Sent {
    /// The message `received` describes, under the provider id `id`.
    fn new(id: String, received: &Received) -> Sent {
        Sent {
            id,
            to: received.to.clone(),
            text: received.text.clone(),
            sender: received.sender.clone(),
            reference: received.reference.clone(),
            parts: segments::count(&received.text).parts,
            at: Utc::now(),
        }
    }
}

/// The benchmark knobs.
#[derive(Debug, Clone, Copy)]
struct Knobs {
    /// Added to every send.
    latency: Duration,
    /// Share of `Accept` sends answered as `ServerError`.
    error_rate: f64,
    /// How long `Slow` waits.
    slow_delay: Duration,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            latency: Duration::ZERO,
            error_rate: 0.0,
            slow_delay: Duration::from_secs(5),
        }
    }
}

/// State shared by a fake's handlers.
#[derive(Default)]
struct Fake {
    /// Every send request, in arrival order.
    received: Mutex<Vec<Received>>,
    /// Accepted messages, oldest first.
    sent: Mutex<Vec<Sent>>,
    /// Status-lookup and report requests served.
    lookups: AtomicUsize,
    /// Source of numeric message ids.
    numbers: AtomicU64,
    /// Latency, error rate and slow delay.
    knobs: Mutex<Knobs>,
    /// The delivery status report APIs give (Alpha SMS `status`, Infobip status group name);
    /// `None` for the provider's usual one.
    report_status: Mutex<Option<String>>,
    /// Message ids already returned by a pull-once report API (Infobip `/sms/3/reports`).
    reported: Mutex<Vec<String>>,
}

/// Locks `mutex`, ignoring poisoning (a panicking test must not hide the others' results).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Fake {
    /// The current knobs.
    fn knobs(&self) -> Knobs {
        *lock(&self.knobs)
    }

    /// Records a send request, then waits the configured latency.
    async fn record(&self, received: &Received) {
        lock(&self.received).push(received.clone());
        let latency = self.knobs().latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
    }

    /// Remembers an accepted message for lookups and duplicate checks.
    fn remember(&self, sent: Sent) {
        lock(&self.sent).push(sent);
    }

    /// The accepted messages `keep` selects, newest first.
    fn sent_where(&self, keep: impl Fn(&Sent) -> bool) -> Vec<Sent> {
        lock(&self.sent)
            .iter()
            .rev()
            .filter(|sent| keep(sent))
            .cloned()
            .collect()
    }

    /// The delivery status report APIs give, or `usual`.
    fn report_status(&self, usual: &str) -> String {
        lock(&self.report_status)
            .clone()
            .unwrap_or_else(|| usual.to_owned())
    }

    /// Accepted messages not yet returned by a pull-once report API, oldest first; marks them
    /// returned.
    fn unreported(&self) -> Vec<Sent> {
        let mut reported = lock(&self.reported);
        let fresh: Vec<Sent> = lock(&self.sent)
            .iter()
            .filter(|sent| !reported.contains(&sent.id))
            .cloned()
            .collect();
        reported.extend(fresh.iter().map(|sent| sent.id.clone()));
        fresh
    }

    /// Counts one status lookup or report request.
    fn looked_up(&self) {
        self.lookups.fetch_add(1, Ordering::Relaxed);
    }

    /// A fresh numeric message id (BulkSMSBD, Alpha SMS).
    fn number_id(&self) -> u64 {
        13_145_326 + self.numbers.fetch_add(1, Ordering::Relaxed)
    }

    /// The scenario for a send to `to`, with the configured share of `Accept` turned into
    /// `ServerError`.
    fn scenario(&self, to: &str) -> Scenario {
        match Scenario::for_number(to) {
            Scenario::Accept if rand::rng().random::<f64>() < self.knobs().error_rate => {
                Scenario::ServerError
            }
            scenario => scenario,
        }
    }

    /// Waits the slow delay, then gives `response`.
    async fn slow_then(&self, response: Response) -> Response {
        tokio::time::sleep(self.knobs().slow_delay).await;
        response
    }

    /// Answers a well-formed, authorized send according to the scenario its destination picks.
    async fn answer<P: Answers>(&self, sent: Sent) -> Response {
        match self.scenario(&sent.to) {
            scenario @ (Scenario::Accept | Scenario::Slow) => {
                let response = reply_json(P::OK, P::success(&sent));
                self.remember(sent);
                if scenario == Scenario::Slow {
                    self.slow_then(response).await
                } else {
                    response
                }
            }
            Scenario::Drop => {
                self.remember(sent);
                drop_connection()
            }
            Scenario::Truncated => {
                let mut body = P::success(&sent).to_string().into_bytes();
                body.truncate(20);
                self.remember(sent);
                reply(P::OK, "application/json", body)
            }
            Scenario::Garbage => reply(
                P::OK,
                "text/html",
                "<html><body>502 Bad Gateway</body></html>",
            ),
            Scenario::Throttle => P::refusal(Refusal::Throttle, &sent),
            Scenario::ServerError => P::refusal(Refusal::ServerError, &sent),
            Scenario::InvalidNumber => P::refusal(Refusal::InvalidNumber, &sent),
            Scenario::Rejected => P::refusal(Refusal::Rejected, &sent),
        }
    }
}

/// The scenarios in which a provider refuses a well-formed, authorized send.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    /// Too many requests.
    Throttle,
    /// HTTP 503.
    ServerError,
    /// The destination is not a valid number.
    InvalidNumber,
    /// Balance, quota, IP allow-list or similar.
    Rejected,
}

/// One provider's answers to a well-formed, authorized send.
trait Answers {
    /// HTTP status of the success answer.
    const OK: StatusCode = StatusCode::OK;

    /// The success body for an accepted message.
    fn success(sent: &Sent) -> Value;

    /// The answer to a scenario that refuses the message.
    fn refusal(refusal: Refusal, sent: &Sent) -> Response;
}

/// An answer with a content type; every 429 carries `Retry-After: 1`.
fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Body>) -> Response {
    let body: Body = body.into();
    let mut response = (status, [(header::CONTENT_TYPE, content_type)], body).into_response();
    if status == StatusCode::TOO_MANY_REQUESTS {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// A JSON answer.
fn reply_json(status: StatusCode, body: Value) -> Response {
    reply(status, "application/json", body.to_string())
}

/// HTTP 503 with a short HTML body (providers without a JSON error shape for it).
fn unavailable() -> Response {
    reply(
        StatusCode::SERVICE_UNAVAILABLE,
        "text/html",
        "<html><body>503 Service Unavailable</body></html>",
    )
}

/// HTTP 429 with a short text body.
fn too_many_requests() -> Response {
    reply(
        StatusCode::TOO_MANY_REQUESTS,
        "text/plain",
        "Too Many Requests",
    )
}

/// A response whose body fails at once, so hyper aborts the connection mid-answer.
fn drop_connection() -> Response {
    let body = futures_util::stream::iter([Err::<Vec<u8>, io::Error>(io::Error::other(
        "the fake provider dropped the connection",
    ))]);
    Response::new(Body::from_stream(body))
}

/// The `user:password` of an `Authorization: Basic` header.
fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let decoded = STANDARD.decode(value.strip_prefix("Basic ")?.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Url-encoded parameters.
type Params = HashMap<String, String>;

/// The parameters of a form body (for GET: of the query string); none when the body is no form.
fn form_params(form: Result<Form<Params>, FormRejection>) -> Params {
    form.map(|Form(params)| params).unwrap_or_default()
}

/// A parameter's value, empty when missing.
fn field(params: &Params, key: &str) -> String {
    params.get(key).cloned().unwrap_or_default()
}

/// Whether parameter `key` is exactly `value`.
fn param_is(params: &Params, key: &str, value: &str) -> bool {
    params.get(key).is_some_and(|v| v == value)
}

/// The string at JSON pointer `pointer`, if there is one.
fn json_str(value: &Value, pointer: &str) -> Option<String> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// Whether `number` is 7 to 15 digits and nothing else (no `+`, no separators).
fn is_msisdn(number: &str) -> bool {
    (7..=15).contains(&number.len()) && number.bytes().all(|b| b.is_ascii_digit())
}

/// `number` as the `8801XNNNNNNNN` the Bangladeshi gateways echo, if it is a Bangladeshi mobile
/// number written `8801XNNNNNNNN` or `01XNNNNNNNN` (X in 3..=9).
fn bd_msisdn(number: &str) -> Option<String> {
    let national = number.strip_prefix("88").unwrap_or(number);
    let valid = national.len() == 11
        && national.starts_with("01")
        && national
            .as_bytes()
            .get(2)
            .is_some_and(|b| (b'3'..=b'9').contains(b))
        && national.bytes().all(|b| b.is_ascii_digit());
    valid.then(|| format!("88{national}"))
}

/// `len` (at most 32) random lowercase hex digits.
fn hex_id(len: usize) -> String {
    let mut id = Uuid::new_v4().simple().to_string();
    id.truncate(len);
    id
}

/// A numeric id as a JSON number.
fn numeric(id: &str) -> Value {
    id.parse::<u64>()
        .map_or_else(|_| Value::from(id), Value::from)
}

/// A fake provider listening on a local port; the server stops when this is dropped.
pub struct FakeProvider {
    kind: Kind,
    addr: SocketAddr,
    fake: Arc<Fake>,
    server: JoinHandle<()>,
}

impl FakeProvider {
    /// Starts a fake `kind` server on `127.0.0.1` and a free port.
    pub async fn start(kind: Kind) -> FakeProvider {
        let fake = Arc::new(Fake::default());
        let routes = match kind {
            Kind::Twilio => twilio::router(),
            Kind::Vonage => vonage::router(),
            Kind::Infobip => infobip::router(),
            Kind::SslWireless => ssl_wireless::router(),
            Kind::BulkSmsBd => bulksmsbd::router(),
            Kind::AlphaSms => alpha_sms::router(),
        };
        let app: Router = routes.with_state(Arc::clone(&fake));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a port for the fake provider");
        let addr = listener
            .local_addr()
            .expect("the fake provider's local address");
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                eprintln!("fake {kind:?} server stopped: {error}");
            }
        });
        FakeProvider {
            kind,
            addr,
            fake,
            server,
        }
    }

    /// The provider this fake imitates.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The API root to configure as the adapter's `base_url`, e.g. `http://127.0.0.1:40123`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The credential settings the adapter's config needs, as (config key, value) pairs.
    pub fn credentials(&self) -> Vec<(&'static str, String)> {
        match self.kind {
            Kind::Twilio => twilio::credentials(),
            Kind::Vonage => vonage::credentials(),
            Kind::Infobip => infobip::credentials(),
            Kind::SslWireless => ssl_wireless::credentials(),
            Kind::BulkSmsBd => bulksmsbd::credentials(),
            Kind::AlphaSms => alpha_sms::credentials(),
        }
    }

    /// A `[[providers]]` entry (as JSON) for an adapter pointed at this fake: its credentials, the
    /// sender `Glamora` (SSL Wireless: the sid stands for it), 500 ms timeouts and a price of 0.35
    /// BDT per part to +880. Callers may override any key.
    pub fn provider_entry(&self, name: &str) -> Value {
        let mut entry = serde_json::json!({
            "name": name,
            "kind": self.kind.config_kind(),
            "base_url": self.base_url(),
            "timeout_ms": 500,
            "connect_timeout_ms": 200,
            "prices": [{ "prefix": "+880", "per_part": 0.35, "currency": "BDT" }],
        });
        for (key, value) in self.credentials() {
            entry[key] = Value::from(value);
        }
        if self.kind != Kind::SslWireless {
            entry["sender"] = Value::from("Glamora");
        }
        entry
    }

    /// Sets the delivery status the report APIs give from now on (Alpha SMS: a recipient
    /// `status` word such as `Delivered`; Infobip: `DELIVERED` or `UNDELIVERABLE`).
    pub fn set_report_status(&self, status: &str) {
        *lock(&self.fake.report_status) = Some(status.to_owned());
    }

    /// The send requests received so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.fake.received).clone()
    }

    /// Status-lookup and report requests served so far (with valid credentials).
    pub fn lookups(&self) -> usize {
        self.fake.lookups.load(Ordering::Relaxed)
    }

    /// Adds `latency` to every send from now on.
    pub fn set_latency(&self, latency: Duration) {
        lock(&self.fake.knobs).latency = latency;
    }

    /// Answers this share (0.0..=1.0) of `Accept`-scenario sends as `ServerError` instead.
    pub fn set_server_error_rate(&self, rate: f64) {
        lock(&self.fake.knobs).error_rate = rate;
    }

    /// Sets how long the `Slow` scenario waits before answering (default 5 s).
    pub fn set_slow_delay(&self, d: Duration) {
        lock(&self.fake.knobs).slow_delay = d;
    }
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        self.server.abort();
    }
}
