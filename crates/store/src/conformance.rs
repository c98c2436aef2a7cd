//! The contract of [`Store`], as checks that every backend must pass.
//!
//! Each check is a public async function that takes a fresh, empty store,
//! drives it through one part of the contract, and panics (as assertions
//! do) where the store breaks it. Most take `&dyn Store`; the few that
//! spawn tasks take an `Arc<dyn Store>`.
//! [`store_conformance_tests!`](crate::store_conformance_tests) turns the
//! whole list into one `#[tokio::test]` per check for a backend, given an
//! async block that makes a fresh store and a guard to keep alive as long
//! as it (a temporary directory, say):
//!
//! ```ignore
//! mod memory {
//!     use passerelle_store::memory::MemoryStore;
//!     passerelle_store::store_conformance_tests!(async { (MemoryStore::new(), ()) });
//! }
//! ```
//!
//! The checks only use what the trait promises, so a new backend is done
//! when it passes them all; [`MemoryStore`](crate::memory::MemoryStore) is
//! the reference they were written against.

// This module is test code shipped for the backends' test suites: a failed
// check panics, as assertions do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::future::join_all;
use passerelle_proto::{
    AccountId, Address, Base64Bytes, DeviceId, Envelope, EnvelopeKind, ServerNotice, Source,
};
use uuid::Uuid;

use crate::{
    Account, ClaimedKeys, Device, KeyCounts, KeyUpdate, MailboxFill, Millis, NewAccount, NewDevice,
    QueuedEnvelope, Store, StoreError, StoredKey, VerificationOutcome, VerificationRecord,
};

/// Turns every check of [`conformance`](crate::conformance) into a
/// `#[tokio::test]` for one backend.
///
/// The argument is an expression evaluated once per test: a future of
/// `(store, guard)`, where `store` implements [`Store`](crate::Store) and
/// `guard` is dropped after it. With `maybe` before it, the future gives
/// an `Option` of that pair, and a test whose future gives `None` (a
/// database server that is not there, say) returns at once. The caller's
/// crate needs `tokio` with the `macros` and `rt-multi-thread` features.
#[macro_export]
macro_rules! store_conformance_tests {
    (maybe $new_store:expr) => {
        $crate::store_conformance_tests!(@by_ref $new_store;
            accounts_are_created_and_found,
            addresses_are_unique,
            device_ids_are_never_reused,
            device_ids_run_out_at_127,
            devices_are_limited,
            devices_are_added_concurrently,
            removing_a_device_removes_its_keys_and_envelopes,
            touching_a_device_records_when,
            keys_are_stored_and_replaced,
            claims_consume_one_time_keys,
            claims_need_signed_keys,
            concurrent_claims_never_share_a_key,
            envelopes_are_queued_in_order_and_paged,
            envelopes_round_trip,
            enqueue_is_all_or_nothing,
            enqueue_skips_known_ids,
            queued_envelopes_are_counted,
            acknowledge_deletes_only_the_devices_envelopes,
            expired_envelopes_are_taken_once,
            verifications_are_saved_and_deleted,
            link_tokens_work_once_and_expire,
            mailboxes_are_filled_and_taken_once,
            verification_attempts_are_counted,
            expired_short_lived_rows_are_purged,
            ping_answers,
            failed_writes_do_not_spoil_concurrent_ones,
        );
        $crate::store_conformance_tests!(@shared $new_store;
            claims_from_many_tasks_never_share_a_key,
            enqueues_from_many_tasks_keep_each_senders_order,
            concurrent_wrong_codes_are_all_counted,
        );
    };
    ($new_store:expr) => {
        $crate::store_conformance_tests!(maybe async { ::std::option::Option::Some($new_store.await) });
    };
    (@by_ref $new_store:expr; $($check:ident),* $(,)?) => {$(
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $check() {
            let ::std::option::Option::Some((store, guard)) = $new_store.await else {
                return;
            };
            $crate::conformance::$check(&store).await;
            ::std::mem::drop(store);
            ::std::mem::drop(guard);
        }
    )*};
    (@shared $new_store:expr; $($check:ident),* $(,)?) => {$(
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $check() {
            let ::std::option::Option::Some((store, guard)) = $new_store.await else {
                return;
            };
            let store = ::std::sync::Arc::new(store);
            $crate::conformance::$check(store.clone()).await;
            ::std::mem::drop(store);
            ::std::mem::drop(guard);
        }
    )*};
}

// ---- fixtures ----

/// The time the fixtures are created at.
const NOW: Millis = 1_700_000_000_000;
/// An expiry far after [`NOW`].
const LATER: Millis = NOW + 30 * 24 * 3600 * 1000;

const SIGNED: u8 = 0xA0;
const LAST_RESORT: u8 = 0xB0;
const PRE: u8 = 0xC0;
const KYBER: u8 = 0xD0;

fn address(text: &str) -> Address {
    text.parse().expect("fixture address")
}

fn device_id(id: u32) -> DeviceId {
    DeviceId::new(id).expect("fixture device id")
}

/// A key whose bytes say what it is, so that a claim can be checked.
fn key(tag: u8, key_id: u32) -> StoredKey {
    let mut public_key = vec![tag];
    public_key.extend_from_slice(&key_id.to_be_bytes());
    StoredKey {
        key_id,
        public_key,
        signature: if tag == PRE {
            Vec::new()
        } else {
            vec![tag; 64]
        },
    }
}

/// Signed keys, and one-time keys with ids `1..=one_time` of each kind.
fn full_keys(one_time: u32) -> KeyUpdate {
    KeyUpdate {
        signed_pre_key: Some(key(SIGNED, 1)),
        last_resort_kyber_pre_key: Some(key(LAST_RESORT, 1)),
        pre_keys: (1..=one_time).map(|id| key(PRE, id)).collect(),
        kyber_pre_keys: (1..=one_time).map(|id| key(KYBER, id)).collect(),
    }
}

fn new_device(name: &str, keys: KeyUpdate, now: Millis) -> NewDevice {
    NewDevice {
        name: name.to_owned(),
        registration_id: 4242,
        password_hash: format!("hash of {name}").into_bytes(),
        keys,
        now,
    }
}

fn new_account(handle: &str, keys: KeyUpdate) -> NewAccount {
    NewAccount {
        id: AccountId::random(),
        address: address(&format!("{handle}@conformance")),
        identity_key: vec![5; 33],
        device: new_device("primary", keys, NOW),
    }
}

/// Creates an account with [`full_keys`]; returns its id.
async fn account_with_keys(store: &dyn Store, handle: &str, one_time: u32) -> AccountId {
    let account = new_account(handle, full_keys(one_time));
    let id = account.id;
    store.create_account(account).await.expect("create account");
    id
}

