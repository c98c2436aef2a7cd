//! libsignal's limits, which both sides of a session must agree on.

use std::time::Duration;

/// How far ahead of its chain a message may be.
pub const MAX_FORWARD_JUMPS: u32 = 25_000;
/// How many skipped message keys a receiving chain keeps.
pub const MAX_MESSAGE_KEYS: usize = 2_000;
/// How many receiving chains a session keeps.
pub const MAX_RECEIVER_CHAINS: usize = 5;
/// How many earlier sessions a record keeps.
pub const ARCHIVED_STATES_MAX_LENGTH: usize = 40;
/// How many sender key states a record keeps.
pub const MAX_SENDER_KEY_STATES: usize = 5;
/// How long a session started from a bundle may go unanswered before it is
/// no longer used to send.
pub const MAX_UNACKNOWLEDGED_SESSION_AGE: Duration = Duration::from_secs(60 * 60 * 24 * 30);
