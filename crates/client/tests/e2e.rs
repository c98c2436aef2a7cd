//! End to end: real hubs on real ports (passerelle-server over the memory
//! store), and SDK clients with their own SQLite databases.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use passerelle_client::{
    Body, Client, DeliveryState, Event, Listener, MessageDirection, MessageRef, ReceiptKind,
};
use passerelle_proto::{Address, DeviceId};
use passerelle_server::{AppState, Config};
use tempfile::TempDir;

/// A hub on 127.0.0.1, stopped when dropped.
struct Hub {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Hub {
    async fn start() -> Self {
        Self::with_config(Config::default()).await
    }

    async fn with_config(config: Config) -> Self {
        let store = Arc::new(passerelle_store::memory::MemoryStore::new());
        let state = AppState::new(config, store);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            passerelle_server::serve_on(listener, state, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Self {
            url,
            stop: Some(stop),
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn text(t: &str) -> Body {
    Body::Text { text: t.into() }
}

/// The message texts among events, with their senders.
fn texts(events: &[Event]) -> Vec<(Address, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message {
                from,
                body: Body::Text { text },
                ..
            } => Some((from.clone(), text.clone())),
            _ => None,
        })
        .collect()
}

async fn username(hub: &Hub, dir: &TempDir, name: &str) -> Client {
    Client::register(
        &hub.url,
        dir.path().join(format!("{name}.db")),
        "parley",
        Some(name),
        None,
        "phone",
    )
    .await
    .unwrap()
}

async fn phone(hub: &Hub, dir: &TempDir, number: &str) -> Client {
    let session = Client::request_verification(&hub.url, "chime", number)
        .await
        .unwrap();
    let code = session
        .dev_code
        .expect("a development hub returns the code");
    Client::register(
        &hub.url,
        dir.path().join(format!("{number}.db")),
        "chime",
        Some(number),
        Some((session.session_id, code)),
        "phone",
    )
    .await
    .unwrap()
}

/// Links a new device to `existing`'s account.
async fn link(hub: &Hub, dir: &TempDir, existing: &Client, name: &str) -> Client {
    let pending = Client::begin_link(&hub.url, dir.path().join(format!("{name}.db")), name)
        .await
        .unwrap();
    let uri = pending.uri();
    assert!(uri.starts_with("passerelle://link?id="));
    let waiting = tokio::spawn(pending.complete());
    existing.approve_link(&uri).await.unwrap();
    let linked = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("linking finishes")
        .unwrap()
        .unwrap();
    assert_eq!(linked.account_id(), existing.account_id());
    assert_eq!(linked.address(), existing.address());
    assert_ne!(linked.device_id(), existing.device_id());
    linked
}

async fn next_event(listener: &mut Listener) -> Event {
    tokio::time::timeout(Duration::from_secs(20), listener.next())
        .await
        .expect("an event within 20 s")
        .expect("the connection stays open")
        .unwrap()
}

async fn drain(listener: &mut Listener) -> Vec<Event> {
    let mut events = Vec::new();
    loop {
        match next_event(listener).await {
            Event::QueueEmpty => return events,
            e => events.push(e),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_of_two_apps_talk_both_ways() {
    let hub = Hub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let alice = username(&hub, &dir, "alice").await;
    let bob = phone(&hub, &dir, "+15551234567").await;
    assert_eq!(alice.address().to_string(), "alice@parley");
    assert_eq!(bob.address().to_string(), "+15551234567@chime");
    let apps = Client::apps(&hub.url).await.unwrap();
    assert_eq!(apps.len(), 3);

    // Alice writes first: she fetches Bob's bundle.
    let sent = alice.send_text(bob.address(), "hello bob").await.unwrap();
    let events = bob.sync_once().await.unwrap();
    assert_eq!(
        texts(&events),
        vec![(alice.address().clone(), "hello bob".to_string())]
    );
    let Event::Message {
        from_account,
        sent_at,
        ..
    } = &events[0]
    else {
        panic!("expected a message, got {events:?}")
    };
    assert_eq!(*from_account, alice.account_id());
    assert_eq!(*sent_at, sent.sent_at);

    // Bob answers with a quote and a read receipt.
    let quote = MessageRef {
        author: alice.account_id(),
        sent_at: sent.sent_at,
    };
    bob.send_reply(alice.address(), "hi alice", quote.clone())
        .await
        .unwrap();
    bob.send_receipt(alice.address(), ReceiptKind::Read, vec![sent.sent_at])
        .await
        .unwrap();
    let events = alice.sync_once().await.unwrap();
    assert!(
        matches!(&events[..], [
            Event::Message { body: Body::Reply { text, quote: q }, .. },
            Event::Receipt { kind: ReceiptKind::Read, sent_at, .. },
        ] if text == "hi alice" && *q == quote && sent_at == &vec![sent.sent_at]),
        "{events:?}"
    );

    // Both histories.
    let history = alice.history(bob.address()).unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].direction, MessageDirection::Outgoing);
    assert_eq!(history[0].body, Some(text("hello bob")));
    assert_eq!(history[0].state, DeliveryState::Read);
    assert_eq!(history[1].direction, MessageDirection::Incoming);
    let history = bob.history(alice.address()).unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].state, DeliveryState::Read);

    // Edits, reactions and deletes.
    alice
        .edit(bob.address(), sent.sent_at, "hello, bob")
        .await
        .unwrap();
    alice
        .react(bob.address(), history[1].message_ref(), "❤️", false)
        .await
        .unwrap();
    bob.sync_once().await.unwrap();
    let history = bob.history(alice.address()).unwrap();
    assert_eq!(history[0].body, Some(text("hello, bob")));
    assert_eq!(
        history[1].reactions,
        vec![(alice.account_id(), "❤️".to_string())]
    );
    alice.delete(bob.address(), sent.sent_at).await.unwrap();
    bob.sync_once().await.unwrap();
    assert_eq!(bob.history(alice.address()).unwrap()[0].body, None);

    // Conversations and safety numbers.
    let conversations = bob.conversations().unwrap();
    assert_eq!(conversations.len(), 1);
    assert_eq!(conversations[0].address, *alice.address());
    assert_eq!(conversations[0].app.as_str(), "parley");
    assert_eq!(conversations[0].handle.as_str(), "alice");
    assert!(!conversations[0].verified);
    let theirs = alice.safety_number(bob.address()).await.unwrap();
    let ours = bob.safety_number(alice.address()).await.unwrap();
    assert_eq!(theirs.displayable, ours.displayable);
    assert_eq!(ours.displayable.len(), 60 + 11);
    assert!(
        bob.compare_scanned(alice.address(), &theirs.scannable)
            .await
            .unwrap()
    );
    bob.verify(alice.address()).await.unwrap();
    assert!(bob.conversations().unwrap()[0].verified);

    // Typing is delivered live only.
    let mut listener = bob.listen().await.unwrap();
    assert!(drain(&mut listener).await.is_empty());
    alice.typing(bob.address(), true).await.unwrap();
    assert_eq!(
        next_event(&mut listener).await,
        Event::Typing {
            from: alice.address().clone(),
            started: true
        }
    );
    listener.close().await;
    alice.typing(bob.address(), false).await.unwrap();
    assert!(bob.sync_once().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_recipient_gets_everything_in_order_exactly_once() {
    let hub = Hub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let alice = username(&hub, &dir, "alice").await;
    let bob = username(&hub, &dir, "bob").await;

    let sent: Vec<String> = (0..30).map(|i| format!("message {i}")).collect();
    for t in &sent {
        alice.send_text(bob.address(), t).await.unwrap();
    }

    // Bob reads a few, then the connection drops.
    let mut listener = bob.listen().await.unwrap();
    let mut received = Vec::new();
    for _ in 0..7 {
        received.push(next_event(&mut listener).await);
    }
    drop(listener);

    // He opens the database again (a restart) and gets the rest, once.
    let bob_path = dir.path().join("bob.db");
    drop(bob);
    let bob = Client::open(&bob_path).unwrap();
    received.extend(bob.sync_once().await.unwrap());
    let got: Vec<String> = texts(&received).into_iter().map(|(_, t)| t).collect();
    assert_eq!(got, sent);
    assert!(bob.sync_once().await.unwrap().is_empty());
    assert_eq!(bob.history(alice.address()).unwrap().len(), 30);

    // New messages while listening arrive live, once.
    let mut listener = bob.listen().await.unwrap();
    assert!(drain(&mut listener).await.is_empty());
    alice.send_text(bob.address(), "live").await.unwrap();
    assert_eq!(
        texts(&[next_event(&mut listener).await]),
        vec![(alice.address().clone(), "live".to_string())]
    );
    listener.close().await;
    assert!(bob.sync_once().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_device_gets_incoming_messages_and_sync_copies() {
    let hub = Hub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let alice = username(&hub, &dir, "alice").await;
    let laptop = link(&hub, &dir, &alice, "laptop").await;
    assert_eq!(alice.devices().await.unwrap().len(), 2);
    let bob = phone(&hub, &dir, "+4915112345678").await;

    // Bob writes to Alice: both her devices get it.
    bob.send_text(alice.address(), "hi both").await.unwrap();
    for device in [&alice, &laptop] {
        assert_eq!(
            texts(&device.sync_once().await.unwrap()),
            vec![(bob.address().clone(), "hi both".to_string())]
        );
    }

    // Alice answers from her phone: the laptop gets a sync copy.
    let sent = alice
        .send_text(bob.address(), "from my phone")
        .await
        .unwrap();
    let events = laptop.sync_once().await.unwrap();
    assert!(
        matches!(&events[..], [Event::SentTranscript { device, to, sent_at, body: Body::Text { text }, .. }]
            if *device == DeviceId::PRIMARY && to == bob.address() && *sent_at == sent.sent_at && text == "from my phone"),
        "{events:?}"
    );
    let history = laptop.history(bob.address()).unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[1].direction, MessageDirection::Outgoing);

    // And from the laptop: the phone gets the copy, Bob the message.
    laptop
        .send_text(bob.address(), "from my laptop")
        .await
        .unwrap();
    let events = alice.sync_once().await.unwrap();
    assert!(
        matches!(&events[..], [Event::SentTranscript { device, body: Body::Text { text }, .. }]
            if *device == laptop.device_id() && text == "from my laptop"),
        "{events:?}"
    );
    let got = texts(&bob.sync_once().await.unwrap());
    assert_eq!(
        got,
        vec![
            (alice.address().clone(), "from my phone".to_string()),
            (alice.address().clone(), "from my laptop".to_string()),
        ]
    );

    // Both of Alice's devices show Bob the same safety number.
    let from_phone = alice.safety_number(bob.address()).await.unwrap();
    let from_laptop = laptop.safety_number(bob.address()).await.unwrap();
    assert_eq!(from_phone, from_laptop);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_resolves_device_mismatches_itself() {
    let hub = Hub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let alice = username(&hub, &dir, "alice").await;
    let bob = username(&hub, &dir, "bob").await;
    alice.send_text(bob.address(), "one").await.unwrap();
    assert_eq!(texts(&bob.sync_once().await.unwrap()).len(), 1);

    // Bob links a device after Alice's sessions exist: the hub answers 409
    // (missing), Alice fetches the new bundle and sends again.
    let tablet = link(&hub, &dir, &bob, "tablet").await;
    alice.send_text(bob.address(), "two").await.unwrap();
    for device in [&bob, &tablet] {
        assert_eq!(
            texts(&device.sync_once().await.unwrap()),
            vec![(alice.address().clone(), "two".to_string())]
        );
    }

    // Bob removes it and links another: Alice's session with the removed
    // device makes the hub answer 410 (stale, when the id is reused) or 409
    // (extra and missing); either way Alice recovers.
    let removed_id = tablet.device_id();
    bob.remove_device(removed_id).await.unwrap();
    drop(tablet);
    let reader = link(&hub, &dir, &bob, "reader").await;
    alice.send_text(bob.address(), "three").await.unwrap();
    for device in [&bob, &reader] {
        assert_eq!(
            texts(&device.sync_once().await.unwrap()),
            vec![(alice.address().clone(), "three".to_string())]
        );
    }
    if reader.device_id() == removed_id {
        eprintln!("device id {removed_id} was reused: the 410 path ran");
    }

    // Only Bob's first device left: 409 (extra) again.
    bob.remove_device(reader.device_id()).await.unwrap();
    alice.send_text(bob.address(), "four").await.unwrap();
    assert_eq!(
        texts(&bob.sync_once().await.unwrap()),
        vec![(alice.address().clone(), "four".to_string())]
    );

    // A new device of Bob's, which never talked to Alice, writes to her: it
    // fetches her bundles itself, and Bob's phone gets the sync copy.
    let watch = link(&hub, &dir, &bob, "watch").await;
    watch
        .send_text(alice.address(), "from the watch")
        .await
        .unwrap();
    assert_eq!(
        texts(&alice.sync_once().await.unwrap()),
        vec![(bob.address().clone(), "from the watch".to_string())]
    );
    let events = bob.sync_once().await.unwrap();
    assert!(
        matches!(&events[..], [Event::SentTranscript { device, .. }] if *device == watch.device_id()),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prekeys_are_replenished_below_the_low_water_mark() {
    let mut config = Config::default();
    // Every claim takes a device below the mark.
    config.limits.key_low_water_mark = 100;
    let hub = Hub::with_config(config).await;
    let dir = tempfile::tempdir().unwrap();
    let bob = username(&hub, &dir, "bob").await;
    let alice = username(&hub, &dir, "alice").await;
    let carol = username(&hub, &dir, "carol").await;
    alice.send_text(bob.address(), "from alice").await.unwrap();
    carol.send_text(bob.address(), "from carol").await.unwrap();
    // Connecting checks the counts (98 < 100) and uploads a batch; the
    // PreKey messages are still decrypted with the claimed keys.
    let events = bob.sync_once().await.unwrap();
    assert_eq!(texts(&events).len(), 2);
    assert!(
        !bob.refresh_prekeys().await.unwrap(),
        "the connection already topped the keys up (198 >= 100)"
    );
    // Exactly at the mark is not below it.
    assert!(!carol.refresh_prekeys().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_fetched_before_a_rotation_still_gets_through() {
    const DAY_MS: u64 = 24 * 3600 * 1000;
    let hub = Hub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bob = username(&hub, &dir, "bob").await;
    let alice = username(&hub, &dir, "alice").await;
    // Computing the safety number fetches bob's bundle and starts a
    // session on his current signed prekey.
    alice.safety_number(bob.address()).await.unwrap();

    // Not two days yet: connecting rotates nothing.
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    bob.set_rotation_clock(move || start + DAY_MS);
    assert!(!bob.refresh_prekeys().await.unwrap());
    // Three days on, bob's next connection rotates his signed and
    // last-resort prekeys and uploads them.
    bob.set_rotation_clock(move || start + 3 * DAY_MS);
    assert!(bob.sync_once().await.unwrap().is_empty());
    assert!(
        !bob.refresh_prekeys().await.unwrap(),
        "the connection already rotated, and the hub confirmed"
    );

    // Alice's first message is a PreKey message built on the old bundle.
    alice
        .send_text(bob.address(), "built on old keys")
        .await
        .unwrap();
    // Carol fetches a bundle now, with the new keys.
    let carol = username(&hub, &dir, "carol").await;
    carol
        .send_text(bob.address(), "built on new keys")
        .await
        .unwrap();
    let events = bob.sync_once().await.unwrap();
    let mut got: Vec<String> = texts(&events).into_iter().map(|(_, t)| t).collect();
    got.sort();
    assert_eq!(got, vec!["built on new keys", "built on old keys"]);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::Undecryptable { .. })),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_registration_can_be_retried_with_the_same_database() {
    let hub = Hub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let _bob = username(&hub, &dir, "bob").await;
    let path = dir.path().join("second.db");
    let register = |handle: &'static str| {
        Client::register(&hub.url, &path, "parley", Some(handle), None, "phone")
    };
    let taken = register("bob").await.unwrap_err();
    assert_eq!(
        taken.problem_kind(),
        Some(passerelle_proto::ProblemType::HandleTaken),
        "{taken:?}"
    );
    // The hub refused: nothing is unfinished, and a retry goes through.
    assert!(matches!(
        Client::open(&path),
        Err(passerelle_client::ClientError::NotRegistered)
    ));
    let dave = register("dave").await.unwrap();
    assert_eq!(dave.address().to_string(), "dave@parley");
    // Now it is registered: register refuses, open works.
    assert!(matches!(
        register("erin").await,
        Err(passerelle_client::ClientError::AlreadyRegistered)
    ));
    assert_eq!(Client::open(&path).unwrap().account_id(), dave.account_id());
}