/// An encrypted envelope for a device, from a fixed sender.
fn envelope_for(account: AccountId, device: DeviceId, client_timestamp: u64) -> QueuedEnvelope {
    QueuedEnvelope {
        account_id: account,
        envelope: Envelope {
            id: Uuid::new_v4(),
            kind: EnvelopeKind::Message,
            source: Some(Source {
                address: address("sender@conformance"),
                account_id: AccountId(Uuid::from_u128(7)),
                device_id: DeviceId::PRIMARY,
            }),
            destination_device: device,
            client_timestamp,
            server_timestamp: NOW,
            content: Some(Base64Bytes(
                format!("ciphertext {client_timestamp}").into_bytes(),
            )),
            notice: None,
        },
        expires_at: LATER,
    }
}

fn ids(envelopes: &[Envelope]) -> Vec<Uuid> {
    envelopes.iter().map(|e| e.id).collect()
}

fn queued_ids(envelopes: &[QueuedEnvelope]) -> Vec<Uuid> {
    envelopes.iter().map(|q| q.envelope.id).collect()
}

async fn all_queued(store: &dyn Store, account: AccountId, device: DeviceId) -> Vec<Envelope> {
    store
        .queued(account, device, None, u32::MAX)
        .await
        .expect("queued")
}

async fn claim(store: &dyn Store, account: AccountId, device: DeviceId) -> ClaimedKeys {
    store
        .claim_keys(account, device)
        .await
        .expect("claim")
        .expect("a bundle")
}

fn counts(pre_keys: u32, kyber_pre_keys: u32) -> KeyCounts {
    KeyCounts {
        pre_keys,
        kyber_pre_keys,
    }
}

// ---- accounts and devices ----

/// An account is found by id and by address, with its primary device and
/// keys; unknown ones are `None`.
pub async fn accounts_are_created_and_found(store: &dyn Store) {
    let account = new_account("alice", full_keys(3));
    let id = account.id;
    let addr = account.address.clone();
    store.create_account(account).await.expect("create");

    let expected = Account {
        id,
        address: addr.clone(),
        identity_key: vec![5; 33],
        created_at: NOW,
    };
    assert_eq!(store.account(id).await.unwrap(), Some(expected.clone()));
    assert_eq!(
        store.account_by_address(&addr).await.unwrap(),
        Some(expected)
    );
    assert_eq!(store.account(AccountId::random()).await.unwrap(), None);
    assert_eq!(
        store
            .account_by_address(&address("nobody@conformance"))
            .await
            .unwrap(),
        None
    );

    let primary = Device {
        account_id: id,
        id: DeviceId::PRIMARY,
        name: "primary".into(),
        registration_id: 4242,
        password_hash: b"hash of primary".to_vec(),
        created_at: NOW,
        last_seen_at: NOW,
    };
    assert_eq!(
        store.device(id, DeviceId::PRIMARY).await.unwrap(),
        Some(primary.clone())
    );
    assert_eq!(store.devices(id).await.unwrap(), vec![primary]);
    assert_eq!(store.device(id, device_id(2)).await.unwrap(), None);
    assert_eq!(store.devices(AccountId::random()).await.unwrap(), vec![]);
    assert_eq!(
        store.key_counts(id, DeviceId::PRIMARY).await.unwrap(),
        counts(3, 3)
    );
    assert_eq!(
        store.key_counts(id, device_id(2)).await.unwrap(),
        KeyCounts::default()
    );
}

/// An address belongs to one account; a refused account leaves no trace.
pub async fn addresses_are_unique(store: &dyn Store) {
    let first = account_with_keys(store, "alice", 1).await;
    let copy = new_account("alice", full_keys(1));
    let copy_id = copy.id;
    match store.create_account(copy).await {
        Err(StoreError::AddressTaken(taken)) => {
            assert_eq!(taken, address("alice@conformance"));
        }
        other => panic!("expected AddressTaken, got {other:?}"),
    }
    assert_eq!(store.account(copy_id).await.unwrap(), None);
    assert_eq!(store.devices(copy_id).await.unwrap(), vec![]);
    assert_eq!(
        store.key_counts(copy_id, DeviceId::PRIMARY).await.unwrap(),
        KeyCounts::default()
    );
    let found = store
        .account_by_address(&address("alice@conformance"))
        .await
        .unwrap()
        .expect("the first account");
    assert_eq!(found.id, first);

    // The same handle in another app, another handle in the same app.
    let mut other_app = new_account("alice", full_keys(0));
    other_app.address = address("alice@elsewhere");
    store.create_account(other_app).await.expect("other app");
    account_with_keys(store, "alice2", 0).await;
}

/// A new device gets the account's next id: the id of a removed device is
/// never given again.
pub async fn device_ids_are_never_reused(store: &dyn Store) {
    let account = account_with_keys(store, "alice", 0).await;
    let add = |name: &str, now| store.add_device(account, new_device(name, full_keys(2), now), 10);
    assert_eq!(add("two", NOW + 1).await.unwrap(), device_id(2));
    assert_eq!(add("three", NOW + 2).await.unwrap(), device_id(3));
    assert!(store.remove_device(account, device_id(3)).await.unwrap());
    assert_eq!(add("four", NOW + 3).await.unwrap(), device_id(4));
    assert!(store.remove_device(account, device_id(2)).await.unwrap());
    assert!(store.remove_device(account, device_id(4)).await.unwrap());
    assert_eq!(add("five", NOW + 4).await.unwrap(), device_id(5));

    // Another account counts from 2 on its own.
    let other = account_with_keys(store, "bob", 0).await;
    let added = store
        .add_device(other, new_device("bob two", full_keys(0), NOW), 10)
        .await
        .unwrap();
    assert_eq!(added, device_id(2));

    let devices = store.devices(account).await.unwrap();
    let listed: Vec<_> = devices
        .iter()
        .map(|d| (d.id.get(), d.name.as_str()))
        .collect();
    assert_eq!(listed, vec![(1, "primary"), (5, "five")]);
    let two = &devices[1];
    assert_eq!(two.account_id, account);
    assert_eq!(two.registration_id, 4242);
    assert_eq!(two.password_hash, b"hash of five".to_vec());
    assert_eq!((two.created_at, two.last_seen_at), (NOW + 4, NOW + 4));
    assert_eq!(
        store.key_counts(account, device_id(5)).await.unwrap(),
        counts(2, 2)
    );

    let unknown = store
        .add_device(AccountId::random(), new_device("x", full_keys(0), NOW), 10)
        .await;
    assert!(
        matches!(unknown, Err(StoreError::NoSuchAccount)),
        "{unknown:?}"
    );
}

