//! The Signal protocol, wire-compatible with libsignal.
//!
//! This crate is sans-IO: it does no I/O, spawns nothing, and has no clock or
//! randomness of its own. Callers pass the current time and a cryptographically
//! secure RNG to every operation that needs them, and keep state behind the
//! storage traits in [`store`].

pub mod address;
pub mod curve;
pub mod error;
pub mod identity;
pub mod kem;
mod proto;

pub use address::{DeviceId, ProtocolAddress};
pub use curve::{KeyPair, PrivateKey, PublicKey};
pub use error::{Error, Result};
pub use identity::{IdentityKey, IdentityKeyPair};
pub use kem::{KemKeyPair, KemPublicKey, KemSecretKey};
