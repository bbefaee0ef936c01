//! The database's clock, read through the relay's monotonic one.
//!
//! Every time the database compares (no-receipt resends, the unknown window, time to deliver)
//! must come from one clock. A relay reads the database's time once, next to a monotonic instant,
//! and stamps attempts as that time plus the monotonic time elapsed since: wall-clock steps and
//! a skewed host clock change nothing, and durations stay exact.

use chrono::{DateTime, TimeDelta, Utc};
use tokio::time::Instant;

/// Maps monotonic instants to the database's time.
#[derive(Debug, Clone, Copy)]
pub struct DbClock {
    anchor: Instant,
    db_time: DateTime<Utc>,
}

impl DbClock {
    /// A clock on which `anchor` is `db_time`.
    pub fn new(anchor: Instant, db_time: DateTime<Utc>) -> Self {
        Self { anchor, db_time }
    }

    /// The database's time at `instant`.
    pub fn at(&self, instant: Instant) -> DateTime<Utc> {
        let delta = |d: std::time::Duration| TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX);
        if instant >= self.anchor {
            self.db_time + delta(instant - self.anchor)
        } else {
            self.db_time - delta(self.anchor - instant)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn instants_map_around_the_anchor_by_their_monotonic_distance() {
        let anchor = Instant::now();
        let db_time = DateTime::parse_from_rfc3339("2026-11-29T10:00:00Z")
            .unwrap()
            .to_utc();
        let clock = DbClock::new(anchor, db_time);
        assert_eq!(clock.at(anchor), db_time);
        assert_eq!(
            clock.at(anchor + Duration::from_millis(1_500)),
            db_time + TimeDelta::milliseconds(1_500)
        );
        assert_eq!(
            clock.at(anchor - Duration::from_millis(250)),
            db_time - TimeDelta::milliseconds(250)
        );
    }
}
