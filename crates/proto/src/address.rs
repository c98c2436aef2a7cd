//! Who is who: apps, handles, addresses, accounts and devices.
//!
//! An account is named two ways. People use its [`Address`], `handle@app`,
//! where the handle follows the app's [`IdentifierScheme`]. The Signal layer
//! and the hub's routes use its [`AccountId`], a UUID that never changes.
//! An address's `app` is an app of this hub or, later, an outside provider
//! or another hub: nothing here assumes the account lives on this hub.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// An app id must be 1 to 32 lowercase letters, digits or `-`.
    #[error("app id must be 1 to 32 lowercase letters, digits or '-'")]
    AppId,
    /// A handle must be 1 to 64 visible characters, without `@`.
    #[error("handle must be 1 to 64 visible characters, without '@'")]
    Handle,
    /// An address is `handle@app`.
    #[error("address must be handle@app")]
    Address,
    /// Device ids run from 1 to 127.
    #[error("device id must be from 1 to 127")]
    DeviceId,
    /// The handle does not follow the app's scheme; the text says how.
    #[error("{0}")]
    Scheme(&'static str),
}

macro_rules! string_serde {
    ($ty:ty) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
        impl utoipa::PartialSchema for $ty {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .into()
            }
        }
        impl utoipa::ToSchema for $ty {}
    };
}

/// The id of an app hosted on a hub, or of a provider.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppId(String);

impl AppId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for AppId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let ok = (1..=32).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        ok.then(|| Self(s.to_owned())).ok_or(IdError::AppId)
    }
}

impl fmt::Display for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

string_serde!(AppId);

/// An app's own identifier for an account, in the app's canonical form.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Handle(String);

impl Handle {
    /// The handle as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Handle {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let ok = !s.is_empty()
            && s.chars().count() <= 64
            && !s
                .chars()
                .any(|c| c == '@' || c.is_whitespace() || c.is_control());
        ok.then(|| Self(s.to_owned())).ok_or(IdError::Handle)
    }
}

impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

string_serde!(Handle);

/// `handle@app`: how people name an account.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    /// The app's identifier for the account.
    pub handle: Handle,
    /// The app (or provider) the account belongs to.
    pub app: AppId,
}

impl Address {
    /// An address from its parts.
    pub fn new(handle: Handle, app: AppId) -> Self {
        Self { handle, app }
    }
}

impl FromStr for Address {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let (handle, app) = s.rsplit_once('@').ok_or(IdError::Address)?;
        Ok(Self {
            handle: handle.parse()?,
            app: app.parse()?,
        })
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.handle, self.app)
    }
}

string_serde!(Address);

/// The stable id of an account: the name its devices have in the Signal
/// protocol.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(transparent)]
pub struct AccountId(pub Uuid);

impl AccountId {
    /// A fresh random id.
    pub fn random() -> Self {
        Self(Uuid::new_v4())
    }
}

impl FromStr for AccountId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, uuid::Error> {
        Uuid::parse_str(s).map(Self)
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// A device of an account: 1 is the device that registered, linked devices
/// get the next free ids. libsignal allows 1 to 127.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct DeviceId(u8);

impl utoipa::PartialSchema for DeviceId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Integer)
            .minimum(Some(1))
            .maximum(Some(127))
            .into()
    }
}

impl utoipa::ToSchema for DeviceId {}

impl DeviceId {
    /// The device that registered the account.
    pub const PRIMARY: DeviceId = DeviceId(1);
    /// The highest device id.
    pub const MAX: u8 = 127;

    /// A device id, checked.
    pub fn new(id: u32) -> Result<Self, IdError> {
        match u8::try_from(id) {
            Ok(id @ 1..=Self::MAX) => Ok(Self(id)),
            _ => Err(IdError::DeviceId),
        }
    }

    /// The id as a number.
    pub fn get(self) -> u32 {
        u32::from(self.0)
    }
}

