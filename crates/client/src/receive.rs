//! Receiving: the delivery socket, driven by a [`Listener`].
//!
//! For each envelope the listener hands it to the core (decrypt, file,
//! mark processed, commit), then acknowledges it, then reports its events.
//! A crash between commit and ack means a redelivery, which the core drops
//! by envelope id: the app sees each message once.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::Stream;
use passerelle_proto::ws::ServerFrame;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::client::{Client, now_ms};
use crate::error::{ClientError, Result};
use crate::types::Event;
use crate::ws::Socket;

/// How often the listener pings the hub, to keep the connection open and
/// notice when it is gone.
pub const PING_INTERVAL: Duration = Duration::from_secs(30);

/// How many times a listener that fails over tries to connect again, over
/// all nodes, before it reports the failure.
pub const RECONNECT_ATTEMPTS: u32 = 8;
/// The first pause between reconnection attempts; it doubles up to
/// [`MAX_RECONNECT_PAUSE`].
const FIRST_RECONNECT_PAUSE: Duration = Duration::from_millis(100);
const MAX_RECONNECT_PAUSE: Duration = Duration::from_secs(5);

/// Close codes with which the hub means "do not come back": another
/// connection of this device replaced this one (4000), the device was
/// removed (4001).
const FINAL_CLOSE_CODES: &[u16] = &[4000, 4001];

/// A connection to the hub's delivery socket, yielding [`Event`]s.
///
/// Get one from [`Client::listen`]; call [`Listener::next`] in a loop (or
/// use [`Listener::into_stream`]). It yields [`Event::QueueEmpty`] once the
/// messages queued while the device was offline are processed, then keeps
/// yielding new ones; `None` means the hub closed the connection (listen
/// again to reconnect).
///
/// Once [`Client::set_servers`] was called, a lost connection is not the
/// end: the listener connects again, to the next node, and yields
/// [`Event::QueueEmpty`] again once it has read what was queued meanwhile.
/// It ends (`None`) only when the hub closed it for good (the device
/// connected elsewhere or was removed), and reports an error after
/// [`RECONNECT_ATTEMPTS`] failed attempts.
pub struct Listener {
    client: Client,
    socket: Option<Socket>,
    buffer: VecDeque<Event>,
    failure: Option<ClientError>,
    drained: bool,
    prekeys_used: bool,
    ping: Interval,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("connected", &self.socket.is_some())
            .field("drained", &self.drained)
            .field("buffered", &self.buffer.len())
            .finish()
    }
}

impl Client {
    /// Connects to the delivery socket. Before listening it tops up this
    /// device's prekeys if the hub runs low, and refreshes the list of the
    /// account's devices.
    pub async fn listen(&self) -> Result<Listener> {
        let socket = self.connect_socket().await?;
        if let Err(e) = self.refresh_prekeys().await {
            tracing::warn!(error = %e, "could not check prekeys");
        }
        if let Err(e) = self.devices().await {
            tracing::warn!(error = %e, "could not refresh the device list");
        }
        let pruned = self
            .with_store(|s, _| s.prune_processed(now_ms()))
            .await
            .unwrap_or(0);
        if pruned > 0 {
            tracing::debug!(pruned, "forgot old processed envelope ids");
        }
        let mut ping = tokio::time::interval_at(Instant::now() + PING_INTERVAL, PING_INTERVAL);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ok(Listener {
            client: self.clone(),
            socket: Some(socket),
            buffer: VecDeque::new(),
            failure: None,
            drained: false,
            prekeys_used: false,
            ping,
        })
    }

