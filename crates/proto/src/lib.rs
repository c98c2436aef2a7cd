//! Passerelle's wire: every request, response, WebSocket frame, envelope and
//! content type, shared by the hub, the SDK and the tests.
//!
//! This crate holds no logic beyond encoding and validation. Identifiers are
//! parsed on the way in ([`Address`], [`DeviceId`], ...): a value of one of
//! these types is always valid. Every route is an [`Endpoint`] that carries
//! its method and path, so the server registers routes from the same
//! definitions the client calls.

pub mod address;
pub mod api;
pub mod bytes;
pub mod content;
pub mod endpoint;
pub mod envelope;
pub mod problem;
pub mod ws;

pub use address::{AccountId, Address, AppId, DeviceId, Handle, IdentifierScheme};
pub use bytes::Base64Bytes;
pub use endpoint::{Endpoint, Method};
pub use envelope::{Envelope, EnvelopeKind, ServerNotice, Source};
pub use problem::{Problem, ProblemType};
