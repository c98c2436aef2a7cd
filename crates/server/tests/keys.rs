//! Prekeys: uploads are signature-checked, counts are right, and claims
//! never hand out the same one-time key twice, also concurrently.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::*;
use passerelle_proto::ProblemType;
use passerelle_proto::api::Empty;
use passerelle_proto::api::keys::{Bundles, KeyCounts, UploadKeys};
use passerelle_signal::{IdentityKeyPair, KyberPreKeyRecord, PublicKey, SignedPreKeyRecord};
use rand::rngs::OsRng;

#[tokio::test]
async fn counts_and_uploads() {
    let hub = Hub::start().await;
    let alice = hub.register_username("kalice").await;
    let counts: KeyCounts = alice.get(&hub, "/v1/keys").await.unwrap();
    assert_eq!((counts.pre_keys, counts.kyber_pre_keys), (5, 5));
    assert_eq!(counts.low_water_mark, 10);

    let more = UploadKeys {
        pre_keys: one_time_keys(100, 20),
        kyber_pre_keys: (200..203)
            .map(|id| {
                kyber(&KyberPreKeyRecord::generate(
                    id,
                    0,
                    &alice.identity,
                    &mut OsRng,
                ))
            })
            .collect(),
        ..UploadKeys::default()
    };
    let _: Empty = alice.put(&hub, "/v1/keys", &more).await.unwrap();
    let counts: KeyCounts = alice.get(&hub, "/v1/keys").await.unwrap();
    assert_eq!((counts.pre_keys, counts.kyber_pre_keys), (25, 8));

    // A new signed prekey is used by the next claim.
    let signed = SignedPreKeyRecord::generate(77, 0, &alice.identity, &mut OsRng);
    let upload = UploadKeys {
        signed_pre_key: Some(passerelle_proto::api::keys::SignedPreKey {
            key_id: 77,
            public_key: signed.key_pair.public.serialize().to_vec().into(),
            signature: signed.signature.to_vec().into(),
        }),
        ..UploadKeys::default()
    };
    let _: Empty = alice.put(&hub, "/v1/keys", &upload).await.unwrap();
    let bob = hub.register_username("kbob").await;
    let bundles: Bundles = bob
        .get(&hub, &format!("/v1/keys/{}/1", alice.account_id))
        .await
        .unwrap();
    assert_eq!(bundles.devices[0].signed_pre_key.key_id, 77);
    assert_eq!(
        bundles.identity_key.as_slice(),
        alice.identity.identity_key().serialize()
    );
    // The hub hands out keys whose signatures verify.
    let identity = alice.identity.identity_key();
    let b = &bundles.devices[0];
    assert!(identity.public_key().verify(
        &[b.signed_pre_key.public_key.as_slice()],
        b.signed_pre_key.signature.as_slice()
    ));
    assert!(identity.public_key().verify(
        &[b.kyber_pre_key.public_key.as_slice()],
        b.kyber_pre_key.signature.as_slice()
    ));
    assert!(PublicKey::deserialize(b.pre_key.as_ref().unwrap().public_key.as_slice()).is_ok());
}

#[tokio::test]
async fn uploads_with_bad_signatures_are_refused_whole() {
    let hub = Hub::start().await;
    let alice = hub.register_username("badsig").await;
    let stranger = IdentityKeyPair::generate(&mut OsRng);
    let forged = KyberPreKeyRecord::generate(300, 0, &stranger, &mut OsRng);
    let upload = UploadKeys {
        pre_keys: one_time_keys(100, 3),
        kyber_pre_keys: vec![kyber(&forged)],
        ..UploadKeys::default()
    };
    let r = alice.put::<_, Empty>(&hub, "/v1/keys", &upload).await;
    assert_problem(r, ProblemType::BadSignature);
    // A signature over other bytes fails too.
    let mut tampered = kyber(&KyberPreKeyRecord::generate(
        301,
        0,
        &alice.identity,
        &mut OsRng,
    ));
    tampered.public_key.0[5] ^= 1;
    let upload = UploadKeys {
        last_resort_kyber_pre_key: Some(tampered),
        ..UploadKeys::default()
    };
    let r = alice.put::<_, Empty>(&hub, "/v1/keys", &upload).await;
    // A flipped bit may also make the key invalid: either way, refused.
    let p = r.unwrap_err();
    assert!(
        matches!(
            p.kind(),
            Some(ProblemType::BadSignature | ProblemType::InvalidRequest)
        ),
        "{p}"
    );
    // Nothing of the refused uploads was stored.
    let counts: KeyCounts = alice.get(&hub, "/v1/keys").await.unwrap();
    assert_eq!((counts.pre_keys, counts.kyber_pre_keys), (5, 5));
    // Too many keys at once.
    let upload = UploadKeys {
        pre_keys: one_time_keys(1000, 101),
        ..UploadKeys::default()
    };
    let r = alice.put::<_, Empty>(&hub, "/v1/keys", &upload).await;
    assert_problem(r, ProblemType::InvalidRequest);
}