    /// Opens the delivery socket on the node in use; on a node that cannot
    /// be reached, with failover on, on the next ones.
    async fn connect_socket(&self) -> Result<Socket> {
        let http = &self.inner.http;
        let auth = http.auth().ok_or(ClientError::NotRegistered)?.clone();
        let servers = http.servers();
        let tries = if servers.failover() { servers.len() } else { 1 };
        let mut last = None;
        for _ in 0..tries {
            let (node, base) = servers.current();
            match Socket::connect(&base, &auth).await {
                Ok(socket) => return Ok(socket),
                Err(e @ ClientError::Transport(_)) => {
                    servers.fail_over(node);
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(ClientError::NotRegistered))
    }

    /// Connects, processes everything queued for this device, and returns
    /// the events once the hub says the queue is empty.
    pub async fn sync_once(&self) -> Result<Vec<Event>> {
        let mut listener = self.listen().await?;
        let mut events = Vec::new();
        while let Some(event) = listener.next().await {
            match event? {
                Event::QueueEmpty => break,
                event => events.push(event),
            }
        }
        listener.close().await;
        Ok(events)
    }
}

impl Listener {
    /// The next event; `None` once the connection is closed.
    pub async fn next(&mut self) -> Option<Result<Event>> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                return Some(Ok(event));
            }
            self.buffer.extend(self.client.take_notices());
            if !self.buffer.is_empty() {
                continue;
            }
            if let Some(e) = self.failure.take() {
                return Some(Err(e));
            }
            let socket = self.socket.as_mut()?;
            let ping = &mut self.ping;
            let frame = tokio::select! {
                frame = socket.next_frame() => frame,
                _ = ping.tick() => {
                    if let Err(e) = socket.ping().await {
                        self.socket = None;
                        if let Some(e) = self.recover(e).await {
                            return Some(Err(e));
                        }
                    }
                    continue;
                }
            };
            match frame {
                Err(e) => {
                    self.socket = None;
                    if let Some(e) = self.recover(e).await {
                        return Some(Err(e));
                    }
                }
                Ok(None) => {
                    let code = socket.close_code();
                    self.socket = None;
                    let final_close = code.is_some_and(|c| FINAL_CLOSE_CODES.contains(&c));
                    if final_close || !self.client.inner.http.servers().failover() {
                        return None;
                    }
                    let lost = ClientError::WebSocket(format!(
                        "the hub closed the connection ({})",
                        code.map_or_else(|| "no code".to_owned(), |c| c.to_string())
                    ));
                    if let Some(e) = self.recover(lost).await {
                        return Some(Err(e));
                    }
                }
                Ok(Some(ServerFrame::Envelope { envelope })) => {
                    let id = envelope.id;
                    let handled = match self.client.handle_envelope(*envelope).await {
                        Ok(h) => h,
                        Err(e) => {
                            // Not committed, not acknowledged: the hub sends
                            // it again on the next connection.
                            self.socket = None;
                            return Some(Err(e));
                        }
                    };
                    if let Err(e) = socket.ack(vec![id]).await {
                        // Committed but not acknowledged: report what it
                        // said; the redelivery will be dropped.
                        self.socket = None;
                        self.failure = Some(e);
                    }
                    self.buffer.extend(handled.events);
                    self.prekeys_used |= handled.used_prekey;
                    if self.drained {
                        self.replenish().await;
                    }
                }
                Ok(Some(ServerFrame::QueueEmpty)) => {
                    self.drained = true;
                    self.replenish().await;
                    self.buffer.push_back(Event::QueueEmpty);
                }
                Ok(Some(_)) => {}
            }
        }
    }

    /// The connection was lost with `error`: with failover on, connects
    /// again (the next node first) and returns `None`; otherwise, or when
    /// every attempt failed, returns the error to report.
    async fn recover(&mut self, error: ClientError) -> Option<ClientError> {
        let servers = self.client.inner.http.servers();
        if !servers.failover()
            || !matches!(error, ClientError::Transport(_) | ClientError::WebSocket(_))
        {
            return Some(error);
        }
        tracing::info!(error = %error, "connection to the hub lost; connecting again");
        // The node that dropped the connection is likely going away.
        servers.fail_over(servers.current().0);
        let mut pause = FIRST_RECONNECT_PAUSE;
        let mut last = error;
        for _ in 0..RECONNECT_ATTEMPTS {
            match self.client.connect_socket().await {
                Ok(socket) => {
                    self.socket = Some(socket);
                    self.drained = false;
                    return None;
                }
                Err(e @ (ClientError::Transport(_) | ClientError::WebSocket(_))) => last = e,
                Err(e) => return Some(e),
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_RECONNECT_PAUSE);
        }
        Some(last)
    }

    /// Tops up prekeys if PreKey messages used some since the last check.
    async fn replenish(&mut self) {
        if !std::mem::take(&mut self.prekeys_used) {
            return;
        }
        if let Err(e) = self.client.refresh_prekeys().await {
            tracing::warn!(error = %e, "could not replenish prekeys");
        }
    }

    /// Whether the queued messages have all been processed.
    pub fn is_drained(&self) -> bool {
        self.drained
    }

    /// The events as a stream.
    pub fn into_stream(self) -> impl Stream<Item = Result<Event>> + Send {
        futures_util::stream::unfold(self, |mut listener| async move {
            listener.next().await.map(|event| (event, listener))
        })
    }

    /// Closes the connection.
    pub async fn close(mut self) {
        if let Some(socket) = self.socket.take() {
            socket.close().await;
        }
    }
}
