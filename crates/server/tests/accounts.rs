//! Registration on every app, phone verification, handles, who-am-i and
//! the directory.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

mod common;

use std::time::Duration;

use common::*;
use passerelle_proto::ProblemType;
use passerelle_proto::address::{RANDOM_ID_ALPHABET, RANDOM_ID_LENGTH};
use passerelle_proto::api::accounts::{
    AccountInfo, AppList, DirectoryEntry, Verification, VerificationRequest, VerificationSession,
};
use passerelle_server::Config;

async fn request_code(hub: &Hub, phone: &str) -> VerificationSession {
    hub.post(
        "/v1/verifications",
        &VerificationRequest {
            app: "chime".parse().unwrap(),
            handle: phone.to_owned(),
        },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn lists_the_three_demo_apps() {
    let hub = Hub::start().await;
    let apps: AppList = hub.get_anon("/v1/apps").await.unwrap();
    let ids: Vec<_> = apps.apps.iter().map(|a| a.id.to_string()).collect();
    assert_eq!(ids, ["chime", "murmur", "parley"]);
}

#[tokio::test]
async fn registers_on_a_phone_app_with_a_verified_code() {
    capture_logs();
    let hub = Hub::start().await;
    let phone = "+15550000001";
    let session = request_code(&hub, phone).await;
    let code = logged_code(phone);
    assert_eq!(session.dev_code.as_deref(), Some(code.as_str()));
    let verification = Verification {
        session_id: session.session_id,
        code,
    };
    let client = hub
        .register("chime", Some(phone), Some(verification.clone()))
        .await
        .unwrap();
    assert_eq!(client.address.to_string(), "+15550000001@chime");
    let me: AccountInfo = client.get(&hub, "/v1/accounts/me").await.unwrap();
    assert_eq!(me.account_id, client.account_id);
    assert_eq!(me.device_id.get(), 1);
    // The verification is used up.
    let again = hub.register("chime", Some(phone), Some(verification)).await;
    assert_problem(again, ProblemType::VerificationFailed);
}

#[tokio::test]
async fn a_phone_app_needs_a_verification() {
    let hub = Hub::start().await;
    let none = hub.register("chime", Some("+15550000002"), None).await;
    assert_problem(none, ProblemType::InvalidRequest);
    let bad_number = hub.register("chime", Some("5550000002"), None).await;
    assert_problem(bad_number, ProblemType::InvalidRequest);
    // Usernames and random ids do not take verifications.
    let r = hub
        .post::<_, VerificationSession>(
            "/v1/verifications",
            &VerificationRequest {
                app: "parley".parse().unwrap(),
                handle: "alice".into(),
            },
        )
        .await;
    assert_problem(r, ProblemType::InvalidRequest);
    let r = hub
        .post::<_, VerificationSession>(
            "/v1/verifications",
            &VerificationRequest {
                app: "nowhere".parse().unwrap(),
                handle: "+15550000002".into(),
            },
        )
        .await;
    assert_problem(r, ProblemType::UnknownApp);
}

#[tokio::test]
async fn wrong_codes_count_and_run_out() {
    capture_logs();
    let hub = Hub::start().await;
    let phone = "+15550000003";
    let session = request_code(&hub, phone).await;
    let code = logged_code(phone);
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for attempt in 1..=5 {
        let r = hub
            .register(
                "chime",
                Some(phone),
                Some(Verification {
                    session_id: session.session_id,
                    code: wrong.into(),
                }),
            )
            .await;
        let p = assert_problem(r, ProblemType::VerificationFailed);
        if attempt < 5 {
            assert!(
                p.detail.contains(&format!("{} attempts left", 5 - attempt)),
                "{p}"
            );
        }
    }
    // After five wrong codes even the right one is refused.
    let r = hub
        .register(
            "chime",
            Some(phone),
            Some(Verification {
                session_id: session.session_id,
                code,
            }),
        )
        .await;
    assert_problem(r, ProblemType::VerificationFailed);
}

#[tokio::test]
async fn codes_expire_after_ten_minutes() {
    capture_logs();
    // No purge while the test runs: a purged code is unknown, not expired.
    let mut config = Config::default();
    config.expiry.interval = Duration::from_secs(3600);
    let hub = Hub::with_config(config).await;
    let phone = "+15550000004";
    let session = request_code(&hub, phone).await;
    let code = logged_code(phone);
    hub.clock.advance(Duration::from_secs(10 * 60));
    let r = hub
        .register(
            "chime",
            Some(phone),
            Some(Verification {
                session_id: session.session_id,
                code,
            }),
        )
        .await;
    let p = assert_problem(r, ProblemType::VerificationFailed);
    assert!(p.detail.contains("expired"), "{p}");
}

#[tokio::test]
async fn a_code_is_for_one_number() {
    capture_logs();
    let hub = Hub::start().await;
    let session = request_code(&hub, "+15550000005").await;
    let code = logged_code("+15550000005");
    let r = hub
        .register(
            "chime",
            Some("+15550000006"),
            Some(Verification {
                session_id: session.session_id,
                code,
            }),
        )
        .await;
    assert_problem(r, ProblemType::VerificationFailed);
}

#[tokio::test]
async fn usernames_are_canonical_and_unique() {
    let hub = Hub::start().await;
    let alice = hub.register_username("Alice_1").await;
    assert_eq!(alice.address.to_string(), "alice_1@parley");
    let taken = hub.register("parley", Some("ALICE_1"), None).await;
    assert_problem(taken, ProblemType::HandleTaken);
    let invalid = hub.register("parley", Some("1alice"), None).await;
    assert_problem(invalid, ProblemType::InvalidRequest);
    let missing = hub.register("parley", None, None).await;
    assert_problem(missing, ProblemType::InvalidRequest);
    let unknown = hub.register("nowhere", Some("alice"), None).await;
    assert_problem(unknown, ProblemType::UnknownApp);
}

#[tokio::test]
async fn random_id_apps_draw_the_handle() {
    let hub = Hub::start().await;
    let a = hub.register_random().await;
    let b = hub.register_random().await;
    for c in [&a, &b] {
        let handle = c.address.handle.as_str();
        assert_eq!(handle.len(), RANDOM_ID_LENGTH);
        assert!(
            handle.bytes().all(|b| RANDOM_ID_ALPHABET.contains(&b)),
            "{handle}"
        );
        assert_eq!(c.address.app.as_str(), "murmur");
    }
    assert_ne!(a.address, b.address);
    let chosen = hub.register("murmur", Some("k3j9x2pq"), None).await;
    assert_problem(chosen, ProblemType::InvalidRequest);
}

#[tokio::test]
async fn the_directory_finds_accounts_by_address() {
    let hub = Hub::start().await;
    let alice = hub.register_username("dora").await;
    let bob = hub.register_random().await;
    let found: DirectoryEntry = bob.get(&hub, "/v1/directory/Dora@parley").await.unwrap();
    assert_eq!(found.account_id, alice.account_id);
    let found: DirectoryEntry = alice
        .get(&hub, &format!("/v1/directory/{}", bob.address))
        .await
        .unwrap();
    assert_eq!(found.account_id, bob.account_id);
    let r = alice
        .get::<DirectoryEntry>(&hub, "/v1/directory/nobody@parley")
        .await;
    assert_problem(r, ProblemType::NotFound);
    let r = alice
        .get::<DirectoryEntry>(&hub, "/v1/directory/no-at-sign")
        .await;
    assert_problem(r, ProblemType::InvalidParameter);
}

#[tokio::test]
async fn registration_checks_every_field() {
    use passerelle_proto::api::accounts::RegisterAccount;
    use passerelle_signal::IdentityKeyPair;
    let hub = Hub::start().await;
    let identity = IdentityKeyPair::generate(&mut rand::rngs::OsRng);
    let good = RegisterAccount {
        app: "parley".parse().unwrap(),
        handle: Some("fields".into()),
        verification: None,
        password: PASSWORD.into(),
        registration_id: 42,
        device_name: "phone".into(),
        identity_key: identity.identity_key().serialize().to_vec().into(),
        keys: device_keys(&identity, 1, 2),
    };
    let cases: Vec<(RegisterAccount, ProblemType)> = vec![
        (
            RegisterAccount {
                password: "short".into(),
                ..good.clone()
            },
            ProblemType::InvalidRequest,
        ),
        (
            RegisterAccount {
                registration_id: 0,
                ..good.clone()
            },
            ProblemType::InvalidRequest,
        ),
        (
            RegisterAccount {
                registration_id: 16381,
                ..good.clone()
            },
            ProblemType::InvalidRequest,
        ),
        (
            RegisterAccount {
                identity_key: vec![5; 32].into(),
                ..good.clone()
            },
            ProblemType::InvalidRequest,
        ),
        (
            RegisterAccount {
                keys: device_keys(&IdentityKeyPair::generate(&mut rand::rngs::OsRng), 1, 2),
                ..good.clone()
            },
            ProblemType::BadSignature,
        ),
    ];
    for (body, kind) in cases {
        let r = hub
            .post::<_, passerelle_proto::api::accounts::Registered>("/v1/accounts", &body)
            .await;
        assert_problem(r, kind);
    }
    // Nothing was created by the refused attempts.
    let ok: passerelle_proto::api::accounts::Registered =
        hub.post("/v1/accounts", &good).await.unwrap();
    assert_eq!(ok.address.to_string(), "fields@parley");
}

#[tokio::test]
async fn without_dev_mode_no_code_is_pretended() {
    let config = passerelle_server::Config {
        dev_mode: false,
        ..passerelle_server::Config::default()
    };
    let hub = Hub::with_config(config).await;
    let r = hub
        .post::<_, VerificationSession>(
            "/v1/verifications",
            &VerificationRequest {
                app: "chime".parse().unwrap(),
                handle: "+15550000009".into(),
            },
        )
        .await;
    assert_problem(r, ProblemType::Unavailable);
}

/// Twenty wrong codes at once are each counted: at most five are judged
/// "wrong", and then even the right code is refused. On SQLite, where reads
/// and writes interleave, a read-then-write check would count far fewer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_wrong_codes_are_all_counted() {
    let hub = Hub::sqlite().await;
    let phone = "+15550000042";
    let session = request_code(&hub, phone).await;
    let code = session.dev_code.clone().unwrap();
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let hub = std::sync::Arc::new(hub);
    let guesses: Vec<_> = (0..20)
        .map(|_| {
            let hub = hub.clone();
            let session_id = session.session_id;
            tokio::spawn(async move {
                hub.register(
                    "chime",
                    Some(phone),
                    Some(Verification {
                        session_id,
                        code: wrong.into(),
                    }),
                )
                .await
            })
        })
        .collect();
    let mut counted = 0;
    for guess in guesses {
        let p = assert_problem(guess.await.unwrap(), ProblemType::VerificationFailed);
        if p.detail.starts_with("wrong code") {
            counted += 1;
        }
    }
    assert!(counted <= 5, "{counted} wrong codes were counted");
    let r = hub
        .register(
            "chime",
            Some(phone),
            Some(Verification {
                session_id: session.session_id,
                code,
            }),
        )
        .await;
    assert_problem(r, ProblemType::VerificationFailed);
}
