//! The analysts' reports: every `sql/reports/*.sql` file over the hand-made fixture (see
//! `support/reports.rs`), through the real `sms-relay report` binary (JSON, CSV, table) and
//! through psql, with every figure worked out by hand below.

use std::{
    collections::BTreeSet,
    process::{Command, Output},
};

use chrono::NaiveDate;
use serde_json::{Value, json};

use crate::support::{
    TestApp,
    cli::{output, sms_relay},
    reports::{Days, fixture, report_files, reports_dir},
};

/// `sms-relay report` with `args` against `app`.
fn report(app: &TestApp, args: &[&str]) -> Output {
    output(sms_relay(app).arg("report").args(args))
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "sms-relay report failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// Every number as f64, so `7000`, `7000.0` and `7000.00` compare equal whatever SQL type (integer,
/// numeric, double) produced them.
fn normalized(value: Value) -> Value {
    match value {
        Value::Number(n) => json!(n.as_f64().unwrap()),
        Value::Array(a) => Value::Array(a.into_iter().map(normalized).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, normalized(v))).collect()),
        other => other,
    }
}

/// Asserts that report `name` has exactly the `expected` rows, newest day first. Rows of one day
/// are compared as a set: their order depends on the database's collation.
#[track_caller]
fn assert_rows(reports: &Value, name: &str, expected: Value) {
    let sorted = |rows: Value| {
        let mut rows: Vec<String> = match normalized(rows) {
            Value::Array(rows) => rows.iter().map(Value::to_string).collect(),
            other => panic!("report {name} is not a list: {other}"),
        };
        rows.sort();
        rows
    };
    let days: Vec<&str> = reports[name]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["day"].as_str().unwrap())
        .collect();
    assert!(
        days.is_sorted_by(|a, b| a >= b),
        "report {name}: days {days:?}"
    );
    assert_eq!(
        sorted(reports[name].clone()),
        sorted(expected),
        "report {name}"
    );
}

