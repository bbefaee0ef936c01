//! The relay loop: claim due messages in batches, send them concurrently (bounded), record the
//! outcomes in batches, sleep until a NOTIFY, the next due time or the poll interval.
//!
//! No transaction or row lock is held across a provider call, and a claim writes nothing: the
//! relay's claim connection holds each claimed message (a session advisory lock) until its round
//! is recorded, and the completion is fenced on the round number. When a relay process dies, its
//! claim connection ends and PostgreSQL drops its holds at once; the other relays send those
//! messages on their next claim. A relay whose machine or network is lost is cut off by the TCP
//! keepalive on its claim connection once the lease has passed.

pub mod backoff;
mod completer;
mod dispatch;
pub mod settings;

use std::{
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex},
    time::Duration,
};

use foldhash::HashMap;
use futures_util::{FutureExt, StreamExt, stream::FuturesUnordered};

use sqlx::{
    PgPool,
    postgres::{PgListener, PgPoolOptions},
};
use tokio::{
    sync::{Notify, Semaphore, mpsc},
    time::Instant,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use uuid::Uuid;

pub use backoff::RetryPolicy;
pub use completer::record;
pub use settings::RelaySettings;

use crate::{
    providers::ProviderChain,
    store::{Ahead, Claim, ClaimedMessage, Store, WAKEUP_CHANNEL, presence_name},
};

/// The messages this relay holds: claimed and not yet recorded, or recorded and not yet given back.
#[derive(Debug, Default)]
pub(crate) struct Holds {
    /// Claimed and not yet recorded: id → (seq, hold key).
    sending: HashMap<Uuid, (i64, i32)>,
    /// Hold key → messages being sent under it: the lock-table entries the holds fill once the
    /// next claim has given back those of `done`.
    locks: HashMap<i32, u32>,
    /// Recorded: the seqs whose holds the next claim gives back.
    done: Vec<i64>,
}

impl Holds {
    /// The seqs of the messages being sent.
    fn sending(&self) -> Vec<i64> {
        self.sending.values().map(|&(seq, _)| seq).collect()
    }

    /// Lock-table entries in use once the next claim has given back those of `done`.
    fn locks(&self) -> usize {
        self.locks.len()
    }

    /// `claimed` are being sent now.
    fn claimed(&mut self, claimed: &[ClaimedMessage]) {
        for m in claimed {
            self.sending.insert(m.id, (m.seq, m.hold));
            *self.locks.entry(m.hold).or_default() += 1;
        }
    }

    /// Message `id`'s round is recorded: the next claim gives its hold back.
    pub(crate) fn recorded(&mut self, id: &Uuid) {
        let Some((seq, hold)) = self.sending.remove(id) else {
            return;
        };
        self.done.push(seq);
        if let Some(left) = self.locks.get_mut(&hold) {
            *left -= 1;
            if *left == 0 {
                self.locks.remove(&hold);
            }
        }
    }
}

/// [`Holds`], shared by the claim loop and the completer.
pub(crate) type Held = Arc<Mutex<Holds>>;

/// When [`Relay::run`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopWhen {
    /// Only when the cancellation token fires (SIGTERM/SIGINT).
    Cancelled,
    /// Also once nothing is due now and nothing is in flight here; retries scheduled later and
    /// other relays' claims are left.
    Idle,
    /// Also once nothing is owed: no message is pending (due now or later, or being sent by any
    /// relay) (`run --until-idle`). Gives up with [`RelayError::StillOwed`] after
    /// the given time.
    Drained(Duration),
}

