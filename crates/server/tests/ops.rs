//! Operations: probes, metrics, the OpenAPI document, graceful shutdown,
//! and what never reaches the logs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

mod common;

use common::*;

#[tokio::test]
async fn probes_and_metrics_answer() {
    let hub = Hub::start().await;
    let r = hub.http.get(hub.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = hub.http.get(hub.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // Some traffic to count.
    let alice = hub.register_username("metered").await;
    let bob = hub.register_username("meter").await;
    bob.send_to(&hub, &alice, b"count me").await;
    let mut socket = alice.connect(&hub).await;
    let backlog = socket.backlog().await;
    socket.ack(&[backlog[0].id]).await;
    let _ = hub.http.get(hub.url("/v1/nothing")).send().await.unwrap();

    let mut text = String::new();
    for _ in 0..50 {
        let r = hub.http.get(hub.url("/metrics")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        text = r.text().await.unwrap();
        if text.contains("passerelle_envelopes_acknowledged_total") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for needle in [
        "passerelle_http_requests_total{method=\"POST\",route=\"/v1/accounts\",status=\"200\"}",
        "route=\"unmatched\",status=\"404\"",
        "passerelle_envelopes_enqueued_total",
        "passerelle_envelopes_delivered_total",
        "passerelle_envelopes_acknowledged_total",
        "passerelle_connected_devices",
        "passerelle_enqueue_duration_seconds_bucket",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    // Routes are counted by pattern, never by path (no ids in labels).
    assert!(!text.contains(&alice.account_id.to_string()));
}

#[tokio::test]
async fn stops_cleanly_closing_connections() {
    let hub = Hub::start().await;
    let alice = hub.register_username("stopper").await;
    let mut socket = alice.connect(&hub).await;
    assert!(socket.backlog().await.is_empty());
    let addr = hub.addr;
    hub.stop().await;
    // The WebSocket was closed by the hub.
    assert!(
        socket
            .try_next(std::time::Duration::from_secs(2))
            .await
            .is_none()
    );
    // And the port no longer answers.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn secrets_and_content_never_reach_the_logs() {
    capture_logs();
    let hub = Hub::start().await;
    let alice = hub.register_username("quiet").await;
    let bob = hub.register_username("whisper").await;
    let phrase = b"the-eagle-lands-at-midnight";
    bob.send_to(&hub, &alice, phrase).await;
    let mut socket = alice.connect(&hub).await;
    let backlog = socket.backlog().await;
    socket.ack(&[backlog[0].id]).await;
    let token: passerelle_proto::api::devices::LinkToken = alice
        .post_empty(&hub, "/v1/devices/link-tokens")
        .await
        .unwrap();
    // A failed request with a password in it.
    let _ = hub
        .http
        .get(hub.url("/v1/devices"))
        .basic_auth(alice.user(), Some("a-wrong-password-1234567"))
        .send()
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let logs = logs();
    assert!(logs.contains("account registered"), "logs are captured");
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(phrase);
    for secret in [
        String::from_utf8(phrase.to_vec()).unwrap(),
        encoded,
        PASSWORD.to_owned(),
        "a-wrong-password-1234567".to_owned(),
        token.token,
    ] {
        assert!(!logs.contains(&secret), "{secret} was logged");
    }
}
