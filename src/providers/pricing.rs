//! Prices: the configured per-part price table, and providers' reported amounts.

use serde::Deserialize;

use super::{Cost, fields::is_currency};

/// `prices = [{ prefix = "+880", per_part = 0.35, currency = "BDT" }]`: the price of one SMS part
/// to destinations starting with `prefix` (the longest matching prefix wins; `""` matches all).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PriceRule {
    /// E.164 prefix, with or without `+`.
    #[serde(default)]
    pub prefix: String,
    /// Price of one part.
    pub per_part: f64,
    /// ISO 4217 code.
    pub currency: String,
}

impl PriceRule {
    /// Checks the amount, the currency and the prefix.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.per_part.is_finite() && self.per_part >= 0.0 && self.per_part < 1e6) {
            return Err("prices: per_part must be a non-negative amount below 1000000".into());
        }
        if !is_currency(&self.currency) {
            return Err("prices: currency must be an ISO 4217 code such as BDT".into());
        }
        if !self
            .prefix
            .trim_start_matches('+')
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            return Err("prices: prefix must be digits, optionally after a +".into());
        }
        Ok(())
    }
}

/// A provider's configured prices, longest destination prefix first.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    rules: Vec<(String, i64, String)>,
}

impl PriceTable {
    /// Builds the table from `prices = [...]`.
    pub fn new(rules: &[PriceRule]) -> Self {
        let mut rules: Vec<(String, i64, String)> = rules
            .iter()
            .map(|r| {
                (
                    r.prefix.trim_start_matches('+').to_owned(),
                    (r.per_part * 1_000_000.0).round() as i64,
                    r.currency.clone(),
                )
            })
            .collect();
        rules.sort_by_key(|r| std::cmp::Reverse(r.0.len()));
        Self { rules }
    }

    /// The configured cost of `parts` parts to `e164`, if a rule matches.
    pub fn cost(&self, e164: &str, parts: u16) -> Option<Cost> {
        let digits = e164.trim_start_matches('+');
        self.rules
            .iter()
            .find(|(prefix, _, _)| digits.starts_with(prefix.as_str()))
            .map(|(_, micros, currency)| Cost {
                micros: micros * i64::from(parts),
                currency: currency.clone(),
            })
    }
}

/// A provider's decimal amount (`"0.03330000"`, Twilio's negative `"-0.07510"`) in millionths,
/// as a positive number. `None` for anything that is not a finite decimal.
pub fn parse_micros(amount: &str) -> Option<i64> {
    let value: f64 = amount.trim().parse().ok()?;
    (value.is_finite() && value.abs() < 1e9).then(|| (value.abs() * 1_000_000.0).round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(prefix: &str, per_part: f64, currency: &str) -> PriceRule {
        PriceRule {
            prefix: prefix.into(),
            per_part,
            currency: currency.into(),
        }
    }

    #[test]
    fn the_longest_prefix_wins_and_parts_multiply() {
        let table = PriceTable::new(&[
            rule("", 0.05, "USD"),
            rule("+880", 0.35, "BDT"),
            rule("88017", 0.30, "BDT"),
        ]);
        let gp = table.cost("+8801712345678", 2).unwrap();
        assert_eq!((gp.micros, gp.currency.as_str()), (600_000, "BDT"));
        let robi = table.cost("+8801812345678", 1).unwrap();
        assert_eq!(robi.micros, 350_000);
        let uk = table.cost("+447400123456", 3).unwrap();
        assert_eq!((uk.micros, uk.currency.as_str()), (150_000, "USD"));
        assert!(
            PriceTable::new(&[rule("880", 0.3, "BDT")])
                .cost("+447400123456", 1)
                .is_none()
        );
    }

    #[test]
    fn reported_amounts_parse_to_positive_micros() {
        assert_eq!(parse_micros("0.03330000"), Some(33_300));
        assert_eq!(parse_micros("-0.07510"), Some(75_100));
        assert_eq!(parse_micros("0.2500"), Some(250_000));
        assert_eq!(parse_micros("n/a"), None);
        assert_eq!(parse_micros("NaN"), None);
    }
}
