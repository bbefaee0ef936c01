//! What leaves the relay towards providers: a redirect is an answer, never a second request.

use std::time::Duration;

use axum::{
    Router,
    http::{StatusCode, Uri, header},
    response::IntoResponse,
};
use sms_relay::{
    domain::{Recipient, segments},
    providers::{self, Outcome, OutgoingSms},
};
use tokio::net::TcpListener;
use uuid::Uuid;

use crate::{
    fakes::{FakeProvider, Kind},
    support::provider_config,
};

/// Serves on a free port, answering every request with `307` to the same path under `target`.
async fn redirector(target: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let app = Router::new().fallback(move |uri: Uri| {
        let location = format!("{target}{uri}");
        async move {
            (
                StatusCode::TEMPORARY_REDIRECT,
                [(header::LOCATION, location)],
            )
                .into_response()
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

#[tokio::test]
async fn a_provider_that_redirects_gets_no_second_request() {
    for kind in [
        Kind::Twilio,
        Kind::Vonage,
        Kind::Infobip,
        Kind::SslWireless,
        Kind::BulkSmsBd,
        Kind::AlphaSms,
    ] {
        // The redirect points at a fake that would accept the message, credentials and all.
        let fake = FakeProvider::start(kind).await;
        let base = redirector(fake.base_url()).await;
        let config = provider_config(&fake, "p", serde_json::json!({ "base_url": base }));
        let provider = providers::build(&config, None).expect("the adapter builds");
        let body = "Your Glamora code is 482913";
        let sms = OutgoingSms {
            message_id: Uuid::new_v4(),
            recipient: Recipient::new("+8801712345601"),
            body: body.into(),
            segments: segments::count(body),
            valid_for: Duration::from_secs(120),
            reference_stem: "1r1".into(),
        };
        let answer = provider.send(&sms, "1r1s1").await;
        let error = answer.expect_err("a redirect is not an acceptance");
        assert_eq!(error.outcome(), Outcome::ProviderError, "{kind:?}: {error}");
        assert_eq!(error.parts().0, Some(307), "{kind:?}: {error}");
        assert!(
            fake.received().is_empty(),
            "{kind:?}: the redirect was followed"
        );
    }
}
