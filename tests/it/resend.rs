//! Receipt-driven resends: an undelivered receipt, or none in time, sends the code again through
//! the next provider while it is valid, at most `receipts.max_resends` times.

use std::time::Duration;

use chrono::Utc;
use reqwest::StatusCode;
use sms_relay::{
    config::Config,
    maintenance::{Job, Ran},
};
use uuid::Uuid;

use crate::{
    fakes::Kind,
    support::{
        TestApp, accepting, history::StoredReceipt, http_chain, quick_retries, receipts::Dlr,
        scene::Scene,
    },
};

/// (provider, round, cause, resend_reason, outcome) of each attempt of `id`, in order.
async fn history(app: &TestApp, id: Uuid) -> Vec<(String, i32, String, Option<String>, String)> {
    app.attempts(id)
        .await
        .into_iter()
        .map(|a| {
            let cause = a.cause.expect("every call has a cause");
            (a.provider, a.round, cause, a.resend_reason, a.outcome)
        })
        .collect()
}

/// A [`Scene`] whose chain allows one resend, after `tweak`.
async fn scene(kinds: &[Kind], expires_in: Option<i64>, tweak: impl FnOnce(&mut Config)) -> Scene {
    Scene::new(kinds, expires_in, |c| {
        c.receipts.max_resends = 1;
        tweak(c);
    })
    .await
}

/// Twilio, then SSL Wireless (which sends no receipts), with a 1 s no-receipt window.
async fn short_window(tweak: impl FnOnce(&mut Config)) -> Scene {
    scene(&[Kind::Twilio, Kind::SslWireless], None, |c| {
        c.receipts.resend_after_ms = 1_000;
        tweak(c);
    })
    .await
}

/// Another OTP through `p1`, delivered, its receipt arriving now: receipts about `p1` flow.
async fn another_delivered(s: &Scene) {
    let other = s.send_one("+8801712345622").await;
    let attempt = s.app.accepted_attempt(other).await;
    let receipt = Dlr::of(&attempt, "delivered", "");
    assert_eq!(s.poster(0).post(&receipt).await, StatusCode::OK);
}

/// Waits out the 1 s no-receipt window, then sweeps once.
async fn after_quiet_window(s: &Scene) {
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    s.sweeper().sweep().await;
}

/// Waits out the 1 s no-receipt window while receipts about `p1` flow (for another message),
/// then sweeps once.
async fn after_window(s: &Scene) {
    another_delivered(s).await;
    after_quiet_window(s).await;
}

#[tokio::test]
async fn undelivered_receipt_resends_through_the_next_provider_once() {
    let s = scene(&[Kind::Twilio, Kind::Vonage], None, |_| {}).await;
    assert_eq!(s.twilio("undelivered", "30003").await, StatusCode::OK);
    assert_eq!(s.state().await, "pending");
    assert_eq!(s.resends().await, 1);

    s.run().await;
    let reason = "receipt from p1 said undelivered (30003)".to_owned();
    assert_eq!(
        history(&s.app, s.id).await,
        [
            ("p1".into(), 1, "first".into(), None, "accepted".into()),
            (
                "p2".into(),
                2,
                "resend".into(),
                Some(reason),
                "accepted".into()
            ),
        ]
    );
    assert_eq!(s.state().await, "sent");
    assert_eq!(
        s.fakes[1].received().len(),
        1,
        "the second provider sent it"
    );

    // The resent copy is undelivered too: the one allowed resend is used up.
    let vonage = s.app.accepted_attempt(s.id).await;
    let status = s.poster(1).post(&Dlr::of(&vonage, "failed", "2")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.state().await, "sent");
    assert_eq!(s.resends().await, 1);
    // A repeat of the first receipt, or another final one for the older attempt, resends nothing.
    assert_eq!(s.twilio("undelivered", "30003").await, StatusCode::OK);
    assert_eq!(s.twilio("failed", "30008").await, StatusCode::OK);
    let results: Vec<(String, bool)> = s
        .app
        .receipts()
        .await
        .into_iter()
        .map(|r| (r.result, r.resent))
        .collect();
    assert_eq!(
        results,
        [
            ("applied".into(), true),
            ("applied".into(), false),
            ("stale".into(), false)
        ]
    );
    s.run().await;
    assert_eq!(history(&s.app, s.id).await.len(), 2);
    assert_eq!(s.fakes[0].received().len(), 1);
}

