//! Linking a new device to an account (see the
//! [`provisioning`](crate::provisioning) module for the cipher, and
//! `passerelle_proto::api::devices` for the protocol).
//!
//! On the new device: [`Client::begin_link`] → show [`PendingLink::uri`] →
//! [`PendingLink::complete`]. On a device of the account:
//! [`Client::approve_link`] with the URI.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use passerelle_proto::api::Empty;
use passerelle_proto::api::devices::{
    CreateLinkToken, FetchProvisioning, Link, LinkDevice, Mailbox, OpenMailbox, Provision,
    ProvisioningMessage,
};
use passerelle_proto::{Base64Bytes, ProblemType};
use passerelle_signal::{KeyPair, generate_registration_id};
use rand::rngs::OsRng;
use zeroize::Zeroizing;

use crate::client::{
    Client, NewDevice, POLL_INTERVAL, blocking, new_device_store, now_ms, random_password,
};
use crate::error::{ClientError, Result};
use crate::http::{Http, parse_server_url};
use crate::provisioning::{self, LinkUri, ProvisionData};
use crate::store::{LocalIdentity, meta};

/// The longest [`PendingLink::complete`] waits, whatever the mailbox's
/// expiry says.
pub const MAX_LINK_WAIT_MS: u64 = 10 * 60 * 1000;

/// A device waiting to be linked: it shows its URI, then waits for a device
/// of the account to approve it.
pub struct PendingLink {
    http: Http,
    db_path: PathBuf,
    device_name: String,
    mailbox: Mailbox,
    key: KeyPair,
}

impl std::fmt::Debug for PendingLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingLink")
            .field("mailbox", &self.mailbox.id)
            .field("db_path", &self.db_path)
            .finish()
    }
}

impl Client {
    /// Starts linking this (new) device: opens a provisioning mailbox on the
    /// hub and makes the key the account's device will encrypt to.
    pub async fn begin_link(
        server_url: &str,
        db_path: impl AsRef<Path>,
        device_name: &str,
    ) -> Result<PendingLink> {
        let db_path = db_path.as_ref().to_owned();
        if Client::open(&db_path).is_ok() {
            return Err(ClientError::AlreadyRegistered);
        }
        let http = Http::new(parse_server_url(server_url)?, None)?;
        let mailbox = http.call::<OpenMailbox>(&[], &Empty {}).await?;
        Ok(PendingLink {
            http,
            db_path,
            device_name: device_name.to_owned(),
            mailbox,
            key: KeyPair::generate(&mut OsRng),
        })
    }

    /// Approves a new device shown by its link URI: gives it this account's
    /// identity and a one-time link token, encrypted to its key.
    pub async fn approve_link(&self, uri: &str) -> Result<()> {
        let link: LinkUri = uri.parse()?;
        let token = self
            .inner
            .http
            .call::<CreateLinkToken>(&[], &Empty {})
            .await?;
        let identity = self
            .with_store(|s, _| s.local_identity()?.ok_or(ClientError::NotRegistered))
            .await?;
        let data = ProvisionData {
            identity: identity.pair,
            account_id: self.account_id(),
            address: self.address().clone(),
            link_token: Zeroizing::new(token.token),
        };
        let ciphertext = provisioning::encrypt(&link.key, &data.to_plaintext(), &mut OsRng)?;
        self.inner
            .http
            .call::<Provision>(
                &[&link.mailbox.to_string()],
                &ProvisioningMessage {
                    ciphertext: Base64Bytes(ciphertext),
                },
            )
            .await?;
        // A device is joining: the next sync copy asks the hub for the list.
        self.with_store(|s, _| s.set_meta(meta::OWN_DEVICES_REFRESHED_AT, 0))
            .await?;
        Ok(())
    }
}

impl PendingLink {
    /// The URI to show (as a QR code) to a device of the account.
    pub fn uri(&self) -> String {
        LinkUri {
            mailbox: self.mailbox.id,
            key: self.key.public,
        }
        .to_string()
    }

    /// Waits for the approval (polling the mailbox until it expires), then
    /// registers this device with the account and returns it.
    pub async fn complete(self) -> Result<Client> {
        let deadline = self
            .mailbox
            .expires_at
            .min(now_ms().saturating_add(MAX_LINK_WAIT_MS));
        let id = self.mailbox.id.to_string();
        let message = loop {
            match self.http.call::<FetchProvisioning>(&[&id], &Empty {}).await {
                Ok(message) => break message,
                Err(e) if e.problem_kind() == Some(ProblemType::NotFound) => {
                    if now_ms() >= deadline {
                        return Err(ClientError::Timeout("the link approval"));
                    }
                    tokio::time::sleep(POLL_INTERVAL).await;
                }
                Err(e) => return Err(e),
            }
        };
        self.finish(message).await
    }

    async fn finish(self, message: ProvisioningMessage) -> Result<Client> {
        let plaintext = provisioning::decrypt(&self.key.private, message.ciphertext.as_slice())?;
        let data = ProvisionData::from_plaintext(&plaintext)?;
        let password = random_password();
        let identity = LocalIdentity {
            pair: data.identity.clone(),
            registration_id: generate_registration_id(&mut OsRng),
        };
        let (store, keys) = new_device_store(
            &self.db_path,
            self.http.base().as_str(),
            &password,
            &identity,
            NewDevice::Link,
        )
        .await?;
        let request = LinkDevice {
            token: data.link_token.to_string(),
            password: password.to_string(),
            registration_id: identity.registration_id,
            device_name: self.device_name.clone(),
            keys,
        };
        let linked = self.http.call::<Link>(&[], &request).await?;
        if linked.account_id != data.account_id {
            return Err(ClientError::InvalidResponse(
                "the hub linked this device to another account".into(),
            ));
        }
        let store = Arc::new(Mutex::new(store));
        blocking(&store, move |s| {
            s.set_account(linked.account_id, &linked.address, linked.device_id)
        })
        .await?;
        tracing::info!(device = %linked.device_id, "device linked");
        Client::from_store(store)
    }
}
