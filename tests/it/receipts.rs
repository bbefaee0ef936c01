//! Delivery receipts over real HTTP: the relay's webhook endpoints with each provider's signed
//! payloads, report polling against the fakes, and what receipts do to `sms_attempts`.

use base64::{Engine, engine::general_purpose::STANDARD};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sms_relay::{
    providers::{ProviderConfig, twilio::signature::twilio_signature},
    store::Store,
};

use crate::{
    fakes::{FakeProvider, Kind},
    support::{
        TestApp, http_chain,
        receipts::{Dlr, INFOBIP_PASSWORD, INFOBIP_USER, Poster, receipt_entry},
        scene::Scene,
        webhooks::{PUBLIC, config_for, serve},
    },
};

/// The status words each provider uses in these tests.
struct Words {
    intermediate: &'static str,
    earlier_intermediate: &'static str,
    delivered: &'static str,
    undelivered: &'static str,
    undelivered_error: &'static str,
}

fn words(kind: Kind) -> Words {
    match kind {
        Kind::Twilio => Words {
            intermediate: "sent",
            earlier_intermediate: "queued",
            delivered: "delivered",
            undelivered: "undelivered",
            undelivered_error: "30003",
        },
        Kind::Vonage => Words {
            intermediate: "buffered",
            earlier_intermediate: "accepted",
            delivered: "delivered",
            undelivered: "failed",
            undelivered_error: "2",
        },
        _ => Words {
            intermediate: "1/7",
            earlier_intermediate: "1/26",
            delivered: "3/5",
            undelivered: "2/9",
            undelivered_error: "27",
        },
    }
}

/// Delivered, duplicate, out-of-order, undelivered, unknown-message, forged and malformed
/// receipts for one provider, each through the real endpoint.
async fn receipts_for(kind: Kind) {
    let s = Scene::new(&[kind], None, |_| {}).await;
    let app = &s.app;
    let poster = s.poster(0);
    let w = words(kind);
    let attempt = s.attempt.id;
    let dlr = |status: &'static str, error: &'static str| (status, error);
    let post = async |(status, error): (&str, &str)| {
        poster.post(&Dlr::of(&s.attempt, status, error)).await
    };

    // Intermediate, then final: the status moves up.
    assert_eq!(post(dlr(w.intermediate, "")).await, StatusCode::OK);
    assert_eq!(
        app.delivery_of(attempt).await,
        (Some("enroute".into()), None, false)
    );
    assert_eq!(post(dlr(w.delivered, "")).await, StatusCode::OK);
    assert_eq!(
        app.delivery_of(attempt).await,
        (Some("delivered".into()), None, true)
    );
    // The same receipt again: acknowledged, stored once.
    assert_eq!(post(dlr(w.delivered, "")).await, StatusCode::OK);
    // Out of order: an intermediate and a contradicting final after the final change nothing.
    assert_eq!(post(dlr(w.earlier_intermediate, "")).await, StatusCode::OK);
    assert_eq!(
        post(dlr(w.undelivered, w.undelivered_error)).await,
        StatusCode::OK
    );
    assert_eq!(
        app.delivery_of(attempt).await,
        (Some("delivered".into()), None, true)
    );
    assert_eq!(
        app.receipt_results().await,
        ["applied", "applied", "stale", "stale"]
    );

    // Another message, undelivered.
    let second = s.send_one("+8801812345611").await;
    let attempt2 = app.accepted_attempt(second).await;
    let status = poster
        .post(&Dlr::of(&attempt2, w.undelivered, w.undelivered_error))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (state, error, delivered) = app.delivery_of(attempt2.id).await;
    assert_eq!(state.as_deref(), Some("undelivered"));
    assert!(!delivered);
    assert!(
        error.is_some_and(|e| e.contains(w.undelivered_error)),
        "{kind:?}"
    );
    // Resends are off here: the message stays sent.
    assert_eq!(app.state_of(second).await.0, "sent");

    // A receipt for a message we never sent: acknowledged and kept, nothing else moves.
    let status = poster
        .post(&Dlr {
            id: "0000000000000000ffff",
            client_ref: "zzzr1s1",
            status: w.delivered,
            error: "",
            signed_at: None,
        })
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(app.receipt_results().await.last().unwrap(), "unmatched");

    // Forged and unsigned receipts for a message still waiting are refused and change nothing.
    let third = s.send_one("+8801912345611").await;
    let attempt3 = app.accepted_attempt(third).await;
    let before = app.receipt_results().await.len();
    let delivered = Dlr::of(&attempt3, w.delivered, "");
    assert_eq!(
        poster.post_forged(&delivered, true).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        poster.post_forged(&delivered, false).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.receipt_results().await.len(), before);
    assert_eq!(app.delivery_of(attempt3.id).await, (None, None, false));
}

