//! A per-provider circuit breaker: after repeated failures the chain skips the provider for a
//! while instead of paying its timeout on every message, then lets one probe call decide.

use std::{
    collections::VecDeque,
    sync::Mutex,
    time::{Duration, SystemTime},
};

use serde::Deserialize;
use tokio::time::Instant;

/// `circuit = { ... }`: when a provider counts as down, and for how long it is skipped.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerSettings {
    /// Consecutive failed calls that open the circuit.
    pub consecutive_failures: u32,
    /// Share of failed calls among the last `window` that opens the circuit.
    pub failure_rate: f64,
    /// Calls the failure rate is measured over (it applies once this many were made).
    pub window: u32,
    /// How long an open circuit skips the provider before one probe call is let through.
    pub open_ms: u64,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_rate: 0.5,
            window: 20,
            open_ms: 30_000,
        }
    }
}

impl BreakerSettings {
    /// `open_ms` as a duration.
    pub fn open_for(&self) -> Duration {
        Duration::from_millis(self.open_ms)
    }

    /// Checks the thresholds and the open period.
    pub fn validate(&self) -> Result<(), String> {
        if self.consecutive_failures == 0 || self.window == 0 {
            return Err("circuit consecutive_failures and window must be at least 1".into());
        }
        if !(self.failure_rate > 0.0 && self.failure_rate <= 1.0) {
            return Err("circuit failure_rate must be in (0, 1]".into());
        }
        if !(100..=3_600_000).contains(&self.open_ms) {
            return Err("circuit open_ms must be 100..=3600000".into());
        }
        Ok(())
    }
}

/// Where a circuit stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Calls flow.
    Closed,
    /// The provider is skipped until the open period ends.
    Open,
    /// One probe call is (or may be) under way; its result closes or reopens the circuit.
    HalfOpen,
}

impl CircuitState {
    /// Every state's name, as [`CircuitState::as_str`] gives it.
    pub const NAMES: [&'static str; 3] = ["closed", "open", "half_open"];

    /// The label stored in `sms_provider_circuits.state`.
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}

/// A breaker's state for display.
#[derive(Debug, Clone, PartialEq)]
pub struct CircuitSnapshot {
    /// Current state.
    pub state: CircuitState,
    /// Failed calls in a row.
    pub consecutive_failures: u32,
    /// Calls in the failure-rate window.
    pub recent_calls: u32,
    /// Failed calls in that window.
    pub recent_failures: u32,
    /// When the circuit last opened (wall clock).
    pub opened_at: Option<SystemTime>,
    /// When an open circuit lets a probe through (wall clock).
    pub retry_at: Option<SystemTime>,
}

/// Permission to call the provider, or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Call it.
    Call,
    /// Call it as the half-open probe: its result decides the circuit.
    Probe,
    /// Skip it: the circuit is open (or a probe is already out).
    Skip,
}

#[derive(Debug)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { probing: bool },
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    consecutive: u32,
    window: VecDeque<bool>,
    opened_at: Option<SystemTime>,
    retry_at: Option<SystemTime>,
}