/// An account has at most `max_devices` devices, and at most 127.
pub async fn devices_are_limited(store: &dyn Store) {
    let account = account_with_keys(store, "alice", 0).await;
    let add = || store.add_device(account, new_device("more", KeyUpdate::default(), NOW), 3);
    assert_eq!(add().await.unwrap(), device_id(2));
    assert_eq!(add().await.unwrap(), device_id(3));
    let full = add().await;
    assert!(
        matches!(full, Err(StoreError::TooManyDevices(3))),
        "{full:?}"
    );
    assert_eq!(store.devices(account).await.unwrap().len(), 3);
    assert!(store.remove_device(account, device_id(3)).await.unwrap());
    assert_eq!(add().await.unwrap(), device_id(4));

    let none_allowed = store
        .add_device(account, new_device("x", KeyUpdate::default(), NOW), 0)
        .await;
    assert!(
        matches!(none_allowed, Err(StoreError::TooManyDevices(_))),
        "{none_allowed:?}"
    );
}

/// Once an account has had device 127, it can have no new device, even
/// with room under `max_devices`; nothing is added.
pub async fn device_ids_run_out_at_127(store: &dyn Store) {
    let account = account_with_keys(store, "alice", 0).await;
    let adds = (2..=127).map(|_| {
        store.add_device(
            account,
            new_device("many", KeyUpdate::default(), NOW),
            u8::MAX,
        )
    });
    for result in join_all(adds).await {
        result.unwrap();
    }
    let removes = (2..=127).map(|id| store.remove_device(account, device_id(id)));
    for removed in join_all(removes).await {
        assert!(removed.unwrap());
    }
    let refused = store
        .add_device(account, new_device("x", KeyUpdate::default(), NOW), 5)
        .await;
    assert!(
        matches!(refused, Err(StoreError::DeviceIdsExhausted)),
        "{refused:?}"
    );
    assert_eq!(store.devices(account).await.unwrap().len(), 1);
}

/// Devices added at the same time get distinct ids, up to 127.
pub async fn devices_are_added_concurrently(store: &dyn Store) {
    let account = account_with_keys(store, "alice", 0).await;
    let adds = (0..130).map(|_| {
        store.add_device(
            account,
            new_device("many", KeyUpdate::default(), NOW),
            u8::MAX,
        )
    });
    let results = join_all(adds).await;
    let mut added: Vec<u32> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|id| id.get()))
        .collect();
    added.sort_unstable();
    assert_eq!(added, (2..=127).collect::<Vec<_>>());
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(StoreError::DeviceIdsExhausted)))
        .count();
    assert_eq!(refused, 4, "{results:?}");
    assert_eq!(store.devices(account).await.unwrap().len(), 127);
}

/// Removing a device removes its keys and its queued envelopes, and only
/// its own.
pub async fn removing_a_device_removes_its_keys_and_envelopes(store: &dyn Store) {
    let account = account_with_keys(store, "alice", 2).await;
    let two = store
        .add_device(account, new_device("two", full_keys(2), NOW), 10)
        .await
        .unwrap();
    let to_one = envelope_for(account, DeviceId::PRIMARY, 1);
    let to_two = envelope_for(account, two, 2);
    let to_two_id = to_two.envelope.id;
    store.enqueue(vec![to_one.clone(), to_two]).await.unwrap();

    assert!(store.remove_device(account, two).await.unwrap());
    assert!(!store.remove_device(account, two).await.unwrap());
    assert!(!store.remove_device(AccountId::random(), two).await.unwrap());
    assert_eq!(store.device(account, two).await.unwrap(), None);
    assert_eq!(all_queued(store, account, two).await, vec![]);
    assert_eq!(
        store.key_counts(account, two).await.unwrap(),
        KeyCounts::default()
    );
    assert_eq!(store.claim_keys(account, two).await.unwrap(), None);
    assert_eq!(
        store.acknowledge(account, two, &[to_two_id]).await.unwrap(),
        0
    );
    // Expiry does not find the removed device's envelope either.
    let expired = store.take_expired(Millis::MAX, 100).await.unwrap();
    assert_eq!(queued_ids(&expired), vec![to_one.envelope.id]);

    // The other device kept its keys; a new device (3: ids are not given
    // again) starts empty.
    assert_eq!(
        store.key_counts(account, DeviceId::PRIMARY).await.unwrap(),
        counts(2, 2)
    );
    let again = store
        .add_device(account, new_device("two again", full_keys(1), NOW), 10)
        .await
        .unwrap();
    assert_eq!(again, device_id(3));
    assert_eq!(all_queued(store, account, again).await, vec![]);
    assert_eq!(
        store.key_counts(account, again).await.unwrap(),
        counts(1, 1)
    );
}

/// `touch_device` records when a device was last seen, and nothing else.
pub async fn touching_a_device_records_when(store: &dyn Store) {
    let account = account_with_keys(store, "alice", 0).await;
    store
        .touch_device(account, DeviceId::PRIMARY, NOW + 500)
        .await
        .unwrap();
    let device = store
        .device(account, DeviceId::PRIMARY)
        .await
        .unwrap()
        .expect("device");
    assert_eq!((device.created_at, device.last_seen_at), (NOW, NOW + 500));
    let missing = store.touch_device(account, device_id(9), NOW).await;
    assert!(
        matches!(missing, Err(StoreError::NoSuchDevice)),
        "{missing:?}"
    );
}

// ---- keys ----

/// Signed keys are replaced; one-time keys are added, and one with a known
/// id replaces the old one.
pub async fn keys_are_stored_and_replaced(store: &dyn Store) {
    let account = account_with_keys(store, "alice", 3).await;
    let one = DeviceId::PRIMARY;
    let replaced_pre_key = StoredKey {
        key_id: 1,
        public_key: b"replaced".to_vec(),
        signature: Vec::new(),
    };
    let update = KeyUpdate {
        signed_pre_key: Some(key(SIGNED, 2)),
        last_resort_kyber_pre_key: None,
        pre_keys: vec![replaced_pre_key.clone(), key(PRE, 4), key(PRE, 5)],
        kyber_pre_keys: vec![key(KYBER, 4)],
    };
    store.store_keys(account, one, update).await.unwrap();
    assert_eq!(store.key_counts(account, one).await.unwrap(), counts(5, 4));
    store
        .store_keys(account, one, KeyUpdate::default())
        .await
        .unwrap();
    assert_eq!(store.key_counts(account, one).await.unwrap(), counts(5, 4));

    let bundle = claim(store, account, one).await;
    assert_eq!(bundle.signed_pre_key, key(SIGNED, 2));
    assert_eq!(bundle.pre_key, Some(replaced_pre_key));
    assert_eq!(bundle.kyber_pre_key, key(KYBER, 1));

    // A new last-resort key is what claims fall back to.
    store
        .store_keys(
            account,
            one,
            KeyUpdate {
                last_resort_kyber_pre_key: Some(key(LAST_RESORT, 9)),
                ..KeyUpdate::default()
            },
        )
        .await
        .unwrap();
    for _ in 0..3 {
        claim(store, account, one).await;
    }
    assert_eq!(
        claim(store, account, one).await.kyber_pre_key,
        key(LAST_RESORT, 9)
    );
    // The signed key was kept.
    assert_eq!(
        claim(store, account, one).await.signed_pre_key,
        key(SIGNED, 2)
    );

    let missing = store.store_keys(account, device_id(5), full_keys(1)).await;
    assert!(
        matches!(missing, Err(StoreError::NoSuchDevice)),
        "{missing:?}"
    );
    let missing = store
        .store_keys(AccountId::random(), one, full_keys(1))
        .await;
    assert!(
        matches!(missing, Err(StoreError::NoSuchDevice)),
        "{missing:?}"
    );
}

