//! The HTTP transport: calls [`Endpoint`]s of the hub's API and turns
//! problem+json answers into [`ClientError::Problem`].

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use passerelle_proto::endpoint::{Endpoint, Method, fill_path};
use passerelle_proto::problem::Problem;
use url::Url;
use zeroize::Zeroizing;

use crate::error::{ClientError, Result};

/// How long one request may take: longer than the hub's own request
/// timeout (30 s by default), so that a slow request ends with the hub's
/// answer rather than with the client giving up while the hub may still
/// commit it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(45);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// HTTP Basic credentials of a device: `account_id.device_id` and the
/// password.
#[derive(Clone)]
pub(crate) struct BasicAuth {
    pub(crate) user: String,
    pub(crate) password: Zeroizing<String>,
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("user", &self.user)
            .field("password", &"..")
            .finish()
    }
}

/// The base URLs of a hub's nodes and the one in use, shared by every
/// clone of a client. The first is the URL the device registered with.
#[derive(Debug)]
pub(crate) struct Servers {
    urls: RwLock<Vec<Url>>,
    current: AtomicUsize,
    /// Whether the device's connection moves on by itself when it is lost
    /// (set with [`Servers::set`]).
    failover: AtomicBool,
}

impl Servers {
    fn new(base: Url) -> Self {
        Self {
            urls: RwLock::new(vec![base]),
            current: AtomicUsize::new(0),
            failover: AtomicBool::new(false),
        }
    }

    fn urls(&self) -> std::sync::RwLockReadGuard<'_, Vec<Url>> {
        // Every change is one assignment: a poisoned lock is consistent.
        self.urls.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The URL in use, and its index.
    pub(crate) fn current(&self) -> (usize, Url) {
        let urls = self.urls();
        let index = self.current.load(Ordering::Relaxed) % urls.len().max(1);
        (index, urls[index].clone())
    }

    /// How many URLs there are.
    pub(crate) fn len(&self) -> usize {
        self.urls().len()
    }

    /// Moves on from the URL at `from` to the next one (unless another
    /// caller already moved on).
    pub(crate) fn fail_over(&self, from: usize) {
        let next = (from + 1) % self.len().max(1);
        let _ = self
            .current
            .compare_exchange(from, next, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Sets the nodes: `urls` (at least one), tried in order; turns on
    /// failover.
    pub(crate) fn set(&self, urls: Vec<Url>) {
        if urls.is_empty() {
            return;
        }
        *self.urls.write().unwrap_or_else(|e| e.into_inner()) = urls;
        self.current.store(0, Ordering::Relaxed);
        self.failover.store(true, Ordering::Relaxed);
    }

    /// Whether connections fail over by themselves.
    pub(crate) fn failover(&self) -> bool {
        self.failover.load(Ordering::Relaxed)
    }
}

/// A client of one hub (of one node of it at a time).
#[derive(Clone, Debug)]
pub(crate) struct Http {
    client: reqwest::Client,
    servers: Arc<Servers>,
    auth: Option<BasicAuth>,
}

/// Parses and checks a hub URL (`http` or `https`).
pub(crate) fn parse_server_url(server_url: &str) -> Result<Url> {
    let mut url = Url::parse(server_url)
        .map_err(|e| ClientError::InvalidInput(format!("server URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ClientError::InvalidInput(
            "server URL must be http:// or https:// with a host".into(),
        ));
    }
    // Paths are joined relative to the base: it must end with '/'.
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url.set_query(None);
    url.set_fragment(None);
    Ok(url)
}

/// Percent-encodes a path parameter: everything but RFC 3986's unreserved
/// characters and `*` (the "every device" wildcard).
pub(crate) fn encode_param(param: &str) -> String {
    let mut out = String::with_capacity(param.len());
    for b in param.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'*') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Http {
    /// A client of the hub at `base`, authenticated as a device or not.
    pub(crate) fn new(base: Url, auth: Option<BasicAuth>) -> Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("passerelle-client/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            client,
            servers: Arc::new(Servers::new(base)),
            auth,
        })
    }

