//! Devices: listing and removing them, link tokens, linking a new device,
//! and the provisioning mailboxes that carry the account's keys to it.
//!
//! See [`passerelle_proto::api::devices`] for the linking flow. Link tokens
//! are 32 random bytes, stored hashed, valid for 10 minutes and once: a
//! link attempt consumes its token whatever its outcome. Mailboxes live 10
//! minutes, take one message (the first one stays) and are deleted once
//! fetched.
//!
//! Only the primary device (1) creates link tokens and removes other
//! devices (`403 forbidden` otherwise); any device but the primary may
//! remove itself.

use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use passerelle_proto::api::devices::{
    DeviceInfo, DeviceList, LinkDevice, LinkToken, Linked, Mailbox, ProvisioningMessage,
};
use passerelle_proto::{DeviceId, ProblemType};
use passerelle_store::MailboxFill;
use rand::RngCore as _;
use uuid::Uuid;

use crate::accounts::new_device;
use crate::auth::{Authenticated, tagged_sha256};
use crate::clock::millis;
use crate::extract::{Json, Path};
use crate::keys::parse_identity_key;
use crate::problem::{ApiError, ApiResult};
use crate::ratelimit::{Links, Mailboxes, PerIp};
use crate::state::AppState;

/// How long a link token is valid.
pub const LINK_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(10 * 60);
/// How long a provisioning mailbox stays open.
pub const MAILBOX_TTL: std::time::Duration = std::time::Duration::from_secs(10 * 60);

fn token_hash(token: &str) -> Vec<u8> {
    tagged_sha256(b"passerelle-link-token", &[token.as_bytes()]).to_vec()
}

/// Only the primary device manages the account's other devices.
fn check_primary(caller: &Authenticated, what: &str) -> ApiResult<()> {
    if caller.device_id() != DeviceId::PRIMARY {
        return Err(ApiError::forbidden(format!(
            "only the primary device (1) can {what}"
        )));
    }
    Ok(())
}

// ---- service ----

/// The caller's devices.
pub async fn list(state: &AppState, caller: &Authenticated) -> ApiResult<DeviceList> {
    let devices = state.store().devices(caller.account_id()).await?;
    Ok(DeviceList {
        devices: devices
            .into_iter()
            .map(|d| DeviceInfo {
                device_id: d.id,
                name: d.name,
                created_at: d.created_at,
                last_seen_at: d.last_seen_at,
            })
            .collect(),
    })
}

/// Removes a device of the caller's account (not the primary one), with
/// its keys and queued envelopes, and closes its connection. The primary
/// device may remove any other; any device may remove itself.
pub async fn remove(state: &AppState, caller: &Authenticated, device: DeviceId) -> ApiResult<()> {
    if device == DeviceId::PRIMARY {
        return Err(ApiError::forbidden("the primary device cannot be removed"));
    }
    if device != caller.device_id() {
        check_primary(caller, "remove other devices")?;
    }
    if !state
        .store()
        .remove_device(caller.account_id(), device)
        .await?
    {
        return Err(ApiError::not_found(format!("no device {device}")));
    }
    state.delivery().disconnect(caller.account_id(), device);
    tracing::info!(account = %caller.account_id(), device = %device, "device removed");
    Ok(())
}

/// A one-time link token for the caller's account.
pub async fn create_link_token(state: &AppState, caller: &Authenticated) -> ApiResult<LinkToken> {
    check_primary(caller, "link new devices")?;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let expires_at = state.now().saturating_add(millis(LINK_TOKEN_TTL));
    state
        .store()
        .save_link_token(token_hash(&token), caller.account_id(), expires_at)
        .await?;
    Ok(LinkToken { token, expires_at })
}

