//! Sending and delivery: device-set checks, durable queueing, ordered
//! at-least-once delivery with acknowledgements, sync copies, online-only
//! messages, contact policy, and expiry notices.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

mod common;

use std::time::Duration;

use common::hooked;
use common::*;
use passerelle_proto::api::messages::{MismatchedDevices, StaleDevices};
use passerelle_proto::ws::ServerFrame;
use passerelle_proto::{DeviceId, EnvelopeKind, ProblemType, ServerNotice};
use passerelle_server::Config;

fn dev(n: u32) -> DeviceId {
    DeviceId::new(n).unwrap()
}

#[tokio::test]
async fn device_sets_must_match_exactly() {
    let hub = Hub::start().await;
    let alice = hub.register_username("malice").await;
    let bob = hub.register_username("mbob").await;
    let to = alice.account_id;

    let r = bob.send(&hub, to, &[], b"x", false).await;
    let p = assert_problem(r, ProblemType::MismatchedDevices);
    let m: MismatchedDevices = p.extension().unwrap();
    assert_eq!(m.missing_devices, [dev(1)]);
    assert!(m.extra_devices.is_empty());

    let r = bob
        .send(
            &hub,
            to,
            &[(dev(1), alice.registration_id), (dev(2), 1)],
            b"x",
            false,
        )
        .await;
    let p = assert_problem(r, ProblemType::MismatchedDevices);
    let m: MismatchedDevices = p.extension().unwrap();
    assert!(m.missing_devices.is_empty());
    assert_eq!(m.extra_devices, [dev(2)]);

    let r = bob
        .send(
            &hub,
            to,
            &[(dev(1), alice.registration_id + 1)],
            b"x",
            false,
        )
        .await;
    let p = assert_problem(r, ProblemType::StaleDevices);
    let s: StaleDevices = p.extension().unwrap();
    assert_eq!(s.stale_devices, [dev(1)]);

    let r = bob
        .send(
            &hub,
            passerelle_proto::AccountId::random(),
            &[],
            b"x",
            false,
        )
        .await;
    assert_problem(r, ProblemType::NotFound);

    // Nothing of the refused sends was queued.
    let mut socket = alice.connect(&hub).await;
    assert!(socket.backlog().await.is_empty());
}

#[tokio::test]
async fn offline_devices_get_everything_in_order_until_acknowledged() {
    let hub = Hub::start().await;
    let alice = hub.register_username("offline").await;
    let bob = hub.register_username("sender").await;
    for i in 0..5 {
        bob.send_to(&hub, &alice, format!("m{i}").as_bytes()).await;
    }

    let mut socket = alice.connect(&hub).await;
    let backlog = socket.backlog().await;
    let contents: Vec<_> = backlog
        .iter()
        .map(|e| String::from_utf8(e.content.clone().unwrap().0).unwrap())
        .collect();
    assert_eq!(contents, ["m0", "m1", "m2", "m3", "m4"]);
    let first = &backlog[0];
    assert_eq!(first.kind, EnvelopeKind::Message);
    let source = first.source.as_ref().unwrap();
    assert_eq!(source.account_id, bob.account_id);
    assert_eq!(source.address, bob.address);
    assert_eq!(source.device_id, dev(1));
    assert_eq!(first.destination_device, dev(1));
    assert_eq!(first.client_timestamp, 1_700_000_000_000);
    assert!(first.server_timestamp > 0);

    // Acknowledge three; the other two come again, with the same ids.
    let ids: Vec<_> = backlog.iter().map(|e| e.id).collect();
    socket.ack(&ids[..3]).await;
    // Let the hub process the ack before the connection goes.
    tokio::time::sleep(Duration::from_millis(100)).await;
    socket.close().await;
    let mut socket = alice.connect(&hub).await;
    let again: Vec<_> = socket.backlog().await.iter().map(|e| e.id).collect();
    assert_eq!(again, ids[3..]);
    socket.ack(&again).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    socket.close().await;
    let mut socket = alice.connect(&hub).await;
    assert!(socket.backlog().await.is_empty());
}

