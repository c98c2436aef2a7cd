//! Delivery WebSockets of bench devices: connect from a chosen source
//! address, receive envelopes, acknowledge them.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use anyhow::Context as _;
use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};
use passerelle_proto::ws::{ClientFrame, ServerFrame};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use uuid::Uuid;

use crate::recorder::Tracker;
use crate::register::Device;

/// The most ids in one ack frame (the hub takes up to 1024).
const ACK_BATCH: usize = 256;

/// Where the hub's WebSocket is.
#[derive(Clone, Debug)]
pub struct Target {
    /// The hub's socket address.
    pub addr: SocketAddr,
    /// The `ws://` URL.
    pub url: String,
}

impl Target {
    /// The WebSocket of the hub at `base` (an `http://` URL).
    pub async fn resolve(base: &url::Url) -> anyhow::Result<Self> {
        let host = base.host_str().context("the hub URL has no host")?;
        let port = base
            .port_or_known_default()
            .context("the hub URL has no port")?;
        let addr = tokio::net::lookup_host((host, port))
            .await?
            .next()
            .with_context(|| format!("{host} does not resolve"))?;
        let mut url = base.join(passerelle_proto::ws::PATH.trim_start_matches('/'))?;
        url.set_scheme(if base.scheme() == "https" {
            "wss"
        } else {
            "ws"
        })
        .map_err(|()| anyhow::anyhow!("cannot make a WebSocket URL"))?;
        Ok(Self {
            addr,
            url: url.to_string(),
        })
    }
}

/// An open delivery socket.
pub type Socket = WebSocketStream<TcpStream>;

/// Small buffers: the bench holds tens of thousands of sockets per process.
fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(1 << 20)
}

/// Opens the delivery socket of `device`, from its source address.
pub async fn connect(target: &Target, device: &Device) -> Result<Socket, String> {
    let tcp = tcp(target.addr, device.source)
        .await
        .map_err(|e| format!("connect: {}", e.kind()))?;
    let mut request = target
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("request: {e}"))?;
    let mut value =
        HeaderValue::from_str(&device.authorization).map_err(|_| "bad credentials".to_owned())?;
    value.set_sensitive(true);
    request.headers_mut().insert(AUTHORIZATION, value);
    let (socket, _) = tokio_tungstenite::client_async_with_config(request, tcp, Some(config()))
        .await
        .map_err(|e| match e {
            WsError::Http(r) => format!("handshake: HTTP {}", r.status().as_u16()),
            WsError::Io(e) => format!("handshake: {}", e.kind()),
            other => format!("handshake: {other}"),
        })?;
    Ok(socket)
}

async fn tcp(hub: SocketAddr, source: Option<Ipv4Addr>) -> std::io::Result<TcpStream> {
    let socket = match hub {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(source) = source {
        socket.bind(SocketAddr::new(source.into(), 0))?;
    }
    socket.set_nodelay(true)?;
    socket.connect(hub).await
}

/// How a receive loop ended.
#[derive(Debug)]
pub enum End {
    /// Told to stop: the socket was closed politely.
    Stopped,
    /// The hub closed the socket or it failed.
    Lost(String),
}

/// Reads frames until told to stop: records every envelope with `tracker`
/// and acknowledges it, and calls `served` once at the first `queue_empty`.
pub async fn receive(
    mut socket: Socket,
    tracker: Arc<Tracker>,
    served: impl FnOnce(),
    mut stop: watch::Receiver<bool>,
) -> End {
    let mut served = Some(served);
    let mut ids: Vec<Uuid> = Vec::new();
    loop {
        let message = tokio::select! {
            () = async { let _ = stop.wait_for(|&s| s).await; } => {
                let _ = socket.close(None).await;
                return End::Stopped;
            }
            m = socket.next() => m,
        };
        let mut next = Some(message);
        // Take every frame already read, then acknowledge them in one go.
        while let Some(message) = next.take() {
            match message {
                None => return End::Lost("closed by the hub".into()),
                Some(Err(e)) => return End::Lost(format!("read: {e}")),
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<ServerFrame>(&text) {
                    Ok(ServerFrame::Envelope { envelope }) => {
                        if let Some(content) = &envelope.content {
                            tracker.received_payload(content.as_slice());
                        }
                        ids.push(envelope.id);
                    }
                    Ok(ServerFrame::QueueEmpty) => {
                        if let Err(e) = ack(&mut socket, &mut ids).await {
                            return e;
                        }
                        if let Some(served) = served.take() {
                            served();
                        }
                    }
                    Ok(_) => {}
                    Err(e) => return End::Lost(format!("bad frame: {e}")),
                },
                Some(Ok(Message::Close(_))) => return End::Lost("closed by the hub".into()),
                Some(Ok(_)) => {}
            }
            if ids.len() < ACK_BATCH {
                next = socket.next().now_or_never();
            }
        }
        if let Err(e) = ack(&mut socket, &mut ids).await {
            return e;
        }
    }
}

async fn ack(socket: &mut Socket, ids: &mut Vec<Uuid>) -> Result<(), End> {
    if ids.is_empty() {
        return Ok(());
    }
    let frame = ClientFrame::Ack {
        ids: std::mem::take(ids),
    };
    let text = serde_json::to_string(&frame).map_err(|e| End::Lost(e.to_string()))?;
    socket
        .send(Message::text(text))
        .await
        .map_err(|e| End::Lost(format!("ack: {e}")))
}
