//! Envelopes: one encrypted message for one device, as the hub stores and
//! delivers it. The hub sees who sent it, to which device, and when; never
//! what it says.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::address::{AccountId, Address, DeviceId};
use crate::bytes::Base64Bytes;

/// What an envelope holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EnvelopeKind {
    /// A Signal `PreKeySignalMessage` (type 3): it also starts a session.
    PrekeyMessage,
    /// A Signal `SignalMessage` (type 2).
    Message,
    /// A notice from the hub itself, in [`Envelope::notice`]; not encrypted
    /// and never about content.
    ServerNotice,
}

impl EnvelopeKind {
    /// The Signal message type number of an encrypted kind.
    pub fn signal_type(self) -> Option<u8> {
        match self {
            Self::PrekeyMessage => Some(3),
            Self::Message => Some(2),
            Self::ServerNotice => None,
        }
    }
}

/// Who sent an envelope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Source {
    /// The sender's address.
    pub address: Address,
    /// The sender's account id: the name of its Signal address.
    pub account_id: AccountId,
    /// The sending device.
    pub device_id: DeviceId,
}

/// A notice from the hub.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "notice", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ServerNotice {
    /// A message this device sent was not delivered before the recipient's
    /// app's retention ran out, and was deleted.
    Expired {
        /// The recipient.
        recipient: Address,
        /// The recipient's device.
        recipient_device: DeviceId,
        /// The expired envelope.
        envelope_id: Uuid,
        /// The sender's timestamp of the message, to find it again.
        client_timestamp: u64,
    },
}

/// One message for one device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Envelope {
    /// A stable id: a redelivered envelope has the same one.
    pub id: Uuid,
    /// What it holds.
    pub kind: EnvelopeKind,
    /// The sender; absent for server notices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// The device it is for.
    pub destination_device: DeviceId,
    /// When the sender sent it, in milliseconds since the Unix epoch, as the
    /// sender said.
    pub client_timestamp: u64,
    /// When the hub accepted it, in milliseconds since the Unix epoch.
    pub server_timestamp: u64,
    /// The Signal ciphertext, for encrypted kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Base64Bytes>,
    /// The notice, for [`EnvelopeKind::ServerNotice`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<ServerNotice>,
}
