//! The delivery WebSocket (`GET /v1/websocket`): frames in, acks out.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures_util::{SinkExt as _, StreamExt as _};
use passerelle_proto::problem::Problem;
use passerelle_proto::ws::{ClientFrame, ServerFrame};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use url::Url;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::error::{ClientError, Result};
use crate::http::BasicAuth;

/// An open delivery socket.
pub(crate) struct Socket {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The code of the hub's close frame, once one came.
    close_code: Option<u16>,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Socket")
    }
}

fn ws_error(e: WsError) -> ClientError {
    match e {
        WsError::Http(response) => {
            let status = response.status();
            match response
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice::<Problem>(b).ok())
            {
                Some(problem) => problem.into(),
                None => ClientError::WebSocket(format!("handshake answered {status}")),
            }
        }
        WsError::Io(e) => ClientError::Transport(e.to_string()),
        other => ClientError::WebSocket(other.to_string()),
    }
}

/// The socket URL for a hub base URL: `ws` for `http`, `wss` for `https`.
pub(crate) fn socket_url(base: &Url) -> Result<Url> {
    let mut url = base
        .join(passerelle_proto::ws::PATH.trim_start_matches('/'))
        .map_err(|e| ClientError::InvalidInput(e.to_string()))?;
    let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
    url.set_scheme(scheme)
        .map_err(|()| ClientError::InvalidInput("cannot make a WebSocket URL".into()))?;
    Ok(url)
}

impl Socket {
    /// Connects and authenticates as the device.
    pub(crate) async fn connect(base: &Url, auth: &BasicAuth) -> Result<Self> {
        let url = socket_url(base)?;
        let mut request = url.as_str().into_client_request().map_err(ws_error)?;
        let credentials = Zeroizing::new(format!("{}:{}", auth.user, auth.password.as_str()));
        let header = Zeroizing::new(format!("Basic {}", STANDARD.encode(credentials.as_bytes())));
        let mut value = HeaderValue::from_str(&header).map_err(|_| {
            ClientError::InvalidInput("credentials are not valid header text".into())
        })?;
        value.set_sensitive(true);
        request.headers_mut().insert(AUTHORIZATION, value);
        let (stream, _) = tokio_tungstenite::connect_async(request)
            .await
            .map_err(ws_error)?;
        Ok(Self {
            stream,
            close_code: None,
        })
    }

    /// The next frame; `None` once the hub closed the socket. Frames of
    /// types this SDK does not know are skipped.
    pub(crate) async fn next_frame(&mut self) -> Result<Option<ServerFrame>> {
        loop {
            let message = match self.stream.next().await {
                None => return Ok(None),
                Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => return Ok(None),
                Some(Err(e)) => return Err(ws_error(e)),
                Some(Ok(message)) => message,
            };
            match message {
                Message::Text(text) => match serde_json::from_str::<ServerFrame>(&text) {
                    Ok(frame) => return Ok(Some(frame)),
                    Err(e) => {
                        let known_type = serde_json::from_str::<serde_json::Value>(&text)
                            .ok()
                            .and_then(|v| v.get("type")?.as_str().map(str::to_owned))
                            .is_some_and(|t| matches!(t.as_str(), "envelope" | "queue_empty"));
                        if known_type {
                            return Err(ClientError::InvalidResponse(format!(
                                "bad WebSocket frame: {e}"
                            )));
                        }
                        tracing::debug!("unknown WebSocket frame skipped");
                    }
                },
                Message::Close(frame) => {
                    self.close_code = frame.map(|f| u16::from(f.code));
                    return Ok(None);
                }
                // Pings are answered by tungstenite; binary frames are not
                // part of the protocol.
                _ => {}
            }
        }
    }

    /// The code the hub closed the socket with, if it sent one.
    pub(crate) fn close_code(&self) -> Option<u16> {
        self.close_code
    }

    /// Acknowledges envelopes: the hub may delete them.
    pub(crate) async fn ack(&mut self, ids: Vec<Uuid>) -> Result<()> {
        let frame = ClientFrame::Ack { ids };
        let text =
            serde_json::to_string(&frame).map_err(|e| ClientError::InvalidInput(e.to_string()))?;
        self.stream
            .send(Message::text(text))
            .await
            .map_err(ws_error)
    }

    /// Sends a ping, to keep the connection and notice when it is gone.
    pub(crate) async fn ping(&mut self) -> Result<()> {
        self.stream
            .send(Message::Ping(Vec::new().into()))
            .await
            .map_err(ws_error)
    }

    /// Closes the socket politely.
    pub(crate) async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_urls() {
        let url = socket_url(&Url::parse("http://127.0.0.1:8080/").unwrap()).unwrap();
        assert_eq!(url.as_str(), "ws://127.0.0.1:8080/v1/websocket");
        let url = socket_url(&Url::parse("https://hub.example/base/").unwrap()).unwrap();
        assert_eq!(url.as_str(), "wss://hub.example/base/v1/websocket");
    }
}