#[tokio::test]
async fn connected_devices_get_new_envelopes_live_in_order_once() {
    live_in_order(Hub::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connected_devices_get_new_envelopes_live_in_order_once_on_sqlite() {
    live_in_order(Hub::sqlite().await).await;
}

async fn live_in_order(hub: Hub) {
    let alice = hub.register_username("online").await;
    let bob = hub.register_username("chatty").await;
    let mut socket = alice.connect(&hub).await;
    assert!(socket.backlog().await.is_empty());
    let sender = async {
        for i in 0..40 {
            bob.send_to(&hub, &alice, format!("live{i}").as_bytes())
                .await;
        }
    };
    let receiver = async {
        let mut got = Vec::new();
        while got.len() < 40 {
            let e = socket.envelope().await;
            got.push(String::from_utf8(e.content.unwrap().0).unwrap());
            // Acknowledge as we go, sometimes before the next one is sent.
            socket.ack(&[e.id]).await;
        }
        got
    };
    let ((), got) = tokio::join!(sender, receiver);
    let expected: Vec<_> = (0..40).map(|i| format!("live{i}")).collect();
    assert_eq!(got, expected);
    // Nothing more comes: no duplicates.
    assert!(socket.try_next(Duration::from_millis(300)).await.is_none());
}

#[tokio::test]
async fn sync_copies_go_to_the_senders_other_devices() {
    let hub = Hub::start().await;
    let alice = hub.register_username("syncer").await;
    let laptop = hub.link_device(&alice, "laptop").await.unwrap();
    assert_eq!(laptop.device_id, dev(2));
    let bob = hub.register_username("syncpeer").await;

    // To bob: his devices only.
    alice.send_to(&hub, &bob, b"hello bob").await;
    // The sync copy: alice's devices but the sending one.
    let r = alice
        .send(
            &hub,
            alice.account_id,
            &[
                (dev(1), alice.registration_id),
                (dev(2), laptop.registration_id),
            ],
            b"copy",
            false,
        )
        .await;
    let p = assert_problem(r, ProblemType::MismatchedDevices);
    let m: MismatchedDevices = p.extension().unwrap();
    assert_eq!(m.extra_devices, [dev(1)]);
    alice
        .send(
            &hub,
            alice.account_id,
            &[(dev(2), laptop.registration_id)],
            b"copy",
            false,
        )
        .await
        .unwrap();

    let mut socket = laptop.connect(&hub).await;
    let backlog = socket.backlog().await;
    assert_eq!(backlog.len(), 1);
    assert_eq!(backlog[0].content.as_ref().unwrap().0, b"copy");
    assert_eq!(backlog[0].source.as_ref().unwrap().device_id, dev(1));
    let mut socket = alice.connect(&hub).await;
    assert!(socket.backlog().await.is_empty());

    // Bob, answering, must now address both of alice's devices.
    let r = bob
        .send(
            &hub,
            alice.account_id,
            &[(dev(1), alice.registration_id)],
            b"hi",
            false,
        )
        .await;
    let p = assert_problem(r, ProblemType::MismatchedDevices);
    let m: MismatchedDevices = p.extension().unwrap();
    assert_eq!(m.missing_devices, [dev(2)]);
}

#[tokio::test]
async fn online_only_messages_are_never_stored() {
    let hub = Hub::start().await;
    let alice = hub.register_username("typist").await;
    let bob = hub.register_username("watcher").await;
    let to_bob = [(dev(1), bob.registration_id)];

    // Bob is away: the typing indicator goes nowhere.
    alice
        .send(&hub, bob.account_id, &to_bob, b"typing", true)
        .await
        .unwrap();
    let mut socket = bob.connect(&hub).await;
    assert!(socket.backlog().await.is_empty());

    // Bob is here: he gets it live.
    alice
        .send(&hub, bob.account_id, &to_bob, b"typing", true)
        .await
        .unwrap();
    let e = socket.envelope().await;
    assert_eq!(e.content.unwrap().0, b"typing");
    socket.close().await;

    // And nothing of it waits for his next connection.
    let mut socket = bob.connect(&hub).await;
    assert!(socket.backlog().await.is_empty());
}

#[tokio::test]
async fn a_new_connection_replaces_the_old_one() {
    let hub = Hub::start().await;
    let alice = hub.register_username("twice").await;
    let bob = hub.register_username("once").await;
    let mut first = alice.connect(&hub).await;
    assert!(first.backlog().await.is_empty());
    let mut second = alice.connect(&hub).await;
    assert!(second.backlog().await.is_empty());
    // The first is closed by the hub.
    assert!(first.try_next(Duration::from_secs(2)).await.is_none());
    bob.send_to(&hub, &alice, b"to the new one").await;
    let e = second.envelope().await;
    assert_eq!(e.content.unwrap().0, b"to the new one");
    eventually(|| hub.state.registry().connected() == 1).await;
}

#[tokio::test]
async fn apps_can_refuse_third_party_contact() {
    let mut config = Config::default();
    config
        .apps
        .get_mut(&"parley".parse().unwrap())
        .unwrap()
        .third_party_contact = false;
    let hub = Hub::with_config(config).await;
    let alice = hub.register_username("closed").await;
    let carol = hub.register_username("insider").await;
    let mallory = hub.register_random().await;
    let to_alice = [(dev(1), alice.registration_id)];

    let r = mallory
        .send(&hub, alice.account_id, &to_alice, b"hi", false)
        .await;
    assert_problem(r, ProblemType::NotAllowed);
    let r = mallory
        .get::<passerelle_proto::api::keys::Bundles>(
            &hub,
            &format!("/v1/keys/{}/*", alice.account_id),
        )
        .await;
    assert_problem(r, ProblemType::NotAllowed);
    let r = mallory
        .get::<passerelle_proto::api::accounts::DirectoryEntry>(&hub, "/v1/directory/closed@parley")
        .await;
    assert_problem(r, ProblemType::NotAllowed);
    // Within the app, and from parley outwards, contact is fine.
    carol
        .send(&hub, alice.account_id, &to_alice, b"hi", false)
        .await
        .unwrap();
    alice.send_to(&hub, &mallory, b"hi").await;
}

#[tokio::test]
async fn expired_envelopes_become_notices_to_their_sender() {
    let hub = Hub::start().await;
    let alice = hub.register_username("away").await;
    let bob = hub.register_username("patient").await;
    let bob_laptop = hub.link_device(&bob, "laptop").await.unwrap();
    bob.send_to(&hub, &alice, b"are you there?").await;

    // Past parley's 30-day retention, the expiry task deletes it.
    hub.clock.advance(Duration::from_secs(30 * 24 * 3600 + 1));
    let mut socket = bob.connect(&hub).await;
    let mut notice = None;
    for _ in 0..50 {
        match socket.try_next(Duration::from_millis(200)).await {
            Some(ServerFrame::Envelope { envelope }) => {
                notice = Some(*envelope);
                break;
            }
            Some(_) => continue,
            None => break,
        }
    }
    let envelope = notice.expect("a notice");
    assert_eq!(envelope.kind, EnvelopeKind::ServerNotice);
    assert!(envelope.source.is_none());
    assert!(envelope.content.is_none());
    match envelope.notice.unwrap() {
        ServerNotice::Expired {
            recipient,
            recipient_device,
            client_timestamp,
            ..
        } => {
            assert_eq!(recipient, alice.address);
            assert_eq!(recipient_device, dev(1));
            assert_eq!(client_timestamp, 1_700_000_000_000);
        }
        other => panic!("unexpected notice {other:?}"),
    }
    // Every device of the sender is told.
    let mut laptop = bob_laptop.connect(&hub).await;
    let backlog = laptop.backlog().await;
    assert_eq!(backlog.len(), 1);
    assert_eq!(backlog[0].kind, EnvelopeKind::ServerNotice);
    // And the recipient will never get it.
    let mut socket = alice.connect(&hub).await;
    assert!(socket.backlog().await.is_empty());
}

fn hooked_hub_parts() -> (std::sync::Arc<hooked::Hooked>, Config) {
    let inner = std::sync::Arc::new(passerelle_store::memory::MemoryStore::new());
    (
        std::sync::Arc::new(hooked::Hooked::new(inner)),
        Config::default(),
    )
}

/// A send whose request is dropped (here by the request timeout) after
/// its envelopes are committed still wakes the recipient's devices.
#[tokio::test]
async fn a_dropped_send_still_wakes_after_commit() {
    let (store, mut config) = hooked_hub_parts();
    config.limits.request_timeout = Duration::from_millis(300);
    let hub = Hub::with_store(config, store.clone(), None).await;
    let alice = hub.register_username("dropper").await;
    let bob = hub.register_username("waiter").await;
    let mut socket = bob.connect(&hub).await;
    assert!(socket.backlog().await.is_empty());

    *store.delay_after_enqueue.lock().unwrap() = Some(Duration::from_secs(1));
    let r = alice
        .send(
            &hub,
            bob.account_id,
            &[(bob.device_id, bob.registration_id)],
            b"committed",
            false,
        )
        .await;
    assert_problem(r, ProblemType::Unavailable);
    let envelope = socket.envelope().await;
    assert_eq!(envelope.content.unwrap().as_slice(), b"committed");
}

/// A device removed between the device check and the commit is answered
/// `409 mismatched-devices` naming it, not `404`.
#[tokio::test]
async fn a_device_removed_mid_send_is_a_mismatch() {
    let (store, config) = hooked_hub_parts();
    let hub = Hub::with_store(config, store.clone(), None).await;
    let alice = hub.register_username("midsend").await;
    let laptop = hub.link_device(&alice, "laptop").await.unwrap();
    let bob = hub.register_username("midsender").await;

    *store.remove_before_enqueue.lock().unwrap() = Some((alice.account_id, laptop.device_id));
    let r = bob
        .send(
            &hub,
            alice.account_id,
            &[
                (alice.device_id, alice.registration_id),
                (laptop.device_id, laptop.registration_id),
            ],
            b"x",
            false,
        )
        .await;
    let p = assert_problem(r, ProblemType::MismatchedDevices);
    let m: MismatchedDevices = p.extension().unwrap();
    assert!(m.missing_devices.is_empty());
    assert_eq!(m.extra_devices, [laptop.device_id]);
}

/// Frames of an unknown type are ignored; text that is not JSON closes the
/// connection with 1008.
#[tokio::test]
async fn unknown_client_frames_are_ignored() {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;

    let hub = Hub::start().await;
    let alice = hub.register_username("framer").await;
    let bob = hub.register_username("framed").await;
    let mut socket = bob.connect(&hub).await;
    assert!(socket.backlog().await.is_empty());
    socket
        .ws
        .send(Message::Text(r#"{"type":"typing","to":"x"}"#.into()))
        .await
        .unwrap();
    alice.send_to(&hub, &bob, b"still open").await;
    let envelope = socket.envelope().await;
    assert_eq!(envelope.content.unwrap().as_slice(), b"still open");

    socket
        .ws
        .send(Message::Text("not json".into()))
        .await
        .unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match socket.ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(closed, Some(1008));
}