#[tokio::test]
async fn undelivered_receipt_after_expiry_sends_nothing() {
    let s = scene(&[Kind::Twilio, Kind::Vonage], Some(2), |_| {}).await;
    // Wait until the code's validity has ended.
    let expires = s.app.message(s.id).await.expires_at;
    let left = (expires - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(left + Duration::from_millis(100)).await;

    assert_eq!(s.twilio("undelivered", "30003").await, StatusCode::OK);
    assert_eq!(
        s.delivery().await.as_deref(),
        Some("undelivered"),
        "the receipt is still recorded"
    );
    assert_eq!(s.state().await, "sent");
    assert_eq!(s.resends().await, 0);
    s.run().await;
    assert_eq!(history(&s.app, s.id).await.len(), 1);
    assert!(s.fakes[1].received().is_empty());
}

#[tokio::test]
async fn no_receipt_within_the_window_resends_through_the_next_provider() {
    // SSL Wireless sends no receipts: a resend through it is not followed by another.
    let s = short_window(|_| {}).await;

    // Too early: nothing happens.
    s.sweeper().sweep().await;
    assert_eq!(s.state().await, "sent");

    // Receipts about p1 keep coming, but not this one.
    after_window(&s).await;
    assert_eq!(s.state().await, "pending");
    s.run().await;
    assert_eq!(
        history(&s.app, s.id).await,
        [
            ("p1".into(), 1, "first".into(), None, "accepted".into()),
            (
                "p2".into(),
                2,
                "resend".into(),
                Some("no delivery receipt within 1 s".into()),
                "accepted".into()
            ),
        ]
    );
    assert_eq!(s.fakes[1].received().len(), 1);

    // The SSL attempt expects no receipt, and the resend used the one allowed.
    after_window(&s).await;
    assert_eq!(s.state().await, "sent");
    assert_eq!(s.resends().await, 1);
}

#[tokio::test]
async fn no_receipt_at_all_from_the_provider_holds_the_resends_off() {
    // Nothing came from p1 since the message was accepted: the receipt path may be down, and the
    // code most likely arrived.
    let s = short_window(|_| {}).await;
    after_quiet_window(&s).await;
    assert_eq!(s.state().await, "sent");
    assert_eq!(s.resends().await, 0);
    assert!(s.fakes[1].received().is_empty());

    // Once receipts about p1 come again, the one that never came counts as missing.
    another_delivered(&s).await;
    s.sweeper().sweep().await;
    assert_eq!(s.state().await, "pending");
    assert_eq!(s.resends().await, 1);
}

#[tokio::test]
async fn a_delivered_receipt_stops_the_no_receipt_resend() {
    let s = short_window(|_| {}).await;
    assert_eq!(s.twilio("delivered", "").await, StatusCode::OK);
    after_window(&s).await;
    assert_eq!(s.state().await, "sent");
    assert_eq!(s.resends().await, 0);
}

#[tokio::test]
async fn a_delivered_receipt_withdraws_a_resend_not_yet_sent() {
    let s = short_window(|_| {}).await;
    after_window(&s).await;
    assert_eq!(s.state().await, "pending");
    // The receipt was only late.
    assert_eq!(s.twilio("delivered", "").await, StatusCode::OK);
    assert_eq!(s.state().await, "sent");
    assert_eq!(s.resends().await, 0);
    s.run().await;
    assert_eq!(history(&s.app, s.id).await.len(), 1);
    assert!(s.fakes[1].received().is_empty());
}

#[tokio::test]
async fn attempts_without_a_final_receipt_become_unknown_until_one_comes() {
    let s = scene(&[Kind::Twilio], None, |_| {}).await;
    let store = s.app.store();
    let names = ["p1".to_owned()];
    let expire = async |window| store.expire_receipts(&names, window, 100).await.unwrap();
    assert_eq!(expire(Duration::from_secs(60)).await, 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(expire(Duration::from_millis(100)).await, 1);
    assert_eq!(s.delivery().await.as_deref(), Some("unknown"));
    // An intermediate receipt does not undo it; a final one replaces it.
    assert_eq!(s.twilio("sent", "").await, StatusCode::OK);
    assert_eq!(s.delivery().await.as_deref(), Some("unknown"));
    assert_eq!(s.twilio("delivered", "").await, StatusCode::OK);
    assert_eq!(s.delivery().await.as_deref(), Some("delivered"));
}

#[tokio::test]
async fn the_unknown_window_marks_a_backlog_in_batches_until_none_is_left() {
    let app = TestApp::new().await;
    let ids = app.otps(5).await;
    app.run_until_idle([accepting("sim")], quick_retries())
        .await;
    let marked = app
        .store()
        .expire_receipts(&["sim".to_owned()], Duration::ZERO, 2)
        .await
        .unwrap();
    assert_eq!(marked, 5, "every overdue attempt, two per statement");
    let mut unknown = 0;
    for &id in &ids {
        let attempts = app.attempts(id).await;
        unknown += attempts
            .iter()
            .filter(|a| a.delivery_status.as_deref() == Some("unknown"))
            .count();
    }
    assert_eq!(unknown, 5);
}

#[tokio::test]
async fn a_receipt_naming_a_number_that_cannot_receive_is_not_resent() {
    let s = scene(&[Kind::Twilio, Kind::Vonage], None, |_| {}).await;
    // 21610: the recipient replied STOP.
    assert_eq!(s.twilio("undelivered", "21610").await, StatusCode::OK);
    assert_eq!(s.delivery().await.as_deref(), Some("undelivered"));
    assert_eq!(s.state().await, "sent");
    assert_eq!(s.resends().await, 0);
}

#[tokio::test]
async fn a_resend_that_cannot_go_out_leaves_the_message_sent() {
    let s = scene(&[Kind::Twilio, Kind::SslWireless], None, |_| {}).await;
    for fake in &s.fakes {
        fake.set_server_error_rate(1.0);
    }
    assert_eq!(s.twilio("undelivered", "30003").await, StatusCode::OK);
    let policy = sms_relay::relay::RetryPolicy {
        max_rounds: 2,
        ..quick_retries()
    };
    s.app
        .run_chain_until_idle(http_chain(&s.config.providers), policy)
        .await;
    let (state, reason) = s.app.state_of(s.id).await;
    assert_eq!(state, "sent");
    assert!(
        reason
            .as_deref()
            .is_some_and(|r| r.starts_with("resend not sent: gave up")),
        "{reason:?}"
    );
    let outcomes: Vec<String> = history(&s.app, s.id)
        .await
        .into_iter()
        .map(|h| h.4)
        .collect();
    assert_eq!(outcomes, ["accepted", "provider_error", "provider_error"]);
}

#[tokio::test]
async fn a_resend_waits_for_a_receipt_being_recorded_and_then_refuses() {
    // A delivered receipt committing while the sweeper resends: sms_resend locks the attempt
    // row, waits for the receipt's transaction, and then sees the attempt delivered.
    let s = scene(&[Kind::Twilio, Kind::Vonage], None, |_| {}).await;
    let mut receipt = s.app.pool.begin().await.unwrap();
    sqlx::query("UPDATE sms_attempts SET delivery_status = 'delivered' WHERE id = $1")
        .bind(s.attempt.id)
        .execute(&mut *receipt)
        .await
        .unwrap();
    let (pool, attempt) = (s.app.pool.clone(), s.attempt.id);
    let resend = tokio::spawn(async move {
        sqlx::query_scalar::<_, bool>("SELECT sms_resend($1, 'test', 1, interval '0')")
            .bind(attempt)
            .fetch_one(&pool)
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !resend.is_finished(),
        "the resend waits for the attempt's lock"
    );
    receipt.commit().await.unwrap();
    assert!(!resend.await.unwrap());
    assert_eq!(s.state().await, "sent");
    // Without a delivered receipt, the same call resends.
    sqlx::query("UPDATE sms_attempts SET delivery_status = NULL WHERE id = $1")
        .bind(s.attempt.id)
        .execute(&s.app.pool)
        .await
        .unwrap();
    let resent: bool = sqlx::query_scalar("SELECT sms_resend($1, 'test', 1, interval '0')")
        .bind(s.attempt.id)
        .fetch_one(&s.app.pool)
        .await
        .unwrap();
    assert!(resent);
    assert_eq!(s.state().await, "pending");
}

#[tokio::test]
async fn a_receipt_for_an_earlier_round_resends_nothing() {
    let s = short_window(|c| c.receipts.max_resends = 2).await;
    after_window(&s).await;
    s.run().await;
    assert_eq!(history(&s.app, s.id).await.len(), 2, "resent through p2");
    // The first round's receipt comes late and says undelivered: recorded, but the message's
    // latest round is the resend, so nothing more is sent although a resend is left.
    assert_eq!(s.twilio("undelivered", "30003").await, StatusCode::OK);
    let StoredReceipt { result, resent } = s.app.receipts().await.pop().expect("the late receipt");
    assert_eq!((result.as_str(), resent), ("applied", false));
    assert_eq!(s.state().await, "sent");
    assert_eq!(s.resends().await, 1);
}

#[tokio::test]
async fn a_delivered_receipt_withdraws_a_resend_waiting_to_retry() {
    let s = short_window(|_| {}).await;
    after_window(&s).await;
    // The resend round finds every provider down and waits a long while to retry.
    for fake in &s.fakes {
        fake.set_server_error_rate(1.0);
    }
    let patient = sms_relay::relay::RetryPolicy {
        base_ms: 60_000,
        cap_ms: 60_000,
        jitter: 0.0,
        ..quick_retries()
    };
    s.app
        .run_chain_until_idle(http_chain(&s.config.providers), patient)
        .await;
    assert_eq!(s.state().await, "pending");
    assert_eq!(history(&s.app, s.id).await.len(), 3);
    // The first copy arrived after all.
    assert_eq!(s.twilio("delivered", "").await, StatusCode::OK);
    let (state, reason) = s.app.state_of(s.id).await;
    assert_eq!(
        (state.as_str(), reason.as_deref()),
        (
            "sent",
            Some("resend withdrawn: the earlier copy was delivered")
        )
    );
    assert_eq!(s.resends().await, 0);
}

#[tokio::test]
async fn a_receipt_that_came_before_its_attempt_is_matched_by_the_rematch_job() {
    let s = scene(&[Kind::Twilio, Kind::Vonage], None, |_| {}).await;
    // A receipt for a message id no attempt has yet…
    let early = "SM0000000000000000000000000000beef";
    let status = s
        .poster(0)
        .post(&Dlr {
            id: early,
            client_ref: "",
            status: "delivered",
            error: "",
            signed_at: None,
        })
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.delivery().await, None);
    // …whose attempt row is written only now (as a completer running late would).
    sqlx::query("UPDATE sms_attempts SET provider_message_id = $1 WHERE id = $2")
        .bind(early)
        .bind(s.attempt.id)
        .execute(&s.app.pool)
        .await
        .unwrap();
    let ran = s
        .config
        .maintenance(s.app.store())
        .run(Job::Rematch, Utc::now())
        .await
        .unwrap();
    assert_eq!(ran, Ran::Done(1));
    let result = s.app.receipt_results().await.remove(0);
    assert_eq!(
        (s.delivery().await.as_deref(), result.as_str()),
        (Some("delivered"), "applied")
    );
}
