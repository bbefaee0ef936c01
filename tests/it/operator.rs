//! The operator's commands on single messages, run as the real binary: `messages list`, `show`,
//! `retry` and `cancel` through the lifecycle's events, and `segments` / `templates preview`,
//! which must agree with what the relay records when it sends.

use serde_json::Value;
use sms_relay::providers::SimulatorSettings;

use crate::support::{
    TestApp, accepting,
    cli::{output, sms_relay, text},
    quick_retries, simulator,
};

/// Runs `sms-relay` with `args`; its exit success, stdout and stderr.
fn cli(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    let out = output(sms_relay(app).args(args));
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// A simulator that calls every number invalid: each message fails in its first round.
fn rejecting() -> std::sync::Arc<sms_relay::providers::Simulator> {
    simulator(
        "sim",
        SimulatorSettings {
            bad_recipient: 1.0,
            ..SimulatorSettings::default()
        },
    )
}

#[tokio::test]
async fn a_failed_message_with_a_valid_code_is_retried_once_more() {
    let app = TestApp::new().await;
    let id = app.otp("+8801711000001", "482913").await;
    app.run_until_idle([rejecting()], quick_retries()).await;
    assert_eq!(app.state_of(id).await.0, "failed");

    let (ok, stdout, stderr) = cli(&app, &["messages", "retry", &id.to_string()]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("retried"), "{stdout}");
    let sim = accepting("sim");
    app.run_until_idle([sim.clone()], quick_retries()).await;
    assert_eq!(sim.sent(), 1);
    assert_eq!(app.state_of(id).await.0, "sent");
    assert_eq!(
        app.attempts_of(id).await,
        [
            ("sim".into(), 1, 1, "bad_recipient".into()),
            ("sim".into(), 2, 1, "accepted".into())
        ]
    );
    // Its history shows both rounds, the number masked and no code.
    let (ok, stdout, _) = cli(
        &app,
        &["messages", "show", &id.to_string(), "--format", "json"],
    );
    assert!(ok);
    let history: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(history["message"]["state"], "sent");
    assert_eq!(history["message"]["recipient"], "+880••••••••01");
    assert_eq!(history["calls"].as_array().unwrap().len(), 2);
    assert!(!stdout.contains("482913") && !stdout.contains("1711000001"));
}

#[tokio::test]
async fn a_message_whose_code_has_expired_is_not_retried() {
    let app = TestApp::new().await;
    let id = app.otp("+8801711000002", "482913").await;
    app.run_until_idle([rejecting()], quick_retries()).await;
    // Its code ran out meanwhile.
    sqlx::query(
        "UPDATE sms_outbox SET created_at = now() - interval '20 minutes', \
                expires_at = now() - interval '10 minutes' WHERE id = $1",
    )
    .bind(id)
    .execute(&app.pool)
    .await
    .unwrap();

    let (ok, _, stderr) = cli(&app, &["messages", "retry", &id.to_string()]);
    assert!(!ok);
    assert!(stderr.contains("refused"), "{stderr}");
    let sim = accepting("sim");
    app.run_until_idle([sim.clone()], quick_retries()).await;
    assert_eq!(sim.sent(), 0);
    assert_eq!(app.state_of(id).await.0, "failed");
}

#[tokio::test]
async fn a_cancelled_message_is_not_sent_by_the_relay_and_says_why() {
    let app = TestApp::new().await;
    let cancelled = app.otp("+8801711000003", "482913").await;
    let kept = app.otp("+8801711000004", "482914").await;

    let (ok, _, stderr) = cli(
        &app,
        &[
            "messages",
            "cancel",
            &cancelled.to_string(),
            "--reason",
            "user reported a wrong number",
        ],
    );
    assert!(ok, "{stderr}");
    let sim = accepting("sim");
    app.run_until_idle([sim.clone()], quick_retries()).await;
    assert_eq!(sim.sent(), 1);
    assert_eq!(app.state_of(kept).await.0, "sent");
    let (state, reason) = app.state_of(cancelled).await;
    assert_eq!(state, "cancelled");
    assert!(
        reason.unwrap_or_default().contains("wrong number"),
        "the reason is kept"
    );
    // A final message cannot be cancelled again.
    let (ok, _, stderr) = cli(
        &app,
        &["messages", "cancel", &kept.to_string(), "--reason", "late"],
    );
    assert!(!ok);
    assert!(stderr.contains("refused"), "{stderr}");
}

#[tokio::test]
async fn list_filters_by_state_template_and_provider_and_masks_numbers() {
    let app = TestApp::new().await;
    let failed = app.otp("+8801711000005", "482913").await;
    app.run_until_idle([rejecting()], quick_retries()).await;
    let waiting = app.otp("+8801711000006", "482913").await;

    let list = |args: &[&str]| {
        let mut all = vec!["messages", "list", "--format", "json"];
        all.extend_from_slice(args);
        let (ok, stdout, stderr) = cli(&app, &all);
        assert!(ok, "{stderr}");
        let rows: Vec<Value> = serde_json::from_str(&stdout).unwrap();
        rows.into_iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(list(&[]), [waiting.to_string(), failed.to_string()]);
    assert_eq!(list(&["--state", "failed"]), [failed.to_string()]);
    assert_eq!(list(&["--provider", "sim"]), [failed.to_string()]);
    assert!(list(&["--template", "admin_2fa"]).is_empty());
    let (_, table, _) = cli(&app, &["messages", "list"]);
    assert!(table.contains("+880••••••••05") && !table.contains("1711000005"));
}

#[tokio::test]
async fn previews_and_segments_agree_with_what_the_relay_records() {
    let app = TestApp::new().await;
    // English fits GSM-7; Bengali takes UCS-2.
    let en = app.otp("+8801711000007", "482913").await;
    let bn = app
        .enqueue(&sms_relay::store::EnqueueRequest {
            locale: Some("bn".into()),
            ..crate::support::otp_request("+8801711000008", "482913")
        })
        .await;
    app.send_due().await;
    for (id, locale) in [(en, "en"), (bn, "bn")] {
        let (segments, encoding): (i16, String) =
            sqlx::query_as("SELECT segments, encoding FROM sms_attempts WHERE message_id = $1")
                .bind(id)
                .fetch_one(&app.pool)
                .await
                .unwrap();
        let (ok, stdout, stderr) = cli(
            &app,
            &[
                "templates",
                "preview",
                "otp",
                "--locale",
                locale,
                "--param",
                "code=482913",
                "--format",
                "json",
            ],
        );
        assert!(ok, "{stderr}");
        let preview: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(preview["parts"], i64::from(segments), "{locale}");
        assert_eq!(preview["encoding"], encoding.as_str(), "{locale}");
        let text = preview["text"].as_str().unwrap();
        let (ok, stdout, _) = cli(&app, &["segments", text, "--format", "json"]);
        assert!(ok);
        let counted: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(counted["parts"], i64::from(segments), "{locale}");
        assert_eq!(counted["encoding"], encoding.as_str(), "{locale}");
    }
}

#[tokio::test]
async fn the_database_masks_numbers_as_the_relay_does() {
    let app = TestApp::new().await;
    for number in ["+8801712345678", "+44207946000", "+12345", "8801712345678"] {
        let masked: String = sqlx::query_scalar("SELECT sms_mask($1)")
            .bind(number)
            .fetch_one(&app.pool)
            .await
            .unwrap();
        assert_eq!(
            masked,
            sms_relay::domain::recipient::mask(number),
            "{number}"
        );
    }
}
