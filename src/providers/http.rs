//! What the HTTP adapters share: the client, one exchange turned into a [`Reply`] or a classified
//! transport failure, and the classes every API agrees on (429, 5xx, 401/403, unreadable bodies).

use std::time::Duration;

use reqwest::{RequestBuilder, StatusCode, header::RETRY_AFTER};
use serde::de::DeserializeOwned;

use super::{Accepted, SendError};

/// Bodies longer than this are not read further; what was read is classified (usually as
/// unreadable).
const MAX_BODY: usize = 64 * 1024;

/// One provider's HTTP side: its name, its client (with the configured timeouts; it keeps
/// connections alive between sends) and its API root.
#[derive(Debug)]
pub struct Endpoint {
    /// The configured provider name.
    pub name: String,
    /// The HTTP client.
    pub client: reqwest::Client,
    base: String,
}

/// How an adapter reaches its provider, from its `[[providers]]` entry.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The configured provider name.
    pub name: String,
    /// The API root without a trailing slash (`None` for a kind without a default, unset).
    pub base_url: Option<String>,
    /// Longest wait for a whole HTTP exchange.
    pub timeout: Duration,
    /// Longest wait for a TCP/TLS connection.
    pub connect_timeout: Duration,
}

impl Endpoint {
    /// Builds the client for `connection`.
    pub fn new(connection: &Connection) -> Result<Self, String> {
        let base = connection
            .base_url
            .clone()
            .ok_or_else(|| "base_url is required".to_owned())?;
        let client = reqwest::Client::builder()
            .timeout(connection.timeout)
            .connect_timeout(connection.connect_timeout)
            // A redirect would re-send the request, credentials and code included, wherever the
            // answer points; it is classified like any other answer instead.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("sms-relay/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Self {
            name: connection.name.clone(),
            client,
            base,
        })
    }

    /// `path` (starting with `/`) under the API root.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// A provider's answer: status, `Retry-After`, and the body (at most 64 KiB of it).
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// `Retry-After` in seconds, if the provider sent it.
    pub retry_after: Option<Duration>,
    /// The body as text (lossily decoded).
    pub body: String,
}

/// Sends `request` and reads the answer. A failure to connect means the provider never saw the
/// request (a provider error: the next provider may be tried safely); a failure after that (a
/// timeout, a dropped connection, a body cut short) means it may have taken the message
/// (`Unknown`). Error texts never carry the URL, which may hold credentials.
pub async fn exchange(request: RequestBuilder) -> Result<Reply, SendError> {
    let mut response = request.send().await.map_err(transport_error)?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_BODY - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if body.len() == MAX_BODY {
                    break;
                }
            }
            Ok(None) => break,
            Err(error) => {
                return Err(SendError::Unknown {
                    http_status: Some(status),
                    message: format!("the answer was cut off: {}", describe(&error.without_url())),
                });
            }
        }
    }
    Ok(Reply {
        status,
        retry_after,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn transport_error(error: reqwest::Error) -> SendError {
    let error = error.without_url();
    if error.is_connect() || error.is_builder() {
        SendError::Provider {
            http_status: None,
            code: "CONNECT".into(),
            message: format!("could not reach the provider: {}", describe(&error)),
            retry_after: None,
        }
    } else if error.is_timeout() {
        SendError::Unknown {
            http_status: None,
            message: "timed out after the request was sent".into(),
        }
    } else {
        SendError::Unknown {
            http_status: None,
            message: format!(
                "the connection failed after the request was sent: {}",
                describe(&error)
            ),
        }
    }
}

/// The error and its causes on one line (reqwest's own message is terse).
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl Reply {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body parsed as `T`, or `None` if it is not that JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Option<T> {
        serde_json::from_str(&self.body).ok()
    }

    /// The body of a 2xx reply parsed as `T`; anything else is [`Reply::unreadable`].
    pub fn parsed<T: DeserializeOwned>(&self) -> Result<T, SendError> {
        self.json()
            .filter(|_| self.is_success())
            .ok_or_else(|| self.unreadable())
    }

    /// The provider took the message under `id`; it reported no price.
    pub fn accepted(&self, id: String) -> Accepted {
        Accepted {
            provider_message_id: id,
            http_status: Some(self.status),
            cost: None,
            note: None,
        }
    }

    /// A provider error carrying this reply's status and `Retry-After`.
    pub fn provider_error(&self, code: impl Into<String>, message: impl Into<String>) -> SendError {
        SendError::Provider {
            http_status: Some(self.status),
            code: code.into(),
            message: message.into(),
            retry_after: self.retry_after,
        }
    }

    /// A bad-recipient refusal carrying this reply's status.
    pub fn bad_recipient(&self, code: impl Into<String>, message: impl Into<String>) -> SendError {
        SendError::BadRecipient {
            http_status: Some(self.status),
            code: code.into(),
            message: message.into(),
        }
    }

    /// The class of an answer whose body the adapter could not understand. A 2xx may mean the
    /// provider took the message (`Unknown`); anything else did not (a provider error, by HTTP
    /// status: 429 throttled, 401/403 credentials, 5xx outage).
    pub fn unreadable(&self) -> SendError {
        if self.is_success() {
            return SendError::Unknown {
                http_status: Some(self.status),
                message: format!(
                    "HTTP {} with an unreadable body: {}",
                    self.status,
                    self.snippet()
                ),
            };
        }
        let what = match StatusCode::from_u16(self.status) {
            Ok(StatusCode::TOO_MANY_REQUESTS) => "throttled",
            Ok(StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => "credentials refused",
            Ok(s) if s.is_server_error() => "provider outage",
            _ => "request refused",
        };
        self.provider_error(
            format!("HTTP{}", self.status),
            format!("{what}: {}", self.snippet()),
        )
    }

    /// The start of the body, on one line, for error messages.
    pub fn snippet(&self) -> String {
        let flat: String = self
            .body
            .chars()
            .take(200)
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        if flat.trim().is_empty() {
            "(empty body)".into()
        } else {
            flat.trim().to_owned()
        }
    }
}

/// A JSON value that providers send either as a string or as a number (ids, codes, balances),
/// as text. `None` for anything else.
pub fn text_of(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: &str) -> Reply {
        Reply {
            status,
            retry_after: Some(Duration::from_secs(3)),
            body: body.into(),
        }
    }

    #[test]
    fn unreadable_bodies_are_classified_by_status() {
        assert!(matches!(
            reply(200, "<html>").unreadable(),
            SendError::Unknown { .. }
        ));
        match reply(429, "").unreadable() {
            SendError::Provider {
                code, retry_after, ..
            } => {
                assert_eq!(code, "HTTP429");
                assert_eq!(retry_after, Some(Duration::from_secs(3)));
            }
            other => panic!("{other:?}"),
        }
        let outage = reply(503, "<html>\n<b>down</b>").unreadable().to_string();
        assert!(outage.contains("outage: <html> <b>down</b>"), "{outage}");
        assert!(
            reply(401, "")
                .unreadable()
                .to_string()
                .contains("credentials")
        );
    }
}