/// Each claim takes one one-time key of each kind, lowest id first; when
/// none is left, Curve25519 gives nothing and Kyber falls back to the
/// last-resort key, which stays.
pub async fn claims_consume_one_time_keys(store: &dyn Store) {
    let account = account_with_keys(store, "alice", 3).await;
    let one = DeviceId::PRIMARY;
    for id in 1..=3 {
        let bundle = claim(store, account, one).await;
        assert_eq!(
            bundle,
            ClaimedKeys {
                device_id: one,
                registration_id: 4242,
                pre_key: Some(key(PRE, id)),
                signed_pre_key: key(SIGNED, 1),
                kyber_pre_key: key(KYBER, id),
            }
        );
        assert_eq!(
            store.key_counts(account, one).await.unwrap(),
            counts(3 - id, 3 - id)
        );
    }
    for _ in 0..2 {
        let bundle = claim(store, account, one).await;
        assert_eq!(bundle.pre_key, None);
        assert_eq!(bundle.kyber_pre_key, key(LAST_RESORT, 1));
        assert_eq!(bundle.signed_pre_key, key(SIGNED, 1));
    }
    assert_eq!(store.key_counts(account, one).await.unwrap(), counts(0, 0));

    assert_eq!(store.claim_keys(account, device_id(2)).await.unwrap(), None);
    assert_eq!(
        store.claim_keys(AccountId::random(), one).await.unwrap(),
        None
    );
}

/// A device without a signed prekey, or without any Kyber prekey, has no
/// bundle, and a refused claim consumes nothing.
pub async fn claims_need_signed_keys(store: &dyn Store) {
    let no_signed = KeyUpdate {
        signed_pre_key: None,
        ..full_keys(2)
    };
    let account = new_account("alice", no_signed);
    let alice = account.id;
    store.create_account(account).await.unwrap();
    assert_eq!(
        store.claim_keys(alice, DeviceId::PRIMARY).await.unwrap(),
        None
    );
    assert_eq!(
        store.key_counts(alice, DeviceId::PRIMARY).await.unwrap(),
        counts(2, 2)
    );

    let no_kyber = KeyUpdate {
        last_resort_kyber_pre_key: None,
        kyber_pre_keys: Vec::new(),
        ..full_keys(2)
    };
    let account = new_account("bob", no_kyber);
    let bob = account.id;
    store.create_account(account).await.unwrap();
    assert_eq!(
        store.claim_keys(bob, DeviceId::PRIMARY).await.unwrap(),
        None
    );
    assert_eq!(
        store.key_counts(bob, DeviceId::PRIMARY).await.unwrap(),
        counts(2, 0)
    );

    // One-time Kyber keys without a last-resort one: fine until they run out.
    let no_last_resort = KeyUpdate {
        last_resort_kyber_pre_key: None,
        ..full_keys(1)
    };
    let account = new_account("carol", no_last_resort);
    let carol = account.id;
    store.create_account(account).await.unwrap();
    assert_eq!(
        claim(store, carol, DeviceId::PRIMARY).await.kyber_pre_key,
        key(KYBER, 1)
    );
    assert_eq!(
        store.claim_keys(carol, DeviceId::PRIMARY).await.unwrap(),
        None
    );
}

/// Checks the outcome of 50 claims on a device that had 20 one-time keys of
/// each kind: 20 distinct keys of each kind, then the fallbacks.
fn check_fifty_claims_of_twenty(bundles: &[ClaimedKeys]) {
    assert_eq!(bundles.len(), 50);
    let pre_keys: Vec<u32> = bundles
        .iter()
        .filter_map(|b| b.pre_key.as_ref().map(|k| k.key_id))
        .collect();
    let distinct: HashSet<u32> = pre_keys.iter().copied().collect();
    assert_eq!(pre_keys.len(), 20, "{pre_keys:?}");
    assert_eq!(distinct, (1..=20).collect(), "a key was handed out twice");

    let kyber: Vec<u32> = bundles
        .iter()
        .filter(|b| b.kyber_pre_key.public_key[0] == KYBER)
        .map(|b| b.kyber_pre_key.key_id)
        .collect();
    let distinct: HashSet<u32> = kyber.iter().copied().collect();
    assert_eq!(kyber.len(), 20, "{kyber:?}");
    assert_eq!(distinct, (1..=20).collect(), "a key was handed out twice");
    let last_resort = bundles
        .iter()
        .filter(|b| b.kyber_pre_key == key(LAST_RESORT, 1))
        .count();
    assert_eq!(last_resort, 30);
}

/// 50 claims at once of a device with 20 one-time keys: each key is handed
/// out once.
pub async fn concurrent_claims_never_share_a_key(store: &dyn Store) {
    let account = account_with_keys(store, "alice", 20).await;
    let claims = (0..50).map(|_| store.claim_keys(account, DeviceId::PRIMARY));
    let bundles: Vec<ClaimedKeys> = join_all(claims)
        .await
        .into_iter()
        .map(|r| r.expect("claim").expect("bundle"))
        .collect();
    check_fifty_claims_of_twenty(&bundles);
    assert_eq!(
        store.key_counts(account, DeviceId::PRIMARY).await.unwrap(),
        counts(0, 0)
    );
}

/// The same from 50 tokio tasks, on as many threads as the runtime has.
pub async fn claims_from_many_tasks_never_share_a_key(store: Arc<dyn Store>) {
    let account = account_with_keys(&*store, "alice", 20).await;
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.claim_keys(account, DeviceId::PRIMARY).await })
        })
        .collect();
    let mut bundles = Vec::new();
    for task in tasks {
        bundles.push(task.await.expect("task").expect("claim").expect("bundle"));
    }
    check_fifty_claims_of_twenty(&bundles);
}

// ---- envelopes ----

