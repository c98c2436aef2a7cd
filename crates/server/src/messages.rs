//! Sending: one request carries one ciphertext per device of the
//! recipient account; the hub checks the device list, queues one envelope
//! per device durably, answers, then wakes the devices.
//!
//! Checks, in order: the recipient exists (`404`); the recipient's app
//! allows the contact (`403 not-allowed`); the message names exactly the
//! recipient's devices (`409 mismatched-devices`, with the missing and extra
//! ones) — for the sender's own account, every device but the sending one
//! (sync copies); each registration id is current (`410 stale-devices`).
//! A device removed between these checks and the commit is answered like
//! the first check: `409 mismatched-devices`. Then (unless `online_only`)
//! no recipient device may have its most queued envelopes (`429
//! rate-limited`, naming the device).
//!
//! Queueing and waking run in a task of their own, so a request dropped
//! after the commit (the client went away, the request timed out) still
//! wakes the devices.

use std::collections::BTreeSet;
use std::time::Instant;

use axum::extract::State;
use passerelle_proto::api::messages::{MismatchedDevices, SendMessages, Sent, StaleDevices};
use passerelle_proto::{AccountId, DeviceId, Envelope, EnvelopeKind, ProblemType, Source};
use passerelle_store::{QueuedEnvelope, StoreError};
use uuid::Uuid;

use crate::accounts::check_contact;
use crate::auth::Authenticated;
use crate::clock::millis;
use crate::extract::{Json, Path};
use crate::metrics;
use crate::problem::{ApiError, ApiResult};
use crate::state::AppState;

/// Sends one message to every device of `recipient`.
pub async fn send(
    state: &AppState,
    sender: &Authenticated,
    recipient: AccountId,
    request: SendMessages,
) -> ApiResult<Sent> {
    let max = state.config().limits.max_messages_per_send;
    if request.messages.len() > max {
        return Err(ApiError::invalid(format!(
            "at most {max} messages per send"
        )));
    }
    let mut named = BTreeSet::new();
    for m in &request.messages {
        if m.kind == EnvelopeKind::ServerNotice {
            return Err(ApiError::invalid("only the hub sends server notices"));
        }
        if !named.insert(m.device_id) {
            return Err(ApiError::invalid(format!(
                "device {} is named twice",
                m.device_id
            )));
        }
    }

    let store = state.store();
    let account = store
        .account(recipient)
        .await?
        .ok_or_else(|| ApiError::not_found("no such account"))?;
    check_contact(state, &sender.account, &account)?;

    let registrations: Vec<(DeviceId, u32)> = request
        .messages
        .iter()
        .map(|m| (m.device_id, m.registration_id))
        .collect();
    let expected = check_devices(state, sender, recipient, &registrations).await?;
    let now = state.now();
    let source = Source {
        address: sender.account.address.clone(),
        account_id: sender.account_id(),
        device_id: sender.device_id(),
    };
    let envelopes = request.messages.into_iter().map(|m| Envelope {
        id: Uuid::new_v4(),
        kind: m.kind,
        source: Some(source.clone()),
        destination_device: m.device_id,
        client_timestamp: request.timestamp,
        server_timestamp: now,
        content: Some(m.content),
        notice: None,
    });

    if request.online_only {
        // Pushes to other nodes wait for an answer: all at once.
        let pushes = envelopes.map(|envelope| {
            let device = envelope.destination_device;
            state.delivery().push_ephemeral(recipient, device, envelope)
        });
        let pushed = futures_util::future::join_all(pushes)
            .await
            .into_iter()
            .filter(|&taken| taken)
            .count();
        metrics::ephemeral(pushed);
        return Ok(Sent {
            server_timestamp: now,
        });
    }

    check_queues(state, recipient, &expected).await?;
    let retention = state.config().policy(&account.address.app).retention;
    let expires_at = now.saturating_add(millis(retention));
    let queued: Vec<QueuedEnvelope> = envelopes
        .map(|envelope| QueuedEnvelope {
            account_id: recipient,
            envelope,
            expires_at,
        })
        .collect();
    // Queue and wake in a task of its own: if this request is dropped (the
    // client went away, the request timed out) once the envelopes are
    // committed, their devices are still woken.
    let task = tokio::spawn(queue_and_wake(state.clone(), recipient, queued, expected));
    match task.await.map_err(ApiError::internal)? {
        Ok(()) => {}
        // A device was removed since the check: tell the sender which.
        Err(StoreError::NoSuchDevice) => {
            check_devices(state, sender, recipient, &registrations).await?;
            return Err(ApiError::new(
                ProblemType::Unavailable,
                "the recipient's devices changed during the send: try again",
            ));
        }
        Err(e) => return Err(e.into()),
    }
    tracing::debug!(
        sender = %sender.account_id(),
        recipient = %recipient,
        "envelopes queued"
    );
    Ok(Sent {
        server_timestamp: now,
    })
}

