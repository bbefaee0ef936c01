//! The auth backend's SQL interface: sms_enqueue(), plain INSERTs, refusals, idempotency,
//! superseding and the NOTIFY wake-up.

use chrono::{TimeDelta, Utc};
use serde_json::json;
use sms_relay::store::{EnqueueError, EnqueueRequest, Refusal, enqueue};
use sqlx::{Connection, PgConnection, postgres::PgListener};

use crate::support::{TestApp, eventually, failed_round, otp_request, quick_retries, within};

const NUMBER: &str = "+8801712345678";

#[tokio::test]
async fn committed_enqueue_is_sent_exactly_once() {
    let app = TestApp::new().await;
    let mut tx = app.pool.begin().await.unwrap();
    let id = enqueue(&mut *tx, &otp_request(NUMBER, "482913"))
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let sim = app.send_due().await;
    app.run_until_idle([sim.clone()], quick_retries()).await;

    assert_eq!(sim.sent(), 1);
    assert_eq!(app.state_of(id).await.0, "sent");
    assert_eq!(
        app.attempts_of(id).await,
        [("sim".into(), 1, 1, "accepted".into())]
    );
}

#[tokio::test]
async fn rolled_back_enqueue_leaves_nothing() {
    let app = TestApp::new().await;
    let mut tx = app.pool.begin().await.unwrap();
    enqueue(&mut *tx, &otp_request(NUMBER, "482913"))
        .await
        .unwrap();
    tx.rollback().await.unwrap();

    let sim = app.send_due().await;

    assert_eq!(sim.calls(), 0);
    assert_eq!(app.message_count().await, 0);
}