    /// The base URL of the node in use.
    pub(crate) fn base(&self) -> Url {
        self.servers.current().1
    }

    /// The hub's nodes.
    pub(crate) fn servers(&self) -> &Servers {
        &self.servers
    }

    /// The device's credentials, if authenticated.
    pub(crate) fn auth(&self) -> Option<&BasicAuth> {
        self.auth.as_ref()
    }

    /// Calls `E` with path parameters (unencoded) and a body.
    pub(crate) async fn call<E: Endpoint>(
        &self,
        params: &[&str],
        body: &E::Request,
    ) -> Result<E::Response> {
        self.call_inner::<E>(params, body, 1).await
    }

    /// Like [`Http::call`], but sends the identical request (the same bytes)
    /// a second time after a transport error or a 503. Only for requests
    /// whose repetition is harmless.
    pub(crate) async fn call_retrying_once<E: Endpoint>(
        &self,
        params: &[&str],
        body: &E::Request,
    ) -> Result<E::Response> {
        self.call_inner::<E>(params, body, 2).await
    }

    async fn call_inner<E: Endpoint>(
        &self,
        params: &[&str],
        body: &E::Request,
        attempts: u32,
    ) -> Result<E::Response> {
        let encoded: Vec<String> = params.iter().map(|p| encode_param(p)).collect();
        let encoded: Vec<&str> = encoded.iter().map(String::as_str).collect();
        let path = fill_path(E::PATH, &encoded);
        let method = match E::METHOD {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Delete => reqwest::Method::DELETE,
        };
        let auth = if E::AUTHENTICATED {
            Some(self.auth.as_ref().ok_or(ClientError::NotRegistered)?)
        } else {
            None
        };
        let json = match E::METHOD {
            Method::Post | Method::Put => Some(
                serde_json::to_vec(body)
                    .map_err(|e| ClientError::InvalidInput(format!("request body: {e}")))?,
            ),
            Method::Get | Method::Delete => None,
        };
        let mut attempt = 0;
        let mut failovers = 0;
        let (status, bytes) = loop {
            attempt += 1;
            let (node, base) = self.servers.current();
            let url = base
                .join(path.trim_start_matches('/'))
                .map_err(|e| ClientError::InvalidInput(format!("path {path}: {e}")))?;
            let mut request = self.client.request(method.clone(), url.clone());
            if let Some(auth) = auth {
                request = request.basic_auth(&auth.user, Some(auth.password.as_str()));
            }
            if let Some(json) = &json {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(json.clone());
            }
            let answer = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    response.bytes().await.map(|bytes| (status, bytes))
                }
                Err(e) => Err(e),
            };
            // A node that cannot be reached got nothing: any request may
            // go to the next node, once per node.
            if let Err(e) = &answer {
                if e.is_connect() && failovers + 1 < self.servers.len() {
                    failovers += 1;
                    attempt -= 1;
                    self.servers.fail_over(node);
                    tracing::debug!(path = E::PATH, "node unreachable; trying the next one");
                    continue;
                }
            }
            let retry = match &answer {
                Ok((status, _)) => *status == reqwest::StatusCode::SERVICE_UNAVAILABLE,
                Err(_) => true,
            };
            if retry && attempt < attempts {
                tracing::debug!(attempt, path = E::PATH, "retrying the identical request");
                continue;
            }
            break answer?;
        };
        if !status.is_success() {
            return Err(match serde_json::from_slice::<Problem>(&bytes) {
                Ok(problem) => problem.into(),
                Err(_) => ClientError::InvalidResponse(format!(
                    "{} {} answered {status} without a problem document",
                    E::METHOD_NAME,
                    E::PATH
                )),
            });
        }
        let bytes: &[u8] = if bytes.is_empty() { b"{}" } else { &bytes };
        serde_json::from_slice(bytes).map_err(|e| {
            ClientError::InvalidResponse(format!("{} {}: {e}", E::METHOD_NAME, E::PATH))
        })
    }
}

