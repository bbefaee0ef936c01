//! A provider's daily cap: the most messages it may accept per UTC day across every relay. The
//! chain skips a provider over its cap, so the next one within its own takes over.

use std::sync::atomic::{AtomicU64, Ordering};

/// One provider's cap and how much of today's it has used: the count across relays as last read
/// from the database, plus what this relay's calls accepted since.
#[derive(Debug)]
pub struct DailyCap {
    limit: u64,
    counted: AtomicU64,
    since: AtomicU64,
}

impl DailyCap {
    /// A cap of `limit` accepted messages per UTC day, none used yet.
    pub fn new(limit: u32) -> Self {
        Self {
            limit: u64::from(limit),
            counted: AtomicU64::new(0),
            since: AtomicU64::new(0),
        }
    }

    /// Whether today's cap is used up (by every relay's count at the last refresh, and this
    /// relay's acceptances since).
    pub fn spent(&self) -> bool {
        self.counted.load(Ordering::Relaxed) + self.since.load(Ordering::Relaxed) >= self.limit
    }

    /// Counts one message this relay's call got accepted.
    pub fn accepted(&self) {
        self.since.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes today's count across relays, as the database now holds it (this relay's recorded
    /// acceptances included).
    pub fn refresh(&self, accepted_today: u64) {
        self.counted.store(accepted_today, Ordering::Relaxed);
        self.since.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spent_at_the_limit_counting_both_sources() {
        let cap = DailyCap::new(3);
        assert!(!cap.spent());
        cap.refresh(2);
        assert!(!cap.spent());
        cap.accepted();
        assert!(cap.spent());
        // A new day (or a lower count) frees it again.
        cap.refresh(0);
        assert!(!cap.spent());
    }
}