#[tokio::test]
async fn claims_never_repeat_a_one_time_key() {
    let hub = Hub::start().await;
    let alice = hub.register_username("claimed").await;
    let bob = hub.register_username("claimer").await;
    let path = format!("/v1/keys/{}/*", alice.account_id);
    let mut pre_keys = HashSet::new();
    let mut kyber_keys = HashSet::new();
    for _ in 0..5 {
        let b: Bundles = bob.get(&hub, &path).await.unwrap();
        assert_eq!(b.devices.len(), 1);
        assert!(pre_keys.insert(b.devices[0].pre_key.as_ref().unwrap().key_id));
        assert!(kyber_keys.insert(b.devices[0].kyber_pre_key.key_id));
    }
    // Then no one-time prekey is left, and Kyber falls back to the last
    // resort key (id 1 in these tests), again and again.
    for _ in 0..2 {
        let b: Bundles = bob.get(&hub, &path).await.unwrap();
        assert!(b.devices[0].pre_key.is_none());
        assert_eq!(b.devices[0].kyber_pre_key.key_id, 1);
    }
    let counts: KeyCounts = alice.get(&hub, "/v1/keys").await.unwrap();
    assert_eq!((counts.pre_keys, counts.kyber_pre_keys), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_never_repeat_a_one_time_key() {
    concurrent_claims(Hub::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_never_repeat_a_one_time_key_on_sqlite() {
    concurrent_claims(Hub::sqlite().await).await;
}

async fn concurrent_claims(hub: Hub) {
    let hub = Arc::new(hub);
    let alice = hub.register_username("popular").await;
    let _: Empty = alice
        .put(
            &hub,
            "/v1/keys",
            &UploadKeys {
                pre_keys: one_time_keys(100, 60),
                ..UploadKeys::default()
            },
        )
        .await
        .unwrap();
    let mut claimers = Vec::new();
    for i in 0..4 {
        claimers.push(hub.register_username(&format!("claimer{i}")).await);
    }
    let mut tasks = Vec::new();
    for _round in 0..20 {
        for claimer in &claimers {
            let hub = hub.clone();
            let claimer = claimer.clone();
            let path = format!("/v1/keys/{}/1", alice.account_id);
            tasks.push(tokio::spawn(async move {
                let b: Bundles = claimer.get(&hub, &path).await.unwrap();
                b.devices[0].pre_key.as_ref().map(|k| k.key_id)
            }));
        }
    }
    let mut seen = HashSet::new();
    let mut handed_out = 0;
    for task in tasks {
        if let Some(id) = task.await.unwrap() {
            assert!(seen.insert(id), "key {id} handed out twice");
            handed_out += 1;
        }
    }
    // 80 claims, 65 keys: every key handed out exactly once.
    assert_eq!(handed_out, 65);
}

#[tokio::test]
async fn bundles_of_every_device_and_of_nobody() {
    let hub = Hub::start().await;
    let alice = hub.register_username("bundled").await;
    let bob = hub.register_username("asker").await;
    let r = bob
        .get::<Bundles>(&hub, &format!("/v1/keys/{}/7", alice.account_id))
        .await;
    assert_problem(r, ProblemType::NotFound);
    let r = bob
        .get::<Bundles>(
            &hub,
            &format!("/v1/keys/{}/*", passerelle_proto::AccountId::random()),
        )
        .await;
    assert_problem(r, ProblemType::NotFound);
    let r = bob
        .get::<Bundles>(&hub, &format!("/v1/keys/{}/x", alice.account_id))
        .await;
    assert_problem(r, ProblemType::InvalidParameter);
    let r = bob.get::<Bundles>(&hub, "/v1/keys/not-a-uuid/1").await;
    assert_problem(r, ProblemType::InvalidParameter);
    // One's own account, all devices: the caller's device is left out.
    let r = alice
        .get::<Bundles>(&hub, &format!("/v1/keys/{}/*", alice.account_id))
        .await;
    assert_problem(r, ProblemType::NotFound);
}
