//! One conformance suite for every HTTP adapter: the same scripted scenarios against each
//! provider's fake server, asserting the class, the recorded attempt row and what the fake
//! received.

use serde_json::json;

use crate::{
    fakes::{FakeProvider, Kind, Received, Scenario},
    support::{TestApp, history::Attempt, http_chain, provider_config},
};
use sms_relay::relay::RetryPolicy;

/// One round only: whatever the first round gives is final, so each scenario ends in one row.
fn one_round() -> RetryPolicy {
    RetryPolicy {
        max_rounds: 1,
        ..RetryPolicy::default()
    }
}

/// What a scenario must produce on `kind`: outcome, HTTP status (`None`: not asserted) and
/// provider error code.
fn expected(kind: Kind, scenario: Scenario) -> (&'static str, Option<i16>, Option<&'static str>) {
    use Kind::*;
    use Scenario::*;
    let ok = if kind == Twilio { 201 } else { 200 };
    let has_lookup = matches!(kind, Twilio | Infobip);
    match (scenario, kind) {
        (Accept, _) => ("accepted", Some(ok), None),
        (Throttle, Twilio) => ("provider_error", Some(429), Some("20429")),
        (Throttle, Vonage) => ("provider_error", Some(200), Some("1")),
        (Throttle, Infobip) => ("provider_error", Some(429), Some("E429")),
        (Throttle, SslWireless) => ("provider_error", Some(200), Some("4029")),
        (Throttle, BulkSmsBd | AlphaSms) => ("provider_error", Some(429), Some("HTTP429")),
        (ServerError, Twilio) => ("provider_error", Some(503), Some("20500")),
        (ServerError, Infobip) => ("provider_error", Some(503), Some("E503")),
        (ServerError, _) => ("provider_error", Some(503), Some("HTTP503")),
        (InvalidNumber, Twilio) => ("bad_recipient", Some(400), Some("21211")),
        (InvalidNumber, Vonage) => ("bad_recipient", Some(200), Some("7")),
        (InvalidNumber, Infobip) => ("bad_recipient", Some(200), Some("52 REJECTED_DESTINATION")),
        (InvalidNumber, SslWireless) => ("bad_recipient", Some(200), Some("4025")),
        (InvalidNumber, BulkSmsBd) => ("bad_recipient", Some(200), Some("1001")),
        (InvalidNumber, AlphaSms) => ("bad_recipient", Some(200), Some("416")),
        (Rejected, Twilio) => ("provider_error", Some(400), Some("21608")),
        (Rejected, Vonage) => ("provider_error", Some(200), Some("9")),
        (Rejected, Infobip) => (
            "provider_error",
            Some(200),
            Some("12 REJECTED_NOT_ENOUGH_CREDITS"),
        ),
        (Rejected, SslWireless) => ("provider_error", Some(200), Some("4003")),
        (Rejected, BulkSmsBd) => ("provider_error", Some(200), Some("1007")),
        (Rejected, AlphaSms) => ("provider_error", Some(200), Some("417")),
        // An unreadable 2xx may have been a send: with a status lookup the provider is asked.
        // The garbage answer came from something that did not take the message; the truncated
        // one from a provider that did.
        (Garbage | Truncated, _) if !has_lookup => ("unknown", Some(ok), None),
        (Garbage, _) => ("provider_error", Some(ok), Some("LOOKUP_NOT_FOUND")),
        (Truncated, _) => ("accepted", Some(200), None),
        // No answer in time, or the connection dropped after the request was written.
        (Slow | Drop, _) if has_lookup => ("accepted", Some(200), None),
        (Slow, _) => ("unknown", None, None),
        (Drop, _) => ("unknown", None, None),
    }
}

/// The number that picks `scenario`.
fn number(scenario: Scenario) -> String {
    format!("+88017120000{}", scenario.suffix())
}

/// How the provider wants numbers written.
fn on_the_wire(kind: Kind, e164: &str) -> String {
    if kind == Kind::Twilio {
        e164.to_owned()
    } else {
        e164.trim_start_matches('+').to_owned()
    }
}

fn assert_received(kind: Kind, got: &Received, code: &str, attempt: &Attempt) {
    let context = format!("{kind:?} {got:?}");
    assert!(got.authorized, "{context}");
    let path = match kind {
        Kind::Twilio => "/2010-04-01/Accounts/",
        Kind::Vonage => "/sms/json",
        Kind::Infobip => "/sms/3/messages",
        Kind::SslWireless => "/api/v3/send-sms",
        Kind::BulkSmsBd => "/api/smsapi",
        Kind::AlphaSms => "/sendsms",
    };
    assert_eq!(got.method, "POST", "{context}");
    assert!(got.path.starts_with(path), "{context}");
    assert!(
        got.text.contains(code) && !got.text.contains('{'),
        "rendered text: {context}"
    );
    let sender = if kind == Kind::SslWireless {
        "GLAMORAOTP"
    } else {
        "Glamora"
    };
    if kind == Kind::SslWireless {
        assert!(got.sender.is_some(), "{context}");
    } else {
        assert_eq!(got.sender.as_deref(), Some(sender), "{context}");
    }
    if matches!(kind, Kind::Vonage | Kind::Infobip | Kind::SslWireless) {
        assert_eq!(got.reference, attempt.client_ref, "{context}");
    }
    let callback = matches!(kind, Kind::Twilio | Kind::Vonage | Kind::Infobip)
        .then(|| format!("https://relay.example.com/webhooks/{}", kind.config_kind()));
    assert_eq!(got.callback, callback, "{context}");
}