/// Envelopes come back per device in the order they were queued, page by
/// page.
pub async fn envelopes_are_queued_in_order_and_paged(store: &dyn Store) {
    let account = account_with_keys(store, "alice", 0).await;
    let two = store
        .add_device(account, new_device("two", KeyUpdate::default(), NOW), 10)
        .await
        .unwrap();
    let one = DeviceId::PRIMARY;
    // Interleaved: even ones to device 1, odd ones to device 2.
    let batch: Vec<_> = (0..20)
        .map(|i| envelope_for(account, if i % 2 == 0 { one } else { two }, i))
        .collect();
    store.enqueue(batch.clone()).await.unwrap();
    let more: Vec<_> = (20..24).map(|i| envelope_for(account, one, i)).collect();
    store.enqueue(more.clone()).await.unwrap();

    let expected: Vec<Envelope> = batch
        .iter()
        .chain(&more)
        .filter(|q| q.envelope.destination_device == one)
        .map(|q| q.envelope.clone())
        .collect();
    assert_eq!(expected.len(), 14);
    assert_eq!(all_queued(store, account, one).await, expected);
    assert_eq!(all_queued(store, account, two).await.len(), 10);

    // Pages of 5: 5, 5, 4, then nothing.
    let mut after = None;
    let mut paged = Vec::new();
    loop {
        let page = store.queued(account, one, after, 5).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 5);
        after = page.last().map(|e| e.id);
        paged.extend(page);
    }
    assert_eq!(paged, expected);
    assert_eq!(store.queued(account, one, None, 0).await.unwrap(), vec![]);
    assert_eq!(all_queued(store, AccountId::random(), one).await, vec![]);
    assert_eq!(all_queued(store, account, device_id(9)).await, vec![]);

    // An `after` that this device does not have reads from the start: one
    // of another device, an unknown one, an acknowledged one.
    let of_two = batch[1].envelope.id;
    let from_start = store.queued(account, one, Some(of_two), 3).await.unwrap();
    assert_eq!(from_start, expected[..3].to_vec());
    let unknown = store
        .queued(account, one, Some(Uuid::new_v4()), 3)
        .await
        .unwrap();
    assert_eq!(unknown, expected[..3].to_vec());
    store
        .acknowledge(account, one, &[expected[0].id, expected[1].id])
        .await
        .unwrap();
    let acked = store
        .queued(account, one, Some(expected[1].id), 3)
        .await
        .unwrap();
    assert_eq!(acked, expected[2..5].to_vec());
}

/// Every field of an envelope comes back as it went in.
pub async fn envelopes_round_trip(store: &dyn Store) {
    let account = account_with_keys(store, "alice", 0).await;
    let one = DeviceId::PRIMARY;
    let mut prekey = envelope_for(account, one, u64::MAX);
    prekey.envelope.kind = EnvelopeKind::PrekeyMessage;
    prekey.envelope.server_timestamp = 0;
    prekey.envelope.content = Some(Base64Bytes((0..=255).collect()));
    let mut empty = envelope_for(account, one, 0);
    empty.envelope.content = Some(Base64Bytes(Vec::new()));
    empty.envelope.source = Some(Source {
        address: address("+15551234567@chime"),
        account_id: AccountId::random(),
        device_id: device_id(127),
    });
    let notice = QueuedEnvelope {
        account_id: account,
        envelope: Envelope {
            id: Uuid::new_v4(),
            kind: EnvelopeKind::ServerNotice,
            source: None,
            destination_device: one,
            client_timestamp: 12,
            server_timestamp: NOW,
            content: None,
            notice: Some(ServerNotice::Expired {
                recipient: address("bob@conformance"),
                recipient_device: device_id(3),
                envelope_id: Uuid::new_v4(),
                client_timestamp: 99,
            }),
        },
        expires_at: LATER + 1,
    };
    let all = vec![prekey, empty, notice];
    store.enqueue(all.clone()).await.unwrap();
    let expected: Vec<Envelope> = all.iter().map(|q| q.envelope.clone()).collect();
    assert_eq!(all_queued(store, account, one).await, expected);
    // And as a whole, through expiry.
    assert_eq!(store.take_expired(Millis::MAX, 10).await.unwrap(), all);
}

/// If one envelope of a call cannot be queued, none is.
pub async fn enqueue_is_all_or_nothing(store: &dyn Store) {
    let account = account_with_keys(store, "alice", 0).await;
    let one = DeviceId::PRIMARY;
    store.enqueue(Vec::new()).await.unwrap();
    let to_missing_device = vec![
        envelope_for(account, one, 1),
        envelope_for(account, device_id(5), 2),
    ];
    let refused = store.enqueue(to_missing_device).await;
    assert!(
        matches!(refused, Err(StoreError::NoSuchDevice)),
        "{refused:?}"
    );
    let to_missing_account = vec![
        envelope_for(account, one, 1),
        envelope_for(AccountId::random(), one, 2),
    ];
    let refused = store.enqueue(to_missing_account).await;
    assert!(
        matches!(refused, Err(StoreError::NoSuchDevice)),
        "{refused:?}"
    );
    assert_eq!(all_queued(store, account, one).await, vec![]);
    assert_eq!(store.take_expired(Millis::MAX, 10).await.unwrap(), vec![]);
}

/// `queued_count` counts a device's queued envelopes, and only its own.
pub async fn queued_envelopes_are_counted(store: &dyn Store) {
    let account = account_with_keys(store, "alice", 0).await;
    let one = DeviceId::PRIMARY;
    let two = store
        .add_device(account, new_device("two", KeyUpdate::default(), NOW), 10)
        .await
        .unwrap();
    assert_eq!(store.queued_count(account, one).await.unwrap(), 0);
    let first = envelope_for(account, one, 1);
    store
        .enqueue(vec![
            first.clone(),
            envelope_for(account, one, 2),
            envelope_for(account, two, 3),
        ])
        .await
        .unwrap();
    assert_eq!(store.queued_count(account, one).await.unwrap(), 2);
    assert_eq!(store.queued_count(account, two).await.unwrap(), 1);
    store
        .acknowledge(account, one, &[first.envelope.id])
        .await
        .unwrap();
    assert_eq!(store.queued_count(account, one).await.unwrap(), 1);
    assert!(store.remove_device(account, two).await.unwrap());
    assert_eq!(store.queued_count(account, two).await.unwrap(), 0);
    assert_eq!(
        store.queued_count(AccountId::random(), one).await.unwrap(),
        0
    );
}

/// An envelope whose id is already queued is not queued again, so a retry
/// is harmless.
pub async fn enqueue_skips_known_ids(store: &dyn Store) {
    let account = account_with_keys(store, "alice", 0).await;
    let one = DeviceId::PRIMARY;
    let first = envelope_for(account, one, 1);
    let second = envelope_for(account, one, 2);
    store.enqueue(vec![first.clone()]).await.unwrap();
    let mut retried = first.clone();
    retried.envelope.client_timestamp = 77;
    store
        .enqueue(vec![retried, second.clone(), second.clone()])
        .await
        .unwrap();
    assert_eq!(
        all_queued(store, account, one).await,
        vec![first.envelope, second.envelope]
    );
}

