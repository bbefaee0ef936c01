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

use super::{Budgets, CommandError, build_relay, database_or_throwaway, require_empty};
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
        _ => format!("+8801{}{:09}", 3 + i % 7, i),  // fictional: one digit too long
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
    // An auth backend stores its own OTP row in this transaction too; the demo has only the SMS.
    let mut tx = pool.begin().await?;
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
                "SR016" => "refused: budget spent (SR016)",
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
    let (_server, pool) =
        database_or_throwaway(url, Durability::Default, 16, Budgets::Apply).await?;
    let store = Store::new(pool.clone());
    require_empty(&store, "demo", Some(args.force)).await?;
    let config = demo_config();
    let relay = build_relay(&config, pool.clone())?;
    let stop = CancellationToken::new();
    // The simulators answer report polls: undelivered messages are resent through the other one.
    let poller = config.poller(&relay.chain(), store.clone());
    let poller_task = tokio::spawn(poller.run(stop.clone()));
    let relay_task = tokio::spawn(relay.run(StopWhen::Cancelled, stop.clone()));

    println!(
        "{} logins from {AUTH_WORKERS} auth connections while the relay runs:",
        args.logins
    );
    let logins = bar(u64::from(args.logins), "logins");
    let tally = burst(&pool, args.logins, &logins).await?;
    logins.finish();

    let total = store.status().await?.total();
    let settling = bar(total.max(0) as u64, "settled");
    loop {
        let status = store.status().await?;
        let open = status.count("pending");
        let awaiting = store.awaiting_receipts().await?;
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

    report(&store, &tally).await
}

/// Prints what the auth side saw, then the outcome as `sms-relay status` and the report views
/// show it, then how soon the relay reached a provider.
async fn report(store: &Store, tally: &AuthTally) -> Result<(), CommandError> {
    let mut auth = Table::new();
    auth.set_header(["auth backend", "logins"]);
    for (outcome, n) in &tally.outcomes {
        auth.add_row([outcome.clone(), n.to_string()]);
    }
    println!("\n{auth}");

    let mut states = Table::new();
    states.set_header(["message state", "messages"]);
    for state in store.status().await?.states.iter().filter(|s| s.count > 0) {
        states.add_row([state.state.clone(), state.count.to_string()]);
    }
    println!("{states}");

    let totals = store.message_totals().await?;
    let mut messages = Table::new();
    messages.set_header(["codes", "messages"]);
    for (what, n) in [
        ("enqueued", totals.enqueued),
        (
            "… superseded by a newer code before sending",
            totals.superseded,
        ),
        ("… expired before sending", totals.expired),
        ("with a provider call", totals.called),
        (
            "… needed a fallback provider within a round",
            totals.with_fallback,
        ),
        (
            "… resent after an undelivered or missing receipt",
            totals.with_resend,
        ),
    ] {
        messages.add_row([what.to_owned(), n.to_string()]);
    }
    println!("{messages}");

    let mut failures = Table::new();
    failures.set_header(["failure source", "provider", "status", "reason", "count"]);
    for f in store.failure_totals().await? {
        failures.add_row([
            f.source,
            f.provider.unwrap_or_else(|| "-".into()),
            f.status,
            f.reason.unwrap_or_else(|| "-".into()),
            f.count.to_string(),
        ]);
    }
    println!("{failures}");

    let mut providers = Table::new();
    providers.set_header([
        "provider",
        "attempts",
        "accepted",
        "final receipts",
        "delivered",
        "delivered of final",
        "cost",
    ]);
    for p in store.provider_totals().await? {
        providers.add_row([
            p.provider,
            p.attempts.to_string(),
            p.accepted.to_string(),
            p.final_receipts.to_string(),
            p.delivered.to_string(),
            p.delivered_of_final
                .map_or_else(|| "-".into(), |r| format!("{:.1} %", r * 100.0)),
            p.cost.unwrap_or_else(|| "-".into()),
        ]);
    }
    println!("{providers}");

    let mut latency = Table::new();
    latency.set_header([
        "enqueue -> (ms)",
        "messages",
        "first call p50",
        "p99",
        "max",
        "accepted p50",
        "p99",
        "max",
    ]);
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
    for p in store.pickup().await? {
        latency.add_row([
            format!("{} {}", p.day, p.template),
            p.messages.to_string(),
            ms(p.first_call_p50_ms),
            ms(p.first_call_p99_ms),
            ms(p.first_call_max_ms),
            ms(p.accepted_p50_ms),
            ms(p.accepted_p99_ms),
            ms(p.accepted_max_ms),
        ]);
    }
    println!("{latency}");
    println!(
        "Message states as `sms-relay status` counts them; the tables after it add up the report \
         views (sql/README.md), which `sms-relay report` prints per day; the last one is the \
         pickup report as it is."
    );
    Ok(())
}
