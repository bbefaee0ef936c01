//! Receipt-driven resends: an undelivered receipt, or none in time, sends the code again through
//! the next provider while it is valid, at most `receipts.max_resends` times.

use std::time::Duration;

use chrono::Utc;
use reqwest::StatusCode;
use sms_relay::{config::Config, receipts::watch::Sweeper};
use uuid::Uuid;

use crate::{
    fakes::{FakeProvider, Kind},
    receipts::{Dlr, Poster, accepted_attempt, config_for, receipt_entry, send_one, serve},
    support::{TestDb, http_chain, quick_retries, run_chain_until_idle},
};

/// (provider, round, cause, resend_reason, outcome) of each attempt of `id`, in order.
async fn history(db: &TestDb, id: Uuid) -> Vec<(String, i32, String, Option<String>, String)> {
    sqlx::query_as(
        "SELECT provider, attempt_number, cause, resend_reason, outcome::text FROM sms_attempts \
          WHERE message_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

async fn resends_of(db: &TestDb, id: Uuid) -> i32 {
    sqlx::query_scalar("SELECT resends FROM sms_outbox WHERE id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

/// A chain of `kinds` (named after their position: p1, p2, …) with one resend allowed.
async fn chain_of(kinds: &[Kind]) -> (Vec<FakeProvider>, Config) {
    let mut fakes = Vec::new();
    let mut entries = Vec::new();
    for (i, kind) in kinds.iter().enumerate() {
        let fake = FakeProvider::start(*kind).await;
        entries.push(receipt_entry(&fake, &format!("p{}", i + 1)));
        fakes.push(fake);
    }
    let mut config = config_for(entries);
    config.receipts.max_resends = 1;
    (fakes, config)
}

async fn run(db: &TestDb, config: &Config) {
    run_chain_until_idle(db, http_chain(&config.providers), quick_retries()).await;
}

#[tokio::test]
async fn undelivered_receipt_resends_through_the_next_provider_once() {
    let db = TestDb::new().await;
    let (fakes, config) = chain_of(&[Kind::Twilio, Kind::Vonage]).await;
    let base = serve(&config, db.store()).await;
    let id = send_one(&db, &config, "+8801712345611").await;
    let (_, sid, client_ref) = accepted_attempt(&db, id).await;

    let twilio = Poster::new(Kind::Twilio, &base, &fakes[0]);
    let undelivered = Dlr {
        id: &sid,
        client_ref: &client_ref,
        status: "undelivered",
        error: "30003",
    };
    assert_eq!(twilio.post(&undelivered).await, StatusCode::OK);
    assert_eq!(db.state_of(id).await.0, "pending");
    assert_eq!(resends_of(&db, id).await, 1);
    let resent: bool = sqlx::query_scalar("SELECT resent FROM sms_receipts")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(resent);

    run(&db, &config).await;
    let reason = "receipt from p1 said undelivered (30003)".to_owned();
    assert_eq!(
        history(&db, id).await,
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
    assert_eq!(db.state_of(id).await.0, "sent");
    assert_eq!(fakes[1].received().len(), 1, "the second provider sent it");

    // The resent copy is undelivered too: the one allowed resend is used up.
    let (_, vonage_id, vonage_ref) = accepted_attempt(&db, id).await;
    let vonage = Poster::new(Kind::Vonage, &base, &fakes[1]);
    let status = vonage
        .post(&Dlr {
            id: &vonage_id,
            client_ref: &vonage_ref,
            status: "failed",
            error: "2",
        })
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(db.state_of(id).await.0, "sent");
    assert_eq!(resends_of(&db, id).await, 1);
    // A repeat of the first receipt, or a stale one for the older attempt, resends nothing.
    assert_eq!(twilio.post(&undelivered).await, StatusCode::OK);
    run(&db, &config).await;
    assert_eq!(history(&db, id).await.len(), 2);
    assert_eq!(fakes[0].received().len(), 1);
}

#[tokio::test]
async fn undelivered_receipt_after_expiry_sends_nothing() {
    let db = TestDb::new().await;
    let (fakes, config) = chain_of(&[Kind::Twilio, Kind::Vonage]).await;
    let base = serve(&config, db.store()).await;
    let id = db.otp_expiring_in("+8801712345611", 2).await;
    run(&db, &config).await;
    assert_eq!(db.state_of(id).await.0, "sent");
    let (attempt, sid, client_ref) = accepted_attempt(&db, id).await;
    // Wait until the code's validity has ended.
    let expires: chrono::DateTime<Utc> =
        sqlx::query_scalar("SELECT expires_at FROM sms_outbox WHERE id = $1")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let left = (expires - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(left + Duration::from_millis(100)).await;

    let status = Poster::new(Kind::Twilio, &base, &fakes[0])
        .post(&Dlr {
            id: &sid,
            client_ref: &client_ref,
            status: "undelivered",
            error: "30003",
        })
        .await;
    assert_eq!(status, StatusCode::OK);
    let delivery: String =
        sqlx::query_scalar("SELECT delivery_status::text FROM sms_attempts WHERE id = $1")
            .bind(attempt)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(delivery, "undelivered", "the receipt is still recorded");
    assert_eq!(db.state_of(id).await.0, "sent");
    assert_eq!(resends_of(&db, id).await, 0);
    run(&db, &config).await;
    assert_eq!(history(&db, id).await.len(), 1);
    assert!(fakes[1].received().is_empty());
}

#[tokio::test]
async fn no_receipt_within_the_window_resends_through_the_next_provider() {
    let db = TestDb::new().await;
    // SSL Wireless sends no receipts: a resend through it is not followed by another.
    let (fakes, mut config) = chain_of(&[Kind::Twilio, Kind::SslWireless]).await;
    config.receipts.resend_after_ms = 1_000;
    let started = Utc::now();
    let id = send_one(&db, &config, "+8801712345611").await;
    let sweeper = Sweeper::new(&config, db.store());

    // Too early: nothing happens.
    let next = sweeper
        .sweep(started - chrono::TimeDelta::seconds(1))
        .await
        .unwrap();
    assert_eq!(db.state_of(id).await.0, "sent");

    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let next = sweeper.sweep(next).await.unwrap();
    assert_eq!(db.state_of(id).await.0, "pending");
    run(&db, &config).await;
    assert_eq!(
        history(&db, id).await,
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
    assert_eq!(fakes[1].received().len(), 1);

    // The SSL attempt expects no receipt, and the Twilio one is no longer the latest.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    sweeper.sweep(next).await.unwrap();
    assert_eq!(db.state_of(id).await.0, "sent");
    assert_eq!(resends_of(&db, id).await, 1);
}

#[tokio::test]
async fn a_delivered_receipt_stops_the_no_receipt_resend() {
    let db = TestDb::new().await;
    let (fakes, mut config) = chain_of(&[Kind::Twilio, Kind::SslWireless]).await;
    config.receipts.resend_after_ms = 1_000;
    let base = serve(&config, db.store()).await;
    let started = Utc::now() - chrono::TimeDelta::seconds(1);
    let id = send_one(&db, &config, "+8801712345611").await;
    let (_, sid, client_ref) = accepted_attempt(&db, id).await;
    let status = Poster::new(Kind::Twilio, &base, &fakes[0])
        .post(&Dlr {
            id: &sid,
            client_ref: &client_ref,
            status: "delivered",
            error: "",
        })
        .await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    Sweeper::new(&config, db.store())
        .sweep(started)
        .await
        .unwrap();
    assert_eq!(db.state_of(id).await.0, "sent");
    assert_eq!(resends_of(&db, id).await, 0);
}

#[tokio::test]
async fn attempts_without_a_final_receipt_become_unknown_until_one_comes() {
    let db = TestDb::new().await;
    let (fakes, config) = chain_of(&[Kind::Twilio]).await;
    let base = serve(&config, db.store()).await;
    let id = send_one(&db, &config, "+8801712345611").await;
    let (attempt, sid, client_ref) = accepted_attempt(&db, id).await;
    let status_of = async || -> Option<String> {
        sqlx::query_scalar("SELECT delivery_status::text FROM sms_attempts WHERE id = $1")
            .bind(attempt)
            .fetch_one(&db.pool)
            .await
            .unwrap()
    };
    let store = db.store();
    assert_eq!(
        store
            .expire_receipts(Duration::from_secs(60))
            .await
            .unwrap(),
        0
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        store
            .expire_receipts(Duration::from_millis(100))
            .await
            .unwrap(),
        1
    );
    assert_eq!(status_of().await.as_deref(), Some("unknown"));
    // An intermediate receipt does not undo it; a final one replaces it.
    let poster = Poster::new(Kind::Twilio, &base, &fakes[0]);
    let dlr = |status| Dlr {
        id: &sid,
        client_ref: &client_ref,
        status,
        error: "",
    };
    assert_eq!(poster.post(&dlr("sent")).await, StatusCode::OK);
    assert_eq!(status_of().await.as_deref(), Some("unknown"));
    assert_eq!(poster.post(&dlr("delivered")).await, StatusCode::OK);
    assert_eq!(status_of().await.as_deref(), Some("delivered"));
}