/// Acknowledging deletes the device's own envelopes with those ids, and
/// counts them.
pub async fn acknowledge_deletes_only_the_devices_envelopes(store: &dyn Store) {
    let account = account_with_keys(store, "alice", 0).await;
    let one = DeviceId::PRIMARY;
    let two = store
        .add_device(account, new_device("two", KeyUpdate::default(), NOW), 10)
        .await
        .unwrap();
    let mine: Vec<_> = (0..5).map(|i| envelope_for(account, one, i)).collect();
    let theirs = envelope_for(account, two, 9);
    let mut all = mine.clone();
    all.push(theirs.clone());
    store.enqueue(all).await.unwrap();

    let ack = [
        mine[0].envelope.id,
        mine[1].envelope.id,
        mine[1].envelope.id,
        Uuid::new_v4(),
        theirs.envelope.id,
    ];
    assert_eq!(store.acknowledge(account, one, &ack).await.unwrap(), 2);
    assert_eq!(store.acknowledge(account, one, &ack).await.unwrap(), 0);
    assert_eq!(store.acknowledge(account, one, &[]).await.unwrap(), 0);
    assert_eq!(
        store
            .acknowledge(AccountId::random(), one, &[mine[2].envelope.id])
            .await
            .unwrap(),
        0
    );
    let left: Vec<Envelope> = mine[2..].iter().map(|q| q.envelope.clone()).collect();
    assert_eq!(all_queued(store, account, one).await, left);
    assert_eq!(
        ids(&all_queued(store, account, two).await),
        vec![theirs.envelope.id]
    );
}

/// Expired envelopes are taken soonest first, up to the limit, once.
pub async fn expired_envelopes_are_taken_once(store: &dyn Store) {
    let account = account_with_keys(store, "alice", 0).await;
    let one = DeviceId::PRIMARY;
    let two = store
        .add_device(account, new_device("two", KeyUpdate::default(), NOW), 10)
        .await
        .unwrap();
    let expiring = |device, n, expires_at| QueuedEnvelope {
        expires_at,
        ..envelope_for(account, device, n)
    };
    // Queued out of expiry order, on two devices.
    let e300 = expiring(one, 1, 300);
    let e100 = expiring(two, 2, 100);
    let e200a = expiring(one, 3, 200);
    let e200b = expiring(two, 4, 200);
    let e1000 = expiring(one, 5, 1000);
    store
        .enqueue(vec![
            e300.clone(),
            e100.clone(),
            e200a.clone(),
            e200b.clone(),
            e1000.clone(),
        ])
        .await
        .unwrap();

    assert_eq!(store.take_expired(99, 10).await.unwrap(), vec![]);
    // At its expiry an envelope is expired.
    assert_eq!(store.take_expired(200, 2).await.unwrap(), vec![e100, e200a]);
    assert_eq!(
        store.take_expired(500, 10).await.unwrap(),
        vec![e200b, e300]
    );
    assert_eq!(store.take_expired(500, 10).await.unwrap(), vec![]);
    assert_eq!(
        ids(&all_queued(store, account, one).await),
        vec![e1000.envelope.id]
    );
    assert_eq!(all_queued(store, account, two).await, vec![]);
    assert_eq!(store.take_expired(1000, 0).await.unwrap(), vec![]);
    assert_eq!(store.take_expired(1000, 10).await.unwrap(), vec![e1000]);
}

// ---- short-lived state ----

/// Verifications are saved, replaced, read and deleted.
pub async fn verifications_are_saved_and_deleted(store: &dyn Store) {
    let record = VerificationRecord {
        id: Uuid::new_v4(),
        address: address("+15551234567@chime"),
        code_hash: vec![1, 2, 3],
        expires_at: LATER,
        attempts: 0,
    };
    store.save_verification(record.clone()).await.unwrap();
    assert_eq!(
        store.verification(record.id).await.unwrap(),
        Some(record.clone())
    );
    let tried = VerificationRecord {
        attempts: 1,
        ..record.clone()
    };
    store.save_verification(tried.clone()).await.unwrap();
    assert_eq!(store.verification(record.id).await.unwrap(), Some(tried));
    assert_eq!(store.verification(Uuid::new_v4()).await.unwrap(), None);
    store.delete_verification(record.id).await.unwrap();
    assert_eq!(store.verification(record.id).await.unwrap(), None);
    store.delete_verification(record.id).await.unwrap();
}

/// A link token works once, and not from its expiry on.
pub async fn link_tokens_work_once_and_expire(store: &dyn Store) {
    let alice = account_with_keys(store, "alice", 0).await;
    let bob = account_with_keys(store, "bob", 0).await;
    store
        .save_link_token(b"token one".to_vec(), alice, 1000)
        .await
        .unwrap();
    assert_eq!(
        store.take_link_token(b"token one", 999).await.unwrap(),
        Some(alice)
    );
    assert_eq!(
        store.take_link_token(b"token one", 999).await.unwrap(),
        None
    );
    assert_eq!(store.take_link_token(b"unknown", 0).await.unwrap(), None);

    store
        .save_link_token(b"token two".to_vec(), alice, 1000)
        .await
        .unwrap();
    assert_eq!(
        store.take_link_token(b"token two", 1000).await.unwrap(),
        None
    );

    // Saving the same hash again replaces it.
    store
        .save_link_token(b"token three".to_vec(), alice, 1000)
        .await
        .unwrap();
    store
        .save_link_token(b"token three".to_vec(), bob, 2000)
        .await
        .unwrap();
    assert_eq!(
        store.take_link_token(b"token three", 1500).await.unwrap(),
        Some(bob)
    );

    let unknown = store
        .save_link_token(b"token four".to_vec(), AccountId::random(), 1000)
        .await;
    assert!(
        matches!(unknown, Err(StoreError::NoSuchAccount)),
        "{unknown:?}"
    );
}

/// A mailbox is filled once (the first message wins) and taken once,
/// unless it expired.
pub async fn mailboxes_are_filled_and_taken_once(store: &dyn Store) {
    let id = Uuid::new_v4();
    store.open_mailbox(id, 1000).await.unwrap();
    // Taking from an empty mailbox leaves it open.
    assert_eq!(store.take_mailbox(id, 10).await.unwrap(), None);
    assert_eq!(
        store.fill_mailbox(id, b"first".to_vec(), 10).await.unwrap(),
        MailboxFill::Filled
    );
    assert_eq!(
        store
            .fill_mailbox(id, b"second".to_vec(), 20)
            .await
            .unwrap(),
        MailboxFill::Occupied
    );
    assert_eq!(
        store.take_mailbox(id, 30).await.unwrap(),
        Some(b"first".to_vec())
    );
    assert_eq!(store.take_mailbox(id, 30).await.unwrap(), None);
    assert_eq!(
        store.fill_mailbox(id, b"late".to_vec(), 40).await.unwrap(),
        MailboxFill::Missing
    );

    let unknown = Uuid::new_v4();
    assert_eq!(
        store.fill_mailbox(unknown, b"x".to_vec(), 0).await.unwrap(),
        MailboxFill::Missing
    );
    assert_eq!(store.take_mailbox(unknown, 0).await.unwrap(), None);

    let expiring = Uuid::new_v4();
    store.open_mailbox(expiring, 100).await.unwrap();
    assert_eq!(
        store
            .fill_mailbox(expiring, b"x".to_vec(), 100)
            .await
            .unwrap(),
        MailboxFill::Missing
    );
    let filled_then_expired = Uuid::new_v4();
    store.open_mailbox(filled_then_expired, 100).await.unwrap();
    assert_eq!(
        store
            .fill_mailbox(filled_then_expired, b"x".to_vec(), 50)
            .await
            .unwrap(),
        MailboxFill::Filled
    );
    assert_eq!(
        store
            .fill_mailbox(filled_then_expired, b"y".to_vec(), 100)
            .await
            .unwrap(),
        MailboxFill::Missing
    );
    assert_eq!(
        store.take_mailbox(filled_then_expired, 100).await.unwrap(),
        None
    );

    // Opening again empties it.
    let reopened = Uuid::new_v4();
    store.open_mailbox(reopened, 1000).await.unwrap();
    assert_eq!(
        store
            .fill_mailbox(reopened, b"x".to_vec(), 0)
            .await
            .unwrap(),
        MailboxFill::Filled
    );
    store.open_mailbox(reopened, 1000).await.unwrap();
    assert_eq!(store.take_mailbox(reopened, 0).await.unwrap(), None);
}

