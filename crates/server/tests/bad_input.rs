//! Bad input of every kind gets the right status and problem type, and the
//! hub keeps serving.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

mod common;

use common::*;
use passerelle_proto::ProblemType;
use passerelle_proto::api::accounts::{AccountInfo, AppList};
use passerelle_proto::api::devices::DeviceList;

async fn problem(response: reqwest::Response) -> passerelle_proto::Problem {
    answer::<serde_json::Value>(response).await.unwrap_err()
}

#[tokio::test]
async fn bad_bodies() {
    let hub = Hub::start().await;
    let url = hub.url("/v1/accounts");
    let json = |body: &'static str| {
        hub.http
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
    };

    let p = problem(json("{\"app\": ").send().await.unwrap()).await;
    assert_eq!(p.kind(), Some(ProblemType::MalformedJson), "{p}");
    let p = problem(json("not json").send().await.unwrap()).await;
    assert_eq!(p.kind(), Some(ProblemType::MalformedJson), "{p}");

    let p = problem(json("{\"app\": 5}").send().await.unwrap()).await;
    assert_eq!(p.kind(), Some(ProblemType::InvalidRequest), "{p}");
    assert!(p.detail.contains("invalid type"), "serde's message: {p}");
    let p = problem(json("{\"app\": \"parley\"}").send().await.unwrap()).await;
    assert_eq!(p.kind(), Some(ProblemType::InvalidRequest), "{p}");
    assert!(p.detail.contains("missing field"), "serde's message: {p}");
    let p = problem(json("[]").send().await.unwrap()).await;
    assert_eq!(p.kind(), Some(ProblemType::InvalidRequest), "{p}");

    let p = problem(
        hub.http
            .post(&url)
            .header("content-type", "text/plain")
            .body("{}")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(p.kind(), Some(ProblemType::UnsupportedMediaType), "{p}");
    let p = problem(hub.http.post(&url).body("{}").send().await.unwrap()).await;
    assert_eq!(p.kind(), Some(ProblemType::UnsupportedMediaType), "{p}");

    // Over the limit, declared.
    let big = vec![b' '; 300 * 1024];
    let p = problem(
        hub.http
            .post(&url)
            .header("content-type", "application/json")
            .body(big.clone())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(p.kind(), Some(ProblemType::BodyTooLarge), "{p}");
    // Over the limit, streamed without a length.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..30).map(|_| Ok(vec![b' '; 16 * 1024])).collect();
    let p = problem(
        hub.http
            .post(&url)
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                chunks,
            )))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(p.kind(), Some(ProblemType::BodyTooLarge), "{p}");

    // Still serving.
    let apps: AppList = hub.get_anon("/v1/apps").await.unwrap();
    assert_eq!(apps.apps.len(), 3);
}

#[tokio::test]
async fn bad_routes_methods_and_parameters() {
    let hub = Hub::start().await;
    let p = problem(hub.http.get(hub.url("/v1/nothing")).send().await.unwrap()).await;
    assert_eq!(p.kind(), Some(ProblemType::NoSuchRoute), "{p}");
    let p = problem(hub.http.get(hub.url("/")).send().await.unwrap()).await;
    assert_eq!(p.kind(), Some(ProblemType::NoSuchRoute), "{p}");
    let p = problem(hub.http.delete(hub.url("/v1/apps")).send().await.unwrap()).await;
    assert_eq!(p.kind(), Some(ProblemType::MethodNotAllowed), "{p}");
    let p = problem(hub.http.patch(hub.url("/v1/keys")).send().await.unwrap()).await;
    assert_eq!(p.kind(), Some(ProblemType::MethodNotAllowed), "{p}");

    let alice = hub.register_username("params").await;
    let p = alice
        .put::<_, serde_json::Value>(&hub, "/v1/messages/not-a-uuid", &serde_json::json!({}))
        .await
        .unwrap_err();
    assert_eq!(p.kind(), Some(ProblemType::InvalidParameter), "{p}");
    let p = alice
        .get::<serde_json::Value>(&hub, "/v1/provisioning/zzz")
        .await
        .unwrap_err();
    assert_eq!(p.kind(), Some(ProblemType::InvalidParameter), "{p}");
    let me: AccountInfo = alice.get(&hub, "/v1/accounts/me").await.unwrap();
    assert_eq!(me.account_id, alice.account_id);
}

