//! The HTTP transport: calls [`Endpoint`]s of the hub's API and turns
//! problem+json answers into [`ClientError::Problem`].

use std::fmt;
use std::time::Duration;

use passerelle_proto::endpoint::{Endpoint, Method, fill_path};
use passerelle_proto::problem::Problem;
use url::Url;
use zeroize::Zeroizing;

use crate::error::{ClientError, Result};

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
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

/// A client of one hub.
#[derive(Clone, Debug)]
pub(crate) struct Http {
    client: reqwest::Client,
    base: Url,
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
        Ok(Self { client, base, auth })
    }

    /// The hub's base URL.
    pub(crate) fn base(&self) -> &Url {
        &self.base
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
        let encoded: Vec<String> = params.iter().map(|p| encode_param(p)).collect();
        let encoded: Vec<&str> = encoded.iter().map(String::as_str).collect();
        let path = fill_path(E::PATH, &encoded);
        let url = self
            .base
            .join(path.trim_start_matches('/'))
            .map_err(|e| ClientError::InvalidInput(format!("path {path}: {e}")))?;
        let method = match E::METHOD {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Delete => reqwest::Method::DELETE,
        };
        let mut request = self.client.request(method, url);
        if E::AUTHENTICATED {
            let auth = self.auth.as_ref().ok_or(ClientError::NotRegistered)?;
            request = request.basic_auth(&auth.user, Some(auth.password.as_str()));
        }
        if matches!(E::METHOD, Method::Post | Method::Put) {
            request = request.json(body);
        }
        let response = request.send().await?;
        let status = response.status();
        let bytes = response.bytes().await?;
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
