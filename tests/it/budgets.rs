//! Enqueue budgets against SMS pumping: each limit refuses at its limit + 1 with its SQLSTATE,
//! a burst on one operator gets at most its budget, and a flood of one purpose neither refuses
//! nor holds up another purpose's codes.

use sms_relay::providers::Per;
use sqlx::{Connection, PgConnection};

use crate::support::TestApp;

/// One code: recipient, template, caller key.
type Code = (&'static str, &'static str, Option<&'static str>);

/// A budget scope and subject, four codes counted against it, one that is not, and the SQLSTATE
/// that refuses the fourth.
type Case = (&'static str, &'static str, [Code; 4], Code, &'static str);

/// A connection on which the budgets apply (the test databases lift them for the superuser).
async fn budgeted(app: &TestApp) -> PgConnection {
    let mut conn = PgConnection::connect(&app.url).await.unwrap();
    sqlx::query("SET sms.lift_budgets = off")
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

/// Enqueues one code on `conn`; the SQLSTATE of a refusal.
async fn enqueue(
    conn: &mut PgConnection,
    recipient: &str,
    template: &str,
    caller: Option<&str>,
) -> Result<(), String> {
    sqlx::query("SELECT sms_enqueue($1, $2, '{\"code\": \"482913\"}', caller => $3)")
        .bind(recipient)
        .bind(template)
        .bind(caller)
        .execute(conn)
        .await
        .map(|_| ())
        .map_err(|e| {
            e.as_database_error()
                .and_then(|d| d.code().map(|c| c.into_owned()))
                .unwrap_or_else(|| e.to_string())
        })
}

/// Replaces the default budgets with `budget` (scope, subject, purpose, max per hour).
async fn only_budget(app: &TestApp, scope: &str, subject: &str, purpose: Option<&str>, max: i32) {
    sqlx::query("DELETE FROM sms_budgets")
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO sms_budgets (scope, subject, purpose, per, max_messages) \
         VALUES ($1, $2, $3, interval '1 hour', $4)",
    )
    .bind(scope)
    .bind(subject)
    .bind(purpose)
    .bind(max)
    .execute(&app.pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn each_budget_refuses_at_its_limit_plus_one() {
    // (scope, subject, the four codes counted against it, one that is not, SQLSTATE)
    let cases: [Case; 5] = [
        (
            "all",
            "*",
            [
                ("+8801711000001", "otp", None),
                ("+8801911000002", "otp", None),
                ("+8801811000003", "otp", None),
                ("+8801511000004", "otp", None),
            ],
            ("+8801711000005", "admin_2fa", None),
            "SR016",
        ),
        (
            "prefix",
            "+88019",
            [
                ("+8801911000001", "otp", None),
                ("+8801911000002", "otp", None),
                ("+8801911000003", "otp", Some("10.0.0.1")),
                ("+8801911000004", "otp", None),
            ],
            ("+8801711000005", "otp", None),
            "SR016",
        ),
        (
            "operator",
            "Banglalink",
            [
                ("+8801911000001", "otp", None),
                ("+8801411000002", "otp", None),
                ("+8801911000003", "otp", None),
                ("+8801411000004", "otp", None),
            ],
            ("+8801711000005", "otp", None),
            "SR016",
        ),
        (
            "template",
            "admin_2fa",
            [
                ("+8801711000001", "admin_2fa", None),
                ("+8801911000002", "admin_2fa", None),
                ("+8801811000003", "admin_2fa", None),
                ("+8801711000004", "admin_2fa", None),
            ],
            ("+8801711000005", "otp", None),
            "SR016",
        ),
        (
            "caller",
            "*",
            [
                ("+8801711000001", "otp", Some("203.0.113.7")),
                ("+8801911000002", "otp", Some("203.0.113.7")),
                ("+8801811000003", "otp", Some("203.0.113.7")),
                ("+8801711000004", "otp", Some("203.0.113.7")),
            ],
            ("+8801711000005", "otp", Some("203.0.113.8")),
            "SR015",
        ),
    ];
    for (scope, subject, counted, other, sqlstate) in cases {
        let app = TestApp::new().await;
        only_budget(&app, scope, subject, None, 3).await;
        let mut conn = budgeted(&app).await;
        for (recipient, template, caller) in &counted[..3] {
            enqueue(&mut conn, recipient, template, *caller)
                .await
                .unwrap_or_else(|e| panic!("{scope}: within the budget, refused {e}"));
        }
        let (recipient, template, caller) = counted[3];
        assert_eq!(
            enqueue(&mut conn, recipient, template, caller).await,
            Err(sqlstate.to_owned()),
            "{scope}"
        );
        let (recipient, template, caller) = other;
        assert_eq!(
            enqueue(&mut conn, recipient, template, caller).await,
            Ok(()),
            "{scope}: another {template} to {recipient} is not counted against it"
        );
        // Nothing refused is in the queue.
        assert_eq!(app.message_count().await, 4, "{scope}");
    }
}

#[tokio::test]
async fn a_pumping_burst_on_one_operator_gets_at_most_its_budget() {
    // The defaults: 1,000 codes an hour per operator and purpose.
    let app = TestApp::new().await;
    let mut conn = budgeted(&app).await;
    let mut refused = Vec::new();
    for batch in 0..20 {
        let mut tx = conn.begin().await.unwrap();
        let burst = sqlx::query(
            "SELECT count(sms_enqueue('+88017' || lpad(($1 * 1000 + i)::text, 8, '0'), 'otp', \
                                      '{\"code\": \"482913\"}')) \
               FROM generate_series(1, 1000) AS i",
        )
        .bind(batch)
        .execute(&mut *tx)
        .await;
        match burst {
            Ok(_) => tx.commit().await.unwrap(),
            Err(error) => {
                refused.push(
                    error
                        .as_database_error()
                        .unwrap()
                        .code()
                        .unwrap()
                        .into_owned(),
                );
                tx.rollback().await.unwrap();
            }
        }
    }
    assert_eq!(app.message_count().await, 1_000);
    assert_eq!(refused, vec!["SR016".to_owned(); 19]);
}

#[tokio::test]
async fn a_flood_of_login_codes_neither_refuses_nor_holds_up_admin_2fa() {
    let app = TestApp::new().await;
    let mut flood = budgeted(&app).await;
    let mut admin = budgeted(&app).await;
    // A flood spends the login budget of Grameenphone in a transaction it keeps open.
    let mut tx = flood.begin().await.unwrap();
    sqlx::query(
        "SELECT count(sms_enqueue('+88017' || lpad(i::text, 8, '0'), 'otp', '{\"code\": \"482913\"}')) \
           FROM generate_series(1, 1000) AS i",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    assert_eq!(
        enqueue(&mut tx, "+8801799999999", "otp", None).await,
        Err("SR016".to_owned())
    );

    // Meanwhile an admin's code to the same operator goes in, without waiting on any lock the
    // flood holds (a wait would fail here), however many login codes there are.
    sqlx::query("SET lock_timeout = '100ms'")
        .execute(&mut admin)
        .await
        .unwrap();
    assert_eq!(
        enqueue(&mut admin, "+8801700000001", "admin_2fa", None).await,
        Ok(())
    );
    tx.rollback().await.unwrap();

    // And it is claimed before the login codes of a flood that did commit.
    app.otps(300).await;
    let first = app.claim(1).await;
    assert_eq!(first[0].template, "admin_2fa");
}

#[tokio::test]
async fn login_codes_cannot_lock_a_number_out_of_its_admin_codes() {
    let app = TestApp::new().await;
    let mut conn = budgeted(&app).await;
    for _ in 0..5 {
        enqueue(&mut conn, "+8801712345678", "otp", None)
            .await
            .unwrap();
    }
    assert_eq!(
        enqueue(&mut conn, "+8801712345678", "otp", None).await,
        Err("SR008".to_owned())
    );
    assert_eq!(
        enqueue(&mut conn, "+8801712345678", "admin_2fa", None).await,
        Ok(())
    );
}

#[tokio::test]
async fn a_caller_key_is_counted_but_never_kept() {
    let app = TestApp::new().await;
    let mut conn = budgeted(&app).await;
    enqueue(&mut conn, "+8801712345678", "otp", Some("203.0.113.7"))
        .await
        .unwrap();
    let kept: Vec<String> = sqlx::query_scalar(
        "SELECT u.subject FROM sms_budget_usage u JOIN sms_budgets b ON b.id = u.budget_id \
          WHERE b.scope = 'caller'",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(kept.len(), 1);
    assert!(!kept[0].contains("203.0.113"), "{kept:?}");
    let anywhere: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sms_outbox o WHERE o::text LIKE '%203.0.113%'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(anywhere, 0);
}

#[tokio::test]
async fn a_resend_counts_against_the_budgets_and_a_spent_one_leaves_the_message_sent() {
    let app = TestApp::new().await;
    let first = app.otp("+8801712345601", "482913").await;
    let second = app.otp("+8801712345602", "482913").await;
    app.send_due().await;
    only_budget(&app, "all", "*", None, 1).await;
    let mut conn = budgeted(&app).await;
    let resend = async |conn: &mut PgConnection, id| -> bool {
        let attempt = app.accepted_attempt(id).await.id;
        sqlx::query_scalar("SELECT sms_resend($1, 'no receipt', 1, interval '1 second')")
            .bind(attempt)
            .fetch_one(conn)
            .await
            .unwrap()
    };
    assert!(resend(&mut conn, first).await, "within the budget");
    assert!(!resend(&mut conn, second).await, "over the budget");
    assert_eq!(app.state_of(first).await.0, "pending");
    let (state, reason) = app.state_of(second).await;
    assert_eq!(state, "sent");
    assert!(
        reason
            .as_deref()
            .is_some_and(|r| r.starts_with("resend not sent: ") && r.contains("budget")),
        "{reason:?}"
    );
    assert_eq!(app.message(second).await.resends, 0);
}

/// A chain of two simulators that accept everything, the first capped at `cap` messages `per`
/// hour or day.
fn capped_chain(cap: u32, per: Per) -> std::sync::Arc<sms_relay::providers::ProviderChain> {
    use sms_relay::providers::{ProviderConfig, SimulatorSettings};
    let simulator = ProviderConfig::simulator("first", SimulatorSettings::default());
    let first = match per {
        Per::Day => ProviderConfig {
            daily_cap: Some(cap),
            ..simulator
        },
        Per::Hour => ProviderConfig {
            hourly_cap: Some(cap),
            ..simulator
        },
    };
    let second = ProviderConfig::simulator("second", SimulatorSettings::default());
    crate::support::http_chain(&[first, second])
}

async fn accepted_by(app: &TestApp) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT provider, count(*) FROM sms_attempts WHERE outcome = 'accepted' \
          GROUP BY provider ORDER BY provider",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_provider_over_its_hourly_or_daily_cap_is_skipped_for_the_next() {
    for per in [Per::Day, Per::Hour] {
        let app = TestApp::new().await;
        app.otps(5).await;
        app.run_chain_until_idle(capped_chain(2, per), crate::support::quick_retries())
            .await;
        assert_eq!(
            accepted_by(&app).await,
            [("first".to_owned(), 2), ("second".to_owned(), 3)],
            "{per:?}"
        );
    }
}

#[tokio::test]
async fn a_cap_counts_what_every_relay_sent_in_its_window() {
    for per in [Per::Day, Per::Hour] {
        let app = TestApp::new().await;
        // Earlier in the window, other relays got 3 messages accepted by "first".
        app.otps(3).await;
        app.run_chain_until_idle(capped_chain(100, per), crate::support::quick_retries())
            .await;
        // A relay starting now, with a cap of 3, reads that count and sends through "second".
        app.otps_ending_in(2, "9").await;
        app.run_chain_until_idle(capped_chain(3, per), crate::support::quick_retries())
            .await;
        assert_eq!(
            accepted_by(&app).await,
            [("first".to_owned(), 3), ("second".to_owned(), 2)],
            "{per:?}"
        );
    }
}

/// Two accepting simulators at 0.35 BDT a part; the first capped at `cap` BDT a day, if any.
fn spend_capped_chain(cap: Option<f64>) -> std::sync::Arc<sms_relay::providers::ProviderChain> {
    use sms_relay::providers::{PriceRule, ProviderConfig, SimulatorSettings, SpendCap};
    let priced = |name: &str| ProviderConfig {
        prices: vec![PriceRule {
            prefix: "+880".into(),
            per_part: 0.35,
            currency: "BDT".into(),
        }],
        ..ProviderConfig::simulator(name, SimulatorSettings::default())
    };
    let first = ProviderConfig {
        daily_spend_cap: cap.map(|amount| SpendCap {
            amount,
            currency: "BDT".into(),
        }),
        ..priced("first")
    };
    crate::support::http_chain(&[first, priced("second")])
}

#[tokio::test]
async fn a_provider_over_its_daily_spend_is_skipped_for_the_next() {
    let app = TestApp::new().await;
    // Earlier today: 2 messages through "first", 0.70 BDT.
    app.otps(2).await;
    app.run_chain_until_idle(spend_capped_chain(None), crate::support::quick_retries())
        .await;
    // With a cap of 1 BDT, "first" takes one more (1.05 BDT spent), then "second" the rest.
    app.otps_ending_in(5, "9").await;
    app.run_chain_until_idle(
        spend_capped_chain(Some(1.0)),
        crate::support::quick_retries(),
    )
    .await;
    assert_eq!(
        accepted_by(&app).await,
        [("first".to_owned(), 3), ("second".to_owned(), 4)]
    );
}

#[tokio::test]
async fn an_attack_runs_refusals_are_counted_for_the_analysts() {
    let app = TestApp::new().await;
    let mut conn = budgeted(&app).await;
    // 2,000 distinct Grameenphone numbers through the refusal-returning enqueue, in one
    // transaction that commits: the first 1,000 go in, the rest come back refused.
    let refused: Vec<Option<String>> = sqlx::query_scalar(
        "SELECT (sms_try_enqueue('+88017' || lpad(i::text, 8, '0'), 'otp', \
                                 '{\"code\": \"482913\"}')).refused \
           FROM generate_series(1, 2000) AS i",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(refused.iter().filter(|r| r.is_none()).count(), 1_000);
    assert!(refused.iter().flatten().all(|code| code == "SR016"));
    assert_eq!(app.message_count().await, 1_000);
    let counted: Vec<(String, String, String, i64)> =
        sqlx::query_as("SELECT purpose, sqlstate, reason, refused::int8 FROM sms_report_refusals")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        counted,
        [(
            "otp".to_owned(),
            "SR016".to_owned(),
            "budget spent".to_owned(),
            1_000
        )]
    );
}

#[tokio::test]
async fn a_money_budget_counts_each_code_at_the_most_it_may_cost() {
    let app = TestApp::new().await;
    for sql in [
        "DELETE FROM sms_budgets",
        // 1.40 BDT an hour; a one-part code to Bangladesh at 0.35 BDT: four codes.
        "INSERT INTO sms_budgets (scope, per, max_cost, currency) VALUES ('all', interval '1 hour', 1.40, 'BDT')",
        "UPDATE sms_templates SET max_parts = 1 WHERE name = 'otp'",
        // Banglalink numbers cost more: two of them take the whole budget.
        "INSERT INTO sms_price_estimates (prefix, currency, per_part) VALUES ('+88019', 'BDT', 0.70)",
    ] {
        sqlx::query(sql).execute(&app.pool).await.unwrap();
    }
    let mut conn = budgeted(&app).await;
    for recipient in ["+8801711000001", "+8801711000002", "+8801911000003"] {
        enqueue(&mut conn, recipient, "otp", None)
            .await
            .unwrap_or_else(|e| panic!("within the budget, refused {e}"));
    }
    // 0.35 + 0.35 + 0.70 = 1.40 spent: a code to either prefix is one too many.
    for recipient in ["+8801711000004", "+8801911000005"] {
        assert_eq!(
            enqueue(&mut conn, recipient, "otp", None).await,
            Err("SR016".to_owned())
        );
    }
    let spent: String =
        sqlx::query_scalar("SELECT sum(spent)::numeric(10, 2)::text FROM sms_budget_usage")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(spent, "1.40");
    // Another purpose has its own budget.
    enqueue(&mut conn, "+8801711000006", "admin_2fa", None)
        .await
        .unwrap();
    assert_eq!(app.message_count().await, 4);
}

#[tokio::test]
async fn a_money_budget_refuses_a_destination_it_cannot_price() {
    let app = TestApp::new().await;
    for sql in [
        "DELETE FROM sms_budgets",
        "INSERT INTO sms_budgets (scope, per, max_cost, currency) VALUES ('all', interval '1 day', 1000, 'BDT')",
        // Only Grameenphone numbers have a price.
        "UPDATE sms_price_estimates SET prefix = '+88017'",
    ] {
        sqlx::query(sql).execute(&app.pool).await.unwrap();
    }
    let mut conn = budgeted(&app).await;
    enqueue(&mut conn, "+8801711000001", "otp", None)
        .await
        .unwrap();
    assert_eq!(
        enqueue(&mut conn, "+8801911000002", "otp", None).await,
        Err("SR016".to_owned()),
        "no spend without a budget that can count it"
    );
    assert_eq!(app.message_count().await, 1);
}
