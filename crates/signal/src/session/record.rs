//! All sessions with one peer device: the current one and up to
//! [`ARCHIVED_STATES_MAX_LENGTH`](crate::limits::ARCHIVED_STATES_MAX_LENGTH)
//! earlier ones, which still decrypt late messages after the peer or we
//! started anew. Stored as libsignal's `RecordStructure`.

use prost::Message as _;
use subtle::ConstantTimeEq;

use super::state::SessionState;
use crate::curve::PublicKey;
use crate::error::{Error, Result};
use crate::identity::IdentityKey;
use crate::limits;
use crate::proto;

/// The sessions with one peer device.
#[derive(Clone, Default)]
pub struct SessionRecord {
    pub(crate) current: Option<SessionState>,
    /// Serialized archived sessions, newest first; parsed only when needed.
    pub(crate) previous: Vec<Vec<u8>>,
}

impl std::fmt::Debug for SessionRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRecord")
            .field("has_current", &self.current.is_some())
            .field("previous", &self.previous.len())
            .finish()
    }
}

impl SessionRecord {
    /// A record with no session.
    pub fn new_fresh() -> Self {
        Self::default()
    }

    /// Whether there is a current session that can send.
    pub fn has_current_session(&self) -> bool {
        self.current
            .as_ref()
            .is_some_and(|s| s.sender_chain.is_some())
    }

    /// The peer's identity in the current session.
    pub fn remote_identity(&self) -> Option<IdentityKey> {
        self.current.as_ref().map(|s| s.remote_identity)
    }

    /// The peer's registration id in the current session.
    pub fn remote_registration_id(&self) -> Option<u32> {
        self.current.as_ref().map(|s| s.remote_registration_id)
    }

    /// How many archived sessions the record holds.
    pub fn previous_session_count(&self) -> usize {
        self.previous.len()
    }

    /// Archives the current session, for example when the peer's identity
    /// changed: the next message must start a new one.
    pub fn archive_current_state(&mut self) {
        if let Some(mut current) = self.current.take() {
            current.pending_pre_key = None;
            self.previous.insert(0, current.serialize());
            self.previous.truncate(limits::ARCHIVED_STATES_MAX_LENGTH);
        }
    }

    /// Makes `state` current, archiving the one it replaces.
    pub(crate) fn promote_state(&mut self, state: SessionState) {
        self.archive_current_state();
        self.current = Some(state);
    }

    /// Makes a session with this base key current, if the record has one:
    /// a repeated PreKey message then needs no new session.
    pub(crate) fn promote_matching_session(&mut self, base_key: &PublicKey) -> Result<bool> {
        let matches = |s: &SessionState| bool::from(s.alice_base_key.raw().ct_eq(base_key.raw()));
        if self.current.as_ref().is_some_and(matches) {
            return Ok(true);
        }
        for i in 0..self.previous.len() {
            let state = SessionState::deserialize(&self.previous[i])?;
            if matches(&state) {
                self.previous.remove(i);
                self.promote_state(state);
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// libsignal's stored form.
    pub fn serialize(&self) -> Vec<u8> {
        proto::RecordStructure {
            current_session: self.current.as_ref().map(SessionState::to_proto),
            previous_sessions: self.previous.clone(),
        }
        .encode_to_vec()
    }

    /// Decodes the stored form. Archived sessions are checked when used.
    pub fn deserialize(bytes: &[u8]) -> Result<Self> {
        let record = proto::RecordStructure::decode(bytes)
            .map_err(|_| Error::InvalidRecord("session record"))?;
        if record.previous_sessions.len() > limits::ARCHIVED_STATES_MAX_LENGTH {
            return Err(Error::InvalidRecord("session record"));
        }
        Ok(Self {
            current: record
                .current_session
                .map(SessionState::from_proto)
                .transpose()?,
            previous: record.previous_sessions,
        })
    }
}