#[tokio::test]
async fn bad_credentials() {
    let hub = Hub::start().await;
    let alice = hub.register_username("creds").await;
    let url = hub.url("/v1/devices");

    let r = hub.http.get(&url).send().await.unwrap();
    assert!(r.headers().contains_key("www-authenticate"));
    assert_eq!(problem(r).await.kind(), Some(ProblemType::Unauthorized));
    let wrong_password = hub
        .http
        .get(&url)
        .basic_auth(alice.user(), Some("not-the-password-at-all"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        problem(wrong_password).await.kind(),
        Some(ProblemType::Unauthorized)
    );
    let wrong_device = hub
        .http
        .get(&url)
        .basic_auth(format!("{}.2", alice.account_id), Some(&alice.password))
        .send()
        .await
        .unwrap();
    assert_eq!(
        problem(wrong_device).await.kind(),
        Some(ProblemType::Unauthorized)
    );
    let garbled = hub
        .http
        .get(&url)
        .header("authorization", "Basic !!!")
        .send()
        .await
        .unwrap();
    assert_eq!(
        problem(garbled).await.kind(),
        Some(ProblemType::Unauthorized)
    );
    let bearer = hub
        .http
        .get(&url)
        .bearer_auth("token")
        .send()
        .await
        .unwrap();
    assert_eq!(
        problem(bearer).await.kind(),
        Some(ProblemType::Unauthorized)
    );
    let no_device = hub
        .http
        .get(&url)
        .basic_auth(alice.account_id.to_string(), Some(&alice.password))
        .send()
        .await
        .unwrap();
    assert_eq!(
        problem(no_device).await.kind(),
        Some(ProblemType::Unauthorized)
    );

    // The WebSocket needs credentials too.
    let r = hub.http.get(hub.url("/v1/websocket")).send().await.unwrap();
    assert_eq!(problem(r).await.kind(), Some(ProblemType::Unauthorized));
    // With them, but without an upgrade.
    let r = alice
        .auth(hub.http.get(hub.url("/v1/websocket")))
        .send()
        .await
        .unwrap();
    assert_eq!(problem(r).await.kind(), Some(ProblemType::InvalidRequest));

    let list: DeviceList = alice.get(&hub, "/v1/devices").await.unwrap();
    assert_eq!(list.devices.len(), 1);
}

#[tokio::test]
async fn other_accounts_resources_are_out_of_reach() {
    let hub = Hub::start().await;
    let alice = hub.register_username("owner").await;
    let laptop = hub.link_device(&alice, "laptop").await.unwrap();
    let mallory = hub.register_username("mallory").await;

    // Removing a device names one of the caller's own: alice's device 2 is
    // not mallory's, so there is nothing to remove.
    let p = mallory
        .delete::<serde_json::Value>(&hub, "/v1/devices/2")
        .await
        .unwrap_err();
    assert_eq!(p.kind(), Some(ProblemType::NotFound), "{p}");
    let list: passerelle_proto::api::devices::DeviceList =
        alice.get(&hub, "/v1/devices").await.unwrap();
    assert_eq!(list.devices.len(), 2);
    // Mallory's password does not open alice's devices.
    let r = hub
        .http
        .get(hub.url("/v1/devices"))
        .basic_auth(laptop.user(), Some(&mallory.password.replace('a', "b")))
        .send()
        .await
        .unwrap();
    assert_eq!(problem(r).await.kind(), Some(ProblemType::Unauthorized));
    // Mallory cannot acknowledge alice's envelopes away.
    let bob = hub.register_username("bobby").await;
    bob.send(
        &hub,
        alice.account_id,
        &[
            (alice.device_id, alice.registration_id),
            (laptop.device_id, laptop.registration_id),
        ],
        b"secret",
        false,
    )
    .await
    .unwrap();
    let mut alice_socket = alice.connect(&hub).await;
    let backlog = alice_socket.backlog().await;
    let mut mallory_socket = mallory.connect(&hub).await;
    assert!(mallory_socket.backlog().await.is_empty());
    mallory_socket.ack(&[backlog[0].id]).await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    alice_socket.close().await;
    let mut alice_socket = alice.connect(&hub).await;
    assert_eq!(alice_socket.backlog().await.len(), 1);
}