/// Why the relay could not run.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The LISTEN connection could not be opened; check `DATABASE_URL` (worth retrying).
    #[error("cannot listen for wake-ups: {0}")]
    Listen(#[source] sqlx::Error),
    /// The country table could not be read; check the database and its schema (worth retrying).
    #[error("cannot read sms_country_prefixes: {0}")]
    Countries(#[source] crate::store::StoreError),
    /// The database's clock could not be read; check the database (worth retrying).
    #[error("cannot read the database's clock: {0}")]
    Clock(#[source] crate::store::StoreError),
    /// `relay.max_locks` would take too much of the server's lock table; lower it or raise
    /// `max_locks_per_transaction` (not worth retrying as is).
    #[error(
        "relay.max_locks = {max_locks} is more than a quarter of the server's lock table ({size} locks: max_locks_per_transaction × (max_connections + max_prepared_transactions)); lower it or raise max_locks_per_transaction"
    )]
    LockTable {
        /// The setting.
        max_locks: u32,
        /// The server's lock table size.
        size: i64,
    },
    /// The lock table's size could not be read; check the database (worth retrying).
    #[error("cannot read the server's lock table size: {0}")]
    LockTableSize(#[source] crate::store::StoreError),
    /// `Drained` waited its whole bound and messages are still owed (pending or claimed); run
    /// again, or look at them with `sms-relay status` (not an error of this relay).
    #[error("gave up waiting after {waited:?}: {owed} message(s) still pending or claimed")]
    StillOwed {
        /// How long the relay waited.
        waited: Duration,
        /// Messages pending or claimed when it gave up.
        owed: i64,
    },
}

/// Totals of one [`Relay::run`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Messages claimed (each round counts once).
    pub claimed: u64,
}

/// A relay: the store, the provider chain and the settings.
pub struct Relay {
    store: Store,
    chain: Arc<ProviderChain>,
    settings: RelaySettings,
    policy: RetryPolicy,
    relay_id: String,
}

impl Relay {
    /// Builds a relay; nothing runs until [`Relay::run`].
    pub fn new(
        store: Store,
        chain: Arc<ProviderChain>,
        settings: RelaySettings,
        policy: RetryPolicy,
    ) -> Self {
        let relay_id = settings.relay_id();
        Self {
            store,
            chain,
            settings,
            policy,
            relay_id,
        }
    }

    /// The provider chain this relay sends through.
    pub fn chain(&self) -> Arc<ProviderChain> {
        self.chain.clone()
    }

