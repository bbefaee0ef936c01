//! The webhook listener under abuse: clients that trickle headers or bodies are cut off while
//! genuine receipts and `/healthz` keep answering; what the headers alone can refuse is refused
//! before the body is read.

use std::time::Duration;

use reqwest::StatusCode;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::{
    fakes::Kind,
    support::{receipts::Dlr, scene::Scene},
};

/// Longest the test waits for the server to act (a hang guard, far above the timeouts set).
const PATIENCE: Duration = Duration::from_secs(30);

/// A scene whose listener gives clients 300 ms for headers and for a body.
async fn impatient_scene() -> Scene {
    Scene::new(&[Kind::Twilio], None, |config| {
        config.webhooks.header_timeout_ms = 300;
        config.webhooks.body_timeout_ms = 300;
    })
    .await
}

/// Opens a connection to `base` (an `http://host:port` URL) and writes `bytes`.
async fn send_raw(base: &str, bytes: &str) -> TcpStream {
    let address = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream.write_all(bytes.as_bytes()).await.expect("write");
    stream
}

/// Everything the server writes until it closes the connection.
async fn until_closed(mut stream: TcpStream) -> String {
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer))
        .await
        .expect("the server closed the connection")
        .ok();
    String::from_utf8_lossy(&answer).into_owned()
}

/// The status line the server answers `request` with, without sending more.
async fn status_line(base: &str, request: &str) -> String {
    let mut stream = send_raw(base, request).await;
    let mut answer = vec![0; 256];
    let read = tokio::time::timeout(PATIENCE, stream.read(&mut answer))
        .await
        .expect("the server answered")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer[..read]).into_owned();
    answer.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn slow_clients_are_cut_off_while_genuine_receipts_and_health_get_through() {
    let s = impatient_scene().await;
    let slow_headers: Vec<TcpStream> = futures_util::future::join_all((0..200).map(|_| {
        send_raw(
            &s.base,
            "POST /webhooks/twilio HTTP/1.1\r\nHost: relay\r\nX-Twilio-Signature: x\r\n",
        )
    }))
    .await;
    let slow_body = send_raw(
        &s.base,
        "POST /webhooks/twilio HTTP/1.1\r\nHost: relay\r\nX-Twilio-Signature: x\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 500\r\n\r\nMessageSid=SM",
    )
    .await;

    // While they hang on, the endpoints answer others.
    let health = reqwest::get(format!("{}/healthz", s.base)).await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(s.twilio("delivered", "").await, StatusCode::OK);
    assert_eq!(s.delivery().await.as_deref(), Some("delivered"));

    // Then the server ends each of them: headers never finished, a body never finished.
    for stream in slow_headers {
        let answer = until_closed(stream).await;
        assert!(!answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    let answer = until_closed(slow_body).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

#[tokio::test]
async fn what_the_headers_refuse_is_refused_before_the_body_arrives() {
    let s = impatient_scene().await;
    // Each request states a body and sends none of it: the answer cannot have waited for it.
    for (request, expected) in [
        (
            "POST /webhooks/twilio HTTP/1.1\r\nHost: relay\r\nContent-Length: 5000\r\n\r\n",
            "HTTP/1.1 401",
        ),
        (
            "POST /webhooks/infobip HTTP/1.1\r\nHost: relay\r\nContent-Length: 5000\r\n\r\n",
            "HTTP/1.1 401",
        ),
        (
            "POST /webhooks/infobip HTTP/1.1\r\nHost: relay\r\nAuthorization: Basic d3Jvbmc6d3Jvbmc=\r\n\
             Content-Length: 5000\r\n\r\n",
            "HTTP/1.1 403",
        ),
        (
            "POST /webhooks/twilio HTTP/1.1\r\nHost: relay\r\nX-Twilio-Signature: x\r\n\
             Content-Length: 100000000\r\n\r\n",
            "HTTP/1.1 400",
        ),
    ] {
        let line = status_line(&s.base, request).await;
        assert!(line.starts_with(expected), "{request:?} got {line:?}");
    }
}

#[tokio::test]
async fn a_vonage_receipt_signed_long_ago_is_a_replay() {
    let s = Scene::new(&[Kind::Vonage], None, |_| {}).await;
    let an_hour_ago = chrono::Utc::now().timestamp() - 3_600;
    let replayed = Dlr {
        signed_at: Some(an_hour_ago),
        ..Dlr::of(&s.attempt, "delivered", "")
    };
    assert_eq!(s.poster(0).post(&replayed).await, StatusCode::FORBIDDEN);
    assert_eq!(s.delivery().await, None);
    let fresh = Dlr::of(&s.attempt, "delivered", "");
    assert_eq!(s.poster(0).post(&fresh).await, StatusCode::OK);
    assert_eq!(s.delivery().await.as_deref(), Some("delivered"));
}