/// Adds a device to the account of a link token.
pub async fn link(state: &AppState, request: LinkDevice) -> ApiResult<Linked> {
    let store = state.store();
    let now = state.now();
    let refused = || ApiError::forbidden("the link token is unknown, used or expired");
    let account_id = store
        .take_link_token(&token_hash(&request.token), now)
        .await?
        .ok_or_else(refused)?;
    let account = store.account(account_id).await?.ok_or_else(refused)?;
    let identity = parse_identity_key(&account.identity_key).map_err(ApiError::internal)?;
    let device = new_device(
        state,
        &identity,
        &request.password,
        request.registration_id,
        request.device_name,
        &request.keys,
    )?;
    let max_devices = state.config().policy(&account.address.app).max_devices;
    let device_id = store.add_device(account_id, device, max_devices).await?;
    tracing::info!(account = %account_id, device = %device_id, "device linked");
    Ok(Linked {
        account_id,
        address: account.address,
        device_id,
    })
}

/// Opens a provisioning mailbox.
pub async fn open_mailbox(state: &AppState) -> ApiResult<Mailbox> {
    let id = Uuid::new_v4();
    let expires_at = state.now().saturating_add(millis(MAILBOX_TTL));
    state.store().open_mailbox(id, expires_at).await?;
    Ok(Mailbox { id, expires_at })
}

/// Leaves a provisioning message in a mailbox.
pub async fn provision(state: &AppState, id: Uuid, message: ProvisioningMessage) -> ApiResult<()> {
    let max = state.config().limits.max_provisioning_bytes;
    if message.ciphertext.as_slice().len() > max {
        return Err(ApiError::new(
            ProblemType::BodyTooLarge,
            format!("a provisioning message is at most {max} bytes"),
        ));
    }
    match state
        .store()
        .fill_mailbox(id, message.ciphertext.into_vec(), state.now())
        .await?
    {
        MailboxFill::Filled => Ok(()),
        // The first message wins: nobody may swap it for another.
        MailboxFill::Occupied => Err(ApiError::forbidden("the mailbox already holds a message")),
        MailboxFill::Missing => Err(ApiError::not_found("no such mailbox, or it has expired")),
    }
}

/// Takes the message out of a mailbox, which is then deleted.
pub async fn fetch_provisioning(state: &AppState, id: Uuid) -> ApiResult<ProvisioningMessage> {
    state
        .store()
        .take_mailbox(id, state.now())
        .await?
        .map(|m| ProvisioningMessage {
            ciphertext: m.into(),
        })
        .ok_or_else(|| ApiError::not_found("the mailbox is empty, expired or unknown"))
}

// ---- handlers ----

pub(crate) async fn list_handler(
    State(state): State<AppState>,
    caller: Authenticated,
) -> ApiResult<Json<DeviceList>> {
    list(&state, &caller).await.map(Json)
}

pub(crate) async fn remove_handler(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(device): Path<DeviceId>,
) -> ApiResult<StatusCode> {
    remove(&state, &caller, device).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn link_token_handler(
    State(state): State<AppState>,
    caller: Authenticated,
) -> ApiResult<Json<LinkToken>> {
    create_link_token(&state, &caller).await.map(Json)
}

pub(crate) async fn link_handler(
    _: PerIp<Links>,
    State(state): State<AppState>,
    Json(body): Json<LinkDevice>,
) -> ApiResult<Json<Linked>> {
    link(&state, body).await.map(Json)
}

pub(crate) async fn open_mailbox_handler(
    _: PerIp<Mailboxes>,
    State(state): State<AppState>,
) -> ApiResult<Json<Mailbox>> {
    open_mailbox(&state).await.map(Json)
}

pub(crate) async fn provision_handler(
    State(state): State<AppState>,
    _caller: Authenticated,
    Path(id): Path<Uuid>,
    Json(body): Json<ProvisioningMessage>,
) -> ApiResult<StatusCode> {
    provision(&state, id, body).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn fetch_provisioning_handler(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<ProvisioningMessage>> {
    fetch_provisioning(&state, id).await.map(Json)
}