async fn refused(app: &TestApp, request: EnqueueRequest) -> Refusal {
    match enqueue(&app.pool, &request).await {
        Err(EnqueueError::Refused { reason, message }) => {
            assert!(
                !message.contains(&request.recipient[4..]),
                "the number leaked into: {message}"
            );
            assert_eq!(app.message_count().await, 0, "a refusal left a row");
            reason
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn refuses_a_recipient_that_is_not_e164() {
    let app = TestApp::new().await;
    for bad in [
        "01712345678",
        "+0171234567",
        "+88017123456789012",
        "+880 1712345678",
        "+88017abc45678",
    ] {
        assert_eq!(
            refused(&app, otp_request(bad, "482913")).await,
            Refusal::InvalidRecipient,
            "{bad}"
        );
    }
}

#[tokio::test]
async fn refuses_an_unknown_template_or_locale() {
    let app = TestApp::new().await;
    let request = EnqueueRequest {
        template: "welcome".into(),
        ..otp_request(NUMBER, "482913")
    };
    assert_eq!(refused(&app, request).await, Refusal::UnknownTemplate);
    let request = EnqueueRequest {
        locale: Some("fr".into()),
        ..otp_request(NUMBER, "482913")
    };
    assert_eq!(refused(&app, request).await, Refusal::UnknownTemplate);
}

#[tokio::test]
async fn refuses_params_that_are_not_an_object() {
    let app = TestApp::new().await;
    let request = EnqueueRequest {
        params: json!(["482913"]),
        ..otp_request(NUMBER, "482913")
    };
    assert_eq!(refused(&app, request).await, Refusal::ParamsNotObject);
}

#[tokio::test]
async fn refuses_params_missing_a_placeholder() {
    let app = TestApp::new().await;
    for params in [
        json!({}),
        json!({"cod": "1"}),
        json!({"code": {"v": 1}}),
        json!({"code": null}),
    ] {
        let request = EnqueueRequest {
            params: params.clone(),
            ..otp_request(NUMBER, "482913")
        };
        assert_eq!(
            refused(&app, request).await,
            Refusal::MissingPlaceholder,
            "{params}"
        );
    }
}

#[tokio::test]
async fn refuses_an_expiry_in_the_past() {
    let app = TestApp::new().await;
    let request = EnqueueRequest {
        expires_at: Some(Utc::now() - TimeDelta::seconds(1)),
        ..otp_request(NUMBER, "482913")
    };
    assert_eq!(refused(&app, request).await, Refusal::ExpiryInPast);
}

#[tokio::test]
async fn refuses_an_expiry_beyond_what_the_text_promises() {
    let app = TestApp::new().await;
    let request = EnqueueRequest {
        template: "admin_2fa".into(),
        expires_at: Some(Utc::now() + TimeDelta::minutes(6)),
        ..otp_request(NUMBER, "482913")
    };
    assert_eq!(refused(&app, request).await, Refusal::ExpiryBeyondValidity);
}

#[tokio::test]
async fn refuses_a_recipient_outside_the_allow_list() {
    let app = TestApp::new().await;
    assert_eq!(
        refused(&app, otp_request("+447400123456", "482913")).await,
        Refusal::RecipientNotAllowed
    );
    // An empty allow-list allows every country.
    sqlx::query("DELETE FROM sms_allowed_prefixes")
        .execute(&app.pool)
        .await
        .unwrap();
    enqueue(&app.pool, &otp_request("+447400123456", "482913"))
        .await
        .unwrap();
}

#[tokio::test]
async fn refuses_a_recipient_over_the_rate_limit() {
    let app = TestApp::new().await;
    sqlx::query("UPDATE sms_settings SET recipient_limit = 3")
        .execute(&app.pool)
        .await
        .unwrap();
    for _ in 0..3 {
        enqueue(&app.pool, &otp_request(NUMBER, "482913"))
            .await
            .unwrap();
    }
    let before = app.message_count().await;
    let err = enqueue(&app.pool, &otp_request(NUMBER, "482913"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            EnqueueError::Refused {
                reason: Refusal::RateLimited,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(app.message_count().await, before);
    // Other recipients, and this one's other purposes, are not affected.
    app.otp("+8801812345678", "482913").await;
    let other_purpose = EnqueueRequest {
        purpose: Some("password_reset".into()),
        ..otp_request(NUMBER, "482913")
    };
    enqueue(&app.pool, &other_purpose).await.unwrap();
}

#[tokio::test]
async fn refuses_an_insert_that_is_not_a_new_pending_message() {
    let app = TestApp::new().await;
    let err = sqlx::query(
        "INSERT INTO sms_outbox (recipient, template, params, state) VALUES ($1, 'otp', '{\"code\":\"482913\"}', 'sent')",
    )
    .bind(NUMBER)
    .execute(&app.pool)
    .await
    .unwrap_err();
    assert_eq!(
        err.as_database_error().unwrap().code().as_deref(),
        Some(Refusal::NotPending.sqlstate())
    );
}

#[tokio::test]
async fn refuses_a_priority_outside_0_to_9() {
    let app = TestApp::new().await;
    for priority in [-1, 10] {
        let request = EnqueueRequest {
            priority: Some(priority),
            ..otp_request(NUMBER, "482913")
        };
        assert_eq!(
            refused(&app, request).await,
            Refusal::InvalidPriority,
            "{priority}"
        );
    }
}

#[tokio::test]
async fn refuses_an_empty_or_overlong_idempotency_key() {
    let app = TestApp::new().await;
    for key in [String::new(), "k".repeat(201)] {
        let request = EnqueueRequest {
            idempotency_key: Some(key),
            ..otp_request(NUMBER, "482913")
        };
        assert_eq!(refused(&app, request).await, Refusal::InvalidIdempotencyKey);
    }
}

#[tokio::test]
async fn a_refusal_never_echoes_the_row() {
    let app = TestApp::new().await;
    // Every column CHECK is pre-empted by the guard, whose messages carry neither number nor code.
    for request in [
        EnqueueRequest {
            priority: Some(10),
            ..otp_request(NUMBER, "424242")
        },
        EnqueueRequest {
            idempotency_key: Some("k".repeat(300)),
            ..otp_request(NUMBER, "424242")
        },
    ] {
        let err = enqueue(&app.pool, &request).await.unwrap_err();
        let sqlx_error = match err {
            EnqueueError::Refused { message, .. } => message,
            other => other.to_string(),
        };
        assert!(
            !sqlx_error.contains("424242") && !sqlx_error.contains("1712345678"),
            "{sqlx_error}"
        );
    }
    // NULLs in NOT NULL columns are caught by the guard too, or defaulted.
    let err = sqlx::query(
        "INSERT INTO sms_outbox (recipient, template, params, attempts) VALUES ($1, 'otp', '{\"code\": \"424242\"}', NULL)",
    )
    .bind(NUMBER)
    .execute(&app.pool)
    .await
    .unwrap_err();
    assert_eq!(
        err.as_database_error().unwrap().code().as_deref(),
        Some("SR009")
    );
    let detail = format!("{err:?}");
    assert!(
        !detail.contains("424242") && !detail.contains("1712345678"),
        "{detail}"
    );
    app.exec_for(
        "SELECT sms_enqueue($1, 'otp', '{\"code\": \"482913\"}', supersede => NULL)",
        NUMBER,
    )
    .await;
}

#[tokio::test]
async fn a_plain_insert_is_guarded_like_sms_enqueue() {
    let app = TestApp::new().await;
    let insert = "INSERT INTO sms_outbox (recipient, template, params) VALUES ($1, $2, $3)";
    let cases = [
        (
            "0171",
            "otp",
            json!({"code": "482913"}),
            Refusal::InvalidRecipient,
        ),
        (
            NUMBER,
            "nope",
            json!({"code": "482913"}),
            Refusal::UnknownTemplate,
        ),
        (NUMBER, "otp", json!("x"), Refusal::ParamsNotObject),
        (NUMBER, "otp", json!({}), Refusal::MissingPlaceholder),
    ];
    for (recipient, template, params, refusal) in cases {
        let err = sqlx::query(insert)
            .bind(recipient)
            .bind(template)
            .bind(&params)
            .execute(&app.pool)
            .await
            .unwrap_err();
        let code = err
            .as_database_error()
            .unwrap()
            .code()
            .map(|c| c.into_owned());
        assert_eq!(
            code.as_deref(),
            Some(refusal.sqlstate()),
            "{template} {params}"
        );
    }
    sqlx::query(insert)
        .bind(NUMBER)
        .bind("otp")
        .bind(json!({"code": "482913"}))
        .execute(&app.pool)
        .await
        .unwrap();
    let (expires_in, purpose): (f64, String) = sqlx::query_as(
        "SELECT extract(epoch FROM expires_at - created_at)::float8, purpose FROM sms_outbox",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        (expires_in, purpose.as_str()),
        (600.0, "otp"),
        "defaults follow the template"
    );
}

#[tokio::test]
async fn the_same_idempotency_key_returns_the_first_message() {
    let app = TestApp::new().await;
    let request = EnqueueRequest {
        idempotency_key: Some("login-42".into()),
        ..otp_request(NUMBER, "111111")
    };
    let first = enqueue(&app.pool, &request).await.unwrap();
    let again = enqueue(
        &app.pool,
        &EnqueueRequest {
            params: json!({"code": "222222"}),
            ..request
        },
    )
    .await
    .unwrap();
    assert_eq!(first, again);
    assert_eq!(app.message_count().await, 1);

    let sim = app.send_due().await;
    assert_eq!(sim.sent(), 1);
}

#[tokio::test]
async fn concurrent_enqueues_with_one_key_make_one_message() {
    let app = TestApp::new().await;
    let request = EnqueueRequest {
        idempotency_key: Some("login-race".into()),
        ..otp_request(NUMBER, "111111")
    };
    let mut first = app.pool.begin().await.unwrap();
    let first_id = enqueue(&mut *first, &request).await.unwrap();
    let (pool, again) = (app.pool.clone(), request.clone());
    let second = tokio::spawn(async move { enqueue(&pool, &again).await });
    // Wait until the second call is blocked behind the first transaction, then commit the first.
    eventually(async || {
        app.count("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()")
            .await
            > 0
    })
    .await;
    first.commit().await.unwrap();

    let second_id = within(10, second).await.unwrap().unwrap();
    assert_eq!(first_id, second_id);
    assert_eq!(app.message_count().await, 1);
}

#[tokio::test]
async fn a_new_code_supersedes_older_unsent_ones() {
    let app = TestApp::new().await;
    let old = app.otp(NUMBER, "111111").await;
    let other_purpose = enqueue(
        &app.pool,
        &EnqueueRequest {
            template: "admin_2fa".into(),
            ..otp_request(NUMBER, "999999")
        },
    )
    .await
    .unwrap();
    let new = app.otp(NUMBER, "222222").await;

    let (state, reason) = app.state_of(old).await;
    assert_eq!(state, "cancelled");
    assert!(reason.unwrap().contains("superseded"));
    assert_eq!(app.message(old).await.superseded_by, Some(new));

    let sim = app.send_due().await;
    assert_eq!(sim.sent(), 2, "the new code and the other purpose's code");
    assert_eq!(app.state_of(new).await.0, "sent");
    assert_eq!(app.state_of(other_purpose).await.0, "sent");
    assert!(app.attempts_of(old).await.is_empty());
}

#[tokio::test]
async fn a_plain_insert_supersedes_too() {
    let app = TestApp::new().await;
    let old = app.otp(NUMBER, "111111").await;
    app.exec_for("INSERT INTO sms_outbox (recipient, template, params) VALUES ($1, 'otp', '{\"code\": \"222222\"}')", NUMBER).await;
    assert_eq!(app.state_of(old).await.0, "cancelled");
}

#[tokio::test]
async fn of_several_codes_in_one_insert_the_last_one_stays() {
    let app = TestApp::new().await;
    sqlx::query(
        "INSERT INTO sms_outbox (recipient, template, params) \
         VALUES ($1, 'otp', '{\"code\": \"482913\"}'), ($1, 'otp', '{\"code\": \"222222\"}')",
    )
    .bind(NUMBER)
    .execute(&app.pool)
    .await
    .unwrap();
    let states: Vec<(String, String)> =
        sqlx::query_as("SELECT params->>'code', state::text FROM sms_outbox ORDER BY seq")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        states,
        [
            ("482913".into(), "cancelled".into()),
            ("222222".into(), "pending".into())
        ]
    );
}

#[tokio::test]
async fn the_code_committed_last_is_the_live_one_even_from_an_older_transaction() {
    let app = TestApp::new().await;
    // Transaction A starts first (its created_at is earlier) but enqueues after B has committed.
    let mut a = app.pool.begin().await.unwrap();
    sqlx::query("SELECT 1").execute(&mut *a).await.unwrap();
    let b = app.otp(NUMBER, "222222").await;
    let a_id = enqueue(&mut *a, &otp_request(NUMBER, "111111"))
        .await
        .unwrap();
    a.commit().await.unwrap();
    assert_eq!(
        app.state_of(b).await.0,
        "cancelled",
        "A's code is the newer one"
    );

    // A's round fails; its retry must not be mistaken for a superseded message.
    let claimed = app.claim(1).await;
    assert_eq!(claimed[0].id, a_id);
    app.complete(&[failed_round(&claimed[0])]).await;
    assert_eq!(app.state_of(a_id).await.0, "pending");
}

#[tokio::test]
async fn superseding_can_be_turned_off() {
    let app = TestApp::new().await;
    let first = app.otp(NUMBER, "482913").await;
    app.exec_for(
        "SELECT sms_enqueue($1, 'otp', '{\"code\":\"222222\"}', supersede => false)",
        NUMBER,
    )
    .await;
    assert_eq!(app.state_of(first).await.0, "pending");
}

#[tokio::test]
async fn inserts_notify_only_while_a_relay_is_idle() {
    let app = TestApp::new().await;
    let mut listener = PgListener::connect_with(&app.pool).await.unwrap();
    listener.listen("sms_relay_wakeup").await.unwrap();

    app.otp("+8801711111111", "482913").await;
    let quiet = tokio::time::timeout(std::time::Duration::from_millis(300), listener.recv()).await;
    assert!(quiet.is_err(), "no relay is idle, so no NOTIFY");

    app.store().register_sleeper("relay-a").await.unwrap();
    let mut tx = app.pool.begin().await.unwrap();
    enqueue(&mut *tx, &otp_request("+8801722222222", "222222"))
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let after_rollback =
        tokio::time::timeout(std::time::Duration::from_millis(300), listener.recv()).await;
    assert!(
        after_rollback.is_err(),
        "a rolled-back enqueue wakes nobody"
    );

    app.otp("+8801733333333", "333333").await;
    within(10, listener.recv())
        .await
        .expect("a committed enqueue notifies an idle relay");

    // A transaction that inserted before the relay went idle still wakes it: the check runs at commit.
    app.store().deregister_sleeper("relay-a").await.unwrap();
    let mut tx = app.pool.begin().await.unwrap();
    enqueue(&mut *tx, &otp_request("+8801755555555", "555555"))
        .await
        .unwrap();
    app.store().register_sleeper("relay-a").await.unwrap();
    tx.commit().await.unwrap();
    within(10, listener.recv())
        .await
        .expect("the commit-time check sees the new registration");

    app.store().deregister_sleeper("relay-a").await.unwrap();
    app.otp("+8801744444444", "444444").await;
    let quiet = tokio::time::timeout(std::time::Duration::from_millis(300), listener.recv()).await;
    assert!(quiet.is_err(), "busy relays are not notified");
}

#[tokio::test]
async fn the_auth_transaction_example_runs() {
    let app = TestApp::new().await;
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/sql/examples/auth_login.sql"
    ))
    .unwrap();
    let mut conn = PgConnection::connect(&app.url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(example))
        .execute(&mut conn)
        .await
        .unwrap();
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT o.state::text, a.purpose FROM sms_outbox o JOIN auth_otp a ON a.sms_id = o.id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        [("pending".to_owned(), "login".to_owned())],
        "only the committed login queued an SMS"
    );
}

#[tokio::test]
async fn templates_are_seeded_word_for_word_and_state_their_real_validity() {
    let app = TestApp::new().await;
    let rows: Vec<(String, String, String, f64)> = sqlx::query_as(
        "SELECT name, locale, body, extract(epoch FROM validity)::float8 / 60 FROM sms_templates ORDER BY name, locale",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let body = |name: &str, locale: &str| {
        rows.iter()
            .find(|r| r.0 == name && r.1 == locale)
            .map(|r| (r.2.clone(), r.3))
            .unwrap()
    };
    assert_eq!(
        body("otp", "en"),
        (
            "Your verification code is {code}. Valid for 10 minutes.".into(),
            10.0
        )
    );
    assert_eq!(
        body("admin_2fa", "en"),
        (
            "Your admin login code is {code}. Valid for 5 minutes.".into(),
            5.0
        )
    );
    // The Bengali bodies state the same span in Bengali digits.
    let bengali_digits = |n: f64| {
        n.to_string()
            .chars()
            .map(|c| char::from_u32(0x09E6 + c.to_digit(10).unwrap()).unwrap())
            .collect::<String>()
    };
    for name in ["otp", "admin_2fa"] {
        let (text, minutes) = body(name, "bn");
        assert!(
            text.contains(&format!("{} মিনিট", bengali_digits(minutes))),
            "{name}: {text}"
        );
        assert!(text.contains("{code}"));
    }
}

#[tokio::test]
async fn a_code_must_have_the_shape_its_template_asks() {
    let app = TestApp::new().await;
    for (i, code) in [
        json!("abc"),
        json!("123"),
        json!("12345678901"),
        json!("https://glamora.example/login"),
        json!("4829 13"),
        json!(12.5),
    ]
    .into_iter()
    .enumerate()
    {
        let request = EnqueueRequest {
            params: json!({ "code": code }),
            ..otp_request(&format!("+88017100000{i:02}"), "")
        };
        let error = enqueue(&app.pool, &request).await.unwrap_err();
        assert!(
            matches!(
                error,
                EnqueueError::Refused {
                    reason: Refusal::BadShape,
                    ..
                }
            ),
            "{code}: {error}"
        );
    }
    for (i, code) in [json!("1234"), json!("1234567890"), json!(482913)]
        .into_iter()
        .enumerate()
    {
        let request = EnqueueRequest {
            params: json!({ "code": code }),
            ..otp_request(&format!("+88017200000{i:02}"), "")
        };
        enqueue(&app.pool, &request)
            .await
            .unwrap_or_else(|e| panic!("{code}: {e}"));
    }
    assert_eq!(app.message_count().await, 3);

    // A template may ask for another shape, or none.
    sqlx::query(
        "UPDATE sms_templates SET param_patterns = '{\"code\": \"^[A-Z]{3}-[0-9]{3}$\"}' \
          WHERE name = 'admin_2fa'",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let admin = |code: &str| EnqueueRequest {
        template: "admin_2fa".into(),
        params: json!({ "code": code }),
        ..otp_request("+8801730000001", "")
    };
    enqueue(&app.pool, &admin("GLM-482")).await.unwrap();
    assert!(enqueue(&app.pool, &admin("482913")).await.is_err());
}

#[tokio::test]
async fn a_fictional_number_is_refused_unless_the_session_asks_for_them() {
    let app = TestApp::new().await;
    let fictional = "+88017123456789";
    assert_eq!(
        refused(&app, otp_request(fictional, "482913")).await,
        Refusal::Fictional
    );
    app.fictional_otp(fictional).await;
    assert_eq!(app.message_count().await, 1);
}

#[tokio::test]
async fn the_database_and_the_relay_agree_on_which_numbers_are_fictional() {
    let app = TestApp::new().await;
    for number in [
        "+88017123456789",
        "+88013000000001",
        "+8801712345678",
        "+88012123456789",
        "+88017123456a89",
        "+44171234567890",
        "+880171234567890",
    ] {
        let database: bool = sqlx::query_scalar("SELECT sms_fictional($1)")
            .bind(number)
            .fetch_one(&app.pool)
            .await
            .unwrap();
        assert_eq!(
            database,
            sms_relay::domain::Recipient::new(number).is_fictional(),
            "{number}"
        );
    }
}

/// What the guard refuses at enqueue it refuses on an UPDATE that sets the column too: a
/// recipient that is not E.164 (SR001), params that are not an object (SR003). The maintenance
/// scrub's `params = '{}'` is an object and passes.
#[tokio::test]
async fn an_update_setting_a_bad_recipient_or_params_is_refused_like_an_insert() {
    let app = TestApp::new().await;
    let id = app.otp(NUMBER, "482913").await;
    for (sql, code) in [
        (
            "UPDATE sms_outbox SET recipient = '01712345678' WHERE id = $1",
            "SR001",
        ),
        (
            "UPDATE sms_outbox SET params = '[\"482913\"]' WHERE id = $1",
            "SR003",
        ),
    ] {
        assert_eq!(app.refusal(sql, id).await, code, "{sql}");
    }
    sqlx::query("UPDATE sms_outbox SET params = '{}' WHERE id = $1")
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();
    let params: String =
        sqlx::query_scalar("SELECT recipient || ' ' || params::text FROM sms_outbox WHERE id = $1")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(params, format!("{NUMBER} {{}}"));
}
