//! The key directory: prekeys up, bundles down.

use serde::{Deserialize, Serialize};

use super::{Empty, endpoint};
use crate::address::{AccountId, DeviceId};
use crate::bytes::Base64Bytes;

/// A one-time Curve25519 prekey.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PreKey {
    /// Its id.
    pub key_id: u32,
    /// The public key (33 bytes, type `0x05`).
    pub public_key: Base64Bytes,
}

/// A signed Curve25519 prekey.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SignedPreKey {
    /// Its id.
    pub key_id: u32,
    /// The public key (33 bytes, type `0x05`).
    pub public_key: Base64Bytes,
    /// The identity key's XEdDSA signature over `public_key` (64 bytes).
    pub signature: Base64Bytes,
}

/// A signed Kyber1024 prekey.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KyberPreKey {
    /// Its id.
    pub key_id: u32,
    /// The public key (1569 bytes, type `0x08`).
    pub public_key: Base64Bytes,
    /// The identity key's XEdDSA signature over `public_key` (64 bytes).
    pub signature: Base64Bytes,
}

/// New prekeys for the calling device. Signed keys given here replace the
/// current ones; one-time keys are added.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UploadKeys {
    /// A new signed prekey.
    #[serde(default)]
    pub signed_pre_key: Option<SignedPreKey>,
    /// A new last-resort Kyber prekey.
    #[serde(default)]
    pub last_resort_kyber_pre_key: Option<KyberPreKey>,
    /// More one-time Curve25519 prekeys.
    #[serde(default)]
    pub pre_keys: Vec<PreKey>,
    /// More one-time Kyber prekeys.
    #[serde(default)]
    pub kyber_pre_keys: Vec<KyberPreKey>,
}

endpoint! {
    /// `PUT /v1/keys`: publishes prekeys of the calling device. Every
    /// signature is checked against the account's identity key.
    Upload: Put "/v1/keys", auth = true, UploadKeys => Empty
}

/// How many one-time prekeys the calling device has left.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyCounts {
    /// One-time Curve25519 prekeys.
    pub pre_keys: u32,
    /// One-time Kyber prekeys.
    pub kyber_pre_keys: u32,
    /// Below this many of either, the device should upload more.
    pub low_water_mark: u32,
}

endpoint! {
    /// `GET /v1/keys`: how many one-time prekeys are left.
    Counts: Get "/v1/keys", auth = true, Empty => KeyCounts
}

/// What a sender needs to start a session with one device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeviceBundle {
    /// The device.
    pub device_id: DeviceId,
    /// Its Signal registration id.
    pub registration_id: u32,
    /// A one-time prekey, claimed for this caller; absent when none is left.
    #[serde(default)]
    pub pre_key: Option<PreKey>,
    /// The signed prekey.
    pub signed_pre_key: SignedPreKey,
    /// A one-time Kyber prekey, or the last-resort one when none is left.
    pub kyber_pre_key: KyberPreKey,
}

/// Prekey bundles of an account's devices.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Bundles {
    /// The account.
    pub account_id: AccountId,
    /// Its identity key.
    pub identity_key: Base64Bytes,
    /// One bundle per device asked for.
    pub devices: Vec<DeviceBundle>,
}

endpoint! {
    /// `GET /v1/keys/{account_id}/{device}`: bundles of one device, or of
    /// every device with `*`. Each call claims one-time prekeys: never the
    /// same one twice.
    FetchBundles: Get "/v1/keys/{account_id}/{device}", auth = true, Empty => Bundles
}
