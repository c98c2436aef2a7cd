//! Apps, verification, registration and the directory.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::keys::{KyberPreKey, PreKey, SignedPreKey};
use super::{Empty, endpoint};
use crate::address::{AccountId, Address, AppId, DeviceId, IdentifierScheme};
use crate::bytes::Base64Bytes;

/// An app hosted on the hub, as clients see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AppInfo {
    /// Its id, the part after `@` in its addresses.
    pub id: AppId,
    /// Its display name.
    pub name: String,
    /// How it names accounts.
    pub scheme: IdentifierScheme,
    /// Whether its users may be contacted from other apps and providers.
    pub third_party_contact: bool,
    /// The most devices an account may have.
    pub max_devices: u8,
}

/// The apps of this hub.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AppList {
    /// The apps.
    pub apps: Vec<AppInfo>,
}

endpoint! {
    /// `GET /v1/apps`: the apps of this hub.
    ListApps: Get "/v1/apps", auth = false, Empty => AppList
}

/// Asks for a verification code for a phone number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VerificationRequest {
    /// The app.
    pub app: AppId,
    /// The phone number, E.164.
    pub handle: String,
}

/// A verification in progress.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VerificationSession {
    /// Names the verification in [`Verification`].
    pub session_id: Uuid,
    /// When the code expires, in milliseconds since the Unix epoch.
    pub expires_at: u64,
    /// The code itself, only from a hub in development mode (which sends no
    /// real messages), so that tools and demos can register unattended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev_code: Option<String>,
}

endpoint! {
    /// `POST /v1/verifications`: sends a code to a phone number (in
    /// development mode, the hub writes it to its log).
    RequestVerification: Post "/v1/verifications", auth = false,
        VerificationRequest => VerificationSession
}

/// Proof that the registrant controls the phone number.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Verification {
    /// The verification session.
    pub session_id: Uuid,
    /// The code that was sent.
    pub code: String,
}

/// The keys a new device publishes: its signed prekeys and a first batch of
/// one-time prekeys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeviceKeys {
    /// The signed Curve25519 prekey.
    pub signed_pre_key: SignedPreKey,
    /// The last-resort Kyber prekey, used when no one-time one is left.
    pub last_resort_kyber_pre_key: KyberPreKey,
    /// One-time Curve25519 prekeys.
    #[serde(default)]
    pub pre_keys: Vec<PreKey>,
    /// One-time Kyber prekeys.
    #[serde(default)]
    pub kyber_pre_keys: Vec<KyberPreKey>,
}

/// Registers a new account and its first device.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RegisterAccount {
    /// The app to register with.
    pub app: AppId,
    /// The handle: the phone number or username; absent for apps that
    /// issue random ids.
    #[serde(default)]
    pub handle: Option<String>,
    /// For phone-number apps, the verified code.
    #[serde(default)]
    pub verification: Option<Verification>,
    /// The device's password for HTTP Basic authentication (16 to 128
    /// bytes of text; the hub stores only a hash).
    pub password: String,
    /// The device's Signal registration id (1 to 16380).
    pub registration_id: u32,
    /// A name for the device, shown in the device list.
    pub device_name: String,
    /// The account's identity key (33 bytes, type `0x05`).
    pub identity_key: Base64Bytes,
    /// The device's prekeys.
    pub keys: DeviceKeys,
}

/// A registered account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Registered {
    /// The account's stable id.
    pub account_id: AccountId,
    /// Its address.
    pub address: Address,
    /// This device's id.
    pub device_id: DeviceId,
}

endpoint! {
    /// `POST /v1/accounts`: registers an account and its first device.
    Register: Post "/v1/accounts", auth = false, RegisterAccount => Registered
}

/// The caller's account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AccountInfo {
    /// The account's stable id.
    pub account_id: AccountId,
    /// Its address.
    pub address: Address,
    /// The calling device.
    pub device_id: DeviceId,
}

endpoint! {
    /// `GET /v1/accounts/me`: who the caller is.
    WhoAmI: Get "/v1/accounts/me", auth = true, Empty => AccountInfo
}

/// An account found by address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DirectoryEntry {
    /// The account's stable id.
    pub account_id: AccountId,
    /// Its address.
    pub address: Address,
}

endpoint! {
    /// `GET /v1/directory/{address}`: the account with this address.
    Lookup: Get "/v1/directory/{address}", auth = true, Empty => DirectoryEntry
}

// Hand-written: codes and passwords never reach logs through `Debug`.

impl std::fmt::Debug for VerificationSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerificationSession")
            .field("session_id", &self.session_id)
            .field("expires_at", &self.expires_at)
            .field("dev_code", &self.dev_code.as_ref().map(|_| ".."))
            .finish()
    }
}

impl std::fmt::Debug for Verification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verification")
            .field("session_id", &self.session_id)
            .field("code", &"..")
            .finish()
    }
}

impl std::fmt::Debug for RegisterAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisterAccount")
            .field("app", &self.app)
            .field("handle", &self.handle)
            .field("verification", &self.verification)
            .field("password", &"..")
            .field("registration_id", &self.registration_id)
            .field("device_name", &self.device_name)
            .field("identity_key", &self.identity_key)
            .field("keys", &self.keys)
            .finish()
    }
}
