//! Apps, phone verification, registration, who-am-i and the directory, and
//! the cross-app contact policy.

use axum::extract::State;
use passerelle_proto::address::{RANDOM_ID_ALPHABET, RANDOM_ID_LENGTH};
use passerelle_proto::api::accounts::{
    AccountInfo, AppInfo, AppList, DeviceKeys, DirectoryEntry, RegisterAccount, Registered,
    Verification, VerificationRequest, VerificationSession,
};
use passerelle_proto::{
    AccountId, Address, AppId, DeviceId, Handle, IdentifierScheme, ProblemType,
};
use passerelle_signal::IdentityKey;
use passerelle_store::{
    Account, NewAccount, NewDevice, StoreError, VerificationOutcome, VerificationRecord,
};
use rand::Rng as _;
use uuid::Uuid;

use crate::auth::{Authenticated, check_new_password, hash_password, tagged_sha256};
use crate::clock::millis;
use crate::config::AppConfig;
use crate::extract::{Json, Path};
use crate::keys::{check_device_keys, parse_identity_key};
use crate::problem::{ApiError, ApiResult};
use crate::ratelimit::{PerIp, Registrations, Verifications};
use crate::state::AppState;

/// How long a verification code is valid.
pub const VERIFICATION_TTL: std::time::Duration = std::time::Duration::from_secs(10 * 60);
/// How many codes may be tried against one verification.
pub const MAX_VERIFICATION_ATTEMPTS: u32 = 5;
/// The highest Signal registration id.
pub const MAX_REGISTRATION_ID: u32 = 16380;
/// The longest device name, in characters.
pub const MAX_DEVICE_NAME_CHARS: usize = 64;
/// How many random ids registration draws before giving up.
const RANDOM_ID_TRIES: usize = 16;

// ---- policy and checks ----

/// The app with this id, or `404 unknown-app`.
pub fn app<'a>(state: &'a AppState, id: &AppId) -> ApiResult<&'a AppConfig> {
    state
        .config()
        .app(id)
        .ok_or_else(|| ApiError::new(ProblemType::UnknownApp, format!("no app {id} on this hub")))
}

/// Whether an account of `from_app` may contact accounts of `to_app`:
/// always within an app; across apps only if `to_app` allows third-party
/// contact (`403 not-allowed` otherwise).
pub fn check_contact_apps(state: &AppState, from_app: &AppId, to_app: &AppId) -> ApiResult<()> {
    if from_app == to_app {
        return Ok(());
    }
    match state.config().app(to_app) {
        Some(app) if !app.third_party_contact => Err(ApiError::new(
            ProblemType::NotAllowed,
            format!("{} accounts cannot be contacted from other apps", app.name),
        )),
        _ => Ok(()),
    }
}

/// [`check_contact_apps`] for two accounts.
pub fn check_contact(state: &AppState, from: &Account, to: &Account) -> ApiResult<()> {
    check_contact_apps(state, &from.address.app, &to.address.app)
}

/// Checks a new device's registration id and name.
pub fn check_device_fields(registration_id: u32, name: &str) -> ApiResult<()> {
    if !(1..=MAX_REGISTRATION_ID).contains(&registration_id) {
        return Err(ApiError::invalid(format!(
            "registration_id must be from 1 to {MAX_REGISTRATION_ID}"
        )));
    }
    if name.chars().count() > MAX_DEVICE_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "device_name must be at most {MAX_DEVICE_NAME_CHARS} characters, without control characters"
        )));
    }
    Ok(())
}

fn canonical(scheme: IdentifierScheme, input: &str) -> ApiResult<Handle> {
    scheme
        .canonical_handle(input)
        .map_err(|e| ApiError::invalid(format!("handle: {e}")))
}

/// Checks a new device (password, registration id, name, and keys against
/// the account's identity key) and makes it: registration and linking
/// share this.
pub fn new_device(
    state: &AppState,
    identity: &IdentityKey,
    password: &str,
    registration_id: u32,
    name: String,
    keys: &DeviceKeys,
) -> ApiResult<NewDevice> {
    check_new_password(password)?;
    check_device_fields(registration_id, &name)?;
    let keys = check_device_keys(identity, &state.config().limits, keys)?;
    Ok(NewDevice {
        name,
        registration_id,
        password_hash: hash_password(password),
        keys,
        now: state.now(),
    })
}

