//! The operator page (`GET /` on the admin listener) of a running relay, loaded in headless
//! Chromium: it renders without console messages, shows the figures the database holds and masks
//! numbers. The test keeps a phone-sized screenshot under the target directory (not committed).
//! (`metrics.rs` checks that a listener beyond loopback asks for its token, for the page too.)

use std::path::PathBuf;

use crate::support::{
    TestApp,
    cli::{Scratch, spawn_with_admin},
    eventually,
};

/// Runs headless Chromium with `args` then `url`; its stdout and its log (stderr).
fn chromium(args: &[&str], url: &str) -> (String, String) {
    let out = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .args(args)
        .arg(url)
        .output()
        .expect("chromium is installed (.ci/run installs Debian's chromium package)");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Lines of a Chromium log that report a page's console messages.
fn console_lines(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains(":CONSOLE")).collect()
}

/// The whole number right after `marker` in `dom`.
fn number_after(dom: &str, marker: &str) -> i64 {
    let at = dom
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} not in the page"))
        + marker.len();
    dom[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("no number after {marker}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_page_shows_what_the_database_holds_in_a_real_browser() {
    // The console check itself works on this Chromium: a page that logs is caught.
    let (_, log) = chromium(
        &["--dump-dom"],
        "data:text/html,<script>console.error('caught')</script>",
    );
    assert!(!console_lines(&log).is_empty(), "{log}");

    let app = TestApp::new().await;
    app.otps(30).await;
    let scratch = Scratch::new();
    let (relay, address) = spawn_with_admin(
        &app,
        &scratch,
        "[relay]\npoll_interval_ms = 100\n\
         [[providers]]\nname = \"sim\"\nkind = \"simulator\"\nbad_recipient = 0.3\ndaily_cap = 1000\n\
         prices = [{ prefix = \"+880\", per_part = 0.35, currency = \"BDT\" }]\n",
    );
    eventually(async || app.owed().await == 0).await;

    let page = format!("http://{address}/");
    let (dom, log) = chromium(&["--dump-dom"], &page);
    assert!(
        dom.contains("<h1>sms-relay</h1>"),
        "the page loaded: {dom}{log}"
    );
    assert!(console_lines(&log).is_empty(), "console messages: {log}");
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("operator-page.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        &[
            "--window-size=390,2400",
            &format!("--screenshot={}", shot.display()),
        ],
        &page,
    );
    assert!(
        std::fs::metadata(&shot).is_ok_and(|m| m.len() > 0),
        "a screenshot at {}",
        shot.display()
    );
    assert!(relay.stop().await.success());

    // The queue's counts, as the database holds them.
    let states: Vec<(String, i64)> =
        sqlx::query_as("SELECT state::text, count(*) FROM sms_outbox GROUP BY state")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert!(states.iter().any(|(s, _)| s == "failed"), "{states:?}");
    for (state, count) in &states {
        assert_eq!(
            number_after(&dom, &format!("data-state=\"{state}\">")),
            *count,
            "{state}"
        );
    }
    // The provider's calls of the last hour.
    let calls: i64 = sqlx::query_scalar("SELECT count(*) FROM sms_attempts WHERE provider = 'sim'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let row = &dom[dom
        .find("data-provider=\"sim\"")
        .expect("the provider's row")..];
    assert_eq!(number_after(row, "class=\"n calls\">"), calls);
    // The failed messages are listed with masked numbers only.
    let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM sms_outbox WHERE state = 'failed'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        dom.matches("class=\"recipient\">+880••••••••").count() as i64,
        failed
    );
    let numbers: Vec<String> = sqlx::query_scalar("SELECT recipient FROM sms_outbox")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    for number in numbers {
        assert!(!dom.contains(&number[4..]), "a full number on the page");
    }
    assert!(dom.contains("id=\"cost-chart\""), "the cost chart is drawn");
}