impl<'de> Deserialize<'de> for DeviceId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::new(u32::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl FromStr for DeviceId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::new(s.parse().map_err(|_| IdError::DeviceId)?)
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// How an app names its accounts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IdentifierScheme {
    /// An E.164 phone number (`+` and 8 to 15 digits), proven with a code.
    PhoneNumber,
    /// A username the user chooses: 3 to 32 of `a-z 0-9 _ .`, starting with
    /// a letter; case-insensitive (stored in lowercase).
    Username,
    /// A random 8-character id the hub issues.
    RandomId,
}

/// The alphabet of random ids: no `0 1 i l o`, which people confuse.
pub const RANDOM_ID_ALPHABET: &[u8] = b"23456789abcdefghjkmnpqrstuvwxyz";
/// The length of a random id.
pub const RANDOM_ID_LENGTH: usize = 8;

impl IdentifierScheme {
    /// Checks a handle a user typed against the scheme and returns its
    /// canonical form.
    pub fn canonical_handle(self, input: &str) -> Result<Handle, IdError> {
        let canonical = match self {
            Self::PhoneNumber => {
                let digits = input.strip_prefix('+').ok_or(IdError::Scheme(
                    "a phone number starts with + and the country code",
                ))?;
                let ok = (8..=15).contains(&digits.len())
                    && digits.bytes().all(|b| b.is_ascii_digit())
                    && !digits.starts_with('0');
                if !ok {
                    return Err(IdError::Scheme(
                        "a phone number is + and 8 to 15 digits (E.164)",
                    ));
                }
                input.to_owned()
            }
            Self::Username => {
                let lower = input.to_ascii_lowercase();
                let ok = (3..=32).contains(&lower.len())
                    && lower.starts_with(|c: char| c.is_ascii_lowercase())
                    && lower.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.'
                    });
                if !ok {
                    return Err(IdError::Scheme(
                        "a username is 3 to 32 of a-z, 0-9, _ and ., starting with a letter",
                    ));
                }
                lower
            }
            Self::RandomId => {
                let lower = input.to_ascii_lowercase();
                let ok = lower.len() == RANDOM_ID_LENGTH
                    && lower.bytes().all(|b| RANDOM_ID_ALPHABET.contains(&b));
                if !ok {
                    return Err(IdError::Scheme(
                        "a random id is 8 characters from 2-9 and a-z without i, l, o",
                    ));
                }
                lower
            }
        };
        canonical.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_print() {
        let a: Address = "alice@parley".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.to_string(), "alice@parley");
        let phone: Address = "+15551234567@chime"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(phone.handle.as_str(), "+15551234567");
        assert!("alice".parse::<Address>().is_err());
        assert!("alice@Parley".parse::<Address>().is_err());
        assert!("@parley".parse::<Address>().is_err());
        assert!("a b@parley".parse::<Address>().is_err());
    }

    #[test]
    fn schemes() {
        let s = IdentifierScheme::PhoneNumber;
        assert!(s.canonical_handle("+15551234567").is_ok());
        assert!(s.canonical_handle("15551234567").is_err());
        assert!(s.canonical_handle("+0555123456").is_err());
        let s = IdentifierScheme::Username;
        assert_eq!(
            s.canonical_handle("Alice_1").map(|h| h.to_string()),
            Ok("alice_1".to_string())
        );
        assert!(s.canonical_handle("1alice").is_err());
        assert!(s.canonical_handle("al").is_err());
        let s = IdentifierScheme::RandomId;
        assert!(s.canonical_handle("k3j9x2pq").is_ok());
        assert!(s.canonical_handle("k3j9x2p0").is_err());
    }

    #[test]
    fn device_ids() {
        assert!(DeviceId::new(0).is_err());
        assert!(DeviceId::new(128).is_err());
        assert_eq!(DeviceId::new(127).map(DeviceId::get), Ok(127));
        assert!(serde_json::from_str::<DeviceId>("0").is_err());
        assert!(serde_json::from_str::<DeviceId>("3").is_ok());
    }
}