#[tokio::test]
async fn every_report_shows_the_hand_worked_figures() {
    let app = TestApp::new().await;
    let Days { d0, d1, old } = fixture(&app).await;
    let reports: Value = serde_json::from_str(&stdout(&report(
        &app,
        &["--since", "7d", "--format", "json"],
    )))
    .expect("--format json prints JSON");

    // Every file in sql/reports/ ran, and nothing else.
    let names: BTreeSet<String> = reports.as_object().unwrap().keys().cloned().collect();
    assert_eq!(names, report_files());

    // Cost: calls started on each UTC day, summed per provider, operator, country and currency;
    // calls without a price have currency and cost NULL. M11 (30 days ago) is outside the window.
    assert_rows(
        &reports,
        "cost",
        json!([
            // M3 resend: 1 call, 2 segments, 0.30 BDT.
            {"day": d0, "provider": "infobip", "operator": "Grameenphone", "country": "BD", "currency": "BDT",
             "attempts": 1, "segments": 2, "cost": 0.3},
            // M2 1.2: 0.05.
            {"day": d0, "provider": "twilio", "operator": "Banglalink", "country": "BD", "currency": "USD",
             "attempts": 1, "segments": 1, "cost": 0.05},
            // M1 0.05 (1 seg) + M3 0.10 (2) + M12 2.1 0.05 (1) + M13 0.05 (1) = 0.25, 5 segments.
            {"day": d0, "provider": "twilio", "operator": "Grameenphone", "country": "BD", "currency": "USD",
             "attempts": 4, "segments": 5, "cost": 0.25},
            // M6 1.1 + M6 2.1 + M12 1.1: refused, no price.
            {"day": d0, "provider": "twilio", "operator": "Grameenphone", "country": "BD", "currency": null,
             "attempts": 3, "segments": 3, "cost": null},
            // M4 1.2.
            {"day": d0, "provider": "twilio", "operator": "Robi", "country": "BD", "currency": "USD",
             "attempts": 1, "segments": 1, "cost": 0.05},
            // M5.
            {"day": d0, "provider": "twilio", "operator": "international", "country": "GB", "currency": null,
             "attempts": 1, "segments": 1, "cost": null},
            // M2 1.1, M4 1.1.
            {"day": d0, "provider": "vonage", "operator": "Banglalink", "country": "BD", "currency": null,
             "attempts": 1, "segments": 1, "cost": null},
            {"day": d0, "provider": "vonage", "operator": "Robi", "country": "BD", "currency": null,
             "attempts": 1, "segments": 1, "cost": null},
            // M10.
            {"day": d1, "provider": "twilio", "operator": "Grameenphone", "country": "BD", "currency": "USD",
             "attempts": 1, "segments": 1, "cost": 0.05},
        ]),
    );

    // Delivery rate: final receipts and deliveries counted on accepted calls only; a rate whose
    // divisor is 0 is null.
    let rate = |day: NaiveDate,
                provider: &str,
                operator: &str,
                template: &str,
                n: [u32; 4],
                rates: [Value; 2]| {
        let [of_final, of_accepted] = rates;
        json!({"day": day, "provider": provider, "operator": operator, "template": template,
               "attempts": n[0], "accepted": n[1], "final_receipts": n[2], "delivered": n[3],
               "delivered_of_final": of_final, "delivered_of_accepted": of_accepted})
    };
    assert_rows(
        &reports,
        "delivery_rate",
        json!([
            // M3 2.1: delivered. 1/1, 1/1.
            rate(
                d0,
                "infobip",
                "Grameenphone",
                "admin_2fa",
                [1, 1, 1, 1],
                [json!(1), json!(1)]
            ),
            // M2 1.2: delivered.
            rate(
                d0,
                "twilio",
                "Banglalink",
                "otp",
                [1, 1, 1, 1],
                [json!(1), json!(1)]
            ),
            // M3 1.1 undelivered, M12 1.1 refused, M12 2.1 delivered: 1 of 2 final, 1 of 2 accepted.
            rate(
                d0,
                "twilio",
                "Grameenphone",
                "admin_2fa",
                [3, 2, 2, 1],
                [json!(0.5), json!(0.5)]
            ),
            // M1 delivered, M6 1.1 and 2.1 refused, M13 enroute (not final): 1/1 final, 1/2 accepted.
            rate(
                d0,
                "twilio",
                "Grameenphone",
                "otp",
                [4, 2, 1, 1],
                [json!(1), json!(0.5)]
            ),
            // M4 1.2: accepted, no receipt: 0/0 final is null, 0/1 accepted.
            rate(
                d0,
                "twilio",
                "Robi",
                "otp",
                [1, 1, 0, 0],
                [Value::Null, json!(0)]
            ),
            // M5 bad recipient, M2 1.1 and M4 1.1 refused: nothing accepted.
            rate(
                d0,
                "twilio",
                "international",
                "otp",
                [1, 0, 0, 0],
                [Value::Null, Value::Null]
            ),
            rate(
                d0,
                "vonage",
                "Banglalink",
                "otp",
                [1, 0, 0, 0],
                [Value::Null, Value::Null]
            ),
            rate(
                d0,
                "vonage",
                "Robi",
                "otp",
                [1, 0, 0, 0],
                [Value::Null, Value::Null]
            ),
            // M10.
            rate(
                d1,
                "twilio",
                "Grameenphone",
                "otp",
                [1, 1, 1, 1],
                [json!(1), json!(1)]
            ),
        ]),
    );

    // Time to deliver. enqueue = delivered_at - message created_at, provider = delivered_at -
    // call started_at. percentile_cont(p) over n sorted values takes position p·(n-1) and
    // interpolates linearly.
    //   twilio D0: M1 (enqueue 5 000, provider 4 000), M2 (10 000, 8 000), M12 (7 000, 1 000).
    //     enqueue [5000, 7000, 10000]: p50 = pos 1 = 7000; p95 = pos 1.9 = 7000 + 0.9·3000 = 9700.
    //     provider [1000, 4000, 8000]: p50 = 4000; p95 = 4000 + 0.9·4000 = 7600.
    //   twilio D0 Grameenphone: M1, M12.
    //     enqueue [5000, 7000]: p50 = pos 0.5 = 6000; p95 = pos 0.95 = 5000 + 0.95·2000 = 6900.
    //     provider [1000, 4000]: p50 = 2500; p95 = 1000 + 0.95·3000 = 3850.
    //   infobip D0: M3 2.1: enqueue 12:01:03 - 12:00:00 = 63 000, provider 12:01:03 - 12:01:00 = 3 000.
    //   twilio D1: M10: enqueue 09:00:03 - 09:00:00 = 3 000, provider 2 000.
    // pickup: enqueue to the first call, and to the first accepted call's end (calls last 200 ms).
    //   D0 otp: M1, M2, M4, M5, M6, M13 each first called 1 s after enqueue; accepted M1 1 200,
    //     M2 2 200 (fallback), M4 2 200 (fallback), M13 1 200: p50 = 1 700, p95 = pos 2.85 = 2 200.
    //   D0 admin_2fa: M3 first call 1 000, accepted 1 200; M12 first call 0 (13:00:00), accepted by
    //     its retry 6 200. first [0, 1000]: p50 500, p95 950, p99 990; accepted [1200, 6200]: p50
    //     3 700, p95 = 1200 + 0.95·5000 = 5 950, p99 6 150.
    //   D1 otp: M10, 1 000 and 1 200. M7, M8, M9 had no call; M11 is outside the window.
    let pickup = |day: NaiveDate,
                  template: &str,
                  messages: u32,
                  first: [f64; 4],
                  accepted: u32,
                  acc: [f64; 4]| {
        json!({"day": day, "template": template, "messages": messages,
               "first_call_p50_ms": first[0], "first_call_p95_ms": first[1],
               "first_call_p99_ms": first[2], "first_call_max_ms": first[3],
               "accepted": accepted,
               "accepted_p50_ms": acc[0], "accepted_p95_ms": acc[1],
               "accepted_p99_ms": acc[2], "accepted_max_ms": acc[3]})
    };
    assert_rows(
        &reports,
        "pickup",
        json!([
            pickup(
                d0,
                "admin_2fa",
                2,
                [500.0, 950.0, 990.0, 1000.0],
                2,
                [3700.0, 5950.0, 6150.0, 6200.0]
            ),
            pickup(
                d0,
                "otp",
                6,
                [1000.0; 4],
                4,
                [1700.0, 2200.0, 2200.0, 2200.0]
            ),
            pickup(d1, "otp", 1, [1000.0; 4], 1, [1200.0; 4]),
        ]),
    );
    let ttd = |day: NaiveDate, provider: &str, operator: &str, delivered: u32, ms: [f64; 4]| {
        json!({"day": day, "provider": provider, "operator": operator, "delivered": delivered,
               "enqueue_p50_ms": ms[0], "enqueue_p95_ms": ms[1],
               "provider_p50_ms": ms[2], "provider_p95_ms": ms[3]})
    };
    assert_rows(
        &reports,
        "time_to_deliver",
        json!([
            ttd(
                d0,
                "infobip",
                "(all)",
                1,
                [63000.0, 63000.0, 3000.0, 3000.0]
            ),
            ttd(
                d0,
                "infobip",
                "Grameenphone",
                1,
                [63000.0, 63000.0, 3000.0, 3000.0]
            ),
            ttd(d0, "twilio", "(all)", 3, [7000.0, 9700.0, 4000.0, 7600.0]),
            ttd(
                d0,
                "twilio",
                "Banglalink",
                1,
                [10000.0, 10000.0, 8000.0, 8000.0]
            ),
            ttd(
                d0,
                "twilio",
                "Grameenphone",
                2,
                [6000.0, 6900.0, 2500.0, 3850.0]
            ),
            ttd(d1, "twilio", "(all)", 1, [3000.0, 3000.0, 2000.0, 2000.0]),
            ttd(
                d1,
                "twilio",
                "Grameenphone",
                1,
                [3000.0, 3000.0, 2000.0, 2000.0]
            ),
        ]),
    );

    // Failure reasons: refused calls by provider, outcome and code; bad receipts by status and
    // code; failed and expired messages by the class of last_error (its provider text is cut off).
    let failure = |source: &str, provider: Value, status: &str, reason: &str, count: u32| {
        json!({"day": d0, "source": source, "provider": provider, "status": status,
               "reason": reason, "count": count})
    };
    assert_rows(
        &reports,
        "failures",
        json!([
            failure("attempt", json!("twilio"), "bad_recipient", "21211", 1), // M5
            failure("attempt", json!("twilio"), "provider_error", "500", 2),  // M6 1.1, 2.1
            failure("attempt", json!("twilio"), "provider_error", "503", 1),  // M12 1.1
            failure("attempt", json!("vonage"), "provider_error", "429", 2),  // M2 1.1, M4 1.1
            failure(
                "message",
                Value::Null,
                "expired",
                "validity ends before the next retry",
                1
            ), // M6
            failure(
                "message",
                Value::Null,
                "failed",
                "bad_recipient from twilio (21211)",
                1
            ), // M5
            failure("receipt", json!("twilio"), "undelivered", "30003", 1),   // M3 1.1
        ]),
    );

    // Attempts per delivered message (day of its first call). D0: M1 1 call/1 provider, M2 2/2,
    // M3 2/2, M12 2/1. Calls [1, 2, 2, 2]: mean 7/4 = 1.75, median pos 1.5 = 2, max 2.
    // Providers [1, 1, 2, 2]: mean 6/4 = 1.5, median pos 1.5 = (1 + 2)/2 = 1.5, max 2. D1: M10 1/1.
    assert_rows(
        &reports,
        "attempts_per_delivered",
        json!([
            {"day": d0, "delivered_messages": 4, "attempts_avg": 1.75, "attempts_p50": 2, "attempts_max": 2,
             "providers_avg": 1.5, "providers_p50": 1.5, "providers_max": 2},
            {"day": d1, "delivered_messages": 1, "attempts_avg": 1, "attempts_p50": 1, "attempts_max": 1,
             "providers_avg": 1, "providers_p50": 1, "providers_max": 1},
        ]),
    );

    // Fallback and resend (day of the first call). D0 messages with calls: M1, M2, M3, M4, M5,
    // M6, M12, M13 = 8; with a fallback call M2, M4 = 2/8 = 0.25; with a resend M3 = 1/8 = 0.125.
    assert_rows(
        &reports,
        "fallback_resend",
        json!([
            {"day": d0, "messages": 8, "with_fallback": 2, "fallback_rate": 0.25,
             "with_resend": 1, "resend_rate": 0.125},
            {"day": d1, "messages": 1, "with_fallback": 0, "fallback_rate": 0,
             "with_resend": 0, "resend_rate": 0},
        ]),
    );

    // Expired and superseded (day of enqueue). D0 otp: M1, M2, M4, M5, M6, M7, M8, M9, M13 = 9,
    // expired M6, superseded M7 (M9 is cancelled for another reason). D0 admin_2fa: M3, M12.
    assert_rows(
        &reports,
        "expired_superseded",
        json!([
            {"day": d0, "template": "admin_2fa", "messages": 2, "expired": 0, "superseded": 0},
            {"day": d0, "template": "otp", "messages": 9, "expired": 1, "superseded": 1},
            {"day": d1, "template": "otp", "messages": 1, "expired": 0, "superseded": 0},
        ]),
    );

    // The views themselves are not windowed: M11 is there, 30 days back.
    let old_cost: Option<String> = sqlx::query_scalar(
        "SELECT cost::text FROM sms_report_cost_daily WHERE day = $1 AND provider = 'twilio'",
    )
    .bind(old)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(old_cost.as_deref(), Some("0.050000"));
}

