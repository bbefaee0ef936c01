//! `sms-relay demo`: a burst of auth-style logins, the relay with two simulated providers that
//! also answer delivery-report polls, a report.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use comfy_table::Table;
use indicatif::{ProgressBar, ProgressStyle};
use rand::RngExt;
use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{CommandError, build_relay, database_or_throwaway};
use crate::{
    cli::DemoArgs,
    config::{Config, ReceiptSettings, RelaySettings},
    providers::{PriceRule, ProviderConfig, SimulatorSettings},
    relay::{RetryPolicy, StopWhen},
    store::{EnqueueError, EnqueueRequest, Store, enqueue},
    throwaway_pg::Durability,
};

/// Concurrent "auth backend" connections.
const AUTH_WORKERS: u32 = 8;

/// What the auth side did, by outcome.
#[derive(Default)]
struct AuthTally {
    outcomes: BTreeMap<String, u32>,
}

/// Two simulated providers: a cheap local aggregator that fails now and then, and a dearer backup.
fn demo_config() -> Config {
    let simulator = |name: &str, settings, per_part| ProviderConfig {
        prices: vec![PriceRule {
            prefix: "+880".into(),
            per_part,
            currency: "BDT".into(),
        }],
        ..ProviderConfig::simulator(name, settings)
    };
    Config {
        providers: vec![
            simulator(
                "sim-local",
                SimulatorSettings {
                    latency_ms: 15,
                    provider_error: 0.08,
                    bad_recipient: 0.01,
                    unknown: 0.01,
                    receipts: true,
                    undelivered: 0.04,
                    ..SimulatorSettings::default()
                },
                0.25,
            ),
            simulator(
                "sim-intl",
                SimulatorSettings {
                    latency_ms: 60,
                    provider_error: 0.05,
                    receipts: true,
                    undelivered: 0.01,
                    ..SimulatorSettings::default()
                },
                4.5,
            ),
        ],
        relay: RelaySettings {
            relay_id: Some("demo-relay".into()),
            poll_interval_ms: 200,
            ..RelaySettings::default()
        },
        retry: RetryPolicy {
            base_ms: 200,
            cap_ms: 2_000,
            ..RetryPolicy::default()
        },
        receipts: ReceiptSettings {
            poll_interval_ms: 200,
            ..ReceiptSettings::default()
        },
        ..Config::default()
    }
}

/// One login as the auth backend would do it: its own OTP row and the SMS in one transaction.
/// `i` picks the scenario, so every run shows the same mix.
async fn login(pool: &PgPool, i: u32) -> Result<&'static str, CommandError> {
    let code = format!("{:06}", rand::rng().random_range(0..1_000_000));
    let scenario = i % 100;
    let recipient = match scenario {
        5..=7 => format!("01{}{:08}", 3 + i % 7, i), // forgot the country code
        8 => format!("+4474{:08}", i),               // outside the allow-list
        _ => format!("+8801{}{:08}", 3 + i % 7, i),
    };
    let (template, locale, priority) = match scenario {
        14..=23 => ("admin_2fa", "en", 0),
        24..=53 => ("otp", "bn", 5),
        _ => ("otp", "en", 5),
    };
    let request = EnqueueRequest {
        recipient: recipient.clone(),
        template: template.into(),
        params: json!({ "code": code }),
        locale: Some(locale.into()),
        priority: Some(priority),
        ..EnqueueRequest::default()
    };
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO sms_demo_logins (phone, code_hash, expires_at) \
         VALUES ($1, md5($2), now() + interval '5 minutes')",
    )
    .bind(&recipient)
    .bind(&code)
    .execute(&mut *tx)
    .await?;
    let enqueued = enqueue(&mut *tx, &request).await;
    if (9..=13).contains(&scenario) && enqueued.is_ok() {
        // The user tapped "resend": a second code supersedes the first.
        enqueue(
            &mut *tx,
            &EnqueueRequest {
                params: json!({ "code": "000000" }),
                ..request
            },
        )
        .await?;
    }
    match enqueued {
        Ok(_) if scenario < 5 => {
            tx.rollback().await?;
            Ok("rolled back (no SMS)")
        }
        Ok(_) if (9..=13).contains(&scenario) => {
            tx.commit().await?;
            Ok("committed, resent (first code superseded)")
        }
        Ok(_) => {
            tx.commit().await?;
            Ok("committed")
        }
        Err(EnqueueError::Refused { reason, .. }) => {
            tx.rollback().await?;
            Ok(match reason.sqlstate() {
                "SR001" => "refused: not E.164 (SR001)",
                "SR007" => "refused: country not allowed (SR007)",
                _ => "refused: other",
            })
        }
        Err(error) => Err(error.into()),
    }
}

