//! Storage caps (one-time prekeys per device, queued envelopes per device)
//! and rate limits (per client IP, per account), through the real router
//! on a real port.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

mod common;

use common::*;
use passerelle_proto::api::Empty;
use passerelle_proto::api::accounts::{DirectoryEntry, VerificationRequest};
use passerelle_proto::api::devices::Mailbox;
use passerelle_proto::api::keys::{KeyCounts, UploadKeys};
use passerelle_proto::{DeviceId, ProblemType};
use passerelle_server::Config;
use passerelle_server::config::Rate;

#[tokio::test]
async fn one_time_keys_are_capped_per_device() {
    let mut config = Config::default();
    config.limits.max_one_time_keys = 8;
    config.limits.max_keys_per_upload = 5;
    let hub = Hub::with_config(config).await;
    // Registration uploads 5 of each kind.
    let alice = hub.register_username("hoarder").await;
    let too_many = UploadKeys {
        pre_keys: one_time_keys(100, 4),
        ..UploadKeys::default()
    };
    let r = alice.put::<_, Empty>(&hub, "/v1/keys", &too_many).await;
    let p = assert_problem(r, ProblemType::InvalidRequest);
    let detail = p.detail.clone();
    assert!(detail.contains("room for 3 more"), "{detail}");
    // Nothing was stored; three fit.
    let counts: KeyCounts = alice.get(&hub, "/v1/keys").await.unwrap();
    assert_eq!(counts.pre_keys, 5);
    let fits = UploadKeys {
        pre_keys: one_time_keys(100, 3),
        ..UploadKeys::default()
    };
    let _: Empty = alice.put(&hub, "/v1/keys", &fits).await.unwrap();
    let counts: KeyCounts = alice.get(&hub, "/v1/keys").await.unwrap();
    assert_eq!((counts.pre_keys, counts.kyber_pre_keys), (8, 5));
}

#[tokio::test]
async fn a_full_queue_refuses_the_whole_send() {
    let mut config = Config::default();
    config.limits.max_queued_envelopes = 2;
    let hub = Hub::with_config(config).await;
    let alice = hub.register_username("busy").await;
    let laptop = hub.link_device(&alice, "laptop").await.unwrap();
    let bob = hub.register_username("sender").await;
    let both = [
        (alice.device_id, alice.registration_id),
        (laptop.device_id, laptop.registration_id),
    ];
    for _ in 0..2 {
        bob.send(&hub, alice.account_id, &both, b"hi", false)
            .await
            .unwrap();
    }
    // Device 1 catches up; device 2 stays full.
    let mut socket = alice.connect(&hub).await;
    let backlog = socket.backlog().await;
    assert_eq!(backlog.len(), 2);
    socket
        .ack(&backlog.iter().map(|e| e.id).collect::<Vec<_>>())
        .await;
    let store = hub.state.store();
    for _ in 0..500 {
        if store
            .queued_count(alice.account_id, DeviceId::PRIMARY)
            .await
            .unwrap()
            == 0
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    let response = bob
        .auth(
            hub.http
                .put(hub.url(&format!("/v1/messages/{}", alice.account_id))),
        )
        .json(&passerelle_proto::api::messages::SendMessages {
            timestamp: 1,
            messages: both
                .iter()
                .map(|&(device_id, registration_id)| {
                    passerelle_proto::api::messages::OutgoingMessage {
                        device_id,
                        registration_id,
                        kind: passerelle_proto::EnvelopeKind::Message,
                        content: b"secret words".to_vec().into(),
                    }
                })
                .collect(),
            online_only: false,
        })
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "60");
    let r = answer::<Empty>(response).await;
    let p = assert_problem(r, ProblemType::RateLimited);
    let detail = p.detail.clone();
    assert!(detail.contains("device 2"), "{detail}");
    assert!(!detail.contains("secret"), "{detail}");
    // Refused whole: device 1 got nothing either.
    assert_eq!(
        store
            .queued_count(alice.account_id, DeviceId::PRIMARY)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .queued_count(alice.account_id, laptop.device_id)
            .await
            .unwrap(),
        2
    );
    // Typing indicators store nothing, so they still go.
    bob.send(&hub, alice.account_id, &both, b"typing", true)
        .await
        .unwrap();
}

/// The `Retry-After` of a 429, after checking its problem type.
async fn refused(response: reqwest::Response) -> u64 {
    assert_eq!(response.status(), 429);
    let after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_problem(answer::<Empty>(response).await, ProblemType::RateLimited);
    assert!(after >= 1);
    after
}

#[tokio::test]
async fn unauthenticated_writes_are_rate_limited_per_ip() {
    let mut config = Config::default();
    config.limits.rate_registration = Rate::new(1, 2);
    config.limits.rate_provisioning = Rate::new(1, 1);
    config.limits.rate_verification = Rate::new(1, 1);
    config.limits.rate_link = Rate::new(1, 1);
    let hub = Hub::with_config(config).await;

    let alice = hub.register_username("first").await;
    hub.register_username("second").await;
    let r = hub.register("parley", Some("third"), None).await;
    let p = assert_problem(r, ProblemType::RateLimited);
    assert!(p.detail.clone().contains("registrations"));
    let response = hub
        .http
        .post(hub.url("/v1/accounts"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    // One a minute: the next token is about a minute away.
    let after = refused(response).await;
    assert!((50..=60).contains(&after), "{after}");

    let _: Mailbox = hub.post_empty("/v1/provisioning").await.unwrap();
    refused(
        hub.http
            .post(hub.url("/v1/provisioning"))
            .send()
            .await
            .unwrap(),
    )
    .await;

    let request = VerificationRequest {
        app: "chime".parse().unwrap(),
        handle: "+15551230000".into(),
    };
    let response = hub
        .http
        .post(hub.url("/v1/verifications"))
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    refused(
        hub.http
            .post(hub.url("/v1/verifications"))
            .json(&request)
            .send()
            .await
            .unwrap(),
    )
    .await;

    // A link with a bad token takes the one token; the next is refused
    // before its body is looked at.
    let body = serde_json::json!({"token": "nope"});
    let r = hub
        .http
        .post(hub.url("/v1/devices"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), 429);
    refused(
        hub.http
            .post(hub.url("/v1/devices"))
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;

    // Authenticated routes other than the directory are not limited.
    for _ in 0..5 {
        let _: KeyCounts = alice.get(&hub, "/v1/keys").await.unwrap();
    }
}

#[tokio::test]
async fn directory_lookups_are_rate_limited_per_account() {
    let mut config = Config::default();
    config.limits.rate_directory = Rate::new(1, 2);
    let hub = Hub::with_config(config).await;
    let alice = hub.register_username("looker").await;
    let bob = hub.register_username("lookee").await;
    for _ in 0..2 {
        let e: DirectoryEntry = alice
            .get(&hub, "/v1/directory/lookee@parley")
            .await
            .unwrap();
        assert_eq!(e.account_id, bob.account_id);
    }
    let response = alice
        .auth(hub.http.get(hub.url("/v1/directory/lookee@parley")))
        .send()
        .await
        .unwrap();
    refused(response).await;
    // Another account has its own bucket.
    let e: DirectoryEntry = bob.get(&hub, "/v1/directory/looker@parley").await.unwrap();
    assert_eq!(e.account_id, alice.account_id);
}

#[tokio::test]
async fn default_limits_leave_ordinary_use_alone() {
    // Twenty registrations from one IP in a row, as test suites do.
    let hub = Hub::start().await;
    for i in 0..20 {
        hub.register_username(&format!("user{i}")).await;
    }
}
