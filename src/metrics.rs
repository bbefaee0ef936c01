//! The relay's Prometheus metrics: every name, label and unit in one place, recorded through the
//! `metrics` facade, which does nothing until [`install`] sets the Prometheus recorder (`run`
//! does; the tests' in-process relays and the other commands record nothing).
//!
//! Labels are bounded sets only (provider, outcome, state, task, …): never a number, a
//! message id or a code. Counters count what this relay process recorded since it started;
//! queue gauges are read from the database at each scrape.

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// Provider calls recorded, by provider and outcome.
pub const PROVIDER_CALLS: &str = "sms_relay_provider_calls_total";
/// Messages this relay's rounds ended, by final state and how the round ended.
pub const MESSAGES_FINISHED: &str = "sms_relay_messages_finished_total";
/// From a message's enqueue to the first provider call of its first round (a round whose every
/// provider was skipped, circuits open, makes none).
pub const PICKUP_SECONDS: &str = "sms_relay_pickup_seconds";
/// From a message's enqueue to a provider accepting it.
pub const ACCEPTED_SECONDS: &str = "sms_relay_accepted_seconds";
/// Rounds that found a provider's rate limit empty and waited (or passed it over).
pub const RATE_LIMIT_WAITS: &str = "sms_relay_rate_limit_waits_total";
/// Delivery receipts recorded, by provider kind, status and what they did.
pub const RECEIPTS: &str = "sms_relay_receipts_total";
/// Maintenance runs by job (label `task`: Prometheus keeps `job` for the scrape job) and result
/// (`ok`, `failed`, or `busy` when a run of the same job was still going).
pub const MAINTENANCE_RUNS: &str = "sms_relay_maintenance_runs_total";
/// 1, with the relay's version as a label.
pub const BUILD_INFO: &str = "sms_relay_build_info";
/// Messages waiting to be sent, by whether they are due now.
pub const QUEUE_MESSAGES: &str = "sms_relay_queue_messages";
/// How long the oldest due message has waited.
pub const OLDEST_DUE_SECONDS: &str = "sms_relay_oldest_due_age_seconds";
/// Messages relays are sending right now.
pub const IN_FLIGHT: &str = "sms_relay_in_flight_messages";
/// Relay processes connected to the database.
pub const RELAYS: &str = "sms_relay_relays";
/// Of a provider's calls accepted in the last hour with a final receipt, the share delivered.
pub const DELIVERY_RATIO: &str = "sms_relay_delivery_ratio";
/// 1 while the scrape could read the database.
pub const DATABASE_UP: &str = "sms_relay_database_up";
/// 1 for each provider's current circuit state.
pub const CIRCUIT_STATE: &str = "sms_relay_circuit_state";
/// A budget's use in its current window, in codes (`unit="messages"`) or money (`unit` the
/// currency).
pub const BUDGET_USED: &str = "sms_relay_budget_used";
/// A budget's limit, in the same units.
pub const BUDGET_LIMIT: &str = "sms_relay_budget_limit";

/// Bounds of the latency histograms, in seconds: a code should reach its provider in
/// milliseconds and its phone within seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// How often histogram samples are folded into their buckets between scrapes.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Folds recorded histogram samples into their buckets every few seconds until `stop`: the
/// recorder otherwise keeps every sample until the next scrape, which a busy relay nobody scrapes
/// turns into megabytes per minute.
pub async fn upkeep(handle: PrometheusHandle, stop: tokio_util::sync::CancellationToken) {
    let mut every = tokio::time::interval(UPKEEP_EVERY);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => handle.run_upkeep(),
        }
    }
}

/// Sets the Prometheus recorder for this process and describes every metric; the handle renders
/// the text exposition.
pub fn install() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)?
        .install_recorder()?;
    describe_counter!(
        PROVIDER_CALLS,
        "Provider calls recorded, by provider and outcome."
    );
    describe_counter!(
        MESSAGES_FINISHED,
        "Messages this relay's rounds ended, by final state and how the round ended."
    );
    describe_histogram!(
        PICKUP_SECONDS,
        Unit::Seconds,
        "From a message's enqueue to the first provider call of its first round."
    );
    describe_histogram!(
        ACCEPTED_SECONDS,
        Unit::Seconds,
        "From a message's enqueue to a provider accepting it."
    );
    describe_counter!(
        RATE_LIMIT_WAITS,
        "Calls that found a provider's rate limit empty, by provider and whether a token came in time."
    );
    describe_counter!(
        RECEIPTS,
        "Delivery receipts recorded, by provider kind, delivery status and result."
    );
    describe_counter!(
        MAINTENANCE_RUNS,
        "Maintenance runs by job (task) and result."
    );
    describe_gauge!(BUILD_INFO, "1, labelled with the relay's version.");
    describe_gauge!(
        QUEUE_MESSAGES,
        "Messages waiting to be sent, by whether they are due now."
    );
    describe_gauge!(
        OLDEST_DUE_SECONDS,
        Unit::Seconds,
        "How long the oldest due message has waited (0 when none is due)."
    );
    describe_gauge!(IN_FLIGHT, "Messages relays are sending right now.");
    describe_gauge!(RELAYS, "Relay processes connected to the database.");
    describe_gauge!(DATABASE_UP, "1 while the scrape could read the database.");
    describe_gauge!(
        DELIVERY_RATIO,
        "Of a provider's calls accepted in the last hour with a final receipt, the share delivered."
    );
    describe_gauge!(
        CIRCUIT_STATE,
        "1 for each provider's current circuit state."
    );
    describe_gauge!(BUDGET_USED, "A budget's use in its current window.");
    describe_gauge!(BUDGET_LIMIT, "A budget's limit in its window.");
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(handle)
}