/// A receipt for a later part of a long message carries that part's own id, which no attempt
/// holds, and our reference for the call: it is matched through the message the reference names.
#[tokio::test]
async fn a_receipt_known_only_by_our_reference_is_matched_to_its_call() {
    let s = Scene::new(&[Kind::Vonage], None, |_| {}).await;
    let w = words(Kind::Vonage);
    let reference = s.attempt.client_ref.as_deref().expect("a client reference");
    let part_two = Dlr {
        id: "0000000000000000aaaa",
        client_ref: reference,
        status: w.delivered,
        error: "",
        signed_at: None,
    };
    assert_eq!(s.poster(0).post(&part_two).await, StatusCode::OK);
    assert_eq!(
        s.app.delivery_of(s.attempt.id).await,
        (Some("delivered".into()), None, true)
    );
    assert_eq!(s.app.receipt_results().await, ["applied"]);
}

/// The database reads back the seq of every reference the relay writes, and nothing from text
/// that is not one.
#[tokio::test]
async fn the_database_reads_the_message_seq_out_of_the_relays_references() {
    let app = TestApp::new().await;
    let mut seqs = vec![0, 1, 35, 36, 1295, 1296, i64::MAX];
    seqs.extend((0..200).map(|_| rand::random_range(0..=i64::MAX)));
    for seq in seqs {
        let reference = format!("{}s2", sms_relay::domain::reference::stem(seq, 3));
        let read: Option<i64> = sqlx::query_scalar("SELECT sms_reference_seq($1)")
            .bind(&reference)
            .fetch_one(&app.pool)
            .await
            .unwrap();
        assert_eq!(read, Some(seq), "{reference}");
    }
    for other in [
        "",
        "att_01",
        "1r1",
        "1R1S1",
        "-1r1s1",
        "zzzzzzzzzzzzzr1s1",
        "1r1s1x",
    ] {
        let read: Option<i64> = sqlx::query_scalar("SELECT sms_reference_seq($1)")
            .bind(other)
            .fetch_one(&app.pool)
            .await
            .unwrap();
        assert_eq!(read, None, "{other}");
    }
}

#[tokio::test]
async fn twilio_receipts() {
    receipts_for(Kind::Twilio).await;
}

#[tokio::test]
async fn vonage_receipts() {
    receipts_for(Kind::Vonage).await;
}

#[tokio::test]
async fn infobip_receipts() {
    receipts_for(Kind::Infobip).await;
}

