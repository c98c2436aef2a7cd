//! Devices: linking with tokens and mailboxes, the device limit, listing
//! and removing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

mod common;

use std::time::Duration;

use common::*;
use passerelle_proto::api::Empty;
use passerelle_proto::api::devices::{
    DeviceList, LinkDevice, LinkToken, Mailbox, ProvisioningMessage,
};
use passerelle_proto::{DeviceId, ProblemType};
use passerelle_server::Config;

#[tokio::test]
async fn links_lists_and_removes_devices() {
    let hub = Hub::start().await;
    let alice = hub.register_username("linker").await;
    let laptop = hub.link_device(&alice, "laptop").await.unwrap();
    let tablet = hub.link_device(&alice, "tablet").await.unwrap();
    assert_eq!(tablet.device_id.get(), 3);

    let list: DeviceList = laptop.get(&hub, "/v1/devices").await.unwrap();
    let names: Vec<_> = list.devices.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["test", "laptop", "tablet"]);

    let r = laptop.delete::<Empty>(&hub, "/v1/devices/1").await;
    assert_problem(r, ProblemType::Forbidden);
    let r = alice.delete::<Empty>(&hub, "/v1/devices/9").await;
    assert_problem(r, ProblemType::NotFound);
    let r = alice.delete::<Empty>(&hub, "/v1/devices/0").await;
    assert_problem(r, ProblemType::InvalidParameter);

    // Removing a connected device closes its connection and its
    // credentials stop working.
    let mut socket = tablet.connect(&hub).await;
    assert!(socket.backlog().await.is_empty());
    let _: Empty = alice.delete(&hub, "/v1/devices/3").await.unwrap();
    assert!(socket.try_next(Duration::from_secs(2)).await.is_none());
    let r = tablet.get::<DeviceList>(&hub, "/v1/devices").await;
    assert_problem(r, ProblemType::Unauthorized);
    let list: DeviceList = alice.get(&hub, "/v1/devices").await.unwrap();
    assert_eq!(list.devices.len(), 2);
}

#[tokio::test]
async fn link_tokens_work_once_and_expire() {
    let hub = Hub::start().await;
    let alice = hub.register_username("tokens").await;
    let token: LinkToken = alice
        .post_empty(&hub, "/v1/devices/link-tokens")
        .await
        .unwrap();
    let link = |token: String| LinkDevice {
        token,
        password: PASSWORD.into(),
        registration_id: 7,
        device_name: "new".into(),
        keys: device_keys(&alice.identity, 1, 1),
    };
    let linked: passerelle_proto::api::devices::Linked = hub
        .post("/v1/devices", &link(token.token.clone()))
        .await
        .unwrap();
    assert_eq!(linked.device_id, DeviceId::new(2).unwrap());
    let r = hub
        .post::<_, passerelle_proto::api::devices::Linked>("/v1/devices", &link(token.token))
        .await;
    assert_problem(r, ProblemType::Forbidden);

    let token: LinkToken = alice
        .post_empty(&hub, "/v1/devices/link-tokens")
        .await
        .unwrap();
    hub.clock.advance(Duration::from_secs(10 * 60));
    let r = hub
        .post::<_, passerelle_proto::api::devices::Linked>("/v1/devices", &link(token.token))
        .await;
    assert_problem(r, ProblemType::Forbidden);

    // Keys of a new device must be signed by the account's identity key.
    let token: LinkToken = alice
        .post_empty(&hub, "/v1/devices/link-tokens")
        .await
        .unwrap();
    let stranger = passerelle_signal::IdentityKeyPair::generate(&mut rand::rngs::OsRng);
    let r = hub
        .post::<_, passerelle_proto::api::devices::Linked>(
            "/v1/devices",
            &LinkDevice {
                keys: device_keys(&stranger, 1, 1),
                ..link(token.token)
            },
        )
        .await;
    assert_problem(r, ProblemType::BadSignature);
}

#[tokio::test]
async fn accounts_have_at_most_max_devices() {
    let mut config = Config::default();
    config
        .apps
        .get_mut(&"parley".parse().unwrap())
        .unwrap()
        .max_devices = 2;
    let hub = Hub::with_config(config).await;
    let alice = hub.register_username("crowded").await;
    hub.link_device(&alice, "second").await.unwrap();
    let r = hub.link_device(&alice, "third").await;
    assert_problem(r, ProblemType::TooManyDevices);
}

