//! Walking the configured providers in order for one send round: circuit breakers, rate limits,
//! status lookups after unknown outcomes, prices.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use chrono::{DateTime, Utc};
use serde::Deserialize;
use tokio::{sync::Notify, time::Instant};
use tokio_util::sync::CancellationToken;

use super::{
    Accepted, Cost, Lookup, Outcome, OutgoingSms, PriceTable, Provider, SendError, Throttle,
    breaker::{Admission, Breaker, CircuitSnapshot},
    cap::{Cap, Per},
    throttle::Token,
};
use crate::{domain::DbClock, metrics};

/// What to do when a call's outcome is unknown and the provider has no status lookup (or the
/// lookup failed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownPolicy {
    /// Try the next provider: the same code twice beats no code.
    #[default]
    FallOver,
    /// Count the message as sent: no duplicate, at the risk of no code at all.
    AssumeSent,
}

/// One provider in the chain, with what guards it.
pub struct Link {
    provider: Arc<dyn Provider>,
    prices: PriceTable,
    breaker: Option<Breaker>,
    throttle: Option<Throttle>,
    caps: Vec<Cap>,
}

impl Link {
    /// A provider with no prices, no rate limit and no circuit breaker.
    pub fn new(provider: Arc<dyn Provider>) -> Self {
        Self {
            provider,
            prices: PriceTable::default(),
            breaker: None,
            throttle: None,
            caps: Vec::new(),
        }
    }

    /// Sets the configured prices, used when the provider reports none.
    pub fn with_prices(self, prices: PriceTable) -> Self {
        Self { prices, ..self }
    }

    /// Sets the circuit breaker.
    pub fn with_breaker(self, breaker: Breaker) -> Self {
        Self {
            breaker: Some(breaker),
            ..self
        }
    }

    fn admit(&self) -> Admission {
        self.breaker
            .as_ref()
            .map_or(Admission::Call, Breaker::admit)
    }

    fn abandon(&self, admission: Admission) {
        if let Some(breaker) = &self.breaker {
            breaker.abandon(admission);
        }
    }

    fn reopens_in(&self) -> Duration {
        self.breaker
            .as_ref()
            .and_then(Breaker::reopens_in)
            .unwrap_or_default()
    }

    /// Sets (or removes) the rate limit.
    pub fn with_throttle(self, throttle: Option<Throttle>) -> Self {
        Self { throttle, ..self }
    }

    /// Sets the hourly and daily caps.
    pub fn with_caps(self, caps: Vec<Cap>) -> Self {
        Self { caps, ..self }
    }
}

/// The ordered providers a message is offered to.
pub struct ProviderChain {
    links: Vec<Link>,
    on_unknown: UnknownPolicy,
    circuits_changed: Arc<Notify>,
    /// The database's clock once a relay has read it; attempts are stamped on it.
    db_clock: OnceLock<DbClock>,
    /// This host's clock as the chain was built: stamps attempts until then (`send-test`).
    host_clock: DbClock,
}

/// What one provider call produced, ready for `sms_attempts`.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    /// Provider name.
    pub provider: String,
    /// 1-based position of the provider in the chain.
    pub chain_step: i32,
    /// The reference this call gave the provider.
    pub client_ref: String,
    /// When the call started, on the database's clock (see [`ProviderChain::use_db_clock`]).
    pub started_at: DateTime<Utc>,
    /// When the answer (or the failure) came, on the same clock: monotonic time since the start.
    pub finished_at: DateTime<Utc>,
    /// The class of the answer.
    pub outcome: Outcome,
    /// HTTP status, if any.
    pub http_status: Option<u16>,
    /// Provider error code.
    pub error_code: Option<String>,
    /// Provider error text.
    pub error_message: Option<String>,
    /// The provider's message id (accepted only).
    pub provider_message_id: Option<String>,
    /// Reported or configured cost.
    pub cost: Option<Cost>,
}

