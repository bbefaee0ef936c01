//! `[maintenance]`: when each job runs and how long data is kept.

use std::{str::FromStr, time::Duration};

use serde::Deserialize;

use super::Job;
use crate::store::maintenance::Retention;

/// `[maintenance]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MaintenanceSettings {
    /// When `prune` runs: a six-field cron expression (seconds first, UTC); `""` never.
    pub prune: String,
    /// When `scrub` runs.
    pub scrub: String,
    /// When `retention` runs.
    pub retention: String,
    /// When `rematch` runs.
    pub rematch: String,
    /// Messages (with their numbers) are deleted this many days after their enqueue.
    pub message_days: u32,
    /// Provider calls (no numbers; what the reports read) are deleted after this many days.
    pub attempt_days: u32,
    /// Receipts (numbers masked) are deleted this many days after they arrived.
    pub receipt_days: u32,
}

impl Default for MaintenanceSettings {
    fn default() -> Self {
        Self {
            prune: "0 */5 * * * *".into(),
            scrub: "30 * * * * *".into(),
            retention: "0 17 3 * * *".into(),
            rematch: "*/10 * * * * *".into(),
            message_days: 30,
            attempt_days: 400,
            receipt_days: 30,
        }
    }
}

impl MaintenanceSettings {
    /// `job`'s schedule as written (`""`: never).
    pub fn schedule_of(&self, job: Job) -> &str {
        match job {
            Job::Prune => &self.prune,
            Job::Scrub => &self.scrub,
            Job::Retention => &self.retention,
            Job::Rematch => &self.rematch,
        }
    }

    /// `job`'s schedule, `None` when it never runs on its own.
    pub fn schedule(&self, job: Job) -> Option<cron::Schedule> {
        let written = self.schedule_of(job);
        (!written.is_empty()).then(|| cron::Schedule::from_str(written).ok())?
    }

    /// How long each kind of row is kept.
    pub fn retention(&self) -> Retention {
        let days = |d: u32| Duration::from_secs(u64::from(d) * 86_400);
        Retention {
            messages: days(self.message_days),
            attempts: days(self.attempt_days),
            receipts: days(self.receipt_days),
        }
    }

    /// Checks the schedules and the retention periods.
    pub fn validate(&self) -> Result<(), String> {
        for job in Job::ALL {
            let written = self.schedule_of(job);
            if !written.is_empty()
                && let Err(error) = cron::Schedule::from_str(written)
            {
                return Err(format!(
                    "maintenance.{} must be a six-field cron expression (seconds first) or \"\": {error}",
                    job.name()
                ));
            }
        }
        if self.message_days == 0 || self.attempt_days == 0 || self.receipt_days == 0 {
            return Err(
                "maintenance message_days, attempt_days and receipt_days must be at least 1".into(),
            );
        }
        Ok(())
    }
}