/// The method's name, for error texts.
trait MethodName {
    const METHOD_NAME: &'static str;
}

impl<E: Endpoint> MethodName for E {
    const METHOD_NAME: &'static str = match E::METHOD {
        Method::Get => "GET",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_outlive_the_hubs_timeout() {
        let hub = passerelle_server::config::Config::default()
            .limits
            .request_timeout;
        assert!(REQUEST_TIMEOUT >= hub + Duration::from_secs(10));
    }

    /// A hub that answers 503 first, then 200, and records the bodies.
    async fn flaky_hub() -> (Url, tokio::task::JoinHandle<Vec<Vec<u8>>>) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        let task = tokio::spawn(async move {
            let mut bodies = Vec::new();
            for answer in [
                "503 Service Unavailable\r\ncontent-type: application/problem+json\r\ncontent-length: 2\r\n\r\n{}",
                "200 OK\r\ncontent-type: application/json\r\ncontent-length: 25\r\n\r\n{\"server_timestamp\":1234}",
            ] {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                let body = loop {
                    let n = socket.read(&mut buf).await.unwrap();
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request).to_lowercase();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length: usize = text
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse().unwrap());
                        if request.len() >= end + 4 + length {
                            break request[end + 4..end + 4 + length].to_vec();
                        }
                    }
                };
                bodies.push(body);
                let response = format!("HTTP/1.1 {answer}");
                let response = response.replacen("\r\n", "\r\nconnection: close\r\n", 1);
                socket.write_all(response.as_bytes()).await.unwrap();
                socket.shutdown().await.unwrap();
            }
            bodies
        });
        (url, task)
    }

    #[tokio::test]
    async fn a_send_is_retried_once_identically_after_a_503() {
        use passerelle_proto::api::messages::{OutgoingMessage, SendMessage, SendMessages};
        use passerelle_proto::envelope::EnvelopeKind;
        let (url, hub) = flaky_hub().await;
        let auth = BasicAuth {
            user: "a.1".into(),
            password: Zeroizing::new("password".into()),
        };
        let http = Http::new(url, Some(auth)).unwrap();
        let request = SendMessages {
            timestamp: 77,
            messages: vec![OutgoingMessage {
                device_id: passerelle_proto::DeviceId::PRIMARY,
                registration_id: 5,
                kind: EnvelopeKind::Message,
                content: passerelle_proto::Base64Bytes(vec![1, 2, 3]),
            }],
            online_only: false,
        };
        let account = passerelle_proto::AccountId::random().to_string();
        let sent = http
            .call_retrying_once::<SendMessage>(&[&account], &request)
            .await
            .unwrap();
        assert_eq!(sent.server_timestamp, 1234);
        let bodies = hub.await.unwrap();
        assert_eq!(bodies.len(), 2);
        assert_eq!(bodies[0], bodies[1]);
        assert_eq!(bodies[0], serde_json::to_vec(&request).unwrap());
    }

    #[test]
    fn params_are_encoded() {
        assert_eq!(encode_param("alice@parley"), "alice%40parley");
        assert_eq!(encode_param("+15551234567@chime"), "%2B15551234567%40chime");
        assert_eq!(encode_param("a.b_c~d-e"), "a.b_c~d-e");
        assert_eq!(encode_param("*"), "*");
        assert_eq!(encode_param("a/b"), "a%2Fb");
    }

    #[test]
    fn server_urls_are_checked() {
        assert!(parse_server_url("http://127.0.0.1:8080").is_ok());
        assert!(parse_server_url("https://hub.example/").is_ok());
        assert_eq!(
            parse_server_url("https://hub.example/base")
                .map(|u| u.to_string())
                .ok(),
            Some("https://hub.example/base/".to_string())
        );
        assert!(parse_server_url("ftp://hub.example").is_err());
        assert!(parse_server_url("not a url").is_err());
    }
}