/// How a round ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RoundResult {
    /// A provider accepted the message (or, under `assume_sent`, may have).
    Sent,
    /// A provider said the recipient is bad; the chain stopped there.
    BadRecipient(String),
    /// Every provider failed or was skipped; the message may be retried later.
    Exhausted {
        /// The last provider's error, or why providers were skipped.
        reason: String,
        /// The longest wait any provider asked for.
        retry_after: Option<Duration>,
        /// Set when no provider could be called at all because their circuits are open: the
        /// time until the first one lets a probe through. The next round should not come sooner.
        circuits_reopen: Option<Duration>,
    },
    /// The round's deadline (the code's validity or the claim's lease) came before an answer, or
    /// before the next provider could be tried.
    OutOfTime,
    /// The relay was told to stop during a provider call; that call's outcome is unknown.
    Interrupted,
}

/// Why a fictional number (see [`Recipient::is_fictional`]) goes nowhere but to the simulator.
///
/// [`Recipient::is_fictional`]: crate::domain::Recipient::is_fictional
const FICTIONAL: &str = "a fictional number is sent through the simulator only";

/// How one call through one link ended, before the chain decides what comes next.
enum CallEnd {
    Answered(Result<Accepted, SendError>),
    OutOfTime,
    Interrupted,
}

impl ProviderChain {
    /// A chain of providers, tried in the order given.
    pub fn new(links: Vec<Link>) -> Self {
        Self {
            links,
            on_unknown: UnknownPolicy::default(),
            circuits_changed: Arc::new(Notify::new()),
            db_clock: OnceLock::new(),
            host_clock: DbClock::new(Instant::now(), Utc::now()),
        }
    }

    /// Stamps attempts on the database's clock from now on (the first clock given stays).
    pub fn use_db_clock(&self, clock: DbClock) {
        let _ = self.db_clock.set(clock);
    }

    /// The time at `instant`, on the database's clock where known.
    fn stamp(&self, instant: Instant) -> DateTime<Utc> {
        self.db_clock.get().unwrap_or(&self.host_clock).at(instant)
    }

    /// Sets what happens after an unknown outcome that no status lookup resolved.
    pub fn with_unknown_policy(self, on_unknown: UnknownPolicy) -> Self {
        Self { on_unknown, ..self }
    }

    /// The providers' caps, with the provider's name.
    pub fn caps(&self) -> impl Iterator<Item = (&str, &Cap)> {
        self.links
            .iter()
            .flat_map(|l| l.caps.iter().map(move |cap| (l.provider.name(), cap)))
    }

    /// The providers in order.
    pub fn providers(&self) -> impl Iterator<Item = &Arc<dyn Provider>> {
        self.links.iter().map(|l| &l.provider)
    }

    /// The providers' names in order.
    pub fn names(&self) -> Vec<&str> {
        self.links.iter().map(|l| l.provider.name()).collect()
    }

    /// Each guarded provider's name and circuit state, in chain order.
    pub fn circuits(&self) -> Vec<(String, CircuitSnapshot)> {
        self.links
            .iter()
            .filter_map(|l| Some((l.provider.name().to_owned(), l.breaker.as_ref()?.snapshot())))
            .collect()
    }

    /// Notified whenever a circuit changes state.
    pub fn circuits_changed(&self) -> Arc<Notify> {
        self.circuits_changed.clone()
    }

    /// The chain's links with their 0-based places, starting after the provider named `skip`
    /// (which comes last) when it is in the chain; in configured order otherwise.
    fn order(&self, skip: Option<&str>) -> impl Iterator<Item = (usize, &Link)> {
        let start = skip
            .and_then(|name| self.links.iter().position(|l| l.provider.name() == name))
            .map_or(0, |at| at + 1);
        let n = self.links.len();
        (0..n).map(move |i| {
            let index = (start + i) % n;
            (index, &self.links[index])
        })
    }