#[tokio::test]
async fn provisioning_mailboxes() {
    let hub = Hub::start().await;
    let alice = hub.register_username("mailer").await;
    let mailbox: Mailbox = hub.post_empty("/v1/provisioning").await.unwrap();
    let path = format!("/v1/provisioning/{}", mailbox.id);
    // Empty until filled.
    assert_problem(
        hub.get_anon::<ProvisioningMessage>(&path).await,
        ProblemType::NotFound,
    );
    // Filling needs credentials.
    let message = ProvisioningMessage {
        ciphertext: vec![7; 100].into(),
    };
    let r = hub
        .http
        .put(hub.url(&path))
        .json(&message)
        .send()
        .await
        .unwrap();
    assert_problem(answer::<Empty>(r).await, ProblemType::Unauthorized);
    // Too large.
    let big = ProvisioningMessage {
        ciphertext: vec![7; 16 * 1024 + 1].into(),
    };
    assert_problem(
        alice.put::<_, Empty>(&hub, &path, &big).await,
        ProblemType::BodyTooLarge,
    );
    let _: Empty = alice.put(&hub, &path, &message).await.unwrap();
    let got: ProvisioningMessage = hub.get_anon(&path).await.unwrap();
    assert_eq!(got, message);
    // Deleted once fetched.
    assert_problem(
        hub.get_anon::<ProvisioningMessage>(&path).await,
        ProblemType::NotFound,
    );
    let unknown = format!("/v1/provisioning/{}", uuid::Uuid::new_v4());
    assert_problem(
        alice.put::<_, Empty>(&hub, &unknown, &message).await,
        ProblemType::NotFound,
    );
    // Mailboxes expire.
    let mailbox: Mailbox = hub.post_empty("/v1/provisioning").await.unwrap();
    hub.clock.advance(Duration::from_secs(10 * 60));
    let path = format!("/v1/provisioning/{}", mailbox.id);
    assert_problem(
        alice.put::<_, Empty>(&hub, &path, &message).await,
        ProblemType::NotFound,
    );
}

#[tokio::test]
async fn only_the_primary_manages_other_devices() {
    let hub = Hub::start().await;
    let alice = hub.register_username("primary").await;
    let laptop = hub.link_device(&alice, "laptop").await.unwrap();
    let tablet = hub.link_device(&alice, "tablet").await.unwrap();

    let r = laptop
        .post_empty::<LinkToken>(&hub, "/v1/devices/link-tokens")
        .await;
    assert_problem(r, ProblemType::Forbidden);
    let r = laptop.delete::<Empty>(&hub, "/v1/devices/3").await;
    assert_problem(r, ProblemType::Forbidden);

    // Any device may remove itself.
    let _: Empty = laptop.delete(&hub, "/v1/devices/2").await.unwrap();
    let r = alice.delete::<Empty>(&hub, "/v1/devices/1").await;
    assert_problem(r, ProblemType::Forbidden);
    let list: DeviceList = tablet.get(&hub, "/v1/devices").await.unwrap();
    let ids: Vec<u32> = list.devices.iter().map(|d| d.device_id.get()).collect();
    assert_eq!(ids, [1, 3]);
}

#[tokio::test]
async fn the_first_provisioning_message_wins() {
    let hub = Hub::start().await;
    let alice = hub.register_username("firstwins").await;
    let mallory = hub.register_username("mallory").await;
    let mailbox: Mailbox = hub.post_empty("/v1/provisioning").await.unwrap();
    let path = format!("/v1/provisioning/{}", mailbox.id);
    let first = ProvisioningMessage {
        ciphertext: b"first".to_vec().into(),
    };
    let second = ProvisioningMessage {
        ciphertext: b"second".to_vec().into(),
    };
    let _: Empty = alice.put(&hub, &path, &first).await.unwrap();
    let r = mallory.put::<_, Empty>(&hub, &path, &second).await;
    let p = assert_problem(r, ProblemType::Forbidden);
    assert!(p.detail.contains("already holds a message"), "{p}");
    let got: ProvisioningMessage = hub.get_anon(&path).await.unwrap();
    assert_eq!(got, first);
}

#[tokio::test]
async fn expired_short_lived_state_is_purged() {
    let hub = Hub::start().await;
    let session: passerelle_proto::api::accounts::VerificationSession = hub
        .post(
            "/v1/verifications",
            &passerelle_proto::api::accounts::VerificationRequest {
                app: "chime".parse().unwrap(),
                handle: "+15550009999".into(),
            },
        )
        .await
        .unwrap();
    let store = hub.state.store();
    assert!(
        store
            .verification(session.session_id)
            .await
            .unwrap()
            .is_some()
    );
    hub.clock.advance(Duration::from_secs(10 * 60));
    for _ in 0..500 {
        if store
            .verification(session.session_id)
            .await
            .unwrap()
            .is_none()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the expired verification was not purged within 5 s");
}

async fn ids_are_never_given_again(hub: Hub) {
    let alice = hub.register_username("reuser").await;
    let laptop = hub.link_device(&alice, "laptop").await.unwrap();
    assert_eq!(laptop.device_id.get(), 2);
    // The primary removes device 2; the next device gets 3, not 2.
    let _: Empty = alice.delete(&hub, "/v1/devices/2").await.unwrap();
    let tablet = hub.link_device(&alice, "tablet").await.unwrap();
    assert_eq!(tablet.device_id.get(), 3);
    // A device removing itself frees no id either.
    let _: Empty = tablet.delete(&hub, "/v1/devices/3").await.unwrap();
    let phone = hub.link_device(&alice, "phone").await.unwrap();
    assert_eq!(phone.device_id.get(), 4);
    let list: DeviceList = alice.get(&hub, "/v1/devices").await.unwrap();
    let ids: Vec<u32> = list.devices.iter().map(|d| d.device_id.get()).collect();
    assert_eq!(ids, [1, 4]);
    // The old device's credentials do not work for the new one's id.
    let r = laptop.get::<DeviceList>(&hub, "/v1/devices").await;
    assert_problem(r, ProblemType::Unauthorized);
}

#[tokio::test]
async fn removed_device_ids_are_never_given_again() {
    ids_are_never_given_again(Hub::start().await).await;
}

#[tokio::test]
async fn removed_device_ids_are_never_given_again_on_sqlite() {
    ids_are_never_given_again(Hub::sqlite().await).await;
}
