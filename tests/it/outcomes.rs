//! What a round's outcome does to a message: fallback, retries with backoff, expiry, max rounds,
//! bad recipients, poison rows, and what each attempt row records.

use std::sync::Arc;

use chrono::{TimeDelta, Utc};
use serde_json::json;
use sms_relay::{
    providers::{
        AttemptRecord, Link, PriceRule, PriceTable, Provider, ProviderChain, SimulatorSettings,
    },
    relay::{Relay, RetryPolicy},
    store::EnqueueRequest,
};

use crate::support::{
    RELAY, TestApp, accepted_call, accepting, chain, failed_round, failing, otp_request,
    quick_retries, run_relay_until_idle, sent_round, settings, simulator,
};

const NUMBER: &str = "+8801712345678";

#[tokio::test]
async fn a_provider_problem_falls_over_to_the_next_provider() {
    let app = TestApp::new().await;
    let id = app.otp(NUMBER, "482913").await;
    let (primary, backup) = (failing("primary"), accepting("backup"));
    app.run_until_idle([primary.clone(), backup.clone()], quick_retries())
        .await;

    assert_eq!(app.state_of(id).await.0, "sent");
    assert_eq!(
        app.attempts_of(id).await,
        [
            ("primary".into(), 1, 1, "provider_error".into()),
            ("backup".into(), 1, 2, "accepted".into())
        ]
    );
}

#[tokio::test]
async fn a_bad_recipient_fails_at_once_without_trying_other_providers() {
    let app = TestApp::new().await;
    let id = app.otp(NUMBER, "482913").await;
    let rejecting = simulator(
        "primary",
        SimulatorSettings {
            bad_recipient: 1.0,
            ..SimulatorSettings::default()
        },
    );
    let backup = accepting("backup");
    app.run_until_idle([rejecting, backup.clone()], quick_retries())
        .await;

    let (state, reason) = app.state_of(id).await;
    assert_eq!(state, "failed");
    assert!(
        reason.unwrap().contains("bad_recipient from primary"),
        "reason names the class and provider"
    );
    assert_eq!(backup.calls(), 0);
    assert_eq!(app.attempts_of(id).await.len(), 1);
}

#[tokio::test]
async fn an_unknown_outcome_is_recorded_as_such_and_falls_over() {
    let app = TestApp::new().await;
    let id = app.otp(NUMBER, "482913").await;
    let unsure = simulator(
        "unsure",
        SimulatorSettings {
            unknown: 1.0,
            ..SimulatorSettings::default()
        },
    );
    app.run_until_idle([unsure, accepting("backup")], quick_retries())
        .await;
    assert_eq!(
        app.attempts_of(id).await,
        [
            ("unsure".into(), 1, 1, "unknown".into()),
            ("backup".into(), 1, 2, "accepted".into())
        ]
    );
}

#[tokio::test]
async fn when_every_provider_fails_a_retry_is_scheduled_with_backoff() {
    let app = TestApp::new().await;
    let id = app.otp(NUMBER, "482913").await;
    let policy = RetryPolicy {
        base_ms: 60_000,
        cap_ms: 60_000,
        jitter: 0.0,
        ..RetryPolicy::default()
    };
    app.run_until_idle([failing("a"), failing("b")], policy)
        .await;

    let (state, reason) = app.state_of(id).await;
    assert_eq!(state, "pending");
    assert!(reason.unwrap().contains("simulated provider outage"));
    let wait = (app.message(id).await.next_attempt_at - Utc::now()).as_seconds_f64();
    assert!((55.0..=60.0).contains(&wait), "next try in {wait} s");
    assert_eq!(app.attempts_of(id).await.len(), 2);
}

#[tokio::test]
async fn retries_continue_until_a_provider_recovers() {
    let app = TestApp::new().await;
    let id = app.otp(NUMBER, "482913").await;
    let flaky = failing("flaky");
    let patient = RetryPolicy {
        base_ms: 60_000,
        cap_ms: 60_000,
        ..RetryPolicy::default()
    };
    app.run_until_idle([flaky.clone()], patient).await;
    // Still pending with a retry scheduled; time passes and the provider recovers.
    assert_eq!(app.state_of(id).await.0, "pending");
    app.make_due().await;
    app.run_chain_until_drained(chain([accepting("flaky")]), quick_retries())
        .await;
    assert_eq!(app.state_of(id).await.0, "sent");
    let rounds: Vec<i32> = app.attempts_of(id).await.iter().map(|a| a.1).collect();
    assert_eq!(rounds, [1, 2]);
}

#[tokio::test]
async fn a_code_that_expires_before_its_retry_ends_expired_and_is_never_sent() {
    let app = TestApp::new().await;
    let id = app.otp_expiring_in(NUMBER, 4).await;
    let down = failing("down");
    let policy = RetryPolicy {
        base_ms: 10_000,
        cap_ms: 10_000,
        jitter: 0.0,
        ..RetryPolicy::default()
    };
    app.run_until_idle([down.clone()], policy.clone()).await;

    let (state, reason) = app.state_of(id).await;
    assert_eq!(state, "expired");
    assert!(
        reason
            .unwrap()
            .contains("validity ends before the next retry")
    );
    assert_eq!(down.calls(), 1);
    assert_eq!(down.sent(), 0);
    // Nothing is left to do, and a later relay sends nothing.
    let later = accepting("later");
    app.run_until_idle([later.clone()], policy).await;
    assert_eq!(later.calls(), 0);
}

