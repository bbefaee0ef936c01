//! The provider chain over real HTTP: fallback, retries, bad recipients, circuit breakers, rate
//! limits, the unknown-outcome policy, and the operator tools (`providers check`, `send-test`).

use std::{process::Command, sync::Arc, time::Duration};

use chrono::Utc;
use serde_json::json;
use sms_relay::{
    config::RelaySettings,
    providers::{self, ProviderConfig, UnknownPolicy},
    relay::{Relay, RetryPolicy, StopWhen},
};
use tokio_util::sync::CancellationToken;

use crate::{
    fakes::{FakeProvider, Kind},
    support::{
        TestApp,
        cli::{output, sms_relay},
        eventually, http_chain, provider_config, quick_retries, run_relay_until_idle, settings,
        within,
    },
};

const NUMBER: &str = "+8801712000001";

/// The last digits of numbers every fake accepts (no scenario of theirs ends so).
const ACCEPTED_SUFFIX: &str = "11";

/// A local aggregator first (SSL Wireless), Twilio behind it.
async fn two_providers() -> (FakeProvider, FakeProvider) {
    (
        FakeProvider::start(Kind::SslWireless).await,
        FakeProvider::start(Kind::Twilio).await,
    )
}

#[tokio::test]
async fn a_primary_outage_falls_over_to_the_secondary() {
    let app = TestApp::new().await;
    let (primary, secondary) = two_providers().await;
    primary.set_server_error_rate(1.0);
    let id = app.otp(NUMBER, "551234").await;
    let chain = http_chain(&[
        provider_config(&primary, "ssl", json!({})),
        provider_config(&secondary, "twilio", json!({})),
    ]);
    app.run_chain_until_idle(chain, quick_retries()).await;
    assert_eq!(
        app.attempts_of(id).await,
        [
            ("ssl".into(), 1, 1, "provider_error".into()),
            ("twilio".into(), 1, 2, "accepted".into())
        ]
    );
    assert_eq!(app.state_of(id).await.0, "sent");
    assert_eq!(
        (primary.received().len(), secondary.received().len()),
        (1, 1)
    );
}

#[tokio::test]
async fn a_slow_answer_within_the_timeout_is_accepted_and_its_latency_recorded() {
    let app = TestApp::new().await;
    let fake = FakeProvider::start(Kind::AlphaSms).await;
    fake.set_latency(Duration::from_millis(150));
    let id = app.otp(NUMBER, "551234").await;
    app.run_chain_until_idle(
        http_chain(&[provider_config(&fake, "alpha", json!({}))]),
        quick_retries(),
    )
    .await;
    assert_eq!(app.state_of(id).await.0, "sent");
    let latency = app.first_attempt(id).await.latency_ms;
    assert!(
        latency >= 150.0,
        "latency_ms covers the provider's time: {latency}"
    );
}

#[tokio::test]
async fn when_every_provider_is_down_a_retry_is_scheduled() {
    let app = TestApp::new().await;
    let (primary, secondary) = two_providers().await;
    primary.set_server_error_rate(1.0);
    secondary.set_server_error_rate(1.0);
    let id = app.otp(NUMBER, "551234").await;
    let chain = http_chain(&[
        provider_config(&primary, "ssl", json!({})),
        provider_config(&secondary, "twilio", json!({})),
    ]);
    // The default policy waits about a second before round two: the relay goes idle first.
    app.run_chain_until_idle(chain, RetryPolicy::default())
        .await;
    let (state, reason) = app.state_of(id).await;
    assert_eq!(state, "pending");
    assert!(reason.unwrap().contains("twilio (20500)"));
    let m = app.message(id).await;
    assert!(m.next_attempt_at > Utc::now() && m.rounds == 1);
    assert_eq!(app.attempts_of(id).await.len(), 2);
}

#[tokio::test]
async fn a_bad_recipient_fails_without_touching_the_next_provider() {
    let app = TestApp::new().await;
    let (primary, secondary) = two_providers().await;
    let id = app.otp("+8801712000004", "551234").await;
    let chain = http_chain(&[
        provider_config(&primary, "ssl", json!({})),
        provider_config(&secondary, "twilio", json!({})),
    ]);
    app.run_chain_until_idle(chain, quick_retries()).await;
    assert_eq!(app.state_of(id).await.0, "failed");
    assert_eq!(
        app.attempts_of(id).await,
        [("ssl".into(), 1, 1, "bad_recipient".into())]
    );
    assert!(secondary.received().is_empty());
}

