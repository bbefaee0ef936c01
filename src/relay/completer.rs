//! Writes finished rounds to the database in batches, then frees their in-flight slots.

use std::{sync::Arc, time::Duration};

use tokio::sync::{Notify, OwnedSemaphorePermit, mpsc};

use crate::store::{Finish, Store};

/// A finished round and the in-flight slot it holds until it is recorded.
pub(super) struct Done {
    pub finish: Finish,
    pub permit: OwnedSemaphorePermit,
}

const MAX_BATCH: usize = 500;
const WRITE_TRIES: u32 = 8;

/// Receives finished rounds until every sender is gone, writing whatever has arrived in one
/// statement. A slot is freed only once its round is recorded, so `max_in_flight` bounds the
/// unrecorded work too. Wakes the claim loop when a message went back to the queue.
pub(super) async fn run(
    store: Store,
    mut rx: mpsc::UnboundedReceiver<Done>,
    wake: Arc<Notify>,
    relay_id: String,
    expiry_margin_ms: i64,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (finishes, permits): (Vec<Finish>, Vec<OwnedSemaphorePermit>) =
            batch.drain(..).map(|d| (d.finish, d.permit)).unzip();
        write(&store, &finishes, &relay_id, expiry_margin_ms).await;
        for f in finishes.iter().filter(|f| f.reason.is_some()) {
            tracing::info!(message_id = %f.id, round = f.round, disposition = ?f.disposition,
                reason = f.reason.as_deref(), "message not sent this round");
        }
        drop(permits);
        if finishes.iter().any(|f| f.disposition.reschedules()) {
            wake.notify_one();
        }
    }
}

async fn write(store: &Store, finishes: &[Finish], relay_id: &str, expiry_margin_ms: i64) {
    let mut pause = Duration::from_millis(100);
    for attempt in 1..=WRITE_TRIES {
        match store.complete(finishes, relay_id, expiry_margin_ms).await {
            Ok(()) => return,
            Err(error) if attempt < WRITE_TRIES => {
                tracing::warn!(%error, attempt, batch = finishes.len(), "recording finished sends failed; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Err(error) => {
                tracing::error!(%error, batch = finishes.len(),
                    "could not record finished sends; their leases will run out and they will be sent again");
            }
        }
    }
}