async fn burst(pool: &PgPool, logins: u32, bar: &ProgressBar) -> Result<AuthTally, CommandError> {
    let next = Arc::new(AtomicU32::new(0));
    let tally = Arc::new(Mutex::new(AuthTally::default()));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..AUTH_WORKERS {
        let (pool, next, tally, bar) = (pool.clone(), next.clone(), tally.clone(), bar.clone());
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= logins {
                    return Ok::<(), CommandError>(());
                }
                let outcome = login(&pool, i).await?;
                *tally
                    .lock()
                    .expect("tally lock")
                    .outcomes
                    .entry(outcome.into())
                    .or_default() += 1;
                bar.inc(1);
            }
        });
    }
    while let Some(result) = workers.join_next().await {
        result.map_err(std::io::Error::other)??;
    }
    let tally = std::mem::take(&mut *tally.lock().expect("tally lock"));
    Ok(tally)
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>10} [{bar:40}] {pos}/{len} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(what.to_owned());
    bar
}

/// Runs the demo.
pub(super) async fn demo(url: Option<String>, args: DemoArgs) -> Result<(), CommandError> {
    let (_server, pool) = database_or_throwaway(url, Durability::Default, 16).await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS sms_demo_logins (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, \
         phone text NOT NULL, code_hash text NOT NULL, expires_at timestamptz NOT NULL)",
    )
    .execute(&pool)
    .await?;
    let config = demo_config();
    let relay = build_relay(&config, pool.clone())?;
    let stop = CancellationToken::new();
    // The simulators answer report polls: undelivered messages are resent through the other one.
    let poller = config.poller(&relay.chain(), Store::new(pool.clone()));
    let poller_task = tokio::spawn(poller.run(stop.clone()));
    let relay_task = tokio::spawn(relay.run(StopWhen::Cancelled, stop.clone()));

    println!(
        "{} logins from {AUTH_WORKERS} auth connections while the relay runs:",
        args.logins
    );
    let logins = bar(u64::from(args.logins), "logins");
    let tally = burst(&pool, args.logins, &logins).await?;
    logins.finish();

    let store = Store::new(pool.clone());
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM sms_outbox")
        .fetch_one(&pool)
        .await?;
    let settling = bar(total.max(0) as u64, "settled");
    loop {
        let status = store.status().await?;
        let open = status.count("pending") + status.count("sending");
        let awaiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sms_attempts WHERE outcome = 'accepted' \
                AND (delivery_status IS NULL OR delivery_status IN ('queued', 'enroute'))",
        )
        .fetch_one(&pool)
        .await?;
        settling.set_position((total - open).max(0) as u64);
        settling.set_message(format!(
            "{open} pending or in flight, {awaiting} awaiting a receipt"
        ));
        if open == 0 && awaiting == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    settling.finish();
    stop.cancel();
    relay_task.await.map_err(std::io::Error::other)??;
    poller_task.await.map_err(std::io::Error::other)?;

    report(&pool, &tally).await
}

