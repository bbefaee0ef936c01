//! Writes finished rounds to the database in batches, then frees their in-flight slots.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    sync::{Notify, OwnedSemaphorePermit, mpsc},
    task::JoinSet,
    time::Instant,
};

use foldhash::{HashMap, HashSet};
use uuid::Uuid;

use super::{Held, lock};
use crate::{
    metrics,
    providers::Outcome,
    store::{Disposition, Finish, RoundEnd, Store, StoreError},
};

/// A finished round and the in-flight slot it holds until it is recorded.
pub(super) struct Done {
    pub finish: Finish,
    pub permit: OwnedSemaphorePermit,
}

const MAX_BATCH: usize = 500;
/// Batches written at once: one writer leaves the database idle while the relay waits for each
/// answer; more than the cores can run only queue up in PostgreSQL.
const WRITERS: usize = 3;

/// Records finished rounds and keeps the outbox's indexes lean.
pub(super) struct Completer {
    pub store: Store,
    /// Messages held; recorded ones move from `sending` to `done`.
    pub held: Held,
    /// Woken when a message went back to the queue, so the claim loop recomputes its sleep. (The
    /// holds of recorded messages go back with the next claim, whenever it runs: nothing else
    /// wants a finished message.)
    pub wake: Arc<Notify>,
    pub relay_id: String,
    pub expiry_margin_ms: i64,
    /// How long a batch's write is retried while the database is unreachable (the lease); after
    /// that the messages are given back and sent again.
    pub retry_for: Duration,
    /// Finished messages between two VACUUMs of `sms_queue` (0: leave it to autovacuum).
    pub vacuum_every: u64,
}

impl Completer {
    /// Receives finished rounds until every sender is gone and writes them in batches, up to
    /// [`WRITERS`] statements at once. With no write under way, whatever has arrived is written at
    /// once; while one is under way, the next batch keeps gathering until it is full or a write
    /// ends, so a busy relay commits hundreds of rounds per statement instead of one. A slot is
    /// freed only once its round is recorded, so `max_in_flight` bounds the unrecorded work too: a
    /// recorder that falls behind, or cannot write, stops the relay from claiming more.
    pub(super) async fn run(self, mut rx: mpsc::UnboundedReceiver<Done>) {
        let this = Arc::new(self);
        let vacuum = Arc::new(VacuumPace::default());
        let mut writing = JoinSet::new();
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            if batch.is_empty() && rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
                break;
            }
            let gather = batch.len() < MAX_BATCH && !writing.is_empty();
            let room = writing.len() < WRITERS;
            if gather || !room {
                let space = MAX_BATCH - batch.len();
                tokio::select! {
                    // A write ended: a writer is free, so go round and decide again.
                    Some(_) = writing.join_next() => continue,
                    received = rx.recv_many(&mut batch, space), if space > 0 => {
                        if received > 0 {
                            continue;
                        }
                        // Every sender is gone: write what is left as soon as a writer is free.
                        if !room {
                            writing.join_next().await;
                        }
                    }
                }
            }
            let full = std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH));
            let (this, vacuum) = (this.clone(), vacuum.clone());
            writing.spawn(async move { this.write(full, &vacuum).await });
        }
        writing.join_all().await;
    }

    /// Records one batch, then frees its slots and wakes whoever its outcomes concern.
    async fn write(&self, batch: Vec<Done>, vacuum: &Arc<VacuumPace>) {
        let (finishes, permits): (Vec<Finish>, Vec<OwnedSemaphorePermit>) =
            batch.into_iter().map(|d| (d.finish, d.permit)).unzip();
        let written = record(
            &self.store,
            &finishes,
            &self.relay_id,
            self.expiry_margin_ms,
            self.retry_for,
        )
        .await;
        observe(&finishes, &written);
        {
            // Recorded (or given up on): the next claim gives their holds back.
            let mut held = lock(&self.held);
            for f in &finishes {
                held.recorded(&f.id);
            }
        }
        for f in &finishes {
            log_finish(f);
        }
        drop(permits);
        if finishes.iter().any(|f| f.disposition.reschedules()) {
            self.wake.notify_one();
        }
        if finishes
            .iter()
            .any(|f| f.disposition == Disposition::Release)
        {
            // Released messages are due now: tell the other relays too.
            if let Err(error) = self.store.wake_relays().await {
                tracing::warn!(%error, "cannot notify other relays of released messages");
            }
        }
        if self.vacuum_every > 0 && vacuum.due(finishes.len() as u64, self.vacuum_every) {
            let (store, vacuum) = (self.store.clone(), vacuum.clone());
            tokio::spawn(async move {
                if let Err(error) = store.vacuum_queue().await {
                    tracing::warn!(%error, "VACUUM sms_queue failed; autovacuum will have to do");
                }
                vacuum.running.store(false, Ordering::Release);
            });
        }
    }
}

/// Counts finished messages towards the next VACUUM; at most one runs at a time.
#[derive(Default)]
struct VacuumPace {
    since: AtomicU64,
    running: AtomicBool,
}

impl VacuumPace {
    /// Adds `finished`; true when `every` have finished since the last VACUUM and none is running
    /// (the caller then starts one and clears `running` when it ends).
    fn due(&self, finished: u64, every: u64) -> bool {
        let since = self.since.fetch_add(finished, Ordering::AcqRel) + finished;
        if since < every || self.running.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.since.store(0, Ordering::Release);
        true
    }
}

/// What a recording wrote.
#[derive(Debug, Default)]
pub struct Written {
    /// What became of each message whose round still held it.
    pub ends: Vec<RoundEnd>,
    /// The rounds whose provider calls were written.
    pub with_calls: HashSet<Uuid>,
}