fn verification_record(expires_at: Millis) -> VerificationRecord {
    VerificationRecord {
        id: Uuid::new_v4(),
        address: address("+15551234567@chime"),
        code_hash: b"right".to_vec(),
        expires_at,
        attempts: 0,
    }
}

/// A right code verifies without using it up; wrong codes count until none
/// are left; expired and exhausted verifications go.
pub async fn verification_attempts_are_counted(store: &dyn Store) {
    let record = verification_record(1000);
    store.save_verification(record.clone()).await.unwrap();
    let attempt = |hash: &'static [u8], now| store.attempt_verification(record.id, hash, now, 3);
    assert_eq!(
        attempt(b"wrong", 10).await.unwrap(),
        VerificationOutcome::Wrong { remaining: 2 }
    );
    assert_eq!(
        store
            .verification(record.id)
            .await
            .unwrap()
            .unwrap()
            .attempts,
        1
    );
    let verified = VerificationOutcome::Verified {
        address: record.address.clone(),
    };
    assert_eq!(attempt(b"right", 10).await.unwrap(), verified);
    assert_eq!(attempt(b"right", 10).await.unwrap(), verified);
    assert_eq!(
        attempt(b"wrong", 10).await.unwrap(),
        VerificationOutcome::Wrong { remaining: 1 }
    );
    assert_eq!(
        attempt(b"wrong", 10).await.unwrap(),
        VerificationOutcome::Wrong { remaining: 0 }
    );
    assert_eq!(store.verification(record.id).await.unwrap(), None);
    assert_eq!(
        attempt(b"right", 10).await.unwrap(),
        VerificationOutcome::Unknown
    );

    let expired = verification_record(1000);
    store.save_verification(expired.clone()).await.unwrap();
    assert_eq!(
        store
            .attempt_verification(expired.id, b"right", 1000, 3)
            .await
            .unwrap(),
        VerificationOutcome::Expired
    );
    assert_eq!(store.verification(expired.id).await.unwrap(), None);

    let exhausted = VerificationRecord {
        attempts: 3,
        ..verification_record(1000)
    };
    store.save_verification(exhausted.clone()).await.unwrap();
    assert_eq!(
        store
            .attempt_verification(exhausted.id, b"right", 10, 3)
            .await
            .unwrap(),
        VerificationOutcome::Exhausted
    );
    assert_eq!(store.verification(exhausted.id).await.unwrap(), None);
}

/// Many wrong codes at once are each counted: no more than `max_attempts`
/// of them are ever judged.
pub async fn concurrent_wrong_codes_are_all_counted(store: Arc<dyn Store>) {
    let record = verification_record(LATER);
    store.save_verification(record.clone()).await.unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .attempt_verification(record.id, b"wrong", NOW, 5)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut remaining = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            VerificationOutcome::Wrong { remaining: r } => remaining.push(r),
            VerificationOutcome::Unknown | VerificationOutcome::Exhausted => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    remaining.sort_unstable();
    assert_eq!(remaining, [0, 1, 2, 3, 4]);
}

/// Expired verifications, link tokens and mailboxes are purged; live ones
/// stay.
pub async fn expired_short_lived_rows_are_purged(store: &dyn Store) {
    let alice = account_with_keys(store, "alice", 0).await;
    let old = verification_record(100);
    let live = verification_record(1000);
    store.save_verification(old.clone()).await.unwrap();
    store.save_verification(live.clone()).await.unwrap();
    store
        .save_link_token(b"old".to_vec(), alice, 100)
        .await
        .unwrap();
    store
        .save_link_token(b"live".to_vec(), alice, 1000)
        .await
        .unwrap();
    let (old_box, live_box) = (Uuid::new_v4(), Uuid::new_v4());
    store.open_mailbox(old_box, 100).await.unwrap();
    store.open_mailbox(live_box, 1000).await.unwrap();
    store
        .fill_mailbox(old_box, b"x".to_vec(), 50)
        .await
        .unwrap();

    assert_eq!(store.purge_expired(100).await.unwrap(), 3);
    assert_eq!(store.purge_expired(100).await.unwrap(), 0);
    assert_eq!(store.verification(old.id).await.unwrap(), None);
    assert_eq!(store.verification(live.id).await.unwrap(), Some(live));
    assert_eq!(
        store.take_link_token(b"live", 100).await.unwrap(),
        Some(alice)
    );
    assert_eq!(
        store
            .fill_mailbox(live_box, b"y".to_vec(), 100)
            .await
            .unwrap(),
        MailboxFill::Filled
    );
    // Expired rows that were purged cannot be told from unknown ones.
    assert_eq!(
        store.fill_mailbox(old_box, b"y".to_vec(), 0).await.unwrap(),
        MailboxFill::Missing
    );
}

/// `ping` answers.
pub async fn ping_answers(store: &dyn Store) {
    store.ping().await.expect("ping");
}

// ---- concurrency ----