/// One provider's breaker. Cheap to consult: a short mutex section per call.
#[derive(Debug)]
pub struct Breaker {
    settings: BreakerSettings,
    inner: Mutex<Inner>,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(settings: BreakerSettings) -> Self {
        Self {
            inner: Mutex::new(Inner {
                phase: Phase::Closed,
                consecutive: 0,
                window: VecDeque::with_capacity(settings.window as usize),
                opened_at: None,
                retry_at: None,
            }),
            settings,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a call may go out now. An open circuit whose time is up turns half-open and admits
    /// exactly one probe.
    pub fn admit(&self) -> Admission {
        let mut inner = self.lock();
        match inner.phase {
            Phase::Closed => Admission::Call,
            Phase::Open { until } if Instant::now() < until => Admission::Skip,
            Phase::Open { .. } | Phase::HalfOpen { probing: false } => {
                inner.phase = Phase::HalfOpen { probing: true };
                Admission::Probe
            }
            Phase::HalfOpen { probing: true } => Admission::Skip,
        }
    }

    /// Records a call's result: `healthy` when the provider answered sensibly (accepted, or
    /// refused the recipient), not when it failed, throttled, or left the outcome unknown.
    /// Returns whether the state changed. `hold` keeps an opened circuit open at least that long
    /// (a provider's `Retry-After`).
    pub fn record(&self, admission: Admission, healthy: bool, hold: Option<Duration>) -> bool {
        let mut inner = self.lock();
        let before = inner.state();
        if inner.window.len() == self.settings.window as usize {
            inner.window.pop_front();
        }
        inner.window.push_back(!healthy);
        if healthy {
            inner.consecutive = 0;
            if admission == Admission::Probe || matches!(inner.phase, Phase::HalfOpen { .. }) {
                inner.phase = Phase::Closed;
                inner.window.clear();
                inner.retry_at = None;
            }
        } else {
            inner.consecutive += 1;
            let failures = inner.window.iter().filter(|f| **f).count();
            let rate_tripped = inner.window.len() == self.settings.window as usize
                && failures as f64 >= self.settings.failure_rate * f64::from(self.settings.window);
            let probe_failed = admission == Admission::Probe;
            if probe_failed
                || (matches!(inner.phase, Phase::Closed)
                    && (inner.consecutive >= self.settings.consecutive_failures || rate_tripped))
            {
                let open_for = self.settings.open_for().max(hold.unwrap_or_default());
                inner.phase = Phase::Open {
                    until: Instant::now() + open_for,
                };
                let now = SystemTime::now();
                inner.opened_at = Some(now);
                inner.retry_at = Some(now + open_for);
            }
        }
        before != inner.state()
    }

    /// Gives back a probe admission whose call never finished (the relay stopped): the next call
    /// may probe.
    pub fn abandon(&self, admission: Admission) {
        if admission == Admission::Probe {
            let mut inner = self.lock();
            if matches!(inner.phase, Phase::HalfOpen { probing: true }) {
                inner.phase = Phase::HalfOpen { probing: false };
            }
        }
    }

    /// The breaker's state now.
    pub fn snapshot(&self) -> CircuitSnapshot {
        let inner = self.lock();
        CircuitSnapshot {
            state: inner.state(),
            consecutive_failures: inner.consecutive,
            recent_calls: inner.window.len() as u32,
            recent_failures: inner.window.iter().filter(|f| **f).count() as u32,
            opened_at: inner.opened_at,
            retry_at: inner.retry_at,
        }
    }

    /// When an open circuit will admit a probe (`None` if it is not open).
    pub fn reopens_in(&self) -> Option<Duration> {
        match self.lock().phase {
            Phase::Open { until } => Some(until.saturating_duration_since(Instant::now())),
            _ => None,
        }
    }
}

impl Inner {
    fn state(&self) -> CircuitState {
        match self.phase {
            Phase::Closed => CircuitState::Closed,
            Phase::Open { .. } => CircuitState::Open,
            Phase::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_names_are_each_states_name() {
        let states = [
            CircuitState::Closed,
            CircuitState::Open,
            CircuitState::HalfOpen,
        ];
        assert_eq!(states.map(CircuitState::as_str), CircuitState::NAMES);
    }

    fn breaker(consecutive: u32, rate: f64, window: u32) -> Breaker {
        Breaker::new(BreakerSettings {
            consecutive_failures: consecutive,
            failure_rate: rate,
            window,
            open_ms: 60_000,
        })
    }

    fn fail(b: &Breaker, n: u32) {
        for _ in 0..n {
            let a = b.admit();
            b.record(a, false, None);
        }
    }

    #[test]
    fn consecutive_failures_open_the_circuit_and_a_success_resets_the_count() {
        let b = breaker(3, 1.0, 100);
        fail(&b, 2);
        b.record(b.admit(), true, None);
        fail(&b, 2);
        assert_eq!(b.admit(), Admission::Call);
        b.record(Admission::Call, false, None);
        assert_eq!(b.snapshot().state, CircuitState::Open);
        assert_eq!(b.admit(), Admission::Skip);
        assert!(b.snapshot().retry_at.is_some());
    }

    #[test]
    fn a_failure_rate_over_a_full_window_opens_the_circuit() {
        let b = breaker(100, 0.5, 4);
        for healthy in [false, true, false] {
            b.record(b.admit(), healthy, None);
        }
        assert_eq!(b.snapshot().state, CircuitState::Closed);
        b.record(b.admit(), true, None);
        assert_eq!(
            b.snapshot().state,
            CircuitState::Closed,
            "2 of 4 after a success"
        );
        assert!(b.record(b.admit(), false, None), "3 of 4 failed");
        assert_eq!(b.snapshot().state, CircuitState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_open_period_one_probe_decides() {
        let b = breaker(1, 1.0, 10);
        fail(&b, 1);
        assert_eq!(b.admit(), Admission::Skip);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(b.admit(), Admission::Probe);
        assert_eq!(b.admit(), Admission::Skip, "only one probe at a time");
        b.record(Admission::Probe, false, None);
        assert_eq!(
            b.snapshot().state,
            CircuitState::Open,
            "a failed probe reopens"
        );
        tokio::time::advance(Duration::from_secs(61)).await;
        let probe = b.admit();
        assert_eq!(probe, Admission::Probe);
        b.abandon(probe);
        assert_eq!(
            b.admit(),
            Admission::Probe,
            "an abandoned probe frees the slot"
        );
        assert!(b.record(Admission::Probe, true, None));
        assert_eq!(b.snapshot().state, CircuitState::Closed);
        assert_eq!(b.admit(), Admission::Call);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_holds_the_circuit_open_longer() {
        let b = breaker(1, 1.0, 10);
        b.record(b.admit(), false, Some(Duration::from_secs(300)));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(b.admit(), Admission::Skip);
        assert!(b.reopens_in().unwrap() > Duration::from_secs(200));
    }
}
