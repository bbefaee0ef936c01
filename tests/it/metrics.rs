//! `/metrics` on the admin listener of a running relay: the real Prometheus parser accepts it,
//! every counter equals what the database holds after a scripted run, no label carries a number,
//! an id or a code, and a listener with a token refuses requests without it (the operator page
//! too).

use std::{collections::HashMap, io::Write, process::Stdio};

use crate::support::{
    TestApp,
    cli::{RelayProcess, Scratch, free_address, spawn_with_admin, unique_id},
    eventually,
};

/// One sample: the metric's name, its labels, its value.
type Sample = (String, HashMap<String, String>, f64);

/// The samples of a text exposition (the format's simple subset this exporter writes: no
/// escaped quotes or commas in label values, no timestamps).
fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("name and value");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let labels = rest
                        .trim_end_matches('}')
                        .split(',')
                        .filter_map(|pair| {
                            let (k, v) = pair.split_once('=')?;
                            Some((k.to_owned(), v.trim_matches('"').to_owned()))
                        })
                        .collect();
                    (name.to_owned(), labels)
                }
                None => (series.to_owned(), HashMap::new()),
            };
            (name, labels, value.parse().expect("a number"))
        })
        .collect()
}

/// Sums `name`'s samples per the values of `label_names`.
fn by_labels(samples: &[Sample], name: &str, label_names: &[&str]) -> HashMap<Vec<String>, i64> {
    let mut sums = HashMap::new();
    for (n, labels, value) in samples {
        if n == name {
            let key = label_names.iter().map(|l| labels[*l].clone()).collect();
            *sums.entry(key).or_insert(0) += *value as i64;
        }
    }
    sums
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_equal_what_the_database_holds() {
    let app = TestApp::new().await;
    // 30 codes; the simulator rejects about a third as bad numbers and fails some calls, so the
    // run ends messages sent and failed and records calls of several outcomes.
    app.otps(30).await;
    let scratch = Scratch::new();
    let (relay, address) = spawn_with_admin(
        &app,
        &scratch,
        "[relay]\npoll_interval_ms = 100\n\
         [retry]\nbase_ms = 10\ncap_ms = 50\n\
         [receipts]\npoll_interval_ms = 100\n\
         [[providers]]\nname = \"sim\"\nkind = \"simulator\"\nbad_recipient = 0.3\nprovider_error = 0.3\n\
         receipts = true\nundelivered = 0.3\ndaily_cap = 1000\n\
         circuit = { consecutive_failures = 5, failure_rate = 0.5, window = 20, open_ms = 200 }\n",
    );
    // Every message ends and every accepted call gets its report (the simulator answers polls;
    // an undelivered one queues a resend, whose call gets its own).
    eventually(async || {
        app.owed().await == 0
            && app
                .count("SELECT count(*) FROM sms_attempts WHERE outcome = 'accepted' AND delivery_status IS NULL")
                .await
                == 0
    })
    .await;
    // The relay counts a batch once the database has it: scrape until all 30 are counted.
    let scrape = async || {
        reqwest::get(format!("http://{address}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let finished = |body: &str| {
        samples(body)
            .iter()
            .filter(|(n, ..)| n == "sms_relay_messages_finished_total")
            .map(|(.., v)| *v)
            .sum::<f64>()
    };
    eventually(async || finished(&scrape().await) == 30.0).await;
    let body = scrape().await;
    assert!(relay.stop().await.success());

    // promtool reads the exposition with the Prometheus project's own parser and linter.
    promtool(&["check", "metrics"], &body).unwrap();
    let samples = samples(&body);
    // Provider calls, as sms_attempts holds them.
    let calls: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT provider, outcome::text, count(*) FROM sms_attempts GROUP BY provider, outcome",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let expected: HashMap<Vec<String>, i64> = calls
        .into_iter()
        .map(|(provider, outcome, n)| (vec![provider, outcome], n))
        .collect();
    assert!(expected.len() > 1, "several outcomes: {expected:?}");
    assert_eq!(
        by_labels(
            &samples,
            "sms_relay_provider_calls_total",
            &["provider", "outcome"]
        ),
        expected
    );
    // Messages by final state, as sms_outbox holds them.
    let states: Vec<(String, i64)> =
        sqlx::query_as("SELECT state::text, count(*) FROM sms_outbox GROUP BY state")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    let expected: HashMap<Vec<String>, i64> =
        states.into_iter().map(|(s, n)| (vec![s], n)).collect();
    assert_eq!(
        by_labels(&samples, "sms_relay_messages_finished_total", &["state"]),
        expected
    );
    let gauge = |name: &str| {
        samples
            .iter()
            .filter(|(n, ..)| n == name)
            .map(|(.., v)| *v)
            .sum::<f64>()
    };
    assert_eq!(gauge("sms_relay_queue_messages"), 0.0);
    assert_eq!(gauge("sms_relay_database_up"), 1.0);
    assert_eq!(gauge("sms_relay_relays"), 1.0);
    let first_rounds_with_a_call: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT message_id) FROM sms_attempts WHERE attempt_number = 1",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        gauge("sms_relay_pickup_seconds_count"),
        first_rounds_with_a_call as f64,
        "each first round's first call"
    );
    // Receipts, as sms_receipts holds them, and the delivery ratio they make.
    let receipts: Vec<(String, String, String, i64)> = sqlx::query_as(
        "SELECT source, delivery_status::text, result, count(*) FROM sms_receipts GROUP BY 1, 2, 3",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert!(!receipts.is_empty());
    let expected: HashMap<Vec<String>, i64> = receipts
        .into_iter()
        .map(|(source, status, result, n)| (vec![source, status, result], n))
        .collect();
    assert_eq!(
        by_labels(
            &samples,
            "sms_relay_receipts_total",
            &["source", "status", "result"]
        ),
        expected
    );
    let ratio: f64 = sqlx::query_scalar(
        "SELECT (count(*) FILTER (WHERE delivery_status = 'delivered'))::float8 / count(*) \
           FROM sms_attempts WHERE outcome = 'accepted'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(gauge("sms_relay_delivery_ratio"), ratio);
    // The provider's daily cap against what it accepted today.
    let accepted: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sms_attempts WHERE provider = 'sim' AND outcome = 'accepted'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let cap = |name: &str| {
        samples
            .iter()
            .find(|(n, labels, _)| {
                n == name && labels.get("scope").map(String::as_str) == Some("provider")
            })
            .map(|(.., v)| *v)
    };
    assert_eq!(cap("sms_relay_budget_used"), Some(accepted as f64));
    assert_eq!(cap("sms_relay_budget_limit"), Some(1000.0));
    // No label value is a number, an id or a code.
    let codes: Vec<String> = sqlx::query_scalar("SELECT params->>'code' FROM sms_outbox")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    for (name, labels, _) in &samples {
        for value in labels.values() {
            assert!(
                !value.contains("880") && uuid::Uuid::parse_str(value).is_err(),
                "{name}: {value}"
            );
            assert!(!codes.contains(value), "{name} carries a code: {value}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_the_admin_listener() {
    let app = TestApp::new().await;
    let scratch = Scratch::new();
    let local = free_address();
    // Bound to every interface, which needs a token.
    let every = local.replace("127.0.0.1", "0.0.0.0");
    let config = scratch.path("relay.toml");
    std::fs::write(&config, "").unwrap();
    let relay = RelayProcess::start_with(
        &app.url,
        &unique_id("token"),
        &config,
        &scratch,
        &[
            ("SMS_RELAY__ADMIN__LISTEN", &every),
            ("SMS_RELAY__ADMIN__TOKEN", "s3cret-admin-token-1"),
        ],
    );
    let client = reqwest::Client::new();
    let get = async |path: &str, token: Option<&str>| {
        let mut request = client.get(format!("http://{local}{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    eventually(async || get("/metrics", Some("s3cret-admin-token-1")).await == 200).await;
    for path in ["/metrics", "/"] {
        assert_eq!(get(path, None).await, 401, "{path}");
        assert_eq!(get(path, Some("wrong")).await, 401, "{path}");
        assert_eq!(get(path, Some("s3cret-admin-token-1")).await, 200, "{path}");
    }
    assert!(relay.stop().await.success());
}

/// Runs `promtool` with `args` in `deploy/prometheus`, `input` on its stdin; its output if it
/// fails.
fn promtool(args: &[&str], input: &str) -> Result<(), String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus");
    let mut child = std::process::Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (.ci/run installs Debian's prometheus package)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[test]
fn the_alert_rules_pass_their_checks_and_unit_tests() {
    promtool(&["check", "rules", "alerts.yml"], "").unwrap();
    promtool(&["test", "rules", "alerts.test.yml"], "").unwrap();
}

#[test]
fn every_dashboard_query_is_valid_promql_over_the_relays_metrics() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/sms-relay.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| panel["targets"].as_array().unwrap().clone())
        .map(|target| target["expr"].as_str().unwrap().to_owned())
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    for expr in &exprs {
        assert!(expr.contains("sms_relay_"), "{expr}");
    }
    // promtool parses rule expressions with Prometheus's own PromQL parser: each query becomes a
    // recording rule of a throwaway rules file.
    let scratch = Scratch::new();
    let rules = scratch.path("dashboard-rules.yml");
    let mut yaml = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        yaml.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(expr).unwrap()
        ));
    }
    std::fs::write(&rules, yaml).unwrap();
    promtool(&["check", "rules", rules.to_str().unwrap()], "").unwrap();
}
