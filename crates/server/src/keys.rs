//! The key directory: devices publish prekeys, senders claim bundles.
//!
//! Every signed key is checked against the account's identity key before it
//! is stored (`400 bad-signature` otherwise); one-time keys are claimed
//! atomically by the store, so none is ever handed out twice.

use axum::extract::State;
use axum::http::StatusCode;
use passerelle_proto::api::accounts::DeviceKeys;
use passerelle_proto::api::keys::{
    Bundles, DeviceBundle, KeyCounts, KyberPreKey, PreKey, SignedPreKey, UploadKeys,
};
use passerelle_proto::{AccountId, DeviceId, ProblemType};
use passerelle_signal::{IdentityKey, KemPublicKey, PublicKey};
use passerelle_store::{ClaimedKeys, KeyUpdate, StoredKey};

use crate::accounts;
use crate::auth::Authenticated;
use crate::config::Limits;
use crate::extract::{Json, Path};
use crate::problem::{ApiError, ApiResult};
use crate::state::AppState;

// ---- checks ----

/// Parses an identity key (33 bytes, type `0x05`).
pub fn parse_identity_key(bytes: &[u8]) -> ApiResult<IdentityKey> {
    IdentityKey::deserialize(bytes)
        .map_err(|_| ApiError::invalid("identity_key must be a 33-byte Curve25519 key (type 0x05)"))
}

fn bad_signature(what: &str, id: u32) -> ApiError {
    ApiError::new(
        ProblemType::BadSignature,
        format!("the signature of {what} {id} does not verify with the identity key"),
    )
}

/// The kinds of prekeys: how each parses and whether it is signed.
#[derive(Clone, Copy)]
enum Kind {
    /// A signed Curve25519 prekey.
    Signed,
    /// A (signed) Kyber prekey, one-time or last-resort.
    Kyber,
    /// A one-time Curve25519 prekey (unsigned).
    OneTime,
}

/// Checks one prekey: its key parses as its kind, and the signature of a
/// signed kind verifies with the identity key.
fn check_key(
    identity: &IdentityKey,
    kind: Kind,
    key_id: u32,
    public_key: &[u8],
    signature: &[u8],
) -> ApiResult<StoredKey> {
    const CURVE: &str = "a 33-byte Curve25519 key (type 0x05)";
    let (what, parses, format, signed) = match kind {
        Kind::Signed => (
            "signed prekey",
            PublicKey::deserialize(public_key).is_ok(),
            CURVE,
            true,
        ),
        Kind::Kyber => (
            "Kyber prekey",
            KemPublicKey::deserialize(public_key).is_ok(),
            "a 1569-byte Kyber1024 key (type 0x08)",
            true,
        ),
        Kind::OneTime => (
            "prekey",
            PublicKey::deserialize(public_key).is_ok(),
            CURVE,
            false,
        ),
    };
    if !parses {
        return Err(ApiError::invalid(format!(
            "{what} {key_id} must be {format}"
        )));
    }
    if signed && !identity.public_key().verify(&[public_key], signature) {
        return Err(bad_signature(what, key_id));
    }
    Ok(stored(
        key_id,
        public_key,
        if signed { signature } else { &[] },
    ))
}

fn stored(key_id: u32, public_key: &[u8], signature: &[u8]) -> StoredKey {
    StoredKey {
        key_id,
        public_key: public_key.to_vec(),
        signature: signature.to_vec(),
    }
}

fn check_counts(limits: &Limits, pre_keys: usize, kyber_pre_keys: usize) -> ApiResult<()> {
    let max = limits.max_keys_per_upload;
    if pre_keys > max || kyber_pre_keys > max {
        return Err(ApiError::invalid(format!(
            "at most {max} one-time prekeys of each kind per upload"
        )));
    }
    Ok(())
}

/// Checks an upload against the identity key and turns it into a store
/// update. Nothing is stored unless every key passes.
pub fn check_upload(
    identity: &IdentityKey,
    limits: &Limits,
    upload: &UploadKeys,
) -> ApiResult<KeyUpdate> {
    check_counts(limits, upload.pre_keys.len(), upload.kyber_pre_keys.len())?;
    Ok(KeyUpdate {
        signed_pre_key: upload
            .signed_pre_key
            .as_ref()
            .map(|k| {
                check_key(
                    identity,
                    Kind::Signed,
                    k.key_id,
                    &k.public_key.0,
                    &k.signature.0,
                )
            })
            .transpose()?,
        last_resort_kyber_pre_key: upload
            .last_resort_kyber_pre_key
            .as_ref()
            .map(|k| {
                check_key(
                    identity,
                    Kind::Kyber,
                    k.key_id,
                    &k.public_key.0,
                    &k.signature.0,
                )
            })
            .transpose()?,
        pre_keys: upload
            .pre_keys
            .iter()
            .map(|k| check_key(identity, Kind::OneTime, k.key_id, &k.public_key.0, &[]))
            .collect::<ApiResult<_>>()?,
        kyber_pre_keys: upload
            .kyber_pre_keys
            .iter()
            .map(|k| {
                check_key(
                    identity,
                    Kind::Kyber,
                    k.key_id,
                    &k.public_key.0,
                    &k.signature.0,
                )
            })
            .collect::<ApiResult<_>>()?,
    })
}

/// Checks a new device's keys (both signed keys are required).
pub fn check_device_keys(
    identity: &IdentityKey,
    limits: &Limits,
    keys: &DeviceKeys,
) -> ApiResult<KeyUpdate> {
    check_upload(
        identity,
        limits,
        &UploadKeys {
            signed_pre_key: Some(keys.signed_pre_key.clone()),
            last_resort_kyber_pre_key: Some(keys.last_resort_kyber_pre_key.clone()),
            pre_keys: keys.pre_keys.clone(),
            kyber_pre_keys: keys.kyber_pre_keys.clone(),
        },
    )
}

