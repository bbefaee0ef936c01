//! Receipt webhooks: the request a provider's webhook check sees, why it may refuse one, the
//! table of provider kinds that take receipts by webhook, and helpers their checks share.

use hmac::{KeyInit, Mac};
use reqwest::header::HeaderMap;
use serde_json::{Map, Value};

use super::{KindSettings, Receipt, ReceiptError};
use crate::domain::recipient::mask;

/// A receipt webhook request as it arrived.
#[derive(Debug)]
pub struct WebhookRequest<'a> {
    /// The URL the provider called, as it would have signed it: the public base URL (or, without
    /// one, `http://` and the `Host` header), the path and the query string. `None` when neither
    /// tells it.
    pub url: Option<String>,
    /// The query string, without `?`.
    pub query: Option<&'a str>,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The body.
    pub body: &'a [u8],
}

impl WebhookRequest<'_> {
    /// A header's value, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(self.headers, name)
    }
}

/// A header's value, if present and visible ASCII.
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Why a webhook request was refused. Never worth retrying: the same request fails the same way.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// It carries no credentials or signature (answered 401).
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// Its credentials or signature match no configured entry (answered 403).
    #[error("{0}")]
    Forbidden(&'static str),
    /// It is authentic but not the provider's documented format (answered 400).
    #[error(transparent)]
    Malformed(#[from] ReceiptError),
}

/// A kind's webhook check: the configured entries, the request; its receipts or why it was refused.
pub type Receive =
    fn(&[&dyn KindSettings], &WebhookRequest<'_>) -> Result<Vec<Receipt>, WebhookError>;

/// A kind's check of a webhook request's headers against the configured entries.
pub type Authenticate = fn(&[&dyn KindSettings], &HeaderMap) -> Result<(), WebhookError>;

/// Headers that cannot be checked before the body is read (the credentials are in it).
pub fn authenticated_by_body(_: &[&dyn KindSettings], _: &HeaderMap) -> Result<(), WebhookError> {
    Ok(())
}

/// How one provider kind takes receipts by webhook, at `/webhooks/<kind>`.
pub struct Webhook {
    /// The kind's label, also the path segment.
    pub kind: &'static str,
    /// Whether receipts may also come by GET, in the query string (otherwise POST only).
    pub accepts_get: bool,
    /// What the headers alone tell about the credentials, checked before the body is read
    /// (entries of other kinds in the slice are ignored).
    pub authenticate: Authenticate,
    /// Checks `request` (whose headers passed `authenticate`) against the credentials of the
    /// configured entries of this kind and parses its receipts.
    pub receive: Receive,
    /// Whether an entry (of this kind) has webhook credentials; an entry without them gets
    /// every receipt refused.
    pub has_credentials: fn(&dyn KindSettings) -> bool,
}

/// Form key/value pairs of a URL-encoded body or query string.
pub fn form_pairs(bytes: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(bytes).into_owned().collect()
}

/// The first non-empty value of `key` among form pairs.
pub fn field<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, v)| k == key && !v.is_empty())
        .map(|(_, v)| v.as_str())
}

/// Form params as a JSON object for the audit payload, leaving out the `drop` keys and keeping
/// the `numbers` keys' values only masked: a key seen once maps to its string, a repeated key to
/// the array of its values in order.
pub fn params_json(params: &[(String, String)], drop: &[&str], numbers: &[&str]) -> Value {
    let mut object = Map::new();
    for (key, value) in params.iter().filter(|(k, _)| !drop.contains(&k.as_str())) {
        let value = if numbers.contains(&key.as_str()) {
            Value::String(mask(value))
        } else {
            Value::String(value.clone())
        };
        match object.get_mut(key) {
            None => {
                object.insert(key.clone(), value);
            }
            Some(Value::Array(values)) => values.push(value),
            Some(first) => *first = Value::Array(vec![first.take(), value]),
        }
    }
    Value::Object(object)
}

/// `HMAC(key, data)` as bytes.
pub fn hmac_bytes<M: Mac + KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = <M as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}