    /// Offers `sms` to each provider in turn until one accepts it, one rejects the recipient, or
    /// the list runs out. A resend names the provider that did not deliver as `skip`: the walk
    /// starts with the one after it and tries it last. Providers whose circuit is open, or whose
    /// rate limit has no token within its wait, are skipped. Each call is told the validity left
    /// until `valid_until` as it starts; a provider that cannot be told so little (its
    /// [`Provider::min_validity`]) is skipped with the reason kept. No call runs past `deadline`;
    /// a call still unanswered then, or cut short by `stop`, is recorded as unknown. Every call
    /// yields one [`AttemptRecord`].
    pub async fn send(
        &self,
        sms: &OutgoingSms,
        skip: Option<&str>,
        valid_until: Instant,
        deadline: Instant,
        stop: &CancellationToken,
    ) -> (RoundResult, Vec<AttemptRecord>) {
        let mut records = Vec::with_capacity(1);
        let fictional = sms.recipient.is_fictional();
        if fictional && self.links.iter().all(|l| l.provider.reaches_phones()) {
            return (RoundResult::BadRecipient(FICTIONAL.to_owned()), records);
        }
        let mut last_reason: Option<String> = None;
        let mut retry_after: Option<Duration> = None;
        let mut reopen: Option<Duration> = None;
        for (index, link) in self.order(skip) {
            if Instant::now() >= deadline {
                return (RoundResult::OutOfTime, records);
            }
            let name = link.provider.name();
            if fictional && link.provider.reaches_phones() {
                last_reason.get_or_insert_with(|| format!("{name}: skipped, {FICTIONAL}"));
                continue;
            }
            if let Some(cap) = link.caps.iter().find(|c| c.spent()) {
                let per = if cap.per() == Per::Hour {
                    "hourly"
                } else {
                    "daily"
                };
                last_reason.get_or_insert_with(|| format!("{name}: over its {per} cap"));
                continue;
            }
            let admission = link.admit();
            if admission == Admission::Skip {
                let reopens = link.reopens_in();
                reopen = Some(reopen.map_or(reopens, |r| r.min(reopens)));
                last_reason.get_or_insert_with(|| format!("{name}: circuit open"));
                continue;
            }
            if let Some(throttle) = &link.throttle {
                let token = tokio::select! {
                    token = throttle.acquire(deadline) => token,
                    () = stop.cancelled() => Token::Missed,
                };
                if token != Token::Ready {
                    metrics::rate_limit_wait(name, token == Token::Waited);
                }
                if token == Token::Missed {
                    link.abandon(admission);
                    last_reason.get_or_insert_with(|| format!("{name}: rate limit reached"));
                    continue;
                }
            }
            let valid_for = valid_until.saturating_duration_since(Instant::now());
            let shortest = link.provider.min_validity();
            if valid_for.is_zero() || valid_for < shortest {
                link.abandon(admission);
                last_reason = Some(format!(
                    "{name}: skipped, the code has {} ms of validity left and the shortest it can be told is {} ms",
                    valid_for.as_millis(),
                    shortest.as_millis()
                ));
                continue;
            }
            let sms = &OutgoingSms {
                valid_for,
                ..sms.clone()
            };
            let reference = format!("{}s{}", sms.reference_stem, index + 1);
            let started = Instant::now();
            let mut record = AttemptRecord {
                provider: name.to_owned(),
                chain_step: i32::try_from(index + 1).unwrap_or(i32::MAX),
                client_ref: reference.clone(),
                started_at: self.stamp(started),
                finished_at: self.stamp(started),
                outcome: Outcome::Unknown,
                http_status: None,
                error_code: None,
                error_message: None,
                provider_message_id: None,
                cost: None,
            };
            let answer = match call(link, sms, &reference, deadline, stop).await {
                CallEnd::Interrupted => {
                    link.abandon(admission);
                    record.finished_at = self.stamp(Instant::now());
                    record.error_message = Some("relay stopped during the call".into());
                    records.push(record);
                    return (RoundResult::Interrupted, records);
                }
                CallEnd::OutOfTime => {
                    self.record_health(link, admission, false, None);
                    record.finished_at = self.stamp(Instant::now());
                    record.error_message = Some("no answer before the round's deadline".into());
                    records.push(record);
                    // The request may have reached the provider: as unknown as a timeout.
                    if self.on_unknown == UnknownPolicy::AssumeSent {
                        return (RoundResult::Sent, records);
                    }
                    return (RoundResult::OutOfTime, records);
                }
                CallEnd::Answered(Err(SendError::Unknown {
                    http_status,
                    message,
                })) => {
                    self.resolve_unknown(link, sms, &reference, deadline, http_status, message)
                        .await
                }
                CallEnd::Answered(answer) => answer,
            };
            record.finished_at = self.stamp(Instant::now());
            let healthy = !matches!(
                answer,
                Err(SendError::Provider { .. } | SendError::Unknown { .. })
            );
            let hold = match &answer {
                Err(SendError::Provider { retry_after, .. }) => *retry_after,
                _ => None,
            };
            self.record_health(link, admission, healthy, hold);
            match answer {
                Ok(accepted) => {
                    record.outcome = Outcome::Accepted;
                    record.http_status = accepted.http_status;
                    record.error_message = accepted.note.map(|n| scrub(&n, &sms.body));
                    record.provider_message_id = Some(accepted.provider_message_id);
                    record.cost = accepted
                        .cost
                        .or_else(|| link.prices.cost(sms.recipient.e164(), sms.segments.parts));
                    for cap in &link.caps {
                        cap.accepted(record.cost.as_ref());
                    }
                    records.push(record);
                    return (RoundResult::Sent, records);
                }
                Err(error) => {
                    let (http_status, code, message) = error.parts();
                    let message = scrub(message, &sms.body);
                    let reason = format!(
                        "{} from {name}{}: {message}",
                        error.outcome().as_str(),
                        code.map(|c| format!(" ({c})")).unwrap_or_default()
                    );
                    record.outcome = error.outcome();
                    record.http_status = http_status;
                    record.error_code = code.map(str::to_owned);
                    record.error_message = Some(message);
                    records.push(record);
                    tracing::debug!(message_id = %sms.message_id, %reason, "provider did not accept");
                    match &error {
                        SendError::BadRecipient { .. } => {
                            return (RoundResult::BadRecipient(reason), records);
                        }
                        SendError::Unknown { .. }
                            if self.on_unknown == UnknownPolicy::AssumeSent =>
                        {
                            return (RoundResult::Sent, records);
                        }
                        SendError::Provider {
                            retry_after: Some(wait),
                            ..
                        } => retry_after = retry_after.max(Some(*wait)),
                        _ => {}
                    }
                    last_reason = Some(reason);
                }
            }
        }
        let reason = last_reason.unwrap_or_else(|| "no providers configured".to_owned());
        (
            RoundResult::Exhausted {
                reason,
                retry_after,
                circuits_reopen: reopen.filter(|_| records.is_empty()),
            },
            records,
        )
    }