/// How long a sender refused for a full queue is told to wait.
const FULL_QUEUE_RETRY: std::time::Duration = std::time::Duration::from_secs(60);

/// Checks that no recipient device has its most queued envelopes
/// (`limits.max_queued_envelopes`): else the send is refused whole, `429
/// rate-limited`, naming the device. Concurrent sends may each pass and go
/// a little above: the cap bounds storage, it is not a contract.
async fn check_queues(
    state: &AppState,
    recipient: AccountId,
    devices: &BTreeSet<DeviceId>,
) -> ApiResult<()> {
    let max = state.config().limits.max_queued_envelopes;
    for &device in devices {
        let queued = state.store().queued_count(recipient, device).await?;
        if queued >= max {
            return Err(ApiError::rate_limited(
                format!(
                    "device {device} of the recipient has {queued} envelopes waiting, \
                     the most it may hold: try again once it has caught up"
                ),
                FULL_QUEUE_RETRY,
            ));
        }
    }
    Ok(())
}

/// Queues envelopes durably, then wakes their devices.
async fn queue_and_wake(
    state: AppState,
    recipient: AccountId,
    queued: Vec<QueuedEnvelope>,
    devices: BTreeSet<DeviceId>,
) -> Result<(), StoreError> {
    let count = queued.len();
    let start = Instant::now();
    state.store().enqueue(queued).await?;
    metrics::enqueued(count, start.elapsed());
    for device in devices {
        state.delivery().wake(recipient, device);
    }
    Ok(())
}

/// Checks that the messages' `(device, registration id)` pairs name
/// exactly the recipient's devices (for the sender's own account, all but
/// the sending one) and that every registration id is current; returns the
/// devices.
async fn check_devices(
    state: &AppState,
    sender: &Authenticated,
    recipient: AccountId,
    registrations: &[(DeviceId, u32)],
) -> ApiResult<BTreeSet<DeviceId>> {
    let named: BTreeSet<DeviceId> = registrations.iter().map(|&(d, _)| d).collect();
    let own = recipient == sender.account_id();
    let devices: Vec<_> = state
        .store()
        .devices(recipient)
        .await?
        .into_iter()
        .filter(|d| !own || d.id != sender.device_id())
        .collect();
    let expected: BTreeSet<DeviceId> = devices.iter().map(|d| d.id).collect();
    if expected != named {
        let mismatch = MismatchedDevices {
            missing_devices: expected.difference(&named).copied().collect(),
            extra_devices: named.difference(&expected).copied().collect(),
        };
        return Err(ApiError::new(
            ProblemType::MismatchedDevices,
            "the message does not name exactly the recipient's devices",
        )
        .with(&mismatch));
    }
    let stale: Vec<DeviceId> = registrations
        .iter()
        .filter(|&&(id, registration_id)| {
            devices
                .iter()
                .any(|d| d.id == id && d.registration_id != registration_id)
        })
        .map(|&(id, _)| id)
        .collect();
    if !stale.is_empty() {
        return Err(ApiError::new(
            ProblemType::StaleDevices,
            "some devices registered again: start new sessions with them",
        )
        .with(&StaleDevices {
            stale_devices: stale,
        }));
    }
    Ok(expected)
}

pub(crate) async fn send_handler(
    State(state): State<AppState>,
    sender: Authenticated,
    Path(recipient): Path<AccountId>,
    Json(body): Json<SendMessages>,
) -> ApiResult<Json<Sent>> {
    send(&state, &sender, recipient, body).await.map(Json)
}
