//! Sending messages.

use serde::{Deserialize, Serialize};

use super::endpoint;
use crate::address::DeviceId;
use crate::bytes::Base64Bytes;
use crate::envelope::EnvelopeKind;

/// The ciphertext for one device of the recipient.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OutgoingMessage {
    /// The recipient's device.
    pub device_id: DeviceId,
    /// The registration id the sender's session has for that device: if the
    /// device re-registered since, the hub answers `stale-devices`.
    pub registration_id: u32,
    /// `prekey_message` or `message`.
    pub kind: EnvelopeKind,
    /// The Signal ciphertext.
    pub content: Base64Bytes,
}

/// One message to every device of a recipient account (or, for sync copies,
/// to every other device of the sender's own account).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SendMessages {
    /// The sender's timestamp, in milliseconds since the Unix epoch.
    pub timestamp: u64,
    /// One ciphertext per device, exactly the recipient's current devices.
    pub messages: Vec<OutgoingMessage>,
    /// Deliver only to devices connected now, and store nothing (typing
    /// indicators).
    #[serde(default)]
    pub online_only: bool,
}

/// Accepted: every envelope is durably stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Sent {
    /// The hub's timestamp, in milliseconds since the Unix epoch.
    pub server_timestamp: u64,
}

/// The extension members of a `mismatched-devices` problem (409).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MismatchedDevices {
    /// Devices the recipient has that the message left out.
    pub missing_devices: Vec<DeviceId>,
    /// Devices the message named that the recipient does not have.
    pub extra_devices: Vec<DeviceId>,
}

/// The extension members of a `stale-devices` problem (410).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StaleDevices {
    /// Devices whose registration id changed: the sender must start new
    /// sessions with them.
    pub stale_devices: Vec<DeviceId>,
}

endpoint! {
    /// `PUT /v1/messages/{account_id}`: sends to every device of an account.
    SendMessage: Put "/v1/messages/{account_id}", auth = true, SendMessages => Sent
}