    fn record_health(
        &self,
        link: &Link,
        admission: Admission,
        healthy: bool,
        hold: Option<Duration>,
    ) {
        let Some(breaker) = &link.breaker else {
            return;
        };
        if breaker.record(admission, healthy, hold) {
            let snapshot = breaker.snapshot();
            tracing::warn!(
                provider = link.provider.name(),
                state = snapshot.state.as_str(),
                consecutive_failures = snapshot.consecutive_failures,
                "circuit changed"
            );
            self.circuits_changed.notify_one();
        }
    }

    /// After an unknown outcome, asks the provider (if it has a status lookup) whether it took
    /// the message: found means accepted, not found means it was not sent (a provider error, so
    /// the next provider is tried without risking a duplicate). Without an answer the outcome
    /// stays unknown and the policy decides.
    async fn resolve_unknown(
        &self,
        link: &Link,
        sms: &OutgoingSms,
        reference: &str,
        deadline: Instant,
        http_status: Option<u16>,
        message: String,
    ) -> Result<Accepted, SendError> {
        let unknown = |message: String| SendError::Unknown {
            http_status,
            message,
        };
        let Some(lookup) = link.provider.lookup(sms, reference) else {
            return Err(unknown(message));
        };
        match tokio::time::timeout_at(deadline, lookup).await {
            Ok(Ok(Lookup::Found(accepted))) => Ok(Accepted {
                note: Some(format!("{message}; the status lookup found the message")),
                ..accepted
            }),
            Ok(Ok(Lookup::NotFound)) => Err(SendError::Provider {
                http_status,
                code: "LOOKUP_NOT_FOUND".into(),
                message: format!("{message}; the status lookup found no such message"),
                retry_after: None,
            }),
            Ok(Err(error)) => Err(unknown(format!(
                "{message}; the status lookup failed: {error}"
            ))),
            Err(_) => Err(unknown(format!(
                "{message}; no time left for a status lookup"
            ))),
        }
    }
}