// ---- service ----

/// Stores prekeys of the calling device.
pub async fn upload(state: &AppState, caller: &Authenticated, upload: UploadKeys) -> ApiResult<()> {
    let identity = parse_identity_key(&caller.account.identity_key).map_err(ApiError::internal)?;
    let limits = &state.config().limits;
    let update = check_upload(&identity, limits, &upload)?;
    let held = state
        .store()
        .key_counts(caller.account_id(), caller.device_id())
        .await?;
    check_room(limits.max_one_time_keys, held, &update)?;
    state
        .store()
        .store_keys(caller.account_id(), caller.device_id(), update)
        .await?;
    Ok(())
}

/// Checks that a device holding `held` one-time prekeys may take the
/// update's: at most `max` of each kind (`400 invalid-request` saying how
/// many more fit). Every uploaded key counts, also one replacing a key id
/// the device holds. Concurrent uploads of one device may each pass and go
/// a little above: the cap bounds storage, it is not a contract.
fn check_room(max: u32, held: passerelle_store::KeyCounts, update: &KeyUpdate) -> ApiResult<()> {
    for (what, held, adding) in [
        ("prekeys", held.pre_keys, update.pre_keys.len()),
        (
            "Kyber prekeys",
            held.kyber_pre_keys,
            update.kyber_pre_keys.len(),
        ),
    ] {
        let room = max.saturating_sub(held);
        if adding > usize::try_from(room).unwrap_or(usize::MAX) {
            return Err(ApiError::invalid(format!(
                "the device holds {held} one-time {what} of at most {max}: \
                 there is room for {room} more, not {adding}"
            )));
        }
    }
    Ok(())
}

/// How many one-time prekeys the calling device has left.
pub async fn counts(state: &AppState, caller: &Authenticated) -> ApiResult<KeyCounts> {
    let counts = state
        .store()
        .key_counts(caller.account_id(), caller.device_id())
        .await?;
    Ok(KeyCounts {
        pre_keys: counts.pre_keys,
        kyber_pre_keys: counts.kyber_pre_keys,
        low_water_mark: state.config().limits.key_low_water_mark,
    })
}

/// Which devices a bundle request names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceSelector {
    /// One device.
    One(DeviceId),
    /// Every device (`*`); for the caller's own account, every other one.
    All,
}

impl std::str::FromStr for DeviceSelector {
    type Err = ApiError;
    fn from_str(s: &str) -> ApiResult<Self> {
        if s == "*" {
            return Ok(Self::All);
        }
        s.parse().map(Self::One).map_err(|_| {
            ApiError::new(
                ProblemType::InvalidParameter,
                "device must be a device id from 1 to 127, or *",
            )
        })
    }
}

fn bundle(claimed: ClaimedKeys) -> DeviceBundle {
    DeviceBundle {
        device_id: claimed.device_id,
        registration_id: claimed.registration_id,
        pre_key: claimed.pre_key.map(|k| PreKey {
            key_id: k.key_id,
            public_key: k.public_key.into(),
        }),
        signed_pre_key: SignedPreKey {
            key_id: claimed.signed_pre_key.key_id,
            public_key: claimed.signed_pre_key.public_key.into(),
            signature: claimed.signed_pre_key.signature.into(),
        },
        kyber_pre_key: KyberPreKey {
            key_id: claimed.kyber_pre_key.key_id,
            public_key: claimed.kyber_pre_key.public_key.into(),
            signature: claimed.kyber_pre_key.signature.into(),
        },
    }
}

/// Claims bundles of one or every device of an account.
pub async fn claim(
    state: &AppState,
    caller: &Authenticated,
    account_id: AccountId,
    selector: DeviceSelector,
) -> ApiResult<Bundles> {
    let store = state.store();
    let account = store
        .account(account_id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such account"))?;
    accounts::check_contact(state, &caller.account, &account)?;
    let devices = match selector {
        DeviceSelector::One(device) => vec![device],
        DeviceSelector::All => store
            .devices(account_id)
            .await?
            .into_iter()
            .map(|d| d.id)
            .filter(|&d| account_id != caller.account_id() || d != caller.device_id())
            .collect(),
    };
    let mut bundles = Vec::with_capacity(devices.len());
    for device in devices {
        if let Some(claimed) = store.claim_keys(account_id, device).await? {
            bundles.push(bundle(claimed));
        }
    }
    if bundles.is_empty() {
        return Err(ApiError::not_found(match selector {
            DeviceSelector::One(_) => "no such device, or it has published no keys",
            DeviceSelector::All => "the account has no other devices with published keys",
        }));
    }
    Ok(Bundles {
        account_id,
        identity_key: account.identity_key.into(),
        devices: bundles,
    })
}

// ---- handlers ----

pub(crate) async fn upload_handler(
    State(state): State<AppState>,
    caller: Authenticated,
    Json(body): Json<UploadKeys>,
) -> ApiResult<StatusCode> {
    upload(&state, &caller, body).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn counts_handler(
    State(state): State<AppState>,
    caller: Authenticated,
) -> ApiResult<Json<KeyCounts>> {
    counts(&state, &caller).await.map(Json)
}

pub(crate) async fn claim_handler(
    State(state): State<AppState>,
    caller: Authenticated,
    Path((account_id, device)): Path<(AccountId, String)>,
) -> ApiResult<Json<Bundles>> {
    let selector = device.parse()?;
    claim(&state, &caller, account_id, selector).await.map(Json)
}
