//! Frames of the delivery WebSocket (`GET /v1/websocket`), one JSON object
//! per text frame.
//!
//! On connect the hub sends every queued envelope, then `queue_empty`, then
//! new envelopes as they arrive. The device acknowledges each envelope by
//! id once it has stored what it needs; only then does the hub delete it.
//! An envelope not acknowledged is sent again on the next connection.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::envelope::Envelope;

/// The path of the delivery WebSocket (`GET`, authenticated like every
/// `AUTHENTICATED` endpoint).
pub const PATH: &str = "/v1/websocket";

/// From the hub to the device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ServerFrame {
    /// An envelope for this device.
    Envelope {
        /// The envelope.
        envelope: Box<Envelope>,
    },
    /// Everything queued while the device was away has been sent.
    QueueEmpty,
}

/// From the device to the hub.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ClientFrame {
    /// The device has what it needs from these envelopes.
    Ack {
        /// The envelopes' ids.
        ids: Vec<Uuid>,
    },
}