/// One message at a time, so the breaker sees each result before the next call.
fn one_at_a_time() -> RelaySettings {
    RelaySettings {
        batch_size: 1,
        max_in_flight: 1,
        ..settings()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_circuit_opens_after_failures_shows_in_status_and_closes_after_recovery() {
    let app = TestApp::new().await;
    let (primary, secondary) = two_providers().await;
    primary.set_server_error_rate(1.0);
    let circuit = json!({ "circuit": { "consecutive_failures": 3, "open_ms": 1500 } });
    let chain = http_chain(&[
        provider_config(&primary, "ssl", circuit),
        provider_config(&secondary, "twilio", json!({})),
    ]);
    let relay = Relay::new(app.store(), chain.clone(), one_at_a_time(), quick_retries());
    let cancel = CancellationToken::new();
    let running = tokio::spawn(relay.run(StopWhen::Cancelled, cancel.clone()));

    let ids = app.otps_ending_in(6, ACCEPTED_SUFFIX).await;
    eventually(async || app.states().await.get("sent") == Some(&6)).await;
    assert_eq!(
        primary.received().len(),
        3,
        "skipped once the circuit opened"
    );
    assert_eq!(secondary.received().len(), 6);
    assert_eq!(
        app.attempts_of(ids[5]).await.len(),
        1,
        "no attempt row for a skipped provider"
    );

    let store = app.store();
    eventually(async || {
        let rows = store.circuits().await.unwrap();
        rows.iter()
            .any(|c| c.provider == "ssl" && c.state == "open")
    })
    .await;
    let status = output(sms_relay(&app).arg("status"));
    let shown = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{shown}");
    assert!(
        shown
            .lines()
            .any(|l| l.contains(" ssl ") && l.contains(" open ")),
        "{shown}"
    );

    // The provider recovers; after the open period one probe closes the circuit.
    primary.set_server_error_rate(0.0);
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    let late = app.otp("+8801812000001", "661234").await;
    eventually(async || app.state_of(late).await.0 == "sent").await;
    assert_eq!(
        app.attempts_of(late).await,
        [("ssl".into(), 1, 1, "accepted".into())]
    );
    eventually(async || {
        let rows = store.circuits().await.unwrap();
        rows.iter()
            .any(|c| c.provider == "ssl" && c.state == "closed")
    })
    .await;
    cancel.cancel();
    within(30, running).await.unwrap().unwrap();
    assert!(
        store.circuits().await.unwrap().is_empty(),
        "a relay that stops removes its rows"
    );
}

#[tokio::test]
async fn the_rate_limit_holds_under_a_burst_without_losing_messages() {
    let app = TestApp::new().await;
    let fake = FakeProvider::start(Kind::Vonage).await;
    let limited = json!({ "rate_limit": { "per_second": 5, "burst": 5, "max_wait_ms": 10000 } });
    let chain = http_chain(&[provider_config(&fake, "vonage", limited)]);
    app.otps_ending_in(15, ACCEPTED_SUFFIX).await;
    app.run_chain_until_idle(chain, quick_retries()).await;
    assert_eq!(app.states().await.get("sent"), Some(&15));
    let mut arrivals: Vec<_> = fake.received().iter().map(|r| r.at).collect();
    arrivals.sort();
    assert_eq!(arrivals.len(), 15);
    // A bucket of 5 refilled at 5/s lets at most 10 requests into any second, and 15 requests
    // take at least 2 s. (Lower bounds only, with 100 ms for loopback jitter: a slow machine
    // cannot break them.)
    for window in arrivals.windows(11) {
        assert!(window[10] - window[0] >= Duration::from_millis(900));
    }
    assert!(arrivals[14] - arrivals[0] >= Duration::from_millis(1_900));
}

#[tokio::test]
async fn a_provider_out_of_tokens_is_passed_over_after_its_wait() {
    let app = TestApp::new().await;
    let (primary, secondary) = two_providers().await;
    let scarce = json!({ "rate_limit": { "per_second": 1, "burst": 2, "max_wait_ms": 50 } });
    let chain = http_chain(&[
        provider_config(&primary, "ssl", scarce),
        provider_config(&secondary, "twilio", json!({})),
    ]);
    app.otps_ending_in(8, ACCEPTED_SUFFIX).await;
    app.run_chain_until_idle(chain, quick_retries()).await;
    assert_eq!(app.states().await.get("sent"), Some(&8));
    let (first, second) = (primary.received().len(), secondary.received().len());
    assert!(
        first <= 3,
        "at most the burst (and one refill) went to the primary: {first}"
    );
    assert_eq!(first + second, 8);
}

#[tokio::test]
async fn an_unknown_outcome_can_count_as_sent_by_policy() {
    let app = TestApp::new().await;
    let (unsure, backup) = (
        FakeProvider::start(Kind::Vonage).await,
        FakeProvider::start(Kind::Twilio).await,
    );
    unsure.set_slow_delay(Duration::from_secs(2));
    let id = app.otp("+8801712000008", "551234").await;
    let chain = [
        provider_config(&unsure, "vonage", json!({})),
        provider_config(&backup, "twilio", json!({})),
    ];
    assert_sent_on_one_unknown_call(&app, id, &chain).await;
    assert!(backup.received().is_empty());
}

#[tokio::test]
async fn a_call_cut_by_the_codes_deadline_counts_as_sent_by_the_same_policy() {
    let app = TestApp::new().await;
    let unsure = FakeProvider::start(Kind::Twilio).await;
    unsure.set_slow_delay(Duration::from_secs(30));
    // The provider's own timeout is longer than the code's validity: the round's deadline cuts
    // the call, not the HTTP client.
    let id = app.otp_expiring_in("+8801712000208", 3).await;
    let chain = [provider_config(
        &unsure,
        "twilio",
        json!({ "timeout_ms": 30000 }),
    )];
    assert_sent_on_one_unknown_call(&app, id, &chain).await;
}

/// Runs a relay over `chain` under `on_unknown = assume_sent`: message `id` ends `sent` after one
/// call to the chain's first provider whose outcome is unknown, and no other call.
async fn assert_sent_on_one_unknown_call(
    app: &TestApp,
    id: uuid::Uuid,
    configs: &[ProviderConfig],
) {
    let chain = providers::from_config(configs, None, UnknownPolicy::AssumeSent).unwrap();
    app.run_chain_until_idle(Arc::new(chain), quick_retries())
        .await;
    assert_eq!(app.state_of(id).await.0, "sent");
    assert_eq!(
        app.attempts_of(id).await,
        [(configs[0].name.clone(), 1, 1, "unknown".into())]
    );
}

/// A TOML `[[providers]]` entry for the binary, pointed at `fake`.
fn toml_entry(fake: &FakeProvider, name: &str) -> String {
    let mut entry = format!(
        "[[providers]]\nname = \"{name}\"\nkind = \"{}\"\nbase_url = \"{}\"\n",
        fake.kind().config_kind(),
        fake.base_url()
    );
    for (key, value) in fake.credentials() {
        entry.push_str(&format!("{key} = \"{value}\"\n"));
    }
    if fake.kind() != Kind::SslWireless {
        entry.push_str("sender = \"Glamora\"\n");
    }
    entry
}

fn sms_relay_with(config: &str, args: &[&str]) -> (bool, String) {
    let path = std::env::temp_dir().join(format!("sms-relay-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sms-relay"))
        .args(args)
        .arg("--config")
        .arg(&path)
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The secret credentials (not account ids such as Twilio's SID or Vonage's API key) appear
/// nowhere in `text`.
fn assert_no_secrets(fakes: &[&FakeProvider], text: &str) {
    for fake in fakes {
        for (key, value) in fake.credentials() {
            let secret = match key {
                "auth_token" | "api_secret" | "api_token" => true,
                "api_key" => fake.kind() != Kind::Vonage,
                _ => false,
            };
            assert!(!(secret && text.contains(&value)), "{key} leaked: {text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_check_shows_balances_and_refuses_bad_credentials() {
    let twilio = FakeProvider::start(Kind::Twilio).await;
    let vonage = FakeProvider::start(Kind::Vonage).await;
    let ssl = FakeProvider::start(Kind::SslWireless).await;
    let config = [
        toml_entry(&ssl, "ssl"),
        toml_entry(&twilio, "twilio"),
        toml_entry(&vonage, "vonage"),
    ]
    .join("\n");
    let (ok, text) = sms_relay_with(&config, &["providers", "check"]);
    assert!(ok, "{text}");
    assert!(text.contains("12.50 USD"), "{text}");
    assert!(text.contains("15.5359 EUR"), "{text}");
    assert!(text.contains("(no balance endpoint)"), "{text}");
    assert_no_secrets(&[&twilio, &vonage, &ssl], &text);

    let (token_key, token) = twilio.credentials().pop().unwrap();
    let wrong = toml_entry(&twilio, "twilio").replace(&token, "not-the-token");
    assert!(wrong.contains(token_key));
    let (ok, text) = sms_relay_with(&wrong, &["providers", "check"]);
    assert!(!ok, "{text}");
    assert!(text.contains("FAILED") && text.contains("20003"), "{text}");
    assert!(!text.contains("not-the-token"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_test_prints_the_classified_outcome() {
    let twilio = FakeProvider::start(Kind::Twilio).await;
    let config = format!(
        "{}prices = [{{ prefix = \"+880\", per_part = 0.31, currency = \"USD\" }}]\n",
        toml_entry(&twilio, "twilio")
    );
    let (ok, text) = sms_relay_with(
        &config,
        &["send-test", "--provider", "twilio", "--to", NUMBER],
    );
    assert!(ok, "{text}");
    assert!(
        text.contains("accepted") && text.contains("HTTP 201"),
        "{text}"
    );
    assert!(text.contains("cost 0.310000 USD"), "{text}");
    assert!(
        !text.contains(NUMBER),
        "the full number stays out of the output: {text}"
    );
    assert_no_secrets(&[&twilio], &text);
    let sent = twilio.received();
    assert_eq!((sent.len(), sent[0].to.as_str()), (1, NUMBER));

    let (ok, text) = sms_relay_with(
        &config,
        &[
            "send-test",
            "--provider",
            "twilio",
            "--to",
            "+8801712000004",
        ],
    );
    assert!(!ok, "{text}");
    assert!(
        text.contains("bad_recipient") && text.contains("21211"),
        "{text}"
    );
    let (ok, text) = sms_relay_with(
        &config,
        &["send-test", "--provider", "nope", "--to", NUMBER],
    );
    assert!(!ok && text.contains("no provider named \"nope\""), "{text}");
}

#[tokio::test]
async fn with_every_circuit_open_the_retry_waits_for_the_circuit() {
    let app = TestApp::new().await;
    let fake = FakeProvider::start(Kind::Infobip).await;
    fake.set_server_error_rate(1.0);
    let fragile = json!({ "circuit": { "consecutive_failures": 1, "open_ms": 60000 } });
    let chain = http_chain(&[provider_config(&fake, "infobip", fragile)]);
    let ids = app.otps_ending_in(2, ACCEPTED_SUFFIX).await;
    let relay = Relay::new(app.store(), chain, one_at_a_time(), quick_retries());
    run_relay_until_idle(relay).await;
    assert_eq!(
        fake.received().len(),
        1,
        "the second message found the circuit open"
    );
    let mut waits = Vec::new();
    for &id in &ids {
        let m = app.message(id).await;
        if m.state == "pending" {
            let wait = (m.next_attempt_at - Utc::now()).as_seconds_f64();
            waits.push((wait, app.attempts(id).await.len()));
        }
    }
    assert_eq!(waits.len(), ids.len());
    let skipped = waits.iter().find(|(_, attempts)| *attempts == 0).unwrap();
    assert!(
        skipped.0 > 50.0,
        "retry not before the circuit reopens: {waits:?}"
    );
}

#[tokio::test]
async fn a_throttled_send_is_retried_no_sooner_than_retry_after() {
    let app = TestApp::new().await;
    let fake = FakeProvider::start(Kind::Infobip).await;
    let id = app.otp("+8801712000002", "551234").await;
    let short_waits = RetryPolicy {
        base_ms: 10,
        cap_ms: 30_000,
        ..RetryPolicy::default()
    };
    app.run_chain_until_idle(
        http_chain(&[provider_config(&fake, "infobip", json!({}))]),
        short_waits,
    )
    .await;
    let (m, call) = (app.message(id).await, app.first_attempt(id).await);
    let (state, wait_s) = (
        m.state,
        (m.next_attempt_at - call.finished_at).as_seconds_f64(),
    );
    assert_eq!(state, "pending");
    assert!(
        wait_s >= 0.99,
        "the fake's Retry-After: 1 is honoured: {wait_s}"
    );
}

/// A code with `secs` of validity, to a number every fake accepts, sent through a Twilio fake that
/// answers too late for its timeout and then a Vonage fake, by a relay that keeps `margin_ms` of
/// validity in reserve. Returns the message and the Vonage fake.
async fn fallback_after_a_timeout(
    app: &TestApp,
    secs: i64,
    margin_ms: u64,
) -> (uuid::Uuid, FakeProvider) {
    let (slow, fallback) = (
        FakeProvider::start(Kind::Twilio).await,
        FakeProvider::start(Kind::Vonage).await,
    );
    slow.set_latency(Duration::from_secs(3));
    let id = app.otp_expiring_in("+8801712000011", secs).await;
    let chain = http_chain(&[
        provider_config(&slow, "twilio", json!({ "timeout_ms": 1000 })),
        provider_config(&fallback, "vonage", json!({})),
    ]);
    let settings = RelaySettings {
        expiry_margin_ms: margin_ms,
        ..settings()
    };
    let relay = Relay::new(app.store(), chain, settings, RetryPolicy::default());
    run_relay_until_idle(relay).await;
    assert_eq!(
        slow.received().len(),
        1,
        "the first provider was called and timed out"
    );
    (id, fallback)
}

#[tokio::test]
async fn a_fallback_is_told_only_the_validity_left_at_its_call() {
    let app = TestApp::new().await;
    // The margin (1 s) covers the request's way to the provider; the timeout and lookup before the
    // fallback take longer than that, so a validity computed once per round would outlive the code.
    let (id, fallback) = fallback_after_a_timeout(&app, 40, 1_000).await;
    assert_eq!(app.state_of(id).await.0, "sent");
    let expires_at = app.message(id).await.expires_at;
    let call = &fallback.received()[0];
    let ttl = call.ttl.expect("Vonage was given a ttl");
    assert!(
        call.arrived + chrono::TimeDelta::from_std(ttl).unwrap() <= expires_at,
        "a ttl of {ttl:?} at {} outlives the code (expires {expires_at})",
        call.arrived
    );
}

#[tokio::test]
async fn a_provider_that_cannot_be_told_so_short_a_validity_is_skipped_with_the_reason() {
    let app = TestApp::new().await;
    // 21 s at enqueue: after the timeout, less than Vonage's 20 s minimum is left.
    let (id, fallback) = fallback_after_a_timeout(&app, 21, 0).await;
    assert!(
        fallback.received().is_empty(),
        "Vonage was never told a longer life than the code has"
    );
    let (state, reason) = app.state_of(id).await;
    assert_ne!(state, "sent");
    let reason = reason.unwrap_or_default();
    assert!(
        reason.contains("vonage: skipped")
            && reason.contains("shortest it can be told is 20000 ms"),
        "{state}: {reason}"
    );
}

#[tokio::test]
async fn a_fictional_number_goes_to_the_simulator_only() {
    let app = TestApp::new().await;
    let fake = FakeProvider::start(Kind::SslWireless).await;
    // A chain with a simulator behind the provider: the simulator sends it.
    let simulated = app.fictional_otp("+88017120000011").await;
    app.run_chain_until_idle(
        http_chain(&[
            provider_config(&fake, "ssl", json!({})),
            ProviderConfig::simulator("sim", Default::default()),
        ]),
        quick_retries(),
    )
    .await;
    assert_eq!(app.state_of(simulated).await.0, "sent");
    assert_eq!(
        app.attempts_of(simulated).await,
        [("sim".into(), 1, 2, "accepted".into())]
    );
    // A chain of providers only: it fails at once, with the reason, and nothing is requested.
    let nowhere = app.fictional_otp("+88017120000022").await;
    app.run_chain_until_idle(
        http_chain(&[provider_config(&fake, "ssl", json!({}))]),
        quick_retries(),
    )
    .await;
    let (state, reason) = app.state_of(nowhere).await;
    assert_eq!(state, "failed");
    assert!(
        reason.as_deref().unwrap_or("").contains("fictional"),
        "{reason:?}"
    );
    assert!(app.attempts_of(nowhere).await.is_empty());
    assert!(fake.received().is_empty());
}
