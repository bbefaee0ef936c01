//! The analysts' reports: a hand-made fixture of messages and provider calls to run them over,
//! and the report files themselves (`sql/reports/*.sql`).

use std::{collections::BTreeSet, path::PathBuf};

use chrono::{NaiveDate, TimeDelta, Utc};
use sqlx::AssertSqlSafe;

use super::TestApp;

/// The fixture's three UTC days: today (`D0`), yesterday (`D1`) and 30 days ago (`OLD`, outside a
/// 7-day window).
pub struct Days {
    pub d0: NaiveDate,
    pub d1: NaiveDate,
    pub old: NaiveDate,
}

/// Thirteen messages (M1..M13, their idempotency keys) and fifteen provider calls (round.step).
/// Times are UTC; every call lasts 200 ms. Recipients: 017… Grameenphone (GP), 019… Banglalink
/// (BL), 018… Robi, +44… international (GB).
///
/// - M1, D0, otp, GP, sent, created 10:00:00. 1.1 twilio first 10:00:01: accepted, 0.05 USD,
///   delivered 10:00:05.
/// - M2, D0, otp, BL, sent, 11:00:00. 1.1 vonage first: provider_error 429. 1.2 twilio fallback
///   11:00:02: accepted, 0.05 USD, delivered 11:00:10.
/// - M3, D0, admin_2fa, GP, sent, 12:00:00. 1.1 twilio first: accepted, 2 segments, 0.10 USD,
///   undelivered (30003). 2.1 infobip resend 12:01:00: accepted, 2 segments, 0.30 BDT, delivered
///   12:01:03.
/// - M4, D0, otp, Robi, sent, 14:00:00. 1.1 vonage first: provider_error 429. 1.2 twilio fallback:
///   accepted, 0.05 USD, no receipt yet.
/// - M5, D0, otp, GB, failed, 15:00:00. 1.1 twilio first: bad_recipient 21211.
/// - M6, D0, otp, GP, expired, 16:00:00. 1.1 twilio first and 2.1 twilio retry: provider_error 500.
/// - M7, D0, otp, GP, cancelled, 09:00:00: superseded by M8 (a real supersede by sms_enqueue).
/// - M8, D0, otp, M7's number, pending, 09:05:00.
/// - M9, D0, otp, GP, cancelled, 09:10:00: "abandoned at shutdown" (not a supersede).
/// - M10, D1, otp, GP, sent, 09:00:00. 1.1 twilio first 09:00:01: accepted, 0.05 USD, delivered
///   09:00:03.
/// - M11, OLD (outside a 7-day window), otp, GP, sent. 1.1 twilio: accepted, 0.05 USD, delivered.
/// - M12, D0, admin_2fa, GP, sent, 13:00:00. 1.1 twilio first 13:00:00: provider_error 503.
///   2.1 twilio retry 13:00:06: accepted, 0.05 USD, delivered 13:00:07.
/// - M13, D0, otp, GP, sent, 17:00:00. 1.1 twilio first: accepted, 0.05 USD, enroute.
const FIXTURE: &str = r#"
DELETE FROM sms_allowed_prefixes;  -- M5 goes to +44

SELECT sms_enqueue(v.recipient, v.template, '{"code": "482913"}', idempotency_key => v.key)
  FROM (VALUES ('M1', '+8801710000001', 'otp'), ('M2', '+8801910000002', 'otp'),
               ('M3', '+8801710000003', 'admin_2fa'), ('M4', '+8801810000004', 'otp'),
               ('M5', '+447700900005', 'otp'), ('M6', '+8801710000006', 'otp'),
               ('M7', '+8801710000007', 'otp'), ('M9', '+8801710000009', 'otp'),
               ('M10', '+8801710000010', 'otp'), ('M11', '+8801710000011', 'otp'),
               ('M12', '+8801710000012', 'admin_2fa'), ('M13', '+8801710000013', 'otp'))
       AS v(key, recipient, template);
-- Same recipient and purpose as M7: the supersede trigger cancels M7.
SELECT sms_enqueue('+8801710000007', 'otp', '{"code": "482914"}', idempotency_key => 'M8');

UPDATE sms_outbox o
   SET state = v.state::sms_state,
       sent_at = CASE WHEN v.state = 'sent' THEN v.created::timestamptz + interval '30 seconds' END,
       attempts = v.rounds,
       created_at = v.created::timestamptz,
       expires_at = v.created::timestamptz + interval '10 minutes',
       finished_at = CASE WHEN v.state <> 'pending' THEN v.created::timestamptz + interval '1 minute' END,
       last_error = coalesce(v.last_error, o.last_error)
  FROM (VALUES
        ('M1', 'sent', 1, '@D0@ 10:00:00+00', NULL),
        ('M2', 'sent', 1, '@D0@ 11:00:00+00', NULL),
        ('M3', 'sent', 2, '@D0@ 12:00:00+00', NULL),
        ('M4', 'sent', 1, '@D0@ 14:00:00+00', NULL),
        ('M5', 'failed', 1, '@D0@ 15:00:00+00', 'bad_recipient from twilio (21211): The number [redacted] is not valid'),
        ('M6', 'expired', 2, '@D0@ 16:00:00+00', 'validity ends before the next retry; last error: provider_error from twilio (500): server error'),
        ('M7', 'cancelled', 0, '@D0@ 09:00:00+00', NULL),
        ('M8', 'pending', 0, '@D0@ 09:05:00+00', NULL),
        ('M9', 'cancelled', 0, '@D0@ 09:10:00+00', 'abandoned at shutdown'),
        ('M10', 'sent', 1, '@D1@ 09:00:00+00', NULL),
        ('M11', 'sent', 1, '@OLD@ 09:00:00+00', NULL),
        ('M12', 'sent', 2, '@D0@ 13:00:00+00', NULL),
        ('M13', 'sent', 1, '@D0@ 17:00:00+00', NULL))
       AS v(key, state, rounds, created, last_error)
 WHERE o.idempotency_key = v.key;