#[tokio::test]
async fn twilio_signature_covers_url_and_body() {
    let app = TestApp::new().await;
    let fake = FakeProvider::start(Kind::Twilio).await;
    let config = config_for(vec![receipt_entry(&fake, "p")]);
    let base = serve(&config, app.store()).await;
    let poster = Poster::new(&base, &fake);
    let form = Poster::twilio_form(&Dlr {
        id: "SM00000000000000000000000000000001",
        client_ref: "",
        status: "delivered",
        error: "",
        signed_at: None,
    });
    let url = format!("{PUBLIC}/webhooks/twilio");
    let post = async |path: &str, sig: String, form: &[(String, String)]| {
        poster
            .http
            .post(format!("{base}{path}"))
            .header("X-Twilio-Signature", sig)
            .form(form)
            .send()
            .await
            .unwrap()
            .status()
    };
    // The port quirk: signed with :443, called without it.
    let with_port = twilio_signature(
        &poster.token,
        "https://relay.example.com:443/webhooks/twilio",
        &form,
    );
    assert_eq!(
        post("/webhooks/twilio", with_port, &form).await,
        StatusCode::OK
    );
    // Tampered body, URL (query added after signing) and header.
    let good = twilio_signature(&poster.token, &url, &form);
    let mut tampered = form.clone();
    tampered[2].1 = "undelivered".into();
    assert_eq!(
        post("/webhooks/twilio", good.clone(), &tampered).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        post("/webhooks/twilio?x=1", good.clone(), &form).await,
        StatusCode::FORBIDDEN
    );
    let mut header = good.clone();
    header.replace_range(0..1, if header.starts_with('A') { "B" } else { "A" });
    assert_eq!(
        post("/webhooks/twilio", header, &form).await,
        StatusCode::FORBIDDEN
    );
    // A signed query string is part of the URL.
    let with_query = twilio_signature(&poster.token, &format!("{url}?attempt=1"), &form);
    assert_eq!(
        post("/webhooks/twilio?attempt=1", with_query, &form).await,
        StatusCode::OK
    );
    // Only the two good posts were stored (both for a message we do not know).
    assert_eq!(app.receipt_results().await, ["unmatched"]);
}

