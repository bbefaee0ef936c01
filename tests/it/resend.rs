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
    // A repeat of the first receipt, or another final one for the older attempt, resends nothing.
    assert_eq!(twilio.post(&undelivered).await, StatusCode::OK);
    let failed = Dlr {
        status: "failed",
        error: "30008",
        ..undelivered
    };
    assert_eq!(twilio.post(&failed).await, StatusCode::OK);
    let results: Vec<(String, bool)> =
        sqlx::query_as("SELECT result, resent FROM sms_receipts ORDER BY id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        results,
        [
            ("applied".into(), true),
            ("applied".into(), false),
            ("stale".into(), false)
        ]
    );
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

    // The SSL attempt expects no receipt, and the Twilio one is no longer the latest: even a
    // pass over everything since the start resends nothing.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    sweeper.sweep(next).await.unwrap();
    sweeper
        .sweep(started - chrono::TimeDelta::seconds(1))
        .await
        .unwrap();
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
    let names = ["p1".to_owned()];
    assert_eq!(
        store
            .expire_receipts(&names, Duration::from_secs(60))
            .await
            .unwrap(),
        0
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        store
            .expire_receipts(&names, Duration::from_millis(100))
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

#[tokio::test]
async fn a_receipt_naming_a_number_that_cannot_receive_is_not_resent() {
    let db = TestDb::new().await;
    let (fakes, config) = chain_of(&[Kind::Twilio, Kind::Vonage]).await;
    let base = serve(&config, db.store()).await;
    let id = send_one(&db, &config, "+8801712345611").await;
    let (_, sid, client_ref) = accepted_attempt(&db, id).await;
    // 21610: the recipient replied STOP.
    let status = Poster::new(Kind::Twilio, &base, &fakes[0])
        .post(&Dlr {
            id: &sid,
            client_ref: &client_ref,
            status: "undelivered",
            error: "21610",
        })
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(db.state_of(id).await.0, "sent");
    assert_eq!(resends_of(&db, id).await, 0);
}

#[tokio::test]
async fn a_delivered_receipt_withdraws_a_resend_not_yet_sent() {
    let db = TestDb::new().await;
    let (fakes, mut config) = chain_of(&[Kind::Twilio, Kind::SslWireless]).await;
    config.receipts.resend_after_ms = 1_000;
    let base = serve(&config, db.store()).await;
    let started = Utc::now() - chrono::TimeDelta::seconds(1);
    let id = send_one(&db, &config, "+8801712345611").await;
    let (_, sid, client_ref) = accepted_attempt(&db, id).await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    Sweeper::new(&config, db.store())
        .sweep(started)
        .await
        .unwrap();
    assert_eq!(db.state_of(id).await.0, "pending");
    // The receipt was only late.
    let status = Poster::new(Kind::Twilio, &base, &fakes[0])
        .post(&Dlr {
            id: &sid,
            client_ref: &client_ref,
            status: "delivered",
            error: "",
        })
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(db.state_of(id).await.0, "sent");
    assert_eq!(resends_of(&db, id).await, 0);
    run(&db, &config).await;
    assert_eq!(history(&db, id).await.len(), 1);
    assert!(fakes[1].received().is_empty());
}

#[tokio::test]
async fn a_resend_that_cannot_go_out_leaves_the_message_sent() {
    let db = TestDb::new().await;
    let (fakes, mut config) = chain_of(&[Kind::Twilio, Kind::SslWireless]).await;
    config.retry.max_rounds = 2;
    let base = serve(&config, db.store()).await;
    let id = send_one(&db, &config, "+8801712345611").await;
    let (_, sid, client_ref) = accepted_attempt(&db, id).await;
    for fake in &fakes {
        fake.set_server_error_rate(1.0);
    }
    let status = Poster::new(Kind::Twilio, &base, &fakes[0])
        .post(&Dlr {
            id: &sid,
            client_ref: &client_ref,
            status: "undelivered",
            error: "30003",
        })
        .await;
    assert_eq!(status, StatusCode::OK);
    let policy = sms_relay::relay::RetryPolicy {
        max_rounds: 2,
        ..quick_retries()
    };
    run_chain_until_idle(&db, http_chain(&config.providers), policy).await;
    let (state, reason) = db.state_of(id).await;
    assert_eq!(state, "sent");
    assert!(
        reason
            .as_deref()
            .is_some_and(|r| r.starts_with("resend not sent: gave up")),
        "{reason:?}"
    );
    let outcomes: Vec<String> = history(&db, id).await.into_iter().map(|h| h.4).collect();
    assert_eq!(outcomes, ["accepted", "provider_error", "provider_error"]);
}

#[tokio::test]
async fn a_resend_is_refused_once_the_attempt_is_delivered() {
    // The guard a racing sweeper relies on: sms_resend reads the attempt under lock.
    let db = TestDb::new().await;
    let (_fakes, config) = chain_of(&[Kind::Twilio, Kind::Vonage]).await;
    let id = send_one(&db, &config, "+8801712345611").await;
    let (attempt, _, _) = accepted_attempt(&db, id).await;
    let resend = async || -> bool {
        sqlx::query_scalar("SELECT sms_resend($1, 'test', 1, interval '0')")
            .bind(attempt)
            .fetch_one(&db.pool)
            .await
            .unwrap()
    };
    sqlx::query("UPDATE sms_attempts SET delivery_status = 'delivered' WHERE id = $1")
        .bind(attempt)
        .execute(&db.pool)
        .await
        .unwrap();
    assert!(!resend().await);
    sqlx::query("UPDATE sms_attempts SET delivery_status = NULL WHERE id = $1")
        .bind(attempt)
        .execute(&db.pool)
        .await
        .unwrap();
    assert!(resend().await);
    assert_eq!(db.state_of(id).await.0, "pending");
}

#[tokio::test]
async fn a_receipt_that_came_before_its_attempt_is_matched_later() {
    let db = TestDb::new().await;
    let (fakes, config) = chain_of(&[Kind::Twilio, Kind::Vonage]).await;
    let base = serve(&config, db.store()).await;
    let poster = Poster::new(Kind::Twilio, &base, &fakes[0]);
    let early = Dlr {
        id: "SM0000000000000000000000000000beef",
        client_ref: "",
        status: "delivered",
        error: "",
    };
    assert_eq!(poster.post(&early).await, StatusCode::OK);
    // The attempt row is written only now (as a completer running late would).
    let id = send_one(&db, &config, "+8801712345611").await;
    let (attempt, _, _) = accepted_attempt(&db, id).await;
    sqlx::query("UPDATE sms_attempts SET provider_message_id = $1 WHERE id = $2")
        .bind(early.id)
        .bind(attempt)
        .execute(&db.pool)
        .await
        .unwrap();
    Sweeper::new(&config, db.store())
        .sweep(Utc::now())
        .await
        .unwrap();
    let (status, result): (Option<String>, String) = sqlx::query_as(
        "SELECT a.delivery_status::text, r.result FROM sms_attempts a, sms_receipts r WHERE a.id = $1",
    )
    .bind(attempt)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        (status.as_deref(), result.as_str()),
        (Some("delivered"), "applied")
    );
}
