//! `GET /v1/websocket`: the delivery connection of one device.
//!
//! On connect the hub records that the device was seen, sends every queued
//! envelope oldest first, then `queue_empty`, then new envelopes as they are
//! queued. A wake makes the connection read what is queued after the last
//! envelope it sent that is still unacknowledged (the store reads from the
//! start when that one is gone, and then every envelope still queued is
//! unsent), page by page: envelopes go out in the store's order, none is
//! missed, and none is sent twice on one connection unless it expired
//! meanwhile or the device left more than [`MAX_TRACKED`] unacknowledged.
//! Envelopes the device does not acknowledge stay queued and are sent again
//! on its next connection (same ids). Ephemeral envelopes are pushed as they
//! come. A second connection of the same device replaces the first.
//!
//! Client frames of an unknown `type` are ignored (logged at debug);
//! binary frames and frames that are not JSON or lack a `type` close the
//! connection with `1008`.
//!
//! Memory per connection stays small, because most connections idle: a
//! 1 KiB read buffer, a write buffer that holds one frame at a time, one
//! page of envelopes at a time while a queue is read, a
//! [`Mailbox`](super::Mailbox) that allocates nothing until something is
//! pushed, and a task whose idle state holds only the socket halves, the
//! cursor and the waits (the work done on a wake or a frame is boxed while
//! it runs). About 4.3 KiB of hub memory in all (`docs/performance.md`).

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt as _, StreamExt as _};
use passerelle_proto::ws::{ClientFrame, ServerFrame};
use passerelle_proto::{AccountId, DeviceId, Envelope, ProblemType};
use uuid::Uuid;

use super::{CloseReason, Mail};
use crate::auth::Authenticated;
use crate::metrics;
use crate::problem::{ApiError, ApiResult};
use crate::state::AppState;

/// How long one frame may take to go out before the connection is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How many sent, unacknowledged envelope ids a connection remembers.
pub const MAX_TRACKED: usize = 4096;
/// The most ids one `ack` frame may carry.
const MAX_ACK_IDS: usize = 1024;
/// The read buffer of a connection, held for its whole life. Devices send
/// only acks, and an ack of a dozen ids fits; a larger frame grows the
/// buffer while it is read.
const READ_BUFFER: usize = 1024;
/// Frames are written out once this many bytes are buffered (or at flush).
const WRITE_BUFFER: usize = 8 * 1024;

/// The `type`s of [`ClientFrame`] this hub understands; others are ignored.
const KNOWN_CLIENT_FRAMES: &[&str] = &["ack"];

/// Close codes (RFC 6455 and the private range).
mod code {
    pub const GOING_AWAY: u16 = 1001;
    pub const POLICY: u16 = 1008;
    pub const INTERNAL: u16 = 1011;
    pub const REPLACED: u16 = 4000;
    pub const REMOVED: u16 = 4001;
}

type Sink = SplitSink<WebSocket, Message>;

#[derive(Debug)]
enum End {
    /// The device went away or the socket failed.
    Gone,
    /// The hub closes, with a code and reason.
    Close(u16, &'static str),
}

pub(crate) async fn handler(
    State(state): State<AppState>,
    caller: Authenticated,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let upgrade = upgrade.map_err(|e| {
        ApiError::new(
            ProblemType::InvalidRequest,
            format!("this route takes a WebSocket upgrade: {}", e.body_text()),
        )
    })?;
    let limits = &state.config().limits;
    // One envelope frame is at most about a request body (the content was
    // in one), plus its JSON wrapping.
    let largest_frame = limits.max_body_bytes + 4096;
    // The upgrade's task keeps what its callback captures for as long as
    // the connection lives: the ids, not the caller's records.
    let (account, device) = (caller.account_id(), caller.device_id());
    Ok(upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(WRITE_BUFFER + largest_frame)
        .max_message_size(limits.max_ws_message_bytes)
        .max_frame_size(limits.max_ws_message_bytes)
        .on_upgrade(move |socket| {
            let (sink, stream) = socket.split();
            session(state, account, device, sink, stream)
        }))
}

/// One device's connection, from the upgrade to the close. The task that
/// runs it lives as long as the connection: it holds only what the
/// connection needs (the socket is split, on the heap, before it starts).
async fn session(
    state: AppState,
    account: AccountId,
    device: DeviceId,
    mut sink: Sink,
    stream: SplitStream<WebSocket>,
) {
    if let Err(e) = state
        .store()
        .touch_device(account, device, state.now())
        .await
    {
        tracing::warn!(error = %e, "could not record a device's connection");
    }
    // Register before the first read of the queue, so that a wake that
    // comes during it is kept for the loop below.
    let connection = state.registry().register(account, device);
    tracing::debug!(account = %account, device = %device, "device connected");
    let end = run(&state, account, device, connection, &mut sink, stream).await;
    if let End::Close(code, reason) = end {
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        };
        let _ = boxed(tokio::time::timeout(
            SEND_TIMEOUT,
            sink.send(Message::Close(Some(frame))),
        ))
        .await;
    }
    tracing::debug!(account = %account, device = %device, ?end, "device disconnected");
}