/// Counts what was recorded: the provider calls written, the messages that reached a final
/// state, and how long after its enqueue each message was first offered to a provider and
/// accepted by one. Counts are summed over the batch first: one update per label set.
fn observe(finishes: &[Finish], written: &Written) {
    let ends: HashMap<Uuid, &RoundEnd> = written.ends.iter().map(|e| (e.id, e)).collect();
    let mut calls: HashMap<(&str, &'static str), u64> = HashMap::default();
    let mut finished: HashMap<(&str, &'static str), u64> = HashMap::default();
    let (mut picked_up, mut accepted) = (Vec::new(), Vec::new());
    for f in finishes {
        if written.with_calls.contains(&f.id) {
            for call in &f.attempts {
                *calls
                    .entry((call.provider.as_str(), call.outcome.as_str()))
                    .or_default() += 1;
            }
        }
        // A message sent before this round (a resend) was counted when it was first sent.
        let Some(end) = ends.get(&f.id).filter(|e| !e.sent_before) else {
            continue;
        };
        if end.state != "pending" {
            *finished
                .entry((end.state.as_str(), f.disposition.as_str()))
                .or_default() += 1;
        }
        let since_enqueue =
            |at: chrono::DateTime<chrono::Utc>| (at - end.created_at).as_seconds_f64().max(0.0);
        if let Some(first) = f.attempts.first().filter(|_| f.round == 1) {
            picked_up.push(since_enqueue(first.started_at));
        }
        if let Some(taken) = f.attempts.iter().find(|a| a.outcome == Outcome::Accepted) {
            accepted.push(since_enqueue(taken.finished_at));
        }
    }
    for ((provider, outcome), n) in calls {
        metrics::provider_calls(provider, outcome, n);
    }
    for ((state, round), n) in finished {
        metrics::messages_finished(state, round, n);
    }
    metrics::picked_up(&picked_up);
    metrics::accepted(&accepted);
}

/// Records finished rounds. If the database refuses their data, writes the rounds one by one so a
/// bad round cannot sink the others, and as a last resort records a round's outcome without its
/// attempt rows, so a sent message is never left to be sent again. If the database is unreachable,
/// retries for `retry_for` (the caller holds the rounds' slots meanwhile, so no more is claimed);
/// after that the caller gives the messages back, to be sent again.
pub async fn record(
    store: &Store,
    finishes: &[Finish],
    relay_id: &str,
    expiry_margin_ms: i64,
    retry_for: Duration,
) -> Written {
    let mut written = Written::default();
    let writer = Writer {
        store,
        relay_id,
        expiry_margin_ms,
        give_up: Instant::now() + retry_for,
    };
    match writer.write(finishes).await {
        Ok(ends) => {
            written.ends = ends;
            written.with_calls = finishes.iter().map(|f| f.id).collect();
        }
        Err(error) if error.is_data_error() => {
            for finish in finishes {
                let error = match writer.write(std::slice::from_ref(finish)).await {
                    Ok(ends) => {
                        written.ends.extend(ends);
                        written.with_calls.insert(finish.id);
                        continue;
                    }
                    Err(error) => error,
                };
                tracing::error!(%error, message_id = %finish.id,
                    "the database refused this round's attempt rows; recording its outcome without them");
                let bare = Finish {
                    attempts: Vec::new(),
                    ..finish.clone()
                };
                match writer.write(std::slice::from_ref(&bare)).await {
                    Ok(ends) => written.ends.extend(ends),
                    Err(error) => {
                        tracing::error!(%error, message_id = %finish.id, "could not record this round at all");
                    }
                }
            }
        }
        Err(error) => tracing::error!(%error, batch = finishes.len(),
            "could not record finished sends; they will be sent again"),
    }
    written
}

/// One recording's writes: the same relay, margin and deadline for every try.
struct Writer<'a> {
    store: &'a Store,
    relay_id: &'a str,
    expiry_margin_ms: i64,
    give_up: Instant,
}

impl Writer<'_> {
    /// Tries a write until `give_up`, but only once if the data itself was refused.
    async fn write(&self, finishes: &[Finish]) -> Result<Vec<RoundEnd>, StoreError> {
        let mut pause = Duration::from_millis(100);
        let mut attempt = 1u32;
        loop {
            match self
                .store
                .complete(finishes, self.relay_id, self.expiry_margin_ms, attempt > 1)
                .await
            {
                Ok(ends) => return Ok(ends),
                // A retry that met the rows of a try still committing waits like any other: the
                // next one skips them.
                Err(error)
                    if (error.is_data_error() && !(attempt > 1 && error.is_duplicate()))
                        || Instant::now() + pause >= self.give_up =>
                {
                    return Err(error);
                }
                Err(error) => {
                    tracing::warn!(%error, attempt, batch = finishes.len(), "recording finished sends failed; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                    attempt += 1;
                }
            }
        }
    }
}

fn log_finish(f: &Finish) {
    let reason = f.reason.as_deref().unwrap_or_default();
    match f.disposition {
        Disposition::Sent => tracing::debug!(message_id = %f.id, round = f.round, "sent"),
        Disposition::Failed => {
            tracing::warn!(message_id = %f.id, round = f.round, reason, "message failed")
        }
        Disposition::Expired | Disposition::Cancelled => {
            tracing::info!(message_id = %f.id, round = f.round, disposition = ?f.disposition, reason, "message closed unsent")
        }
        Disposition::Retry | Disposition::Release => {
            tracing::debug!(message_id = %f.id, round = f.round, disposition = ?f.disposition, reason, "message back in the queue")
        }
    }
}
