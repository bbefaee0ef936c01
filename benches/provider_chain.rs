//! Benchmark: the relay over two fake HTTP providers on loopback (`cargo bench --bench
//! provider_chain`). The primary (an SSL Wireless fake) answers 20 % of sends with HTTP 503, the
//! secondary (a Twilio fake) accepts everything; both take 20 ms per send. Reports (a) the drain
//! rate of a pre-enqueued batch and (b) commit → accepted latency at a steady enqueue rate, from
//! the attempt rows. Uses DATABASE_URL if set, else a throwaway PostgreSQL (default durability).
//!
//! Environment knobs: `BENCH_DRAIN` (messages, default 20000), `BENCH_RATE` (messages/s, default
//! 1000), `BENCH_SECONDS` (default 20).

#[allow(dead_code)]
#[path = "../tests/it/fakes/mod.rs"]
mod fakes;

use std::{sync::Arc, time::Duration};

use fakes::{FakeProvider, Kind};
use sms_relay::{
    db,
    providers::{self, ProviderConfig, UnknownPolicy},
    relay::RelaySettings,
    relay::{Relay, RetryPolicy, StopWhen},
    store::Store,
    throwaway_pg::{Durability, ThrowawayPg},
};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

fn knob(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn entry(fake: &FakeProvider, name: &str) -> ProviderConfig {
    let mut entry = fake.provider_entry(name);
    entry["timeout_ms"] = 2_000.into();
    // Five 503s in a row happen about every 3,000 sends at a 20 % error rate; the benchmark
    // measures the fallback, not the breaker.
    entry["circuit"] = serde_json::json!({ "consecutive_failures": 20, "failure_rate": 0.9 });
    serde_json::from_value(entry).expect("a valid provider entry")
}

/// Enqueues `n` OTPs in one statement, numbers ending in 11 (which the fakes accept).
async fn enqueue_batch(pool: &PgPool, offset: u32, n: u32) {
    sqlx::query(
        "SELECT sms_enqueue('+8801' || (7 + i % 3)::text || lpad(i::text, 6, '0') || '11', 'otp', \
                jsonb_build_object('code', lpad((i % 1000000)::text, 6, '0'))) \
           FROM generate_series($1::int, $1::int + $2::int - 1) AS i",
    )
    .bind(offset as i32)
    .bind(n as i32)
    .execute(pool)
    .await
    .expect("enqueue");
}

async fn count_finished(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM sms_outbox WHERE state <> 'pending'")
        .fetch_one(pool)
        .await
        .expect("count")
}

/// p50, p99 and max of commit → accepted, in ms, for messages created at or after `since_seq`.
async fn latency(pool: &PgPool, since_seq: i64) -> (f64, f64, f64, i64) {
    sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), \
                percentile_cont(0.99) WITHIN GROUP (ORDER BY ms), max(ms), count(*) \
           FROM (SELECT (extract(epoch FROM a.finished_at - o.created_at) * 1000)::float8 AS ms \
                   FROM sms_outbox o JOIN sms_attempts a ON a.message_id = o.id \
                  WHERE a.outcome = 'accepted' AND o.seq >= $1) l",
    )
    .bind(since_seq)
    .fetch_one(pool)
    .await
    .expect("latency")
}

#[tokio::main]
async fn main() {
    let drain = knob("BENCH_DRAIN", 20_000);
    let rate = knob("BENCH_RATE", 1_000);
    let seconds = knob("BENCH_SECONDS", 20);
    let (_server, url) =
        ThrowawayPg::unless_given(std::env::var("DATABASE_URL").ok(), Durability::Default)
            .expect("throwaway PostgreSQL");
    let pool = db::connect(&url, 16).await.expect("connect");
    db::migrate(&pool).await.expect("migrate");
    sqlx::query("TRUNCATE sms_outbox, sms_attempts, sms_recipient_budget")
        .execute(&pool)
        .await
        .expect("a clean slate");
    sqlx::query("UPDATE sms_settings SET recipient_limit = 1000000")
        .execute(&pool)
        .await
        .expect("no per-recipient limit for the load");

    let primary = FakeProvider::start(Kind::SslWireless).await;
    let secondary = FakeProvider::start(Kind::Twilio).await;
    primary.set_server_error_rate(0.2);
    for fake in [&primary, &secondary] {
        fake.set_latency(Duration::from_millis(20));
    }
    let chain = providers::from_config(
        &[entry(&primary, "ssl"), entry(&secondary, "twilio")],
        Some("https://relay.example.com"),
        UnknownPolicy::FallOver,
    )
    .expect("chain");
    let settings = RelaySettings {
        relay_id: Some("bench-http".into()),
        ..RelaySettings::default()
    };
    let cancel = CancellationToken::new();
    let relay = Relay::new(
        Store::new(pool.clone()),
        Arc::new(chain),
        settings,
        RetryPolicy::default(),
    );
    let running = tokio::spawn(relay.run(StopWhen::Cancelled, cancel.clone()));

    // (a) Drain a pre-enqueued batch.
    enqueue_batch(&pool, 0, drain).await;
    let started = tokio::time::Instant::now();
    while count_finished(&pool).await < i64::from(drain) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained = started.elapsed().as_secs_f64();

    // (b) Steady load: one transaction per message, `rate` per second.
    let since: i64 = sqlx::query_scalar("SELECT coalesce(max(seq), 0) + 1 FROM sms_outbox")
        .fetch_one(&pool)
        .await
        .expect("seq");
    let per_tick = (rate / 100).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut offset = drain;
    let load_start = tokio::time::Instant::now();
    while load_start.elapsed() < Duration::from_secs(u64::from(seconds)) {
        tick.tick().await;
        for _ in 0..per_tick {
            let pool = pool.clone();
            tokio::spawn(async move { enqueue_batch(&pool, offset, 1).await });
            offset += 1;
        }
    }
    let total = i64::from(offset);
    while count_finished(&pool).await < total {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cancel.cancel();
    running.await.expect("relay task").expect("relay");
    let (p50, p99, max, accepted) = latency(&pool, since).await;
    let by_provider: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT provider, outcome::text, count(*) FROM sms_attempts GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .fetch_all(&pool)
    .await
    .expect("attempts");
    let unsent: i64 = sqlx::query_scalar("SELECT count(*) FROM sms_outbox WHERE state <> 'sent'")
        .fetch_one(&pool)
        .await
        .expect("unsent");

    println!("two fake HTTP providers on loopback, 20 ms each, primary 20 % HTTP 503");
    println!(
        "drain: {drain} messages in {drained:.2} s = {:.0} msgs/s",
        f64::from(drain) / drained
    );
    println!(
        "steady {rate}/s for {seconds} s: {accepted} accepted; commit -> accepted p50 {p50:.1} ms, \
         p99 {p99:.1} ms, max {max:.1} ms"
    );
    for (provider, outcome, count) in by_provider {
        println!("  {provider:>7} {outcome:<15} {count}");
    }
    println!("messages not sent: {unsent}");
}
