//! Addresses of devices as the Signal layer names them.

use std::fmt;

/// A device id: 1 for an account's primary device, then one per linked device.
pub type DeviceId = u32;

/// The Signal address of one device: an account name (for Passerelle, the
/// account UUID) and a device id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProtocolAddress {
    name: String,
    device_id: DeviceId,
}

impl ProtocolAddress {
    /// An address from an account name and a device id.
    pub fn new(name: impl Into<String>, device_id: DeviceId) -> Self {
        Self {
            name: name.into(),
            device_id,
        }
    }

    /// The account name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The device id.
    pub fn device_id(&self) -> DeviceId {
        self.device_id
    }
}

impl fmt::Display for ProtocolAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.name, self.device_id)
    }
}
