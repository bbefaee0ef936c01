//! Benchmark: receipts through the real webhook endpoint (`cargo bench --bench receipts`).
//! `BENCH_RECEIPTS` sent messages (default 20,000) with accepted Twilio attempts are prepared in
//! the database; then one signed Twilio status callback per message is posted over loopback,
//! `BENCH_CONCURRENCY` at a time (default 32): 90 % `delivered`, 10 % `undelivered` (each of
//! those puts its message back in the queue for a resend). The same receipts are then posted
//! again (all duplicates). Reports receipts/s and per-request latency for both passes. Uses
//! DATABASE_URL if set, else a throwaway PostgreSQL (default durability).

use std::time::Instant;

use futures_util::StreamExt;
use sms_relay::{
    config::Config,
    db,
    providers::ProviderConfig,
    providers::twilio::signature,
    receipts::{server, settings::WebhookSettings},
    store::Store,
    throwaway_pg::{Durability, ThrowawayPg},
};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const PUBLIC: &str = "https://relay.example.com";
const TOKEN: &str = "5c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f";

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `n` sent messages, each with one accepted Twilio attempt whose id is `SM<i, 32 digits>`.
async fn prepare(pool: &PgPool, n: usize) {
    for statement in [
        "TRUNCATE sms_outbox, sms_attempts, sms_recipient_budget, sms_receipts",
        "UPDATE sms_settings SET recipient_limit = 1000000",
    ] {
        sqlx::query(statement).execute(pool).await.expect(statement);
    }
    sqlx::query(
        "WITH m AS (SELECT i, sms_enqueue('+8801' || (7 + i % 3)::text || lpad(i::text, 8, '0'), 'otp', \
                                          jsonb_build_object('code', '482913')) AS id \
                      FROM generate_series(1, $1) AS i) \
         INSERT INTO sms_attempts (message_id, attempt_number, chain_step, provider, template, relay_id, \
                                   started_at, finished_at, outcome, provider_message_id, segments, \
                                   encoding, client_ref, cause, country, operator) \
         SELECT id, 1, 1, 'twilio', 'otp', 'bench', now(), now(), 'accepted', 'SM' || lpad(i::text, 32, '0'), \
                1, 'gsm7', 'b' || i || 'r1s1', 'first', 'BD', 'Grameenphone' FROM m",
    )
    .bind(i32::try_from(n).expect("BENCH_RECEIPTS fits"))
    .execute(pool)
    .await
    .expect("prepare attempts");
    sqlx::query("UPDATE sms_outbox SET state = 'sent', attempts = 1, finished_at = now()")
        .execute(pool)
        .await
        .expect("mark sent");
}

fn config() -> Config {
    let twilio: ProviderConfig = serde_json::from_value(serde_json::json!({
        "name": "twilio", "kind": "twilio", "account_sid": "AC8e1f2a3b4c5d6e7f8091a2b3c4d5e6f7",
        "auth_token": TOKEN, "sender": "Glamora",
    }))
    .expect("provider entry");
    Config {
        providers: vec![twilio],
        webhooks: WebhookSettings {
            public_base_url: Some(PUBLIC.into()),
            ..WebhookSettings::default()
        },
        ..Config::default()
    }
}

/// A signed status callback for message `i`.
fn callback(i: usize) -> (Vec<(String, String)>, String) {
    let sid = format!("SM{i:032}");
    let status = if i.is_multiple_of(10) {
        "undelivered"
    } else {
        "delivered"
    };
    let mut form: Vec<(String, String)> = [
        ("MessageSid", sid.as_str()),
        ("SmsSid", sid.as_str()),
        ("MessageStatus", status),
        ("SmsStatus", status),
        ("AccountSid", "AC8e1f2a3b4c5d6e7f8091a2b3c4d5e6f7"),
        ("From", "Glamora"),
        ("To", "+8801712345678"),
        ("ApiVersion", "2010-04-01"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    if status == "undelivered" {
        form.push(("ErrorCode".into(), "30003".into()));
    }
    let sig = signature::twilio_signature(TOKEN, &format!("{PUBLIC}/webhooks/twilio"), &form);
    (form, sig)
}

/// Posts every callback, `concurrency` at a time; returns (seconds, sorted latencies in µs).
async fn pass(
    url: &str,
    callbacks: &[(Vec<(String, String)>, String)],
    concurrency: usize,
) -> (f64, Vec<u64>) {
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut latencies: Vec<u64> = futures_util::stream::iter(callbacks)
        .map(|(form, sig)| {
            let http = http.clone();
            async move {
                let sent = Instant::now();
                let status = http
                    .post(url)
                    .header("X-Twilio-Signature", sig)
                    .form(form)
                    .send()
                    .await
                    .expect("post")
                    .status();
                assert!(status.is_success(), "{status}");
                u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX)
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    (elapsed, latencies)
}

fn print(what: &str, n: usize, (seconds, sorted): &(f64, Vec<u64>)) {
    let ms = |q: f64| {
        let at = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
        sorted[at - 1] as f64 / 1000.0
    };
    println!(
        "{what}: {n} receipts in {seconds:.2} s = {:.0} receipts/s; per request p50 {:.1} ms, \
         p99 {:.1} ms, max {:.1} ms",
        n as f64 / seconds,
        ms(0.5),
        ms(0.99),
        ms(1.0)
    );
}

#[tokio::main]
async fn main() {
    let n = knob("BENCH_RECEIPTS", 20_000);
    let concurrency = knob("BENCH_CONCURRENCY", 32);
    let (_server, url) =
        ThrowawayPg::unless_given(std::env::var("DATABASE_URL").ok(), Durability::Default)
            .expect("throwaway PostgreSQL");
    let pool = db::connect(&url, 16).await.expect("connect");
    db::migrate(&pool).await.expect("migrate");
    prepare(&pool, n).await;

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let hook = format!(
        "http://{}/webhooks/twilio",
        listener.local_addr().expect("address")
    );
    let config = config();
    let router = config.webhooks(Store::new(pool.clone())).router();
    let limits = (&config.webhooks).into();
    tokio::spawn(server::serve(
        listener,
        router,
        limits,
        CancellationToken::new(),
    ));

    let callbacks: Vec<_> = (1..=n).map(callback).collect();
    let fresh = pass(&hook, &callbacks, concurrency).await;
    let repeats = pass(&hook, &callbacks, concurrency).await;

    let results: Vec<(String, i64)> =
        sqlx::query_as("SELECT result, count(*) FROM sms_receipts GROUP BY 1 ORDER BY 1")
            .fetch_all(&pool)
            .await
            .expect("results");
    let resent: i64 = sqlx::query_scalar("SELECT count(*) FROM sms_outbox WHERE resends > 0")
        .fetch_one(&pool)
        .await
        .expect("resent");
    println!("signed Twilio status callbacks over loopback, {concurrency} concurrent");
    print("first pass", n, &fresh);
    print("repeat pass (duplicates)", n, &repeats);
    println!("stored receipts by result: {results:?}; messages queued for a resend: {resent}");
}
