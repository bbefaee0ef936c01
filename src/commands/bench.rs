//! `sms-relay bench`: drain throughput and commit-to-provider-call latency with a zero-latency
//! provider, plus the process's peak RSS.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use comfy_table::Table;
use hdrhistogram::Histogram;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Budgets, CommandError, database_or_throwaway, require_empty};
use crate::{
    cli::BenchArgs,
    config::{Config, RelaySettings},
    providers::{Accepted, BoxFuture, Link, OutgoingSms, Provider, ProviderChain, SendError},
    relay::{Relay, RetryPolicy, StopWhen},
    store::{EnqueueRequest, Store, StoreError, enqueue},
    throwaway_pg::Durability,
};

/// A zero-latency provider that accepts everything and notes when each message reached it.
#[derive(Default)]
struct Stopwatch {
    calls: Mutex<HashMap<Uuid, Instant>>,
}

impl Provider for Stopwatch {
    fn name(&self) -> &str {
        "stopwatch"
    }

    fn reaches_phones(&self) -> bool {
        false
    }

    fn send<'a>(
        &'a self,
        sms: &'a OutgoingSms,
        _reference: &'a str,
    ) -> BoxFuture<'a, Result<Accepted, SendError>> {
        let now = Instant::now();
        self.calls
            .lock()
            .expect("stopwatch lock")
            .insert(sms.message_id, now);
        Box::pin(async move {
            Ok(Accepted {
                provider_message_id: sms.message_id.to_string(),
                http_status: Some(200),
                cost: None,
                note: None,
            })
        })
    }
}

/// A relay with the given settings and the stopwatch as its only provider.
fn relay(store: &Store, settings: &RelaySettings, provider: Arc<dyn Provider>) -> Relay {
    Relay::new(
        store.clone(),
        Arc::new(ProviderChain::new(vec![Link::new(provider)])),
        settings.clone(),
        RetryPolicy::default(),
    )
}

/// Peak resident set size of this process (relay and load generator together), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// (a) Enqueue `n` messages, then time one relay draining them.
async fn drain(
    store: &Store,
    settings: &RelaySettings,
    n: u32,
    relays: u32,
) -> Result<(Duration, f64), CommandError> {
    let started = Instant::now();
    store.enqueue_numbered(n).await?;
    let enqueue_time = started.elapsed();
    store.vacuum_analyze_outbox().await?;

    let provider = Arc::new(Stopwatch::default());
    let started = Instant::now();
    let mut running = tokio::task::JoinSet::new();
    for i in 0..relays {
        let settings = RelaySettings {
            relay_id: Some(format!("bench-{i}")),
            ..settings.clone()
        };
        running.spawn(
            relay(store, &settings, provider.clone()).run(StopWhen::Idle, CancellationToken::new()),
        );
    }
    let drained = async {
        while let Some(result) = running.join_next().await {
            result.map_err(std::io::Error::other)??;
        }
        Ok::<(), CommandError>(())
    };
    tokio::time::timeout(Duration::from_secs(600), drained)
        .await
        .map_err(|_| {
            std::io::Error::other(
                "the drain did not finish within 10 minutes; see the relay's warnings",
            )
        })??;
    let elapsed = started.elapsed();
    let sent = provider.calls.lock().expect("stopwatch lock").len();
    assert_eq!(sent, n as usize, "every message reached the provider once");
    Ok((enqueue_time, f64::from(n) / elapsed.as_secs_f64()))
}

/// (b) Enqueue at `rate` per second for `seconds` (one transaction each, as the auth backend
/// does) into an idle relay, and measure from each commit's acknowledgement to the provider call.
async fn latency(
    store: &Store,
    settings: &RelaySettings,
    rate: u32,
    seconds: u32,
) -> Result<Histogram<u64>, CommandError> {
    let provider = Arc::new(Stopwatch::default());
    let stop = CancellationToken::new();
    let running = tokio::spawn(
        relay(store, settings, provider.clone()).run(StopWhen::Cancelled, stop.clone()),
    );
    let idle = async {
        loop {
            if store.sleeping_relays().await? > 0 {
                return Ok::<(), StoreError>(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), idle)
        .await
        .map_err(|_| {
            std::io::Error::other("the relay did not go idle within 30 s; see its warnings")
        })??;

    let mut committed = Vec::with_capacity((rate * seconds) as usize);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    for i in 0..rate * seconds {
        tick.tick().await;
        let request = EnqueueRequest {
            recipient: format!("+88018{i:09}"), // fictional: one digit too long
            template: "otp".into(),
            params: serde_json::json!({ "code": format!("{:06}", i % 1_000_000) }),
            ..EnqueueRequest::default()
        };
        let id = enqueue(store.pool(), &request).await?;
        committed.push((id, Instant::now()));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while provider.calls.lock().expect("stopwatch lock").len() < committed.len()
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    running.await.map_err(std::io::Error::other)??;

    let calls = provider.calls.lock().expect("stopwatch lock");
    let mut histogram =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds");
    for (id, acked) in &committed {
        if let Some(called) = calls.get(id) {
            // NOTIFY reaches the relay at commit, possibly before our acknowledgement: count 0 µs.
            let micros = called.saturating_duration_since(*acked).as_micros() as u64;
            histogram.saturating_record(micros.max(1));
        }
    }
    Ok(histogram)
}

/// Runs both measurements and prints the figures.
pub(super) async fn bench(
    config: &Config,
    url: Option<String>,
    args: BenchArgs,
) -> Result<(), CommandError> {
    let (_server, pool) = database_or_throwaway(
        url,
        Durability::Default,
        config.database.max_connections,
        Budgets::Lift,
    )
    .await?;
    let store = Store::new(pool);
    require_empty(&store, "bench", None).await?;
    let (fsync, sync) = store.durability().await?;

    eprintln!(
        "(a) draining {} messages with {} relay(s)…",
        args.drain, args.relays
    );
    let (enqueue_time, drain_rate) = drain(&store, &config.relay, args.drain, args.relays).await?;
    eprintln!(
        "(b) {} msgs/s for {} s into an idle relay…",
        args.rate, args.seconds
    );
    let latency = latency(&store, &config.relay, args.rate, args.seconds).await?;
    let ms = |q: f64| format!("{:.2}", latency.value_at_quantile(q) as f64 / 1000.0);

    let mut table = Table::new();
    table.set_header(["measure", "value"]);
    table.add_row([
        "PostgreSQL fsync / synchronous_commit".into(),
        format!("{fsync} / {sync}"),
    ]);
    table.add_row([
        format!("enqueue {} (one statement)", args.drain),
        format!("{:.2} s", enqueue_time.as_secs_f64()),
    ]);
    table.add_row([
        format!("drain {} messages, {} relay(s)", args.drain, args.relays),
        format!("{drain_rate:.0} msgs/s"),
    ]);
    table.add_row([
        format!("commit -> provider call at {}/s, p50", args.rate),
        format!("{} ms", ms(0.5)),
    ]);
    table.add_row(["… p90".into(), format!("{} ms", ms(0.9))]);
    table.add_row(["… p99".into(), format!("{} ms", ms(0.99))]);
    table.add_row([
        "… max".into(),
        format!("{:.2} ms", latency.max() as f64 / 1000.0),
    ]);
    table.add_row(["… messages measured".into(), latency.len().to_string()]);
    table.add_row([
        "peak RSS (relay + load generator, one process)".into(),
        peak_rss_mib().map_or_else(|| "unknown".into(), |m| format!("{m:.1} MiB")),
    ]);
    println!("{table}");
    Ok(())
}
