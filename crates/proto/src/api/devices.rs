//! Devices: listing, linking and removing them.
//!
//! Linking a new device to an account:
//!
//! 1. The new device generates a Curve25519 key pair and opens a
//!    provisioning mailbox (`POST /v1/provisioning`), then shows the link
//!    URI `passerelle://link?id=<mailbox>&key=<public key>` (as a QR code).
//! 2. A device of the account reads the URI, asks the hub for a one-time
//!    link token (`POST /v1/devices/link-tokens`), encrypts the account's
//!    identity key pair, its address and the token to the new device's key,
//!    and puts the ciphertext in the mailbox (`PUT /v1/provisioning/{id}`).
//! 3. The new device fetches and decrypts it, then registers itself with the
//!    token (`POST /v1/devices`). The hub never sees the identity key pair.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::accounts::DeviceKeys;
use super::{Empty, endpoint};
use crate::address::{AccountId, Address, DeviceId};
use crate::bytes::Base64Bytes;

/// A device of the caller's account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeviceInfo {
    /// Its id.
    pub device_id: DeviceId,
    /// The name it gave itself.
    pub name: String,
    /// When it was added, in milliseconds since the Unix epoch.
    pub created_at: u64,
    /// When it last connected, in milliseconds since the Unix epoch.
    pub last_seen_at: u64,
}

/// The caller's devices.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeviceList {
    /// The devices.
    pub devices: Vec<DeviceInfo>,
}

endpoint! {
    /// `GET /v1/devices`: the caller's devices.
    ListDevices: Get "/v1/devices", auth = true, Empty => DeviceList
}

endpoint! {
    /// `DELETE /v1/devices/{device_id}`: removes a device of the caller's
    /// account, with its keys and queued envelopes. The primary device
    /// cannot be removed.
    RemoveDevice: Delete "/v1/devices/{device_id}", auth = true, Empty => Empty
}

/// A one-time token that lets a new device join the caller's account.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LinkToken {
    /// The token.
    pub token: String,
    /// When it expires, in milliseconds since the Unix epoch.
    pub expires_at: u64,
}

endpoint! {
    /// `POST /v1/devices/link-tokens`: a one-time link token.
    CreateLinkToken: Post "/v1/devices/link-tokens", auth = true, Empty => LinkToken
}

/// A new device joining an account.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LinkDevice {
    /// The one-time link token.
    pub token: String,
    /// The device's password (16 to 128 bytes of text).
    pub password: String,
    /// The device's Signal registration id (1 to 16380).
    pub registration_id: u32,
    /// A name for the device.
    pub device_name: String,
    /// The device's prekeys, signed with the account's identity key.
    pub keys: DeviceKeys,
}

/// A linked device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Linked {
    /// The account.
    pub account_id: AccountId,
    /// Its address.
    pub address: Address,
    /// The new device's id.
    pub device_id: DeviceId,
}

endpoint! {
    /// `POST /v1/devices`: adds a device to an account with a link token.
    Link: Post "/v1/devices", auth = false, LinkDevice => Linked
}

/// A provisioning mailbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Mailbox {
    /// Its id.
    pub id: Uuid,
    /// When it expires, in milliseconds since the Unix epoch.
    pub expires_at: u64,
}

endpoint! {
    /// `POST /v1/provisioning`: opens a mailbox for a device being linked.
    OpenMailbox: Post "/v1/provisioning", auth = false, Empty => Mailbox
}

/// An encrypted provisioning message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProvisioningMessage {
    /// The ciphertext (see the protocol reference for its layout).
    pub ciphertext: Base64Bytes,
}

endpoint! {
    /// `PUT /v1/provisioning/{id}`: a device of the account leaves the
    /// encrypted provisioning message in the mailbox.
    Provision: Put "/v1/provisioning/{id}", auth = true, ProvisioningMessage => Empty
}

endpoint! {
    /// `GET /v1/provisioning/{id}`: the new device fetches the message (404
    /// until it is there; the mailbox is deleted once fetched).
    FetchProvisioning: Get "/v1/provisioning/{id}", auth = false, Empty => ProvisioningMessage
}

// Hand-written: tokens and passwords never reach logs through `Debug`.

impl std::fmt::Debug for LinkToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkToken")
            .field("token", &"..")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl std::fmt::Debug for LinkDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkDevice")
            .field("token", &"..")
            .field("password", &"..")
            .field("registration_id", &self.registration_id)
            .field("device_name", &self.device_name)
            .field("keys", &self.keys)
            .finish()
    }
}