#[tokio::test]
async fn since_takes_minutes_hours_and_days() {
    let app = TestApp::new().await;
    let Days { d0, d1, .. } = fixture(&app).await;
    let days_in = |since: &str| -> BTreeSet<String> {
        let out = stdout(&report(&app, &["--since", since, "--format", "json"]));
        let reports: Value = serde_json::from_str(&out).unwrap();
        reports["cost"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row["day"].as_str().unwrap().to_owned())
            .collect()
    };
    // Every UTC day that overlaps the window: 24 hours back always reaches into yesterday; 30
    // minutes back reaches today (and yesterday only in the first half hour of a UTC day); 60
    // days back reaches M11.
    assert_eq!(days_in("24h"), [d0.to_string(), d1.to_string()].into());
    assert!(days_in("30m").contains(&d0.to_string()));
    assert_eq!(days_in("60d").len(), 3);
}

#[tokio::test]
async fn csv_table_and_psql_show_the_same_reports() {
    let app = TestApp::new().await;
    let Days { d0, .. } = fixture(&app).await;
    let files = report_files();
    let json: Value = serde_json::from_str(&stdout(&report(
        &app,
        &["--since", "7d", "--format", "json"],
    )))
    .unwrap();

    // CSV: one section per report, each a header starting with `report`, its rows, a blank line.
    let csv = stdout(&report(&app, &["--since", "7d", "--format", "csv"]));
    let sections: Vec<Vec<&str>> = csv
        .split("\n\n")
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.lines().collect())
        .collect();
    let mut names = BTreeSet::new();
    for section in &sections {
        assert!(section[0].starts_with("report,"), "{csv}");
        // Every report has rows over this fixture; the first field names the report.
        let name = section[1].split(',').next().unwrap();
        assert!(
            section[1..]
                .iter()
                .all(|row| row.starts_with(&format!("{name},")))
        );
        assert_eq!(
            section.len() - 1,
            json[name].as_array().unwrap().len(),
            "{name}"
        );
        names.insert(name.to_owned());
    }
    assert_eq!(names, files, "{csv}");
    assert_eq!(
        sections[0][0],
        "report,day,provider,operator,country,currency,attempts,segments,cost"
    );
    for line in [
        format!("cost,{d0},twilio,Grameenphone,BD,USD,4,5,0.25"),
        format!("cost,{d0},twilio,Grameenphone,BD,,3,3,"),
        format!("delivery_rate,{d0},twilio,Robi,otp,1,1,0,0,,0.0"),
        format!("failures,{d0},message,,failed,bad_recipient from twilio (21211),1"),
        format!("time_to_deliver,{d0},twilio,(all),3,7000.0,9700.0,4000.0,7600.0"),
    ] {
        assert!(csv.lines().any(|l| l == line), "{line} not in\n{csv}");
    }

    // Table: each report under its title.
    let table = stdout(&report(&app, &["--format", "table"]));
    for name in &files {
        assert!(
            table.contains(&format!("[{name}, since 7 days]")),
            "{table}"
        );
    }
    assert!(table.contains("| Grameenphone |"), "{table}");

    // psql, as the analysts run the files: same rows as the binary.
    for name in &files {
        let path = reports_dir().join(format!("{name}.sql"));
        let out = Command::new("psql")
            .arg(&app.url)
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-v",
                "since=7 days",
                "-f",
            ])
            .arg(&path)
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql -f {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let rows = String::from_utf8(out.stdout).unwrap().lines().count();
        assert_eq!(
            rows,
            json[name].as_array().unwrap().len(),
            "{name} via psql"
        );
    }
}

#[tokio::test]
async fn a_bad_window_is_refused() {
    let app = TestApp::new().await;
    for since in ["7x", "0d", "d", "1.5h", "7 days", "70000d"] {
        let out = report(&app, &["--since", since]);
        assert!(!out.status.success(), "--since {since} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("--since") && stderr.contains("30m, 24h, 7d"),
            "--since {since}: {stderr}"
        );
    }
}
