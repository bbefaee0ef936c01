//! Writes finished rounds to the database in batches, then frees their in-flight slots.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::sync::{Notify, OwnedSemaphorePermit, mpsc};

use super::{Held, lock};
use crate::store::{Disposition, Finish, Store, StoreError};

/// A finished round and the in-flight slot it holds until it is recorded.
pub(super) struct Done {
    pub finish: Finish,
    pub permit: OwnedSemaphorePermit,
}

const MAX_BATCH: usize = 500;
const WRITE_TRIES: u32 = 8;

/// Records finished rounds and keeps the outbox's indexes lean.
pub(super) struct Completer {
    pub store: Store,
    /// Messages claimed and not yet recorded; recorded ones leave it.
    pub held: Held,
    /// Woken when a message went back to the queue, so the claim loop recomputes its sleep.
    pub wake: Arc<Notify>,
    pub relay_id: String,
    pub expiry_margin_ms: i64,
    /// Finished messages between two VACUUMs of `sms_outbox` (0: leave it to autovacuum).
    pub vacuum_every: u64,
}

impl Completer {
    /// Receives finished rounds until every sender is gone, writing whatever has arrived in one
    /// statement. A slot is freed only once its round is recorded, so `max_in_flight` bounds the
    /// unrecorded work too.
    pub(super) async fn run(self, mut rx: mpsc::UnboundedReceiver<Done>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let vacuuming = Arc::new(AtomicBool::new(false));
        let mut since_vacuum = 0u64;
        while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
            let (finishes, permits): (Vec<Finish>, Vec<OwnedSemaphorePermit>) =
                batch.drain(..).map(|d| (d.finish, d.permit)).unzip();
            record(
                &self.store,
                &finishes,
                &self.relay_id,
                self.expiry_margin_ms,
            )
            .await;
            {
                let mut held = lock(&self.held);
                for f in &finishes {
                    held.remove(&f.id);
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
            since_vacuum += finishes.len() as u64;
            if self.vacuum_every > 0
                && since_vacuum >= self.vacuum_every
                && !vacuuming.swap(true, Ordering::AcqRel)
            {
                since_vacuum = 0;
                let (store, vacuuming) = (self.store.clone(), vacuuming.clone());
                tokio::spawn(async move {
                    if let Err(error) = store.vacuum_outbox().await {
                        tracing::warn!(%error, "VACUUM sms_outbox failed; autovacuum will have to do");
                    }
                    vacuuming.store(false, Ordering::Release);
                });
            }
        }
    }
}

/// Records finished rounds. If the database refuses their data, writes the rounds one by one so a
/// bad round cannot sink the others, and as a last resort records a round's outcome without its
/// attempt rows, so a sent message is never left to be sent again. If the database is
/// unreachable, retries for a while; after that the leases release the messages.
pub async fn record(store: &Store, finishes: &[Finish], relay_id: &str, expiry_margin_ms: i64) {
    match write_with_retries(store, finishes, relay_id, expiry_margin_ms).await {
        Ok(()) => {}
        Err(error) if error.is_data_error() => {
            for finish in finishes {
                let Err(error) = write_with_retries(
                    store,
                    std::slice::from_ref(finish),
                    relay_id,
                    expiry_margin_ms,
                )
                .await
                else {
                    continue;
                };
                tracing::error!(%error, message_id = %finish.id,
                    "the database refused this round's attempt rows; recording its outcome without them");
                let bare = Finish {
                    attempts: Vec::new(),
                    ..finish.clone()
                };
                if let Err(error) = write_with_retries(
                    store,
                    std::slice::from_ref(&bare),
                    relay_id,
                    expiry_margin_ms,
                )
                .await
                {
                    tracing::error!(%error, message_id = %finish.id, "could not record this round at all");
                }
            }
        }
        Err(error) => tracing::error!(%error, batch = finishes.len(),
            "could not record finished sends; their leases will run out and they will be sent again"),
    }
}

/// Tries a write up to `WRITE_TRIES` times, but only once if the data itself was refused.
async fn write_with_retries(
    store: &Store,
    finishes: &[Finish],
    relay_id: &str,
    expiry_margin_ms: i64,
) -> Result<(), StoreError> {
    let mut pause = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        match store.complete(finishes, relay_id, expiry_margin_ms).await {
            Ok(()) => return Ok(()),
            Err(error) if error.is_data_error() || attempt == WRITE_TRIES => return Err(error),
            Err(error) => {
                tracing::warn!(%error, attempt, batch = finishes.len(), "recording finished sends failed; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
                attempt += 1;
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