fn code_hash(session: Uuid, code: &str) -> Vec<u8> {
    tagged_sha256(
        b"passerelle-verification-code",
        &[session.as_bytes(), code.as_bytes()],
    )
    .to_vec()
}

fn verification_failed(detail: &str) -> ApiError {
    ApiError::new(ProblemType::VerificationFailed, detail)
}

// ---- service ----

/// The apps of this hub.
pub fn list_apps(state: &AppState) -> AppList {
    AppList {
        apps: state
            .config()
            .apps
            .iter()
            .map(|(id, app)| AppInfo {
                id: id.clone(),
                name: app.name.clone(),
                scheme: app.scheme,
                third_party_contact: app.third_party_contact,
                max_devices: app.max_devices,
            })
            .collect(),
    }
}

/// Starts a phone verification: draws a 6-digit code, stores its hash and
/// sends it. Only development mode can send codes so far: it writes them to
/// the log; otherwise the answer is `503 unavailable`.
pub async fn request_verification(
    state: &AppState,
    request: VerificationRequest,
) -> ApiResult<VerificationSession> {
    let app = app(state, &request.app)?;
    if app.scheme != IdentifierScheme::PhoneNumber {
        return Err(ApiError::invalid(format!(
            "{} does not use phone numbers: register without a verification",
            app.name
        )));
    }
    let handle = canonical(app.scheme, &request.handle)?;
    if !state.config().dev_mode {
        // No SMS gateway yet: say so rather than pretend a code was sent.
        return Err(ApiError::new(
            ProblemType::Unavailable,
            "this hub cannot send verification codes yet (no SMS gateway is configured)",
        ));
    }
    let session_id = Uuid::new_v4();
    let code = format!("{:06}", rand::rngs::OsRng.gen_range(0..1_000_000u32));
    let expires_at = state.now().saturating_add(millis(VERIFICATION_TTL));
    state
        .store()
        .save_verification(VerificationRecord {
            id: session_id,
            address: Address::new(handle.clone(), request.app.clone()),
            code_hash: code_hash(session_id, &code),
            expires_at,
            attempts: 0,
        })
        .await?;
    // Development mode: the log is the SMS gateway.
    tracing::info!(app = %request.app, "verification code for {handle}: {code}");
    Ok(VerificationSession {
        session_id,
        expires_at,
        dev_code: state.config().dev_mode.then_some(code),
    })
}

/// Checks a verification for an address. The store checks the code and
/// counts a wrong one in one atomic step, so concurrent guesses get no more
/// than [`MAX_VERIFICATION_ATTEMPTS`] tries; past the last attempt, or once
/// expired, the verification is gone.
async fn check_verification(
    state: &AppState,
    address: &Address,
    verification: &Verification,
) -> ApiResult<()> {
    let id = verification.session_id;
    let outcome = state
        .store()
        .attempt_verification(
            id,
            &code_hash(id, verification.code.trim()),
            state.now(),
            MAX_VERIFICATION_ATTEMPTS,
        )
        .await?;
    match outcome {
        VerificationOutcome::Verified { address: verified } if &verified == address => Ok(()),
        VerificationOutcome::Verified { .. } => Err(verification_failed(
            "this verification is for another phone number",
        )),
        VerificationOutcome::Wrong { remaining: 0 } => Err(verification_failed(
            "wrong code, and no attempts left: request a new one",
        )),
        VerificationOutcome::Wrong { remaining } => Err(verification_failed(&format!(
            "wrong code; {remaining} attempts left"
        ))),
        VerificationOutcome::Exhausted => Err(verification_failed(
            "too many wrong codes: request a new one",
        )),
        VerificationOutcome::Expired => Err(verification_failed(
            "the code has expired: request a new one",
        )),
        VerificationOutcome::Unknown => Err(verification_failed(
            "no such verification: request a new code",
        )),
    }
}

fn random_handle() -> ApiResult<Handle> {
    let mut rng = rand::rngs::OsRng;
    let id: String = (0..RANDOM_ID_LENGTH)
        .map(|_| char::from(RANDOM_ID_ALPHABET[rng.gen_range(0..RANDOM_ID_ALPHABET.len())]))
        .collect();
    id.parse().map_err(ApiError::internal)
}