#[tokio::test]
async fn malformed_and_oversized_receipts_get_400_and_change_nothing() {
    let app = TestApp::new().await;
    let twilio = FakeProvider::start(Kind::Twilio).await;
    let infobip = FakeProvider::start(Kind::Infobip).await;
    let mut config = config_for(vec![
        receipt_entry(&twilio, "t"),
        receipt_entry(&infobip, "i"),
    ]);
    config.webhooks.max_body_bytes = 4096;
    let base = serve(&config, app.store()).await;
    let http = reqwest::Client::new();
    let infobip_post = async |body: Vec<u8>| {
        http.post(format!("{base}/webhooks/infobip"))
            .basic_auth(INFOBIP_USER, Some(INFOBIP_PASSWORD))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(
        infobip_post(b"{\"results\": [".to_vec()).await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        infobip_post(br#"{"results":[{"messageId":"x"}]}"#.to_vec()).await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        infobip_post(vec![b' '; 10_000]).await,
        StatusCode::BAD_REQUEST
    );
    // Signed, but without a MessageSid.
    let token = twilio.credentials()[1].1.clone();
    let form = vec![("MessageStatus".to_owned(), "delivered".to_owned())];
    let sig = twilio_signature(&token, &format!("{PUBLIC}/webhooks/twilio"), &form);
    let status = http
        .post(format!("{base}/webhooks/twilio"))
        .header("X-Twilio-Signature", sig)
        .form(&form)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(app.receipt_results().await.is_empty());
}

#[tokio::test]
async fn vonage_json_post_receipt_is_accepted() {
    let s = Scene::new(&[Kind::Vonage], None, |_| {}).await;
    let params = Poster::vonage_params(&Dlr::of(&s.attempt, "delivered", ""));
    let body: serde_json::Map<String, Value> = params
        .into_iter()
        .map(|(k, v)| (k, Value::from(v)))
        .collect();
    let status = reqwest::Client::new()
        .post(format!("{}/webhooks/vonage", s.base))
        .json(&body)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.delivery().await.as_deref(), Some("delivered"));
}

#[tokio::test]
async fn receipts_are_matched_only_to_their_providers_kind() {
    // A Twilio-signed receipt naming a Vonage message id must not touch the Vonage attempt.
    let s = Scene::new(&[Kind::Vonage, Kind::Twilio], None, |_| {}).await;
    let status = s
        .poster(1)
        .post(&Dlr::of(&s.attempt, "undelivered", "30003"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.app.receipt_results().await, ["unmatched"]);
    assert_eq!(s.delivery().await, None);
}

/// How long an attempt had waited since acceptance when a report API was last asked about it,
/// in seconds (the poller's next backoff step).
async fn waited_when_asked(app: &TestApp, attempt: i64) -> f64 {
    let a = app.attempt(attempt).await;
    (a.receipt_checked_at.expect("asked") - a.finished_at).as_seconds_f64()
}

#[tokio::test]
async fn alpha_sms_reports_are_polled_with_their_charge() {
    let s = Scene::new(&[Kind::AlphaSms], None, |_| {}).await;
    let (app, fake, attempt) = (&s.app, &s.fakes[0], s.attempt.id);
    let chain = http_chain(&s.config.providers);
    let poller = s.config.poller(&chain, app.store());
    // Old enough to be asked about (the settle time is the 100 ms poll interval here).
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    poller.poll().await;
    assert_eq!(app.delivery_of(attempt).await.0.as_deref(), Some("enroute"));
    let a = app.attempt(attempt).await;
    assert_eq!(
        (a.cost.as_deref(), a.currency.as_deref()),
        (Some("0.250000"), Some("BDT"))
    );
    // Asked again only once it has waited as long again as it had when first asked (at least
    // the poll interval); then the report says delivered.
    fake.set_report_status("Delivered");
    poller.poll().await;
    assert_eq!(app.delivery_of(attempt).await.0.as_deref(), Some("enroute"));
    assert_eq!(fake.lookups(), 1);
    let waited = waited_when_asked(app, attempt).await;
    tokio::time::sleep(std::time::Duration::from_secs_f64(waited.max(0.1) + 0.1)).await;
    poller.poll().await;
    assert_eq!(
        app.delivery_of(attempt).await,
        (Some("delivered".into()), None, true)
    );
    assert_eq!(fake.lookups(), 2);
    // Final: never asked again, even after waiting well past the next backoff step (the time
    // since acceptance when it was last asked).
    let waited = waited_when_asked(app, attempt).await;
    tokio::time::sleep(std::time::Duration::from_secs_f64(2.0 * waited + 0.2)).await;
    poller.poll().await;
    assert_eq!(fake.lookups(), 2);
}

#[tokio::test]
async fn infobip_reports_are_pulled_when_enabled() {
    let s = Scene::new(&[Kind::Infobip], None, |c| {
        let sms_relay::providers::ProviderKind::Infobip(settings) = &mut c.providers[0].kind else {
            unreachable!()
        };
        settings.pull_reports = true;
    })
    .await;
    let (app, attempt) = (&s.app, s.attempt.id);
    let chain = http_chain(&s.config.providers);
    let poller = s.config.poller(&chain, app.store());
    poller.poll().await;
    let (status, _, delivered) = app.delivery_of(attempt).await;
    assert_eq!((status.as_deref(), delivered), (Some("delivered"), true));
    let a = app.attempt(attempt).await;
    // 0.0301 EUR per message × 1 part, as the report says (replacing the configured price).
    assert_eq!(
        (a.cost.as_deref(), a.currency.as_deref()),
        (Some("0.030100"), Some("EUR"))
    );
    // Each report is returned once: a second pull records nothing new.
    poller.poll().await;
    assert_eq!(app.receipt_results().await, ["applied"]);
}

#[tokio::test]
async fn health_and_readiness() {
    let app = TestApp::new().await;
    let config = config_for(vec![ProviderConfig::simulator("sim", Default::default())]);
    let base = serve(&config, app.store()).await;
    let get = async |url: String| reqwest::get(url).await.unwrap().status();
    assert_eq!(get(format!("{base}/healthz")).await, StatusCode::OK);
    assert_eq!(get(format!("{base}/readyz")).await, StatusCode::OK);
    // A relay whose database is gone is alive but not ready.
    let gone = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_secs(1))
        .connect_lazy("postgres://postgres@127.0.0.1:1/none")
        .unwrap();
    let base = serve(&config, Store::new(gone)).await;
    assert_eq!(get(format!("{base}/healthz")).await, StatusCode::OK);
    assert_eq!(
        get(format!("{base}/readyz")).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn infobip_batch_is_recorded_in_order() {
    let s = Scene::new(&[Kind::Infobip], None, |_| {}).await;
    let (app, base) = (&s.app, &s.base);
    let attempt = s.attempt.id;
    let dlr = |status| Dlr::of(&s.attempt, status, "");
    let body = Poster::infobip_body(&[dlr("1/26"), dlr("3/5"), dlr("1/7")]);
    let status = reqwest::Client::new()
        .post(format!("{base}/webhooks/infobip"))
        .header(
            "authorization",
            format!(
                "Basic {}",
                STANDARD.encode(format!("{INFOBIP_USER}:{INFOBIP_PASSWORD}"))
            ),
        )
        .json(&body)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(app.receipt_results().await, ["applied", "applied", "stale"]);
    let (status, _, _) = app.delivery_of(attempt).await;
    assert_eq!(status.as_deref(), Some("delivered"));
    let delivered_at = app.attempt(attempt).await.delivered_at.unwrap();
    let done = delivered_at.format("%Y-%m-%d %H:%M:%S").to_string();
    assert_eq!(done, "2025-01-01 14:00:04", "the carrier's doneAt");
}

#[tokio::test]
async fn odd_values_in_a_receipt_are_fitted_not_fatal_to_the_batch() {
    let s = Scene::new(&[Kind::Infobip], None, |_| {}).await;
    let app = &s.app;
    let attempt = s.attempt.id;
    let mut body = Poster::infobip_body(&[
        Dlr {
            id: "unknown-1",
            client_ref: "",
            status: "3/5",
            error: "",
            signed_at: None,
        },
        Dlr::of(&s.attempt, "3/5", ""),
    ]);
    // A NUL in a string (jsonb refuses it) and a price no numeric(14, 6) holds.
    body["results"][0]["sender"] = json!("Glam\u{0}ora");
    body["results"][1]["price"]["pricePerMessage"] = json!(999_999_999.0);
    let receipts =
        sms_relay::providers::infobip::receipt::parse(body.to_string().as_bytes()).unwrap();
    let totals = app
        .store()
        .record_receipts(
            "infobip",
            sms_relay::store::Via::Webhook,
            &["p1".to_owned()],
            &receipts,
            sms_relay::store::ResendRule {
                max_resends: 0,
                expiry_margin: std::time::Duration::ZERO,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (totals.applied, totals.unmatched, totals.refused),
        (1, 1, 0)
    );
    assert_eq!(
        app.delivery_of(attempt).await.0.as_deref(),
        Some("delivered")
    );
    // The configured price stays: the reported one does not fit.
    let a = app.attempt(attempt).await;
    assert_eq!(
        (a.cost.as_deref(), a.currency.as_deref()),
        (Some("0.350000"), Some("BDT"))
    );
}

#[tokio::test]
async fn receipts_are_stored_without_the_number() {
    for kind in [Kind::Twilio, Kind::Vonage, Kind::Infobip] {
        let s = Scene::new(&[kind], None, |_| {}).await;
        let delivered = match kind {
            Kind::Infobip => "3/5",
            _ => "delivered",
        };
        assert_eq!(
            s.poster(0).post(&Dlr::of(&s.attempt, delivered, "")).await,
            StatusCode::OK,
            "{kind:?}"
        );
        let payloads: Vec<String> = sqlx::query_scalar("SELECT payload::text FROM sms_receipts")
            .fetch_all(&s.app.pool)
            .await
            .unwrap();
        assert_eq!(payloads.len(), 1, "{kind:?}");
        assert!(
            !payloads[0].contains("12345611"),
            "{kind:?}: {}",
            payloads[0]
        );
        assert!(payloads[0].contains("••"), "{kind:?}: {}", payloads[0]);
    }
}