    /// Serves until `cancel` fires or `stop` says so. On cancel: stops claiming, gives in-flight
    /// sends `shutdown_grace_ms`, then abandons the rest (recorded as unknown and released).
    pub async fn run(
        self,
        stop: StopWhen,
        cancel: CancellationToken,
    ) -> Result<RunReport, RelayError> {
        let countries = self
            .store
            .countries()
            .await
            .map_err(RelayError::Countries)?;
        let clock = self.store.db_clock().await.map_err(RelayError::Clock)?;
        let skew = clock.at(Instant::now()) - chrono::Utc::now();
        if skew.abs() > chrono::TimeDelta::seconds(1) {
            tracing::warn!(
                skew_ms = skew.num_milliseconds(),
                "this host's clock differs from the database's; attempt times follow the database"
            );
        }
        self.chain.use_db_clock(clock);
        let size = self
            .store
            .lock_table_size()
            .await
            .map_err(RelayError::LockTableSize)?;
        let Some(max_locks) = self.settings.max_locks_for(size) else {
            return Err(RelayError::LockTable {
                max_locks: self.settings.max_locks.unwrap_or_default(),
                size,
            });
        };
        let max_locks = max_locks as usize;
        let max_in_flight = self.settings.max_in_flight;
        let wake = Arc::new(Notify::new());
        let mut listener = PgListener::connect_with(self.store.pool())
            .await
            .map_err(RelayError::Listen)?;
        listener
            .listen(WAKEUP_CHANNEL)
            .await
            .map_err(RelayError::Listen)?;
        let listening = tokio::spawn(forward_notifications(listener, wake.clone()));

        let slots = Arc::new(Semaphore::new(max_in_flight as usize));
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let held = Held::default();
        let completer = tokio::spawn(
            completer::Completer {
                store: self.store.clone(),
                held: held.clone(),
                wake: wake.clone(),
                relay_id: self.relay_id.clone(),
                expiry_margin_ms: i64::try_from(self.settings.expiry_margin_ms).unwrap_or(i64::MAX),
                retry_for: self.settings.lease(),
                vacuum_every: self.settings.vacuum_every,
            }
            .run(done_rx),
        );
        let ctx = Arc::new(dispatch::Context {
            chain: self.chain.clone(),
            policy: self.policy.clone(),
            expiry_margin: Duration::from_millis(self.settings.expiry_margin_ms),
            lease: self.settings.lease(),
            hard_stop: CancellationToken::new(),
            countries,
        });
        let sends = TaskTracker::new();
        let background_stop = CancellationToken::new();
        let circuits = tokio::spawn(report_circuits(
            self.store.clone(),
            self.chain.clone(),
            self.relay_id.clone(),
            background_stop.clone(),
        ));
        // The caps know today's count before the first send.
        refresh_caps(&self.store, &self.chain).await;
        let capping = tokio::spawn(keep_caps_fresh(
            self.store.clone(),
            self.chain.clone(),
            background_stop.clone(),
        ));
        let claims = Store::new(self.claim_connection());
        let started = Instant::now();
        let mut gave_up = None;
        // Set when a claim failed after it may have taken holds it did not return.
        let mut owe_release = false;
        tracing::info!(relay_id = %self.relay_id, providers = ?self.chain.names(), "relay started");

        let mut report = RunReport::default();
        // When we last registered as idle; `None` while awake (inserts need not notify us).
        let mut registered: Option<Instant> = None;
        let mut claim_failures = 0u32;
        let poll = self.settings.poll_interval();
        loop {
            if cancel.is_cancelled() {
                break;
            }
            let free = slots.available_permits();
            if free == 0 {
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => break,
                    _ = slots.acquire() => continue,
                }
            }
            // Each message claimed may need a lock-table entry of its own.
            let locks_free = max_locks.saturating_sub(lock(&held).locks());
            if locks_free == 0 {
                // Wait for a recording: it may free an entry.
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => break,
                    _ = slots.acquire_many(u32::try_from(free + 1).unwrap_or(u32::MAX)) => continue,
                }
            }
            let want = self
                .settings
                .batch_size
                .min(u32::try_from(free.min(locks_free)).unwrap_or(u32::MAX));
            if owe_release {
                // Whatever is done now is given back with the rest; what the completer moves to
                // `done` meanwhile is still in `sending` here, so it stays for the next claim.
                let (sending, taken) = {
                    let mut holds = lock(&held);
                    (holds.sending(), std::mem::take(&mut holds.done))
                };
                match claims.unhold_all_but(&sending).await {
                    Ok(released) => {
                        owe_release = false;
                        if released > 0 {
                            tracing::warn!(released, "gave back holds a failed claim had taken");
                        }
                    }
                    Err(error) => {
                        lock(&held).done.extend(taken);
                        tracing::warn!(%error, "cannot give back a failed claim's holds yet; will try again")
                    }
                }
            }
            let claimed_at = Instant::now();
            let (sending, done) = {
                let mut holds = lock(&held);
                (holds.sending(), std::mem::take(&mut holds.done))
            };
            let Claim {
                messages: claimed,
                ahead,
            } = match claims.claim(want, &sending, &done).await {
                Ok(claim) => {
                    claim_failures = 0;
                    claim
                }
                Err(error) => {
                    owe_release = true;
                    claim_failures += 1;
                    let pause = Duration::from_millis(100 << claim_failures.min(6));
                    tracing::warn!(%error, ?pause, "claim failed; will try again");
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        () = tokio::time::sleep(pause) => continue,
                    }
                }
            };
            report.claimed += claimed.len() as u64;
            lock(&held).claimed(&claimed);
            // One task per claim, its messages sent concurrently within it: a task per message
            // cost the relay a spawn, a move of the send's state and a cross-thread wake-up each.
            let mut sending_now = FuturesUnordered::new();
            for msg in claimed {
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    unreachable!("claims never exceed the free slots counted before them");
                };
                let (ctx, done_tx) = (ctx.clone(), done_tx.clone());
                let (id, round, holder) = (msg.id, msg.round, msg.holder());
                sending_now.push(async move {
                    let finish = match AssertUnwindSafe(dispatch::dispatch(&ctx, msg, claimed_at))
                        .catch_unwind()
                        .await
                    {
                        Ok(finish) => finish,
                        // A send that panicked touches no other message, and its own is not
                        // left held: its round ends as one every provider failed.
                        Err(_) => dispatch::panicked(&ctx, id, round, holder),
                    };
                    // The completer outlives every send task, so this cannot fail.
                    let _ = done_tx.send(completer::Done { finish, permit });
                });
            }
            sends.spawn(async move { while sending_now.next().await.is_some() {} });
            let next_due_ms = match ahead {
                Ahead::More => {
                    // A full batch: a backlog. Inserts need not notify us until we sleep again.
                    if registered.take().is_some() {
                        self.log_registration(self.store.deregister_sleeper(&self.relay_id).await);
                    }
                    continue;
                }
                Ahead::DueIn(ms) => Some(ms),
                Ahead::Nothing => None,
            };
            // Nothing more due that we could take. Register as idle so commits NOTIFY us, and after
            // a fresh registration look once more, so a commit just before it is not missed. A
            // partial batch stays registered: a trickle costs one claim per wake-up, not a claim
            // and two registrations.
            if registered.is_none_or(|at| at.elapsed() >= poll / 2) {
                let fresh = registered.is_none();
                self.log_registration(self.store.register_sleeper(&self.relay_id).await);
                registered = Some(Instant::now());
                if fresh {
                    continue;
                }
            }
            let idle = slots.available_permits() == max_in_flight as usize;
            let stop_now = match stop {
                StopWhen::Cancelled => false,
                StopWhen::Idle => idle,
                StopWhen::Drained(bound) => {
                    // Nothing waiting that we could send; nothing another relay is sending either.
                    let drained = idle
                        && next_due_ms.is_none()
                        && self.store.owed().await.is_ok_and(|owed| owed == 0);
                    if started.elapsed() >= bound && !drained {
                        gave_up = Some(bound);
                    }
                    gave_up.is_some() || drained
                }
            };
            if stop_now {
                break;
            }
            // Messages other relays are sending are not due here; if such a relay dies, the next
            // poll finds them free.
            let nap = next_due_ms.map_or(poll, |ms| {
                Duration::try_from_secs_f64(ms / 1000.0)
                    .unwrap_or_default()
                    .min(poll)
            });
            // A run that ends when idle looks again as soon as its last round is recorded.
            let ends_when_idle = !idle && !matches!(stop, StopWhen::Cancelled);
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                () = wake.notified() => {}
                _ = slots.acquire_many(max_in_flight), if ends_when_idle => {}
                () = tokio::time::sleep(nap) => {}
            }
        }

        sends.close();
        if tokio::time::timeout(self.settings.shutdown_grace(), sends.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                in_flight = max_in_flight as usize - slots.available_permits(),
                "shutdown grace ran out; releasing messages still in flight"
            );
            ctx.hard_stop.cancel();
            sends.wait().await;
        }
        drop(done_tx);
        if completer.await.is_err() {
            tracing::error!(
                "the completer task panicked; unrecorded sends will be sent again by the next claim"
            );
        }
        // Every hold ends with the claim connection.
        claims.pool().close().await;
        listening.abort();
        background_stop.cancel();
        let _ = circuits.await;
        let _ = capping.await;
        if let Err(error) = self.store.drop_circuits(&self.relay_id).await {
            tracing::warn!(%error, "cannot remove this relay's circuit rows");
        }
        if registered.is_some() {
            self.log_registration(self.store.deregister_sleeper(&self.relay_id).await);
        }
        tracing::info!(relay_id = %self.relay_id, claimed = report.claimed, "relay stopped");
        if let Some(waited) = gave_up {
            let owed = self.store.owed().await.unwrap_or(-1);
            return Err(RelayError::StillOwed { waited, owed });
        }
        Ok(report)
    }

    /// The claim connection: one session, outside the shared pool, opened when first used and
    /// kept for the relay's life (its holds live as long as it does). It carries the relay's
    /// [`presence_name`]. Its TCP keepalive makes the server end it, and drop its holds, once the
    /// relay has been unreachable for about the lease: by then every round this relay started has
    /// passed its deadline. Giving back a hold the session lost with a broken connection raises
    /// only a warning, which it does not print.
    fn claim_connection(&self) -> PgPool {
        let lease = self.settings.lease().as_secs().max(10);
        let options = (*self.store.pool().connect_options())
            .clone()
            .application_name(&presence_name(&self.relay_id))
            .options([
                ("tcp_keepalives_idle", (lease / 2).to_string()),
                ("tcp_keepalives_interval", (lease / 10).to_string()),
                ("tcp_keepalives_count", "5".to_string()),
                ("tcp_user_timeout", (lease * 1000).to_string()),
                ("client_min_messages", "error".to_string()),
            ]);
        PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_lazy_with(options)
    }

    fn log_registration(&self, result: crate::store::Result<()>) {
        if let Err(error) = result {
            tracing::warn!(%error, relay_id = %self.relay_id, "wake-up registration failed; relying on polling");
        }
    }
}

