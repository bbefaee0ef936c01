//! The retry schedule: exponential, capped, jittered, and bounded by a number of rounds.

use std::time::Duration;

use rand::{Rng, RngExt};
use serde::Deserialize;

/// When to try a message again after a round in which every provider failed.
///
/// Round `n` (1-based) that failed is followed by a wait of
/// `min(cap, base · factor^(n-1)) · (1 - jitter · u)` with `u` uniform in `[0, 1)`, but never less
/// than a provider's `Retry-After` (itself capped). After `max_rounds` rounds the message fails.
/// The relay also ends a message `expired` when the wait would reach past its validity.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// First wait, in milliseconds.
    pub base_ms: u64,
    /// Growth per round.
    pub factor: f64,
    /// Longest wait, in milliseconds.
    pub cap_ms: u64,
    /// Share of the wait that is randomised away (0 = none, 1 = full jitter).
    pub jitter: f64,
    /// Rounds before a message fails for good.
    pub max_rounds: u32,
}

impl Default for RetryPolicy {
    /// 1 s, 2 s, 4 s … capped at 30 s, half jitter, 8 rounds: fits well inside a 5-minute code.
    fn default() -> Self {
        Self {
            base_ms: 1_000,
            factor: 2.0,
            cap_ms: 30_000,
            jitter: 0.5,
            max_rounds: 8,
        }
    }
}

impl RetryPolicy {
    /// Rejects settings that make no schedule.
    pub fn validate(&self) -> Result<(), String> {
        if self.base_ms == 0 || self.cap_ms < self.base_ms {
            return Err("retry: need 0 < base_ms <= cap_ms".into());
        }
        if !(self.factor >= 1.0 && self.factor.is_finite()) {
            return Err("retry: factor must be >= 1".into());
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err("retry: jitter must be in 0..=1".into());
        }
        if !(1..=100).contains(&self.max_rounds) {
            return Err("retry: max_rounds must be 1..=100".into());
        }
        Ok(())
    }

    /// The largest wait after failed round `round`, before jitter.
    pub fn ceiling(&self, round: u32) -> Duration {
        let exponent = i32::try_from(round.saturating_sub(1)).unwrap_or(i32::MAX);
        let grown = self.base_ms as f64 * self.factor.powi(exponent);
        Duration::from_millis(grown.min(self.cap_ms as f64) as u64)
    }

    /// The wait after failed round `round`; `retry_after` is what a provider asked for.
    pub fn delay<R: Rng + ?Sized>(
        &self,
        round: u32,
        retry_after: Option<Duration>,
        rng: &mut R,
    ) -> Duration {
        let ceiling = self.ceiling(round).as_secs_f64();
        let u: f64 = rng.random();
        let jittered = ceiling * (1.0 - self.jitter * u);
        let asked = retry_after
            .unwrap_or_default()
            .min(Duration::from_millis(self.cap_ms))
            .as_secs_f64();
        Duration::from_secs_f64(jittered.max(asked))
    }

    /// Whether a message that has just failed round `round` has used all its rounds.
    pub fn exhausted(&self, round: u32) -> bool {
        round >= self.max_rounds
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{SeedableRng, rngs::StdRng};

    fn policy() -> impl Strategy<Value = RetryPolicy> {
        (
            1u64..5_000,
            1.0f64..4.0,
            0u64..120_000,
            0.0f64..=1.0,
            1u32..20,
        )
            .prop_map(|(base_ms, factor, extra, jitter, max_rounds)| RetryPolicy {
                base_ms,
                factor,
                cap_ms: base_ms + extra,
                jitter,
                max_rounds,
            })
    }

    #[test]
    fn default_schedule_doubles_then_caps() {
        let p = RetryPolicy::default();
        let ceilings: Vec<u64> = (1..=7).map(|r| p.ceiling(r).as_millis() as u64).collect();
        assert_eq!(
            ceilings,
            [1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000]
        );
        assert!(p.validate().is_ok());
    }

    #[test]
    fn no_jitter_gives_the_ceiling() {
        let p = RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::default()
        };
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(p.delay(3, None, &mut rng), Duration::from_secs(4));
    }

    #[test]
    fn rejects_nonsense() {
        for bad in [
            RetryPolicy {
                base_ms: 0,
                ..RetryPolicy::default()
            },
            RetryPolicy {
                cap_ms: 10,
                ..RetryPolicy::default()
            },
            RetryPolicy {
                factor: 0.5,
                ..RetryPolicy::default()
            },
            RetryPolicy {
                jitter: 1.5,
                ..RetryPolicy::default()
            },
            RetryPolicy {
                max_rounds: 0,
                ..RetryPolicy::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn delay_stays_between_the_jitter_floor_and_the_cap(p in policy(), round in 1u32..40, seed: u64) {
            let mut rng = StdRng::seed_from_u64(seed);
            let d = p.delay(round, None, &mut rng).as_secs_f64();
            let ceiling = p.ceiling(round).as_secs_f64();
            prop_assert!(d <= ceiling + 1e-9);
            prop_assert!(d <= p.cap_ms as f64 / 1000.0 + 1e-9);
            prop_assert!(d >= ceiling * (1.0 - p.jitter) - 1e-9);
        }

        #[test]
        fn ceiling_never_shrinks(p in policy(), round in 1u32..60) {
            prop_assert!(p.ceiling(round + 1) >= p.ceiling(round));
        }

        #[test]
        fn retry_after_is_honoured_up_to_the_cap(p in policy(), round in 1u32..20, wait_ms in 0u64..300_000, seed: u64) {
            let mut rng = StdRng::seed_from_u64(seed);
            let d = p.delay(round, Some(Duration::from_millis(wait_ms)), &mut rng);
            prop_assert!(d.as_secs_f64() + 1e-9 >= wait_ms.min(p.cap_ms) as f64 / 1000.0);
        }

        #[test]
        fn same_seed_same_delay(p in policy(), round in 1u32..20, seed: u64) {
            let a = p.delay(round, None, &mut StdRng::seed_from_u64(seed));
            let b = p.delay(round, None, &mut StdRng::seed_from_u64(seed));
            prop_assert_eq!(a, b);
        }

        #[test]
        fn gives_up_exactly_at_max_rounds(p in policy()) {
            prop_assert!(!p.exhausted(p.max_rounds - 1));
            prop_assert!(p.exhausted(p.max_rounds));
        }
    }
}
