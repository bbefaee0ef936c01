//! Walking the configured providers in order for one send round.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Cost, Outcome, OutgoingSms, Provider, SendError};

/// A configured price: per billed part, in `currency`.
#[derive(Debug, Clone, PartialEq)]
pub struct Price {
    /// Price of one part in millionths of the currency unit.
    pub micros_per_part: i64,
    /// ISO 4217 code.
    pub currency: String,
}

impl Price {
    fn cost(&self, parts: u16) -> Cost {
        Cost {
            micros: self.micros_per_part * i64::from(parts),
            currency: self.currency.clone(),
        }
    }
}

struct Link {
    provider: Arc<dyn Provider>,
    price: Option<Price>,
}

/// The ordered providers a message is offered to.
pub struct ProviderChain {
    links: Vec<Link>,
}

/// What one provider call produced, ready for `sms_attempts`.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    /// Provider name.
    pub provider: String,
    /// 1-based position in this round's walk.
    pub chain_step: i32,
    /// When the call started.
    pub started_at: DateTime<Utc>,
    /// When the answer (or the failure) came.
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
    /// A provider accepted the message.
    Sent,
    /// A provider said the recipient is bad; the chain stopped there.
    BadRecipient(String),
    /// Every provider failed; the message may be retried later.
    Exhausted {
        /// The last provider's error.
        reason: String,
        /// The longest wait any provider asked for.
        retry_after: Option<Duration>,
    },
    /// The round's deadline (the code's validity or the claim's lease) came before an answer, or
    /// before the next provider could be tried.
    OutOfTime,
    /// The relay was told to stop during a provider call; that call's outcome is unknown.
    Interrupted,
}

impl ProviderChain {
    /// A chain of providers with their optional configured prices, in the order given.
    pub fn new(providers: Vec<(Arc<dyn Provider>, Option<Price>)>) -> Self {
        let links = providers
            .into_iter()
            .map(|(provider, price)| Link { provider, price })
            .collect();
        Self { links }
    }

    /// The providers' names in order.
    pub fn names(&self) -> Vec<&str> {
        self.links.iter().map(|l| l.provider.name()).collect()
    }

    /// Offers `sms` to each provider in turn until one accepts it, one rejects the recipient, or
    /// the list runs out. No call runs past `deadline`; a call still unanswered then, or cut short
    /// by `stop`, is recorded as ambiguous. Every call yields one [`AttemptRecord`].
    pub async fn send(
        &self,
        sms: &OutgoingSms,
        deadline: Instant,
        stop: &CancellationToken,
    ) -> (RoundResult, Vec<AttemptRecord>) {
        let mut records = Vec::with_capacity(1);
        let mut last_reason: Option<String> = None;
        let mut retry_after: Option<Duration> = None;
        for (index, link) in self.links.iter().enumerate() {
            if Instant::now() >= deadline {
                return (RoundResult::OutOfTime, records);
            }
            let started_at = Utc::now();
            let answer = tokio::select! {
                answer = tokio::time::timeout_at(deadline, link.provider.send(sms)) => Some(answer),
                () = stop.cancelled() => None,
            };
            let mut record = AttemptRecord {
                provider: link.provider.name().to_owned(),
                chain_step: i32::try_from(index + 1).unwrap_or(i32::MAX),
                started_at,
                finished_at: Utc::now(),
                outcome: Outcome::Ambiguous,
                http_status: None,
                error_code: None,
                error_message: None,
                provider_message_id: None,
                cost: None,
            };
            let answer = match answer {
                None => {
                    record.error_message = Some("relay stopped during the call".into());
                    records.push(record);
                    return (RoundResult::Interrupted, records);
                }
                Some(Err(_elapsed)) => {
                    record.error_message = Some("no answer before the round's deadline".into());
                    records.push(record);
                    return (RoundResult::OutOfTime, records);
                }
                Some(Ok(answer)) => answer,
            };
            match answer {
                Ok(accepted) => {
                    record.outcome = Outcome::Accepted;
                    record.http_status = accepted.http_status;
                    record.provider_message_id = Some(accepted.provider_message_id);
                    record.cost = accepted
                        .cost
                        .or_else(|| link.price.as_ref().map(|p| p.cost(sms.segments.parts)));
                    records.push(record);
                    return (RoundResult::Sent, records);
                }
                Err(error) => {
                    let (http_status, code, message) = error.parts();
                    let message = scrub(message, &sms.body);
                    let reason = format!(
                        "{} from {}{}: {message}",
                        error.outcome().as_str(),
                        link.provider.name(),
                        code.map(|c| format!(" ({c})")).unwrap_or_default()
                    );
                    record.outcome = error.outcome();
                    record.http_status = http_status;
                    record.error_code = code.map(str::to_owned);
                    record.error_message = Some(message);
                    records.push(record);
                    tracing::debug!(message_id = %sms.message_id, %reason, "provider did not accept");
                    if !error.is_retryable() {
                        return (RoundResult::BadRecipient(reason), records);
                    }
                    if let SendError::Provider {
                        retry_after: Some(wait),
                        ..
                    } = &error
                    {
                        retry_after = retry_after.max(Some(*wait));
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
            },
            records,
        )
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
