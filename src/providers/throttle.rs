//! A provider's request-rate limit: a token bucket (governor's GCRA) that sends wait on without
//! spinning, up to a bound after which the chain moves on to the next provider.

use std::{num::NonZeroU32, time::Duration};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Deserialize;

/// How a call fared at the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    /// A token was there.
    Ready,
    /// A token came within the wait.
    Waited,
    /// None came in time: the call must not go out.
    Missed,
}

/// One provider's token bucket, shared by all of a relay's sends.
#[derive(Debug)]
pub struct Throttle {
    limiter: DefaultDirectRateLimiter,
    max_wait: Duration,
}

impl Throttle {
    /// A bucket of `burst` tokens refilled at `per_second`.
    pub fn new(limit: &RateLimit) -> Self {
        let per_second = NonZeroU32::new(limit.per_second).unwrap_or(NonZeroU32::MIN);
        let burst = limit.burst.and_then(NonZeroU32::new).unwrap_or(per_second);
        Self {
            limiter: RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst)),
            max_wait: Duration::from_millis(limit.max_wait_ms),
        }
    }

    /// Takes a token, waiting at most `max_wait_ms` (and not past `deadline`) for one.
    pub async fn acquire(&self, deadline: tokio::time::Instant) -> Token {
        if self.limiter.check().is_ok() {
            return Token::Ready;
        }
        let until = deadline.min(tokio::time::Instant::now() + self.max_wait);
        match tokio::time::timeout_at(until, self.limiter.until_ready()).await {
            Ok(()) => Token::Waited,
            Err(_) => Token::Missed,
        }
    }
}

/// `rate_limit = { per_second = 30, burst = 30, max_wait_ms = 1000 }`: a token bucket.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: u32,
    /// Requests that may go at once after a quiet spell (default: `per_second`).
    #[serde(default)]
    pub burst: Option<u32>,
    /// Longest a send waits for a token before the chain moves on to the next provider.
    #[serde(default = "default_max_wait_ms")]
    pub max_wait_ms: u64,
}

fn default_max_wait_ms() -> u64 {
    1_000
}

impl RateLimit {
    /// Checks the rates.
    pub fn validate(&self) -> Result<(), String> {
        if self.per_second == 0 || self.burst == Some(0) {
            return Err("rate_limit per_second and burst must be at least 1".into());
        }
        Ok(())
    }
}