/// Registers an account and its primary device.
pub async fn register(state: &AppState, request: RegisterAccount) -> ApiResult<Registered> {
    let app_id = request.app.clone();
    let app = app(state, &app_id)?;
    let identity = parse_identity_key(request.identity_key.as_slice())?;
    let device = new_device(
        state,
        &identity,
        &request.password,
        request.registration_id,
        request.device_name.clone(),
        &request.keys,
    )?;
    let new_account = |address: Address| NewAccount {
        id: AccountId::random(),
        address,
        identity_key: request.identity_key.0.clone(),
        device: device.clone(),
    };
    let required = || ApiError::invalid(format!("{} needs a handle", app.name));

    let account = match app.scheme {
        IdentifierScheme::PhoneNumber => {
            let handle = canonical(app.scheme, request.handle.as_deref().ok_or_else(required)?)?;
            let verification = request.verification.as_ref().ok_or_else(|| {
                ApiError::invalid(format!(
                    "{} needs a verified phone number: add verification",
                    app.name
                ))
            })?;
            let address = Address::new(handle, app_id);
            check_verification(state, &address, verification).await?;
            let account = new_account(address);
            state.store().create_account(account.clone()).await?;
            state
                .store()
                .delete_verification(verification.session_id)
                .await?;
            account
        }
        IdentifierScheme::Username => {
            let handle = canonical(app.scheme, request.handle.as_deref().ok_or_else(required)?)?;
            let account = new_account(Address::new(handle, app_id));
            state.store().create_account(account.clone()).await?;
            account
        }
        IdentifierScheme::RandomId => {
            if request.handle.is_some() {
                return Err(ApiError::invalid(format!(
                    "{} issues ids: register without a handle",
                    app.name
                )));
            }
            let mut created = None;
            for _ in 0..RANDOM_ID_TRIES {
                let account = new_account(Address::new(random_handle()?, app_id.clone()));
                match state.store().create_account(account.clone()).await {
                    Ok(()) => {
                        created = Some(account);
                        break;
                    }
                    Err(StoreError::AddressTaken(_)) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            created.ok_or_else(|| ApiError::internal("no free random id after many draws"))?
        }
    };
    tracing::info!(account = %account.id, app = %account.address.app, "account registered");
    Ok(Registered {
        account_id: account.id,
        address: account.address,
        device_id: DeviceId::PRIMARY,
    })
}

/// Who the caller is.
pub fn who_am_i(caller: &Authenticated) -> AccountInfo {
    AccountInfo {
        account_id: caller.account_id(),
        address: caller.account.address.clone(),
        device_id: caller.device_id(),
    }
}

/// The account with an address, if the caller may contact it.
pub async fn lookup(
    state: &AppState,
    caller: &Authenticated,
    address: &str,
) -> ApiResult<DirectoryEntry> {
    state.rate_limits().check_directory(caller.account_id())?;
    let invalid = |detail: String| ApiError::new(ProblemType::InvalidParameter, detail);
    let address: Address = address
        .parse()
        .map_err(|e| invalid(format!("address: {e}")))?;
    // Canonicalize handles of this hub's apps ("Alice@parley" is alice's).
    let address = match state.config().app(&address.app) {
        Some(app) => Address::new(
            app.scheme
                .canonical_handle(address.handle.as_str())
                .map_err(|e| invalid(format!("address: {e}")))?,
            address.app,
        ),
        None => address,
    };
    check_contact_apps(state, &caller.account.address.app, &address.app)?;
    let account = state
        .store()
        .account_by_address(&address)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no account {address}")))?;
    Ok(DirectoryEntry {
        account_id: account.id,
        address: account.address,
    })
}

// ---- handlers ----

pub(crate) async fn list_apps_handler(State(state): State<AppState>) -> Json<AppList> {
    Json(list_apps(&state))
}

pub(crate) async fn request_verification_handler(
    _: PerIp<Verifications>,
    State(state): State<AppState>,
    Json(body): Json<VerificationRequest>,
) -> ApiResult<Json<VerificationSession>> {
    request_verification(&state, body).await.map(Json)
}

pub(crate) async fn register_handler(
    _: PerIp<Registrations>,
    State(state): State<AppState>,
    Json(body): Json<RegisterAccount>,
) -> ApiResult<Json<Registered>> {
    register(&state, body).await.map(Json)
}

pub(crate) async fn who_am_i_handler(caller: Authenticated) -> Json<AccountInfo> {
    Json(who_am_i(&caller))
}

pub(crate) async fn lookup_handler(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(address): Path<String>,
) -> ApiResult<Json<DirectoryEntry>> {
    lookup(&state, &caller, &address).await.map(Json)
}
