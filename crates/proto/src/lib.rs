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

#[cfg(test)]
mod tests {
    use crate::api::accounts::{RegisterAccount, Verification};

    #[test]
    fn secrets_stay_out_of_debug() {
        let json = serde_json::json!({
            "app": "parley", "handle": "ada", "password": "correct-horse-battery-staple",
            "verification": {"session_id": "00000000-0000-0000-0000-000000000000", "code": "424242"},
            "registration_id": 7, "device_name": "laptop", "identity_key": "BQ==",
            "keys": {
                "signed_pre_key": {"key_id": 1, "public_key": "BQ==", "signature": "AA=="},
                "last_resort_kyber_pre_key": {"key_id": 1, "public_key": "CA==", "signature": "AA=="}
            }
        });
        let request: RegisterAccount =
            serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"));
        let shown = format!("{request:?}");
        assert!(!shown.contains("correct-horse"), "{shown}");
        assert!(!shown.contains("424242"), "{shown}");
        let _: Option<Verification> = request.verification;
    }
}