INSERT INTO sms_attempts (message_id, attempt_number, chain_step, provider, template, relay_id,
                          started_at, finished_at, outcome, error_code, provider_message_id,
                          segments, encoding, cost, currency, cause, country, operator,
                          delivery_status, delivery_error, delivered_at, receipt_at)
SELECT o.id, v.round, v.step, v.provider, o.template, 'fixture',
       v.started::timestamptz, v.started::timestamptz + interval '200 milliseconds',
       v.outcome::sms_outcome, v.error_code,
       CASE WHEN v.outcome = 'accepted' THEN concat(v.key, '-', v.round, '-', v.step) END,
       v.segments, 'gsm7', v.cost, v.currency, v.cause, sms_country(o.recipient), sms_operator(o.recipient),
       v.delivery::sms_delivery, v.delivery_error, v.delivered::timestamptz,
       CASE WHEN v.delivery IS NOT NULL THEN coalesce(v.delivered::timestamptz, v.started::timestamptz + interval '5 seconds') END
  FROM (VALUES
        ('M1',  1, 1, 'twilio',  'first',    'accepted',       NULL,    '@D0@ 10:00:01+00', 1, 0.05, 'USD', 'delivered',   NULL,    '@D0@ 10:00:05+00'),
        ('M2',  1, 1, 'vonage',  'first',    'provider_error', '429',   '@D0@ 11:00:01+00', 1, NULL, NULL,  NULL,          NULL,    NULL),
        ('M2',  1, 2, 'twilio',  'fallback', 'accepted',       NULL,    '@D0@ 11:00:02+00', 1, 0.05, 'USD', 'delivered',   NULL,    '@D0@ 11:00:10+00'),
        ('M3',  1, 1, 'twilio',  'first',    'accepted',       NULL,    '@D0@ 12:00:01+00', 2, 0.10, 'USD', 'undelivered', '30003', NULL),
        ('M3',  2, 1, 'infobip', 'resend',   'accepted',       NULL,    '@D0@ 12:01:00+00', 2, 0.30, 'BDT', 'delivered',   NULL,    '@D0@ 12:01:03+00'),
        ('M4',  1, 1, 'vonage',  'first',    'provider_error', '429',   '@D0@ 14:00:01+00', 1, NULL, NULL,  NULL,          NULL,    NULL),
        ('M4',  1, 2, 'twilio',  'fallback', 'accepted',       NULL,    '@D0@ 14:00:02+00', 1, 0.05, 'USD', NULL,          NULL,    NULL),
        ('M5',  1, 1, 'twilio',  'first',    'bad_recipient',  '21211', '@D0@ 15:00:01+00', 1, NULL, NULL,  NULL,          NULL,    NULL),
        ('M6',  1, 1, 'twilio',  'first',    'provider_error', '500',   '@D0@ 16:00:01+00', 1, NULL, NULL,  NULL,          NULL,    NULL),
        ('M6',  2, 1, 'twilio',  'retry',    'provider_error', '500',   '@D0@ 16:00:03+00', 1, NULL, NULL,  NULL,          NULL,    NULL),
        ('M10', 1, 1, 'twilio',  'first',    'accepted',       NULL,    '@D1@ 09:00:01+00', 1, 0.05, 'USD', 'delivered',   NULL,    '@D1@ 09:00:03+00'),
        ('M11', 1, 1, 'twilio',  'first',    'accepted',       NULL,    '@OLD@ 09:00:01+00', 1, 0.05, 'USD', 'delivered',  NULL,    '@OLD@ 09:00:02+00'),
        ('M12', 1, 1, 'twilio',  'first',    'provider_error', '503',   '@D0@ 13:00:00+00', 1, NULL, NULL,  NULL,          NULL,    NULL),
        ('M12', 2, 1, 'twilio',  'retry',    'accepted',       NULL,    '@D0@ 13:00:06+00', 1, 0.05, 'USD', 'delivered',   NULL,    '@D0@ 13:00:07+00'),
        ('M13', 1, 1, 'twilio',  'first',    'accepted',       NULL,    '@D0@ 17:00:01+00', 1, 0.05, 'USD', 'enroute',     NULL,    NULL))
       AS v(key, round, step, provider, cause, outcome, error_code, started, segments, cost, currency,
            delivery, delivery_error, delivered)
  JOIN sms_outbox o ON o.idempotency_key = v.key;
"#;

/// Loads the fixture into `app` (as the superuser the tests connect as).
pub async fn fixture(app: &TestApp) -> Days {
    let d0 = Utc::now().date_naive();
    let days = Days {
        d0,
        d1: d0 - TimeDelta::days(1),
        old: d0 - TimeDelta::days(30),
    };
    let sql = FIXTURE
        .replace("@D0@", &days.d0.to_string())
        .replace("@D1@", &days.d1.to_string())
        .replace("@OLD@", &days.old.to_string());
    sqlx::raw_sql(AssertSqlSafe(sql))
        .execute(&app.pool)
        .await
        .expect("the fixture loads");
    days
}

/// The names (file stems) of `sql/reports/*.sql`.
pub fn report_files() -> BTreeSet<String> {
    std::fs::read_dir(reports_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// `sql/reports/`.
pub fn reports_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sql/reports")
}