async fn run(
    state: &AppState,
    account: AccountId,
    device: DeviceId,
    mut connection: super::Connection,
    sink: &mut Sink,
    mut stream: SplitStream<WebSocket>,
) -> End {
    let mut shutdown = state.shutdown_signal();
    let mut cursor = Cursor {
        state,
        account,
        device,
        unacked: VecDeque::new(),
    };
    if let Err(end) = boxed(cursor.drain(sink)).await {
        return end;
    }
    if let Err(end) = boxed(send(sink, &ServerFrame::QueueEmpty)).await {
        return end;
    }
    let mut ping = tokio::time::interval(state.config().limits.ws_ping_interval);
    ping.reset();
    loop {
        let step = tokio::select! {
            reason = &mut connection.closed => Err(match reason {
                Ok(CloseReason::Replaced) => End::Close(code::REPLACED, "replaced by a new connection"),
                Ok(CloseReason::Removed) => End::Close(code::REMOVED, "device removed"),
                Err(_) => End::Close(code::INTERNAL, "closed"),
            }),
            () = stopping(&mut shutdown) => Err(End::Close(code::GOING_AWAY, "hub shutting down")),
            mail = connection.mailbox.recv() => match mail {
                Mail::Queued => boxed(cursor.drain(sink)).await,
                Mail::Ephemeral(envelope) => boxed(send(sink, &ServerFrame::Envelope { envelope })).await,
            },
            frame = stream.next() => match frame {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => Err(End::Gone),
                Some(Ok(Message::Text(text))) => boxed(cursor.client_frame(text.as_str())).await,
                // Pings are answered by the socket, pongs need nothing;
                // binary frames are not part of the protocol.
                Some(Ok(Message::Binary(_))) => Err(End::Close(code::POLICY, "frames are JSON text")),
                Some(Ok(_)) => Ok(()),
            },
            _ = ping.tick() => boxed(timed(sink.send(Message::Ping(Default::default())))).await,
        };
        if let Err(end) = step {
            return end;
        }
    }
}

/// Where a connection is in its device's queue.
struct Cursor<'a> {
    state: &'a AppState,
    account: AccountId,
    device: DeviceId,
    /// Envelopes sent on this connection and not yet acknowledged, in the
    /// order sent (the store's order); at most [`MAX_TRACKED`].
    unacked: VecDeque<Uuid>,
}

impl Cursor<'_> {
    /// Sends everything queued after the last envelope sent.
    async fn drain(&mut self, sink: &mut Sink) -> Result<(), End> {
        let page = self.state.config().limits.delivery_page_size;
        loop {
            let envelopes = self
                .state
                .store()
                .queued(
                    self.account,
                    self.device,
                    self.unacked.back().copied(),
                    page,
                )
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "could not read a device's queue");
                    End::Close(code::INTERNAL, "internal error")
                })?;
            let full = envelopes.len() >= page as usize;
            for envelope in envelopes {
                let id = envelope.id;
                send_envelope(sink, envelope).await?;
                if self.unacked.len() == MAX_TRACKED {
                    self.unacked.pop_front();
                }
                self.unacked.push_back(id);
                metrics::delivered(1);
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// Handles one frame from the device. A frame of a `type` this hub
    /// does not know is ignored (a newer client may send it); a frame that
    /// is not JSON, has no `type`, or is a known type with bad fields closes
    /// the connection.
    async fn client_frame(&mut self, text: &str) -> Result<(), End> {
        let malformed = || End::Close(code::POLICY, "malformed frame");
        let value: serde_json::Value = serde_json::from_str(text).map_err(|_| malformed())?;
        let kind = value.get("type").and_then(serde_json::Value::as_str);
        match kind {
            None => return Err(malformed()),
            Some(kind) if !KNOWN_CLIENT_FRAMES.contains(&kind) => {
                tracing::debug!(
                    account = %self.account,
                    device = %self.device,
                    frame_type = kind,
                    "ignored a frame of an unknown type"
                );
                return Ok(());
            }
            Some(_) => {}
        }
        match serde_json::from_value::<ClientFrame>(value) {
            Ok(ClientFrame::Ack { ids }) => {
                if ids.len() > MAX_ACK_IDS {
                    return Err(End::Close(code::POLICY, "too many ids in one ack"));
                }
                let acknowledged = self
                    .state
                    .store()
                    .acknowledge(self.account, self.device, &ids)
                    .await
                    .map_err(|e| {
                        tracing::error!(error = %e, "could not acknowledge envelopes");
                        End::Close(code::INTERNAL, "internal error")
                    })?;
                metrics::acknowledged(acknowledged);
                let acked: HashSet<Uuid> = ids.into_iter().collect();
                self.unacked.retain(|id| !acked.contains(id));
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(_) => Err(malformed()),
        }
    }
}

/// Runs `work` on the heap. A connection's task is as large as the largest
/// state of its future, and it idles far more than it works: the work is
/// boxed while it runs, so the idle task stays small.
fn boxed<F: Future>(work: F) -> std::pin::Pin<Box<F>> {
    Box::pin(work)
}

async fn timed<E>(f: impl Future<Output = Result<(), E>>) -> Result<(), End> {
    match tokio::time::timeout(SEND_TIMEOUT, f).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) | Err(_) => Err(End::Gone),
    }
}

async fn send(sink: &mut Sink, frame: &ServerFrame) -> Result<(), End> {
    let text = serde_json::to_string(frame).map_err(|e| {
        tracing::error!(error = %e, "could not encode a frame");
        End::Close(code::INTERNAL, "internal error")
    })?;
    timed(sink.send(Message::Text(text.into()))).await
}

async fn send_envelope(sink: &mut Sink, envelope: Envelope) -> Result<(), End> {
    send(
        sink,
        &ServerFrame::Envelope {
            envelope: Box::new(envelope),
        },
    )
    .await
}

/// Resolves when the hub shuts down.
pub(crate) async fn stopping(signal: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = signal.wait_for(|&stop| stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every frame type the proto defines is known here.
    #[test]
    fn known_frames_match_the_proto() {
        let ack = serde_json::to_value(ClientFrame::Ack { ids: Vec::new() }).unwrap();
        let kind = ack.get("type").and_then(serde_json::Value::as_str).unwrap();
        assert!(KNOWN_CLIENT_FRAMES.contains(&kind));
    }
}
