//! A provider's caps: the most messages it may accept, or the most it may cost in one currency,
//! per UTC hour or day across every relay. The chain skips a provider over a cap, so the next one
//! within its own takes over.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;

use super::{Cost, fields::is_currency};

/// The window a cap counts in: the current UTC hour or day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Per {
    /// The current UTC hour.
    Hour,
    /// The current UTC day.
    Day,
}

impl Per {
    /// `hour` or `day`.
    pub fn as_str(self) -> &'static str {
        match self {
            Per::Hour => "hour",
            Per::Day => "day",
        }
    }
}

/// What a cap counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Measure {
    /// Accepted messages.
    Messages,
    /// The cost of accepted messages in this currency, in millionths (costs in other currencies
    /// do not count).
    Spend(String),
}

/// `daily_spend_cap = { amount = 500.0, currency = "BDT" }` (or `hourly_spend_cap`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SpendCap {
    /// The most the provider's accepted messages may cost per UTC day.
    pub amount: f64,
    /// ISO 4217 code; costs in other currencies do not count.
    pub currency: String,
}

impl SpendCap {
    /// Checks the amount and the currency.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.amount.is_finite() && self.amount > 0.0 && self.amount < 1e9) {
            return Err("daily_spend_cap amount must be above 0 and below 1000000000".into());
        }
        if !is_currency(&self.currency) {
            return Err("daily_spend_cap currency must be an ISO 4217 code such as BDT".into());
        }
        Ok(())
    }
}

/// One cap and how much of its current window is used: the count across relays as last read
/// from the database, plus what this relay's calls got accepted since.
#[derive(Debug)]
pub struct Cap {
    measure: Measure,
    per: Per,
    limit: u64,
    counted: AtomicU64,
    since: AtomicU64,
}

impl Cap {
    /// At most `limit` accepted messages `per` hour or day.
    pub fn messages(limit: u32, per: Per) -> Self {
        Self::new(Measure::Messages, per, u64::from(limit))
    }

    /// At most `cap` spent `per` hour or day.
    pub fn spend(cap: &SpendCap, per: Per) -> Self {
        let micros = (cap.amount * 1_000_000.0).round() as u64;
        Self::new(Measure::Spend(cap.currency.clone()), per, micros)
    }

    fn new(measure: Measure, per: Per, limit: u64) -> Self {
        Self {
            measure,
            per,
            limit,
            counted: AtomicU64::new(0),
            since: AtomicU64::new(0),
        }
    }

    /// The window it counts in.
    pub fn per(&self) -> Per {
        self.per
    }

    /// What this cap counts.
    pub fn measure(&self) -> &Measure {
        &self.measure
    }

    /// The most it allows per window (messages, or millionths of the currency).
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Whether the window's cap is used up (by every relay's use at the last refresh, and this
    /// relay's acceptances since).
    pub fn spent(&self) -> bool {
        self.counted.load(Ordering::Relaxed) + self.since.load(Ordering::Relaxed) >= self.limit
    }

    /// Counts one message this relay's call got accepted, at `cost`.
    pub fn accepted(&self, cost: Option<&Cost>) {
        let used = match (&self.measure, cost) {
            (Measure::Messages, _) => 1,
            (Measure::Spend(currency), Some(cost)) if &cost.currency == currency => {
                u64::try_from(cost.micros).unwrap_or(0)
            }
            (Measure::Spend(_), _) => 0,
        };
        self.since.fetch_add(used, Ordering::Relaxed);
    }

    /// Takes the window's use across relays (messages, or millionths of the currency) as the
    /// database now holds it, this relay's recorded acceptances included.
    pub fn refresh(&self, used_today: u64) {
        self.counted.store(used_today, Ordering::Relaxed);
        self.since.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(micros: i64, currency: &str) -> Cost {
        Cost {
            micros,
            currency: currency.into(),
        }
    }

    #[test]
    fn a_message_cap_counts_messages_from_both_sources() {
        let cap = Cap::messages(3, Per::Day);
        assert!(!cap.spent());
        cap.refresh(2);
        assert!(!cap.spent());
        cap.accepted(None);
        assert!(cap.spent());
        // A new day (or a lower count) frees it again.
        cap.refresh(0);
        assert!(!cap.spent());
    }

    #[test]
    fn a_spend_cap_counts_its_currency_only() {
        let cap = Cap::spend(
            &SpendCap {
                amount: 1.0,
                currency: "BDT".into(),
            },
            Per::Hour,
        );
        cap.accepted(Some(&cost(600_000, "BDT")));
        cap.accepted(Some(&cost(900_000, "USD")));
        cap.accepted(None);
        assert!(!cap.spent());
        cap.accepted(Some(&cost(400_000, "BDT")));
        assert!(cap.spent());
    }
}
