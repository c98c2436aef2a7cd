//! Where sender key records live.

use std::collections::HashMap;

use uuid::Uuid;

use super::record::SenderKeyRecord;
use crate::address::ProtocolAddress;
use crate::error::Result;

/// Sender key records, one per (sender, distribution). The sender is this
/// device itself for the records it sends with.
///
/// Synchronous like the crate's other stores: a caller with an async
/// database loads, runs the operation and writes back. A load returns a copy;
/// operations change their copy and store it only once they have succeeded.
pub trait SenderKeyStore {
    /// The record of `sender` for `distribution_id`, if there is one.
    fn load_sender_key(
        &self,
        sender: &ProtocolAddress,
        distribution_id: Uuid,
    ) -> Result<Option<SenderKeyRecord>>;

    /// Saves the record of `sender` for `distribution_id`, replacing any.
    fn store_sender_key(
        &mut self,
        sender: &ProtocolAddress,
        distribution_id: Uuid,
        record: &SenderKeyRecord,
    ) -> Result<()>;
}

/// A [`SenderKeyStore`] in memory, for tests and short-lived clients.
#[derive(Clone, Debug, Default)]
pub struct InMemSenderKeyStore {
    records: HashMap<(ProtocolAddress, Uuid), SenderKeyRecord>,
}

impl InMemSenderKeyStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl SenderKeyStore for InMemSenderKeyStore {
    fn load_sender_key(
        &self,
        sender: &ProtocolAddress,
        distribution_id: Uuid,
    ) -> Result<Option<SenderKeyRecord>> {
        Ok(self
            .records
            .get(&(sender.clone(), distribution_id))
            .cloned())
    }

    fn store_sender_key(
        &mut self,
        sender: &ProtocolAddress,
        distribution_id: Uuid,
        record: &SenderKeyRecord,
    ) -> Result<()> {
        self.records
            .insert((sender.clone(), distribution_id), record.clone());
        Ok(())
    }
}