type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Writes that fail (an address taken, an unknown account) at the same time
/// as writes that succeed: each gets its own answer, and the successful
/// ones are stored.
pub async fn failed_writes_do_not_spoil_concurrent_ones(store: &dyn Store) {
    let alice = account_with_keys(store, "alice", 0).await;
    let creates: Vec<NewAccount> = (0..10).map(|_| new_account("bob", full_keys(1))).collect();
    let envelopes: Vec<QueuedEnvelope> = (0..10)
        .map(|i| envelope_for(alice, DeviceId::PRIMARY, i))
        .collect();

    let mut writes: Vec<Boxed<'_, (&str, Result<(), StoreError>)>> = Vec::new();
    let envelopes = &envelopes;
    for (i, account) in creates.iter().enumerate() {
        writes.push(Box::pin(async move {
            ("create", store.create_account(account.clone()).await)
        }));
        writes.push(Box::pin(async move {
            ("enqueue", store.enqueue(vec![envelopes[i].clone()]).await)
        }));
        writes.push(Box::pin(async move {
            let unknown = AccountId::random();
            let added = store
                .add_device(unknown, new_device("x", KeyUpdate::default(), NOW), 5)
                .await;
            ("add", added.map(drop))
        }));
    }
    let results = join_all(writes).await;

    let created: Vec<_> = results
        .iter()
        .enumerate()
        .filter(|(_, (what, r))| *what == "create" && r.is_ok())
        .map(|(i, _)| creates[i / 3].id)
        .collect();
    assert_eq!(created.len(), 1, "{results:?}");
    for (what, result) in &results {
        match *what {
            "create" => assert!(
                matches!(result, Ok(()) | Err(StoreError::AddressTaken(_))),
                "{result:?}"
            ),
            "enqueue" => assert!(result.is_ok(), "{result:?}"),
            _ => assert!(
                matches!(result, Err(StoreError::NoSuchAccount)),
                "{result:?}"
            ),
        }
    }
    let bob = store
        .account_by_address(&address("bob@conformance"))
        .await
        .unwrap()
        .expect("bob");
    assert_eq!(bob.id, created[0]);
    for account in &creates {
        if account.id != bob.id {
            assert_eq!(store.account(account.id).await.unwrap(), None);
        }
    }
    let mut queued = ids(&all_queued(store, alice, DeviceId::PRIMARY).await);
    let mut expected = queued_ids(envelopes);
    queued.sort_unstable();
    expected.sort_unstable();
    assert_eq!(queued, expected);
}

/// 20 tasks each queue 20 envelopes one by one to one device: all 400 are
/// queued, and each sender's come in the order it sent them.
pub async fn enqueues_from_many_tasks_keep_each_senders_order(store: Arc<dyn Store>) {
    let account = account_with_keys(&*store, "alice", 0).await;
    let tasks: Vec<_> = (0..20u64)
        .map(|sender| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for n in 0..20 {
                    let envelope = envelope_for(account, DeviceId::PRIMARY, sender * 1000 + n);
                    store.enqueue(vec![envelope]).await.expect("enqueue");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    let queued = all_queued(&*store, account, DeviceId::PRIMARY).await;
    assert_eq!(queued.len(), 400);
    for sender in 0..20 {
        let sent: Vec<u64> = queued
            .iter()
            .map(|e| e.client_timestamp)
            .filter(|t| t / 1000 == sender)
            .collect();
        assert_eq!(sent, (0..20).map(|n| sender * 1000 + n).collect::<Vec<_>>());
    }
}

// ---- durability ----

/// Something of every kind a store keeps, for a backend's durability
/// tests: [`write`](Self::write) it through one store, start over on the
/// same data (a restart, a crash, a new pool), and [`check`](Self::check)
/// it through the new store. Of 100 envelopes the first 10 are
/// acknowledged; one of 10 one-time keys of each kind is claimed.
pub struct Kept {
    account: NewAccount,
    verification: VerificationRecord,
    mailbox: Uuid,
    envelopes: Vec<QueuedEnvelope>,
}

impl Default for Kept {
    fn default() -> Self {
        let account = new_account("kept", full_keys(10));
        let envelopes = (0..100)
            .map(|n| envelope_for(account.id, DeviceId::PRIMARY, n))
            .collect();
        Self {
            account,
            verification: VerificationRecord {
                id: Uuid::new_v4(),
                address: address("+15551234567@chime"),
                code_hash: vec![9; 32],
                expires_at: LATER,
                attempts: 2,
            },
            mailbox: Uuid::new_v4(),
            envelopes,
        }
    }
}

impl Kept {
    /// Writes everything, each envelope in a call of its own, all at once.
    pub async fn write(&self, store: &dyn Store) {
        let alice = self.account.id;
        store.create_account(self.account.clone()).await.unwrap();
        let writes = self
            .envelopes
            .iter()
            .map(|e| store.enqueue(vec![e.clone()]));
        for result in join_all(writes).await {
            result.unwrap();
        }
        let acked = queued_ids(&self.envelopes[..10]);
        let acknowledged = store
            .acknowledge(alice, DeviceId::PRIMARY, &acked)
            .await
            .unwrap();
        assert_eq!(acknowledged, 10);
        store.claim_keys(alice, DeviceId::PRIMARY).await.unwrap();
        store
            .save_verification(self.verification.clone())
            .await
            .unwrap();
        store
            .save_link_token(b"link".to_vec(), alice, LATER)
            .await
            .unwrap();
        store.open_mailbox(self.mailbox, LATER).await.unwrap();
        let filled = store
            .fill_mailbox(self.mailbox, b"hi".to_vec(), NOW)
            .await
            .unwrap();
        assert_eq!(filled, MailboxFill::Filled);
    }

    /// Checks that `store` has everything [`write`](Self::write) was told
    /// was done.
    pub async fn check(&self, store: &dyn Store) {
        let alice = self.account.id;
        let found = store.account(alice).await.unwrap().unwrap();
        assert_eq!(found.address, self.account.address);
        let queued: HashSet<Uuid> = ids(&all_queued(store, alice, DeviceId::PRIMARY).await)
            .into_iter()
            .collect();
        let expected: HashSet<Uuid> = queued_ids(&self.envelopes[10..]).into_iter().collect();
        assert_eq!(queued, expected);
        let counts = store.key_counts(alice, DeviceId::PRIMARY).await.unwrap();
        assert_eq!((counts.pre_keys, counts.kyber_pre_keys), (9, 9));
        assert_eq!(
            store.verification(self.verification.id).await.unwrap(),
            Some(self.verification.clone())
        );
        assert_eq!(
            store.take_link_token(b"link", NOW).await.unwrap(),
            Some(alice)
        );
        assert_eq!(
            store.take_mailbox(self.mailbox, NOW).await.unwrap(),
            Some(b"hi".to_vec())
        );
    }
}

#[cfg(test)]
mod tests {
    /// A check that is not in `store_conformance_tests!` would never run.
    #[test]
    fn the_macro_runs_every_check() {
        let source = include_str!("conformance.rs");
        let (macro_text, checks) = source
            .split_once("// ---- fixtures ----")
            .expect("the macro comes before the fixtures");
        let names: Vec<&str> = checks
            .lines()
            .filter_map(|line| line.strip_prefix("pub async fn "))
            .filter_map(|rest| rest.split_once('(').map(|(name, _)| name))
            .collect();
        assert!(names.len() > 20, "{names:?}");
        for name in names {
            assert!(
                macro_text.contains(&format!("            {name},")),
                "{name} is missing from store_conformance_tests!"
            );
        }
    }
}
