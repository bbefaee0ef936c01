//! Scheduled maintenance: pruning ended counters and dead relays' rows, scrubbing the codes of
//! messages that can no longer be sent, deleting what is past its retention, and matching again
//! the receipts that came before their attempt was recorded.
//!
//! Every relay runs the scheduler. A job's scheduled time (its slot) is taken by whichever relay
//! records it first, and a job runs under a PostgreSQL advisory lock, so it runs once per slot
//! and never twice at once, with no leader of our own making. Every run is recorded in
//! `sms_maintenance_runs` (job, slot, relay, start, end, rows, error).

pub mod settings;

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

pub use settings::MaintenanceSettings;

use crate::store::{self, ResendRule, Store, maintenance};

/// A maintenance job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    /// Budget counters of ended windows, per-recipient windows that ended, circuit rows of relays
    /// gone for ten minutes.
    Prune,
    /// The codes (params) of messages past the longest template validity: nothing of theirs can
    /// be sent any more.
    Scrub,
    /// Messages, provider calls and receipts past their retention.
    Retention,
    /// Receipts stored `unmatched` in the last ten minutes (most came before the relay had
    /// recorded their attempt), matched again.
    Rematch,
}

/// How long an unmatched receipt is matched again.
const REMATCH_WITHIN: Duration = Duration::from_secs(600);

/// How far back a scrub pass looks for codes to scrub (older ones are caught by the retention).
const SCRUB_LOOKBACK: Duration = Duration::from_secs(2 * 86_400);

impl Job {
    /// Every job, in the order `maintain --now` runs them.
    pub const ALL: [Job; 4] = [Job::Prune, Job::Scrub, Job::Retention, Job::Rematch];

    /// The job's name (`sms_maintenance_runs.job`, the config key, the command's argument).
    pub fn name(self) -> &'static str {
        match self {
            Job::Prune => "prune",
            Job::Scrub => "scrub",
            Job::Retention => "retention",
            Job::Rematch => "rematch",
        }
    }

    /// The job named `name`.
    pub fn named(name: &str) -> Option<Job> {
        Job::ALL.into_iter().find(|job| job.name() == name)
    }
}

/// What one run came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ran {
    /// It ran; the rows it changed.
    Done(i64),
    /// Another relay took this slot.
    Taken,
    /// A run of the same job was still going.
    Busy,
    /// It failed (recorded with the error).
    Failed(String),
}

/// What the `rematch` job matches receipts against.
#[derive(Debug, Clone)]
struct Rematch {
    /// Provider names per kind (`sms_receipts.source`): a receipt matches only its kind's attempts.
    kinds: Vec<(&'static str, Vec<String>)>,
    /// How a matched receipt may ask for a resend.
    rule: ResendRule,
}

/// Runs the maintenance jobs of one relay.
pub struct Maintenance {
    store: Store,
    settings: MaintenanceSettings,
    relay_id: String,
    rematch: Option<Rematch>,
}

impl Maintenance {
    /// Maintenance by relay `relay_id` under `settings`.
    pub fn new(settings: &MaintenanceSettings, relay_id: &str, store: Store) -> Self {
        Self {
            store,
            settings: settings.clone(),
            relay_id: relay_id.to_owned(),
            rematch: None,
        }
    }

    /// Has the `rematch` job match receipts of `kinds` (provider names per kind) and resend by
    /// `rule`; without it, the job matches nothing.
    pub fn matching(mut self, kinds: Vec<(&'static str, Vec<String>)>, rule: ResendRule) -> Self {
        self.rematch = Some(Rematch { kinds, rule });
        self
    }

    /// Matches again the unmatched receipts of the last [`REMATCH_WITHIN`]; returns how many
    /// matched now.
    async fn rematch(&self, conn: &mut sqlx::PgConnection) -> store::Result<i64> {
        let mut matched = 0;
        let Some(rematch) = &self.rematch else {
            return Ok(0);
        };
        for (source, names) in &rematch.kinds {
            matched +=
                maintenance::rematch(conn, source, names, REMATCH_WITHIN, rematch.rule).await?;
        }
        Ok(matched)
    }

    /// Runs `job` for `slot`, unless another relay took the slot or a run of it is still going,
    /// and records the run.
    pub async fn run(&self, job: Job, slot: DateTime<Utc>) -> Result<Ran, store::StoreError> {
        let Some(run) = self
            .store
            .take_slot(job.name(), slot, &self.relay_id)
            .await?
        else {
            return Ok(Ran::Taken);
        };
        let retention = self.settings.retention();
        let done = self
            .store
            .with_job_lock(job.name(), async |conn| match job {
                Job::Prune => maintenance::prune(conn).await,
                Job::Scrub => maintenance::scrub(conn, SCRUB_LOOKBACK).await,
                Job::Retention => maintenance::expire(conn, retention).await,
                Job::Rematch => self.rematch(conn).await,
            })
            .await;
        let result = match &done {
            Ok(Some(_)) => "ok",
            Ok(None) => "busy",
            Err(_) => "failed",
        };
        crate::metrics::maintenance_run(job.name(), result);
        let (ran, rows, error) = match done {
            Ok(Some(rows)) => {
                tracing::info!(job = job.name(), rows, "maintenance ran");
                (Ran::Done(rows), Some(rows), None)
            }
            Ok(None) => {
                let busy = "a run of this job was still going";
                (Ran::Busy, None, Some(busy.to_owned()))
            }
            Err(error) => {
                tracing::warn!(job = job.name(), %error, "maintenance failed");
                (
                    Ran::Failed(error.to_string()),
                    None,
                    Some(error.to_string()),
                )
            }
        };
        self.store.finish_run(run, rows, error.as_deref()).await?;
        Ok(ran)
    }

    /// Runs every scheduled job at its times until `cancel` fires.
    pub async fn run_scheduled(self, cancel: CancellationToken) {
        let mut schedules: Vec<(Job, cron::Schedule)> = Job::ALL
            .into_iter()
            .filter_map(|job| Some((job, self.settings.schedule(job)?)))
            .collect();
        for (job, _) in &schedules {
            crate::metrics::maintenance_job(job.name());
        }
        if schedules.is_empty() {
            return;
        }
        loop {
            let Some((job, slot)) = schedules
                .iter_mut()
                .filter_map(|(job, schedule)| Some((*job, schedule.upcoming(Utc).next()?)))
                .min_by_key(|(_, slot)| *slot)
            else {
                return;
            };
            let wait = (slot - Utc::now()).to_std().unwrap_or_default();
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            if let Err(error) = self.run(job, slot).await {
                tracing::warn!(job = job.name(), %error, "cannot record a maintenance run");
            }
        }
    }
}