/// `n` provider calls of `provider` with `outcome` were recorded.
pub fn provider_calls(provider: &str, outcome: &'static str, n: u64) {
    counter!(PROVIDER_CALLS, "provider" => provider.to_owned(), "outcome" => outcome).increment(n);
}

/// Rounds ended `n` messages in `state`; `round` is how the relay's rounds ended (`sent`,
/// `failed`, `expired`, `cancelled`, or `retry` turned final by the database).
pub fn messages_finished(state: &str, round: &'static str, n: u64) {
    counter!(MESSAGES_FINISHED, "state" => state.to_owned(), "round" => round).increment(n);
}

/// Messages whose first round made its first provider call these many seconds after the enqueue.
pub fn picked_up(seconds: &[f64]) {
    let histogram = metrics::histogram!(PICKUP_SECONDS);
    seconds.iter().for_each(|s| histogram.record(*s));
}

/// Messages a provider accepted these many seconds after their enqueue.
pub fn accepted(seconds: &[f64]) {
    let histogram = metrics::histogram!(ACCEPTED_SECONDS);
    seconds.iter().for_each(|s| histogram.record(*s));
}

/// A call found `provider`'s rate limit empty; `got` whether a token came within the wait.
pub fn rate_limit_wait(provider: &str, got: bool) {
    let result = if got { "waited" } else { "passed_over" };
    counter!(RATE_LIMIT_WAITS, "provider" => provider.to_owned(), "result" => result).increment(1);
}

/// `n` receipts of `source` (a provider kind) with `status` were recorded with `result`.
pub fn receipts(source: &str, status: &str, result: &str, n: u64) {
    counter!(RECEIPTS, "source" => source.to_owned(), "status" => status.to_owned(),
             "result" => result.to_owned())
    .increment(n);
}

/// What became of a maintenance run.
pub const MAINTENANCE_RESULTS: [&str; 3] = ["ok", "failed", "busy"];

/// A maintenance run of `job` ended with `result` (one of [`MAINTENANCE_RESULTS`]).
pub fn maintenance_run(job: &'static str, result: &'static str) {
    counter!(MAINTENANCE_RUNS, "task" => job, "result" => result).increment(1);
}

/// Shows `job`'s counters at 0 before its first run, so that a first failure is an increase.
pub fn maintenance_job(job: &'static str) {
    for result in MAINTENANCE_RESULTS {
        counter!(MAINTENANCE_RUNS, "task" => job, "result" => result).increment(0);
    }
}

/// The waiting queue as read at a scrape.
pub fn queue(waiting: i64, due: i64, oldest_due_age_s: f64) {
    gauge!(QUEUE_MESSAGES, "due" => "true").set(due as f64);
    gauge!(QUEUE_MESSAGES, "due" => "false").set((waiting - due) as f64);
    gauge!(OLDEST_DUE_SECONDS).set(oldest_due_age_s);
}

/// The relays and their holds as read at a scrape.
pub fn relays(in_flight: i64, relays: i64) {
    gauge!(IN_FLIGHT).set(in_flight as f64);
    gauge!(RELAYS).set(relays as f64);
}

/// Whether the scrape could read the database.
pub fn database_up(up: bool) {
    gauge!(DATABASE_UP).set(if up { 1.0 } else { 0.0 });
}

/// `provider`'s circuit is in `state` (one of `states`, each of which gets 1 or 0).
pub fn circuit(provider: &str, state: &str, states: &[&'static str]) {
    for s in states {
        gauge!(CIRCUIT_STATE, "provider" => provider.to_owned(), "state" => *s)
            .set(if *s == state { 1.0 } else { 0.0 });
    }
}

/// The labels of one budget gauge: budget (its id, or `provider`), scope, subject, purpose, per
/// and unit (`messages` or a currency).
pub type BudgetLabels = [(&'static str, String); 6];

/// One budget's use and limit.
pub fn budget(labels: &BudgetLabels, used: f64, limit: f64) {
    gauge!(BUDGET_USED, labels).set(used);
    gauge!(BUDGET_LIMIT, labels).set(limit);
}

/// A budget counted nothing in its current window (its last window's use stays behind otherwise).
pub fn budget_unused(labels: &BudgetLabels) {
    gauge!(BUDGET_USED, labels).set(0.0);
}

/// `provider`'s delivery ratio over the last hour; `None` without final receipts in that hour.
pub fn delivery_ratio(provider: &str, ratio: Option<f64>) {
    gauge!(DELIVERY_RATIO, "provider" => provider.to_owned()).set(ratio.unwrap_or(f64::NAN));
}
