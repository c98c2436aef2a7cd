//! Device authentication: HTTP Basic with `account_id.device_id` as the
//! user name and the device's password, checked by the [`Authenticated`]
//! extractor on every route marked `AUTHENTICATED`.
//!
//! ## Password hashes
//!
//! Device passwords are not chosen by people: each device draws a random
//! secret of at least 16 characters and sends it with every request. A slow
//! password hash (Argon2, scrypt) defends low-entropy, human-chosen
//! passwords against offline guessing; against high-entropy secrets it adds
//! nothing but cost, and that cost would be paid on every request. So the
//! hub stores a salted SHA-256: a random 16-byte salt defeats precomputed
//! tables and equal-password correlation, and the digest is compared in
//! constant time. Stored form (49 bytes): version `0x01`, salt (16),
//! `SHA-256("passerelle-device-password" || salt || password)` (32).

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use passerelle_proto::{AccountId, DeviceId};
use passerelle_store::{Account, Device};
use rand::RngCore as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

use crate::problem::{ApiError, ApiResult};
use crate::state::AppState;

const HASH_VERSION: u8 = 1;
const SALT_LEN: usize = 16;
const HASH_LEN: usize = 1 + SALT_LEN + 32;
const DOMAIN: &[u8] = b"passerelle-device-password";

/// The shortest password a device may choose, in bytes.
pub const MIN_PASSWORD_LEN: usize = 16;
/// The longest password a device may choose, in bytes.
pub const MAX_PASSWORD_LEN: usize = 128;

fn digest(salt: &[u8], password: &str) -> [u8; 32] {
    tagged_sha256(DOMAIN, &[salt, password.as_bytes()])
}

/// SHA-256 of a domain tag followed by `parts`, concatenated: the one hash
/// of secrets the hub stores (device passwords, link tokens, verification
/// codes), each use with its own tag so that no hash is valid in another
/// use. No tag is a prefix of another, and every part but the last has a
/// fixed length, so the concatenation is unambiguous.
pub fn tagged_sha256(tag: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(tag);
    for part in parts {
        h.update(part);
    }
    h.finalize().into()
}

/// Hashes a device password for storage.
pub fn hash_password(password: &str) -> Vec<u8> {
    let mut salt = [0u8; SALT_LEN];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let mut out = Vec::with_capacity(HASH_LEN);
    out.push(HASH_VERSION);
    out.extend_from_slice(&salt);
    out.extend_from_slice(&digest(&salt, password));
    out
}

/// Whether a password matches a stored hash, in constant time.
pub fn verify_password(password: &str, stored: &[u8]) -> bool {
    if stored.len() != HASH_LEN || stored[0] != HASH_VERSION {
        return false;
    }
    let (salt, expected) = stored[1..].split_at(SALT_LEN);
    digest(salt, password).ct_eq(expected).into()
}

/// Checks a new device's password: 16 to 128 bytes, no control characters.
pub fn check_new_password(password: &str) -> ApiResult<()> {
    if !(MIN_PASSWORD_LEN..=MAX_PASSWORD_LEN).contains(&password.len())
        || password.chars().any(char::is_control)
    {
        return Err(ApiError::invalid(format!(
            "password must be {MIN_PASSWORD_LEN} to {MAX_PASSWORD_LEN} bytes of text without control characters"
        )));
    }
    Ok(())
}

/// Credentials as sent.
struct Credentials {
    account: AccountId,
    device: DeviceId,
    password: String,
}

fn parse_credentials(value: &str) -> Option<Credentials> {
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    let (account, device) = user.rsplit_once('.')?;
    Some(Credentials {
        account: account.parse().ok()?,
        device: device.parse().ok()?,
        password: password.to_owned(),
    })
}

/// The `Authorization` header value for a device's credentials.
pub fn basic_header(account: AccountId, device: DeviceId, password: &str) -> String {
    format!(
        "Basic {}",
        STANDARD.encode(format!("{account}.{device}:{password}"))
    )
}

/// The authenticated caller: its account and device.
#[derive(Clone, Debug)]
pub struct Authenticated {
    /// The caller's account.
    pub account: Account,
    /// The calling device.
    pub device: Device,
}

impl Authenticated {
    /// The account's id.
    pub fn account_id(&self) -> AccountId {
        self.account.id
    }

    /// The device's id.
    pub fn device_id(&self) -> DeviceId {
        self.device.id
    }
}

/// Checks credentials against the store.
async fn authenticate(state: &AppState, credentials: Credentials) -> ApiResult<Authenticated> {
    let wrong = || ApiError::unauthorized("unknown device or wrong password");
    let store = state.store();
    let Some(device) = store
        .device(credentials.account, credentials.device)
        .await?
    else {
        // Spend the same work as a real check, so that timing does not tell
        // which accounts exist.
        let mut dummy = [0; HASH_LEN];
        dummy[0] = HASH_VERSION;
        let _ = verify_password(&credentials.password, &dummy);
        return Err(wrong());
    };
    if !verify_password(&credentials.password, &device.password_hash) {
        return Err(wrong());
    }
    let account = store
        .account(credentials.account)
        .await?
        .ok_or_else(wrong)?;
    Ok(Authenticated { account, device })
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("this route needs HTTP Basic credentials"))?;
        let credentials = header
            .to_str()
            .ok()
            .and_then(parse_credentials)
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "credentials must be HTTP Basic with account_id.device_id as the user name",
                )
            })?;
        authenticate(state, credentials).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_differ() {
        let a = hash_password("correct horse battery");
        let b = hash_password("correct horse battery");
        assert_ne!(a, b, "salted");
        assert!(verify_password("correct horse battery", &a));
        assert!(!verify_password("correct horse batterz", &a));
        assert!(!verify_password("correct horse battery", &a[..48]));
    }

    #[test]
    fn credentials_parse() {
        let account = AccountId::random();
        let header = basic_header(account, DeviceId::PRIMARY, "pass:word:with:colons");
        let c = parse_credentials(&header).unwrap();
        assert_eq!(c.account, account);
        assert_eq!(c.device, DeviceId::PRIMARY);
        assert_eq!(c.password, "pass:word:with:colons");
        assert!(parse_credentials("Bearer abc").is_none());
        assert!(parse_credentials("Basic !!!").is_none());
    }

    #[test]
    fn password_policy() {
        assert!(check_new_password("short").is_err());
        assert!(check_new_password(&"x".repeat(16)).is_ok());
        assert!(check_new_password(&"x".repeat(129)).is_err());
        assert!(check_new_password("sixteen chars\n..").is_err());
    }
}
