//! `serve` with the real SQLite store: what was accepted survives a
//! restart, and the store's files never hold what a message says in the
//! clear (the hub only ever gets ciphertext; here the "ciphertext" is a
//! marker, to show the hub adds no plaintext copy of its own either).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

mod common;

use std::time::Duration;

use common::*;
use passerelle_proto::api::accounts::{RegisterAccount, Registered};
use passerelle_server::Config;
use passerelle_signal::IdentityKeyPair;
use rand::rngs::OsRng;

async fn start(data_dir: &std::path::Path) -> Served {
    Served::start(Config {
        data_dir: data_dir.to_owned(),
        ..Config::default()
    })
    .await
}

#[tokio::test]
async fn queued_envelopes_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let hub = start(dir.path()).await;
    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://{}{path}", hub.addr);

    let mut clients = Vec::new();
    for name in ["durable_a", "durable_b"] {
        let identity = IdentityKeyPair::generate(&mut OsRng);
        let body = RegisterAccount {
            app: "parley".parse().unwrap(),
            handle: Some(name.into()),
            verification: None,
            password: PASSWORD.into(),
            registration_id: 99,
            device_name: "d".into(),
            identity_key: identity.identity_key().serialize().to_vec().into(),
            keys: device_keys(&identity, 1, 2),
        };
        let r: Registered = answer(
            http.post(url("/v1/accounts"))
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await
        .unwrap();
        clients.push(Client {
            account_id: r.account_id,
            address: r.address,
            device_id: r.device_id,
            password: PASSWORD.into(),
            registration_id: 99,
            identity: std::sync::Arc::new(identity),
        });
    }
    let (alice, bob) = (&clients[0], &clients[1]);
    let marker = b"MARKER-that-only-a-client-could-have-encrypted";
    let body = passerelle_proto::api::messages::SendMessages {
        timestamp: 1,
        messages: vec![passerelle_proto::api::messages::OutgoingMessage {
            device_id: alice.device_id,
            registration_id: alice.registration_id,
            kind: passerelle_proto::EnvelopeKind::Message,
            content: marker.to_vec().into(),
        }],
        online_only: false,
    };
    let _: passerelle_proto::api::messages::Sent = answer(
        bob.auth(http.put(url(&format!("/v1/messages/{}", alice.account_id))))
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    hub.stop().await;

    // The hub added nothing readable of its own: the store holds the bytes
    // it was given and the hub's own records, no base64 or JSON copy.
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(marker);
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(&encoded));
        assert!(!text.contains(PASSWORD), "the password is stored hashed");
    }

    // Restarted on the same data, the hub still has the envelope.
    let hub = start(dir.path()).await;
    let shim = Hub::detached(hub.addr);
    let mut socket = alice.connect(&shim).await;
    let backlog = socket.backlog().await;
    assert_eq!(backlog.len(), 1);
    assert_eq!(backlog[0].content.as_ref().unwrap().0, marker);
    socket.ack(&[backlog[0].id]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    socket.close().await;
    let mut socket = alice.connect(&shim).await;
    assert!(socket.backlog().await.is_empty());
    hub.stop().await;
}