/// Writes the chain's circuit states for `sms-relay status`: at start, whenever one changes, and
/// every half minute (so a row's age shows whether its relay is alive).
async fn report_circuits(
    store: Store,
    chain: Arc<ProviderChain>,
    relay_id: String,
    stop: CancellationToken,
) {
    let changed = chain.circuits_changed();
    loop {
        if let Err(error) = store.save_circuits(&relay_id, &chain.circuits()).await {
            tracing::warn!(%error, "cannot record circuit states");
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = changed.notified() => {}
            () = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
    }
}

/// How often the providers' caps take every relay's count from the database.
const CAP_REFRESH: Duration = Duration::from_secs(10);

/// Gives the chain's caps what every relay's calls got accepted in their windows.
async fn refresh_caps(store: &Store, chain: &ProviderChain) {
    let capped: Vec<String> = chain.caps().map(|(name, _)| name.to_owned()).collect();
    if capped.is_empty() {
        return;
    }
    match store.accepted_today(&capped).await {
        Ok(rows) => {
            for (name, cap) in chain.caps() {
                let used: i64 = rows
                    .iter()
                    .filter(|row| row.provider == name)
                    .map(|row| row.used(cap.measure(), cap.per()))
                    .sum();
                cap.refresh(u64::try_from(used).unwrap_or(0));
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot read the providers' counts for their caps");
        }
    }
}

/// Refreshes the caps every [`CAP_REFRESH`]. Between refreshes each relay counts its own
/// acceptances, so relays together overshoot a cap by at most what the others accepted in one
/// interval.
async fn keep_caps_fresh(store: Store, chain: Arc<ProviderChain>, stop: CancellationToken) {
    if chain.caps().next().is_none() {
        return;
    }
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(CAP_REFRESH) => {}
        }
        refresh_caps(&store, &chain).await;
    }
}

/// The holds, even if a thread panicked while holding them (each change is one insert or remove).
pub(crate) fn lock(held: &Held) -> std::sync::MutexGuard<'_, Holds> {
    held.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Turns NOTIFYs into in-process wake-ups. The listener reconnects by itself; notifications sent
/// while it was disconnected are covered by the poll interval.
async fn forward_notifications(mut listener: PgListener, wake: Arc<Notify>) {
    loop {
        match listener.recv().await {
            Ok(_) => wake.notify_one(),
            Err(error) => {
                tracing::warn!(%error, "wake-up listener lost its connection; reconnecting");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