async fn report(pool: &PgPool, tally: &AuthTally) -> Result<(), CommandError> {
    let mut auth = Table::new();
    auth.set_header(["auth backend", "logins"]);
    for (outcome, n) in &tally.outcomes {
        auth.add_row([outcome.clone(), n.to_string()]);
    }
    println!("\n{auth}");

    let mut states = Table::new();
    states.set_header(["message state", "messages", "why (most common)"]);
    let rows: Vec<(String, i64, Option<String>)> = sqlx::query_as(
        "SELECT state::text, count(*), mode() WITHIN GROUP (ORDER BY split_part(last_error, ';', 1)) \
           FROM sms_outbox GROUP BY state ORDER BY state",
    )
    .fetch_all(pool)
    .await?;
    for (state, n, why) in rows {
        states.add_row([state, n.to_string(), why.unwrap_or_default()]);
    }
    println!("{states}");

    let mut providers = Table::new();
    providers.set_header([
        "provider",
        "outcome",
        "attempts",
        "cost",
        "call p50 ms",
        "call p99 ms",
    ]);
    let rows: Vec<(String, String, i64, Option<String>, f64, f64)> = sqlx::query_as(
        "SELECT provider, outcome::text, count(*), sum(cost)::text || ' ' || max(currency), \
                percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms), \
                percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms) \
           FROM sms_attempts GROUP BY provider, outcome ORDER BY provider, outcome",
    )
    .fetch_all(pool)
    .await?;
    for (provider, outcome, n, cost, p50, p99) in rows {
        providers.add_row([
            provider,
            outcome,
            n.to_string(),
            cost.unwrap_or_else(|| "-".into()),
            format!("{p50:.1}"),
            format!("{p99:.1}"),
        ]);
    }
    println!("{providers}");

    let mut delivery = Table::new();
    delivery.set_header([
        "provider",
        "accepted",
        "delivered",
        "undelivered",
        "resent through it",
    ]);
    let rows: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT provider, count(*) FILTER (WHERE outcome = 'accepted'), \
                count(*) FILTER (WHERE delivery_status = 'delivered'), \
                count(*) FILTER (WHERE delivery_status = 'undelivered'), \
                count(*) FILTER (WHERE cause = 'resend') \
           FROM sms_attempts GROUP BY provider ORDER BY provider",
    )
    .fetch_all(pool)
    .await?;
    for (provider, accepted, delivered, undelivered, resent) in rows {
        delivery.add_row([
            provider,
            accepted.to_string(),
            delivered.to_string(),
            undelivered.to_string(),
            resent.to_string(),
        ]);
    }
    println!("{delivery}");

    let mut latency = Table::new();
    latency.set_header(["latency (ms)", "p50", "p95", "p99", "max"]);
    type Percentiles = (String, Option<f64>, Option<f64>, Option<f64>, Option<f64>);
    let rows: Vec<Percentiles> = sqlx::query_as(
        "WITH per_message AS ( \
           SELECT extract(epoch FROM min(a.started_at) - o.created_at) * 1000 AS first_call, \
                  extract(epoch FROM min(a.finished_at) FILTER (WHERE a.outcome = 'accepted') - o.created_at) * 1000 AS accepted \
             FROM sms_outbox o JOIN sms_attempts a ON a.message_id = o.id GROUP BY o.id, o.created_at) \
         SELECT 'enqueue -> first provider call', percentile_cont(0.5) WITHIN GROUP (ORDER BY first_call), \
                percentile_cont(0.95) WITHIN GROUP (ORDER BY first_call), \
                percentile_cont(0.99) WITHIN GROUP (ORDER BY first_call), max(first_call)::float8 FROM per_message \
         UNION ALL \
         SELECT 'enqueue -> accepted (incl. retries)', percentile_cont(0.5) WITHIN GROUP (ORDER BY accepted), \
                percentile_cont(0.95) WITHIN GROUP (ORDER BY accepted), \
                percentile_cont(0.99) WITHIN GROUP (ORDER BY accepted), max(accepted)::float8 \
           FROM per_message WHERE accepted IS NOT NULL",
    )
    .fetch_all(pool)
    .await?;
    for (what, p50, p95, p99, max) in rows {
        let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
        latency.add_row([what, ms(p50), ms(p95), ms(p99), ms(max)]);
    }
    println!("{latency}");
    println!(
        "Every row above comes from sms_outbox and sms_attempts; query them yourself with psql, \
         or run `sms-relay status` against the same database."
    );
    Ok(())
}