#[tokio::test]
async fn a_message_claimed_after_its_validity_is_expired_without_a_send() {
    let app = TestApp::new().await;
    let id = app.otp(NUMBER, "482913").await;
    sqlx::query("UPDATE sms_outbox SET created_at = now() - interval '20 minutes', expires_at = now() - interval '1 second'")
        .execute(&app.pool)
        .await
        .unwrap();
    let sim = app.send_due().await;
    assert_eq!(app.state_of(id).await.0, "expired");
    assert_eq!(sim.calls(), 0);
}

#[tokio::test]
async fn max_rounds_ends_the_message_failed_with_the_reason() {
    let app = TestApp::new().await;
    let id = app.otp(NUMBER, "482913").await;
    let down = failing("down");
    let policy = RetryPolicy {
        max_rounds: 3,
        ..quick_retries()
    };
    app.run_chain_until_drained(chain([down.clone()]), policy)
        .await;

    let (state, reason) = app.state_of(id).await;
    assert_eq!(state, "failed");
    let reason = reason.unwrap();
    assert!(
        reason.contains("gave up after 3 rounds") && reason.contains("provider outage"),
        "{reason}"
    );
    assert_eq!(down.calls(), 3);
    let rounds: Vec<i32> = app.attempts_of(id).await.iter().map(|a| a.1).collect();
    assert_eq!(rounds, [1, 2, 3]);
}

#[tokio::test]
async fn a_poison_row_fails_with_a_reason_and_blocks_nobody() {
    let app = TestApp::new().await;
    let poison_params = app.otp("+8801711111111", "482913").await;
    sqlx::query("UPDATE sms_outbox SET params = '{\"code\": {\"nested\": true}}' WHERE id = $1")
        .bind(poison_params)
        .execute(&app.pool)
        .await
        .unwrap();
    let poison_template = app.otp("+8801722222222", "222222").await;
    sqlx::query("UPDATE sms_outbox SET template = 'deleted_later' WHERE id = $1")
        .bind(poison_template)
        .execute(&app.pool)
        .await
        .unwrap();
    let healthy = app.otps(50).await;

    let sim = app.send_due().await;

    let (state, reason) = app.state_of(poison_params).await;
    assert_eq!(state, "failed");
    assert!(reason.unwrap().contains("not a string or number"));
    let (state, reason) = app.state_of(poison_template).await;
    assert_eq!(state, "failed");
    assert!(
        reason
            .unwrap()
            .contains("template deleted_later/en does not exist")
    );
    assert_eq!(sim.sent(), healthy.len() as u64);
    assert_eq!(
        app.states().await.get("sent"),
        Some(&(healthy.len() as i64))
    );
}

#[tokio::test]
async fn a_message_longer_than_its_template_allows_fails_unsent() {
    let app = TestApp::new().await;
    app.any_param_shape().await;
    sqlx::query("UPDATE sms_templates SET max_parts = 1 WHERE name = 'otp' AND locale = 'bn'")
        .execute(&app.pool)
        .await
        .unwrap();
    // Bengali text is UCS-2: the template and a 64-character value make two parts.
    let long = app
        .enqueue(&EnqueueRequest {
            locale: Some("bn".into()),
            params: json!({"code": "7".repeat(64)}),
            ..otp_request("+8801812345678", "")
        })
        .await;
    let short = app.otp(NUMBER, "482913").await;

    let sim = app.send_due().await;

    let (state, reason) = app.state_of(long).await;
    assert_eq!(state, "failed");
    assert_eq!(
        reason.as_deref(),
        Some("renders to 2 parts; template otp allows 1")
    );
    assert!(
        app.attempts(long).await.is_empty(),
        "no provider was called"
    );
    assert_eq!(app.state_of(short).await.0, "sent");
    assert_eq!(sim.sent(), 1);
}

#[tokio::test]
async fn each_attempt_records_segments_encoding_cost_and_provider_ids() {
    let app = TestApp::new().await;
    let english = app.otp(NUMBER, "482913").await;
    let bengali = app
        .enqueue(&EnqueueRequest {
            locale: Some("bn".into()),
            params: json!({"code": 771204}),
            ..otp_request("+8801812345678", "")
        })
        .await;
    let priced = ProviderChain::new(vec![
        Link::new(accepting("local") as Arc<dyn Provider>).with_prices(PriceTable::new(&[
            PriceRule {
                prefix: "+880".into(),
                per_part: 0.25,
                currency: "BDT".into(),
            },
        ])),
    ]);
    let relay = Relay::new(app.store(), Arc::new(priced), settings(), quick_retries());
    run_relay_until_idle(relay).await;

    let en = app.first_attempt(english).await;
    assert_eq!(
        (en.provider.as_str(), en.segments, en.encoding.as_str()),
        ("local", 1, "gsm7")
    );
    assert_eq!(
        (en.cost.as_deref(), en.currency.as_deref(), en.http_status),
        (Some("0.250000"), Some("BDT"), Some(200))
    );
    assert!(en.provider_message_id.unwrap().starts_with("sim-"));
    assert_eq!(en.template, "otp");
    assert!(en.latency_ms >= 0.0);
    let bn = app.first_attempt(bengali).await;
    assert_eq!((bn.segments, bn.encoding.as_str()), (1, "ucs2"));
}

