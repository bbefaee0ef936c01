//! `[relay]`: how a relay claims, sends and shuts down.

use std::time::Duration;

use serde::Deserialize;

use crate::{providers::UnknownPolicy, store::MAX_RELAY_ID_LEN};

/// `[relay]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RelaySettings {
    /// This relay's name in `sms_outbox.claimed_by`, `sms_attempts.relay_id` and (behind
    /// `sms-relay `) its connection's `application_name`; default host-pid. Unique per live relay.
    pub relay_id: Option<String>,
    /// Most messages claimed by one statement.
    pub batch_size: u32,
    /// Most messages claimed but not yet recorded, across all sends.
    pub max_in_flight: u32,
    /// Most entries of the server's shared lock table this relay's holds fill: one per group of
    /// consecutive messages (by seq) it is sending. The relay refuses to start if this is more than
    /// a quarter of that table, and claims less while it is full. Unset: that quarter.
    pub max_locks: Option<u32>,
    /// The longest one round through the chain may take, and how long a relay cut off from the
    /// database (lost machine, partition) keeps its claims before the server drops them. A relay
    /// process that dies gives its claims up at once.
    pub lease_ms: u64,
    /// Longest sleep without a NOTIFY (also the idle heartbeat).
    pub poll_interval_ms: u64,
    /// A message with less validity than this left is not sent (the code would arrive stale).
    pub expiry_margin_ms: u64,
    /// On SIGTERM, how long in-flight sends may take before they are released.
    pub shutdown_grace_ms: u64,
    /// Finished messages between two `VACUUM sms_queue` runs by this relay, which keep the claim
    /// index free of dead entries after bursts; 0 leaves it to autovacuum.
    pub vacuum_every: u64,
    /// After an `unknown` outcome that no status lookup resolved: `fall_over` to the next
    /// provider (the same code twice beats no code) or `assume_sent`.
    pub on_unknown: UnknownPolicy,
}

/// The share of PostgreSQL's lock table one relay may fill with holds: the auth backend, other
/// relays and everything else on the server need the rest.
pub(crate) const LOCK_TABLE_SHARE: i64 = 4;

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            relay_id: None,
            batch_size: 500,
            max_in_flight: 3_000,
            max_locks: None,
            lease_ms: 60_000,
            poll_interval_ms: 1_000,
            expiry_margin_ms: 3_000,
            shutdown_grace_ms: 10_000,
            vacuum_every: 20_000,
            on_unknown: UnknownPolicy::FallOver,
        }
    }
}

impl RelaySettings {
    /// The relay id, defaulting to `<hostname>-<pid>`.
    pub fn relay_id(&self) -> String {
        self.relay_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname").unwrap_or_else(|_| "relay".into());
            let host: String = host
                .trim()
                .chars()
                .filter(|c| c.is_ascii_graphic())
                .take(MAX_RELAY_ID_LEN - 11)
                .collect();
            format!("{host}-{}", std::process::id())
        })
    }

    /// `lease_ms` as a duration.
    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }

    /// `poll_interval_ms` as a duration.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }

    /// `shutdown_grace_ms` as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    /// The most lock-table entries this relay's holds may fill on a server whose lock table has
    /// `lock_table` slots: the setting, or `None` if it is more than a quarter of the table; unset,
    /// that quarter (at least one).
    pub fn max_locks_for(&self, lock_table: i64) -> Option<u32> {
        let quarter = u32::try_from((lock_table / LOCK_TABLE_SHARE).max(1)).unwrap_or(u32::MAX);
        match self.max_locks {
            Some(set) => (set <= quarter).then_some(set),
            None => Some(quarter),
        }
    }

    /// Checks ranges.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=1_000).contains(&self.batch_size) {
            return Err("relay.batch_size must be 1..=1000".into());
        }
        if self.max_in_flight < self.batch_size {
            return Err("relay.max_in_flight must be at least relay.batch_size".into());
        }
        if self.max_locks == Some(0) {
            return Err("relay.max_locks must be at least 1".into());
        }
        if let Some(id) = &self.relay_id
            && (id.is_empty()
                || id.len() > MAX_RELAY_ID_LEN
                || !id.chars().all(|c| c.is_ascii_graphic()))
        {
            return Err(format!(
                "relay.relay_id must be 1 to {MAX_RELAY_ID_LEN} printable ASCII characters without spaces"
            ));
        }
        if self.lease_ms < 10_000 {
            return Err("relay.lease_ms must be at least 10000 (a round must end, and be recorded, inside it)".into());
        }
        if !(10..=30_000).contains(&self.poll_interval_ms) {
            return Err(
                "relay.poll_interval_ms must be 10..=30000 (it is also the idle heartbeat)".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_locks_fits_a_quarter_of_the_lock_table() {
        // (setting, lock table slots) → entries allowed
        let table = [
            (None, 6_400, Some(1_600)),
            (None, 4_000, Some(1_000)),
            (None, 2, Some(1)),
            (Some(200), 6_400, Some(200)),
            (Some(1_600), 6_400, Some(1_600)),
            (Some(1_601), 6_400, None),
        ];
        for (max_locks, lock_table, allowed) in table {
            let settings = RelaySettings {
                max_locks,
                ..RelaySettings::default()
            };
            assert_eq!(
                settings.max_locks_for(lock_table),
                allowed,
                "{max_locks:?} with {lock_table} locks"
            );
        }
    }
}