async fn conformance(kind: Kind) {
    let app = TestApp::new().await;
    let fake = FakeProvider::start(kind).await;
    fake.set_slow_delay(std::time::Duration::from_secs(2));
    let lenient = json!({ "circuit": { "consecutive_failures": 100, "window": 100 } });

    // Wrong credentials first, on their own: refused as a provider problem, nothing sent.
    let wrong = app.otp("+8801712000011", "310001").await;
    let (secret_key, secret) = fake.credentials().pop().expect("credentials");
    let wrong_secret = json!({ secret_key: format!("{secret}x") });
    let bad = provider_config(
        &fake,
        kind.config_kind(),
        merge(lenient.clone(), wrong_secret),
    );
    app.run_chain_until_idle(http_chain(&[bad]), one_round())
        .await;
    let refused = app.first_attempt(wrong).await;
    assert_eq!(refused.outcome, "provider_error", "{kind:?} {refused:?}");
    assert_eq!(app.state_of(wrong).await.0, "failed");
    assert!(
        fake.received().iter().all(|r| !r.authorized),
        "{kind:?}: the fake saw the wrong credentials"
    );
    let refused_calls = fake.received().len();

    let mut ids = Vec::new();
    for (i, scenario) in Scenario::ALL.into_iter().enumerate() {
        let code = format!("4829{i:02}");
        ids.push((scenario, app.otp(&number(scenario), &code).await, code));
    }
    let good = provider_config(&fake, kind.config_kind(), lenient);
    app.run_chain_until_idle(http_chain(&[good]), one_round())
        .await;

    let received = fake.received();
    assert_eq!(
        received.len(),
        refused_calls + Scenario::ALL.len(),
        "{kind:?}: one call per message"
    );
    for (scenario, id, code) in ids {
        let row = app.first_attempt(id).await;
        let (outcome, http_status, error_code) = expected(kind, scenario);
        let context = format!("{kind:?} {scenario:?}: {row:?}");
        assert_eq!(row.outcome, outcome, "{context}");
        if http_status.is_some() {
            assert_eq!(row.http_status, http_status, "{context}");
        }
        assert_eq!(row.error_code.as_deref(), error_code, "{context}");
        assert_eq!(
            (row.segments, row.encoding.as_str()),
            (1, "gsm7"),
            "{context}"
        );
        let reference = row.client_ref.as_deref().expect("a client reference");
        assert!(
            reference.len() <= 20 && reference.bytes().all(|b| b.is_ascii_alphanumeric()),
            "{context}"
        );
        let state = app.state_of(id).await.0;
        if outcome == "accepted" {
            assert_eq!(state, "sent", "{context}");
            assert!(row.provider_message_id.is_some(), "{context}");
            let cost = (row.cost.as_deref(), row.currency.as_deref());
            if kind == Kind::Vonage {
                assert_eq!(
                    cost,
                    (Some("0.033300"), Some("EUR")),
                    "reported price: {context}"
                );
            } else {
                assert_eq!(
                    cost,
                    (Some("0.350000"), Some("BDT")),
                    "configured price: {context}"
                );
            }
            if matches!(
                scenario,
                Scenario::Slow | Scenario::Drop | Scenario::Truncated
            ) {
                let note = row.error_message.as_deref().unwrap_or_default();
                assert!(note.contains("status lookup found"), "{context}");
            }
        } else {
            assert_eq!(state, "failed", "{context}");
            assert!(row.provider_message_id.is_none(), "{context}");
            assert!(
                row.cost.is_none(),
                "unsent messages cost nothing: {context}"
            );
            let text = row.error_message.as_deref().unwrap_or_default();
            assert!(
                !text.contains(&code),
                "the code leaked into the error: {context}"
            );
        }
        let wire = on_the_wire(kind, &number(scenario));
        let got = received
            .iter()
            .find(|r| r.to == wire)
            .unwrap_or_else(|| panic!("{context}: the fake never saw {wire}"));
        assert_received(kind, got, &code, &row);
    }
    if matches!(kind, Kind::Twilio | Kind::Infobip) {
        assert_eq!(
            fake.lookups(),
            4,
            "{kind:?}: garbage, truncated, slow and drop looked up"
        );
    }
}

/// `base` with the keys of `top` written over it.
fn merge(mut base: serde_json::Value, top: serde_json::Value) -> serde_json::Value {
    if let (Some(base), serde_json::Value::Object(top)) = (base.as_object_mut(), top) {
        base.extend(top);
    }
    base
}

#[tokio::test]
async fn twilio_conforms() {
    conformance(Kind::Twilio).await;
}

#[tokio::test]
async fn vonage_conforms() {
    conformance(Kind::Vonage).await;
}

#[tokio::test]
async fn infobip_conforms() {
    conformance(Kind::Infobip).await;
}

#[tokio::test]
async fn ssl_wireless_conforms() {
    conformance(Kind::SslWireless).await;
}

#[tokio::test]
async fn bulksmsbd_conforms() {
    conformance(Kind::BulkSmsBd).await;
}

#[tokio::test]
async fn alpha_sms_conforms() {
    conformance(Kind::AlphaSms).await;
}