/// One provider call, bounded by `deadline` and `stop`.
async fn call(
    link: &Link,
    sms: &OutgoingSms,
    reference: &str,
    deadline: Instant,
    stop: &CancellationToken,
) -> CallEnd {
    tokio::select! {
        answer = tokio::time::timeout_at(deadline, link.provider.send(sms, reference)) => match answer {
            Ok(answer) => CallEnd::Answered(answer),
            Err(_elapsed) => CallEnd::OutOfTime,
        },
        () = stop.cancelled() => CallEnd::Interrupted,
    }
}

/// Provider error text goes into `sms_attempts`, `last_error` and logs, so it must not carry the
/// recipient or the code (some providers echo the number back). A number is a run of digits (of any
/// script) joined by single separators (`+880 1712-345678` is one); a number of seven or more
/// digits (a phone number), or of four or more that occur in the message body (the code), becomes
/// `[redacted]`.
pub fn scrub(text: &str, body: &str) -> String {
    let is_separator = |c: char| matches!(c, ' ' | '-' | '.' | '/' | '(' | ')');
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_numeric() {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let (start, mut end, mut j) = (i, i, i);
        while j < chars.len() {
            if chars[j].is_numeric() {
                j += 1;
                end = j;
            } else if is_separator(chars[j]) && chars.get(j + 1).is_some_and(|c| c.is_numeric()) {
                j += 1;
            } else {
                break;
            }
        }
        let digits: String = chars[start..end]
            .iter()
            .filter(|c| c.is_numeric())
            .collect();
        let count = digits.chars().count();
        if count >= 7 || (count >= 4 && body.contains(&digits)) {
            out.push_str("[redacted]");
        } else {
            out.extend(&chars[start..end]);
        }
        i = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::scrub;

    #[test]
    fn scrub_hides_numbers_and_codes_but_keeps_the_rest() {
        let body = "Your verification code is 4829. Valid for 10 minutes.";
        assert_eq!(
            scrub(
                "The 'To' number +8801712345678 is not valid (code 21211, ref 4829, 503)",
                body
            ),
            "The 'To' number +[redacted] is not valid (code 21211, ref [redacted], 503)"
        );
        assert_eq!(
            scrub("invalid To: +880 1712-345678.", body),
            "invalid To: +[redacted]."
        );
        assert_eq!(scrub("নম্বর ০১৭১২৩৪৫৬৭৮ ভুল", body), "নম্বর [redacted] ভুল");
        assert_eq!(
            scrub("retry at 12:30, 2 of 3", body),
            "retry at 12:30, 2 of 3"
        );
        assert_eq!(scrub("", body), "");
        assert_eq!(scrub("no digits", body), "no digits");
    }
}