#[tokio::test]
async fn a_provider_that_hangs_is_cut_off_at_the_codes_deadline() {
    let app = TestApp::new().await;
    let id = app.otp_expiring_in(NUMBER, 3).await;
    let hung = simulator(
        "hung",
        SimulatorSettings {
            latency_ms: 60_000,
            ..SimulatorSettings::default()
        },
    );
    app.run_until_idle(&[hung.clone(), accepting("never-reached")], quick_retries())
        .await;

    let (state, reason) = app.state_of(id).await;
    assert_eq!(state, "expired");
    assert!(reason.unwrap().contains("validity ended"));
    assert_eq!(
        hung.sent(),
        0,
        "the call was abandoned before the simulator answered"
    );
    assert_eq!(
        app.attempts_of(id).await,
        [("hung".into(), 1, 1, "unknown".into())]
    );
}

#[tokio::test]
async fn a_message_superseded_while_in_flight_is_not_retried() {
    let app = TestApp::new().await;
    let old = app.otp(NUMBER, "111111").await;
    let claimed = app.claim(1).await;
    assert_eq!(claimed[0].id, old);
    let new = app.otp(NUMBER, "222222").await;
    assert_eq!(
        app.state_of(old).await.0,
        "pending",
        "a message being sent is left to its relay"
    );

    app.complete(&[failed_round(&claimed[0])]).await;
    let (state, reason) = app.state_of(old).await;
    assert_eq!(state, "cancelled");
    assert!(
        reason
            .unwrap()
            .starts_with("superseded by a newer message; last error: provider down")
    );
    assert_eq!(app.state_of(new).await.0, "pending");
}

#[tokio::test]
async fn odd_provider_values_are_recorded_without_failing_the_batch() {
    let app = TestApp::new().await;
    let ids = app.otps(2).await;
    let claimed = app.claim(2).await;
    let now = Utc::now();
    let odd = sms_relay::providers::AttemptRecord {
        provider: "odd\0provider".into(),
        chain_step: 1,
        client_ref: "1r1s1".into(),
        started_at: now,
        finished_at: now - TimeDelta::milliseconds(5),
        outcome: sms_relay::providers::Outcome::Accepted,
        http_status: Some(200),
        error_code: None,
        error_message: Some("nul\0byte".into()),
        provider_message_id: Some("SM1".into()),
        cost: Some(sms_relay::providers::Cost {
            micros: -75_100,
            currency: "usd".into(),
        }),
    };
    let finishes: Vec<_> = claimed
        .iter()
        .map(|m| sent_round(m, vec![odd.clone()]))
        .collect();
    app.complete(&finishes).await;
    // Writing the same batch again (a retry after a lost acknowledgement) changes nothing.
    app.store()
        .complete(&finishes, RELAY, 0, true)
        .await
        .unwrap();

    for &id in &ids {
        assert_eq!(app.state_of(id).await.0, "sent");
    }
    let odd = app.first_attempt(ids[0]).await;
    assert_eq!(
        (
            odd.cost.unwrap().as_str(),
            odd.currency.unwrap().as_str(),
            odd.provider.as_str(),
            odd.latency_ms
        ),
        ("0.075100", "USD", "oddprovider", 0.0)
    );
    assert_eq!(app.attempt_count().await, 2);
}

#[tokio::test]
async fn a_round_the_database_refuses_is_still_recorded_and_spares_the_rest() {
    let app = TestApp::new().await;
    app.otps(2).await;
    let claimed = app.claim(2).await;
    let attempt = |m, chain_step| AttemptRecord {
        chain_step,
        client_ref: format!("1r1s{chain_step}"),
        provider_message_id: Some("SM1".into()),
        ..accepted_call(m)
    };
    // chain_step 0 breaks a CHECK: the database refuses that round's attempt row.
    let finishes: Vec<_> = claimed
        .iter()
        .zip([1, 0])
        .map(|(m, step)| sent_round(m, vec![attempt(m, step)]))
        .collect();
    let store = app.store();
    let err = store
        .complete(&finishes, RELAY, 0, false)
        .await
        .unwrap_err();
    assert!(err.is_data_error(), "{err}");

    // The relay's completer, given the same batch, records both outcomes.
    sms_relay::relay::record(
        &store,
        &finishes,
        RELAY,
        0,
        std::time::Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        app.states().await.get("sent"),
        Some(&2),
        "neither sent message is left to be sent again"
    );
    assert_eq!(
        app.attempt_count().await,
        1,
        "the good round's attempt row is kept"
    );
}
