//! Routes as types: each carries its method, path, request and response, so
//! the hub registers routes from the same definitions the SDK calls.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// An HTTP method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// GET
    Get,
    /// POST
    Post,
    /// PUT
    Put,
    /// DELETE
    Delete,
}

/// One route of the hub's HTTP API.
pub trait Endpoint {
    /// The method.
    const METHOD: Method;
    /// The path, with `{name}` for path parameters (axum's syntax).
    const PATH: &'static str;
    /// Whether the caller must authenticate as a device.
    const AUTHENTICATED: bool;
    /// The JSON body of the request (`()` for none).
    type Request: Serialize + DeserializeOwned;
    /// The JSON body of a successful response (`()` for none: 204).
    type Response: Serialize + DeserializeOwned;
}

/// Fills `{name}` parameters of a path, in order.
pub fn fill_path(path: &str, params: &[&str]) -> String {
    let mut out = String::with_capacity(path.len() + 40);
    let mut params = params.iter();
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find('}')
            .map_or(rest.len(), |e| start + e + 1);
        if let Some(p) = params.next() {
            out.push_str(p);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn fills_paths() {
        assert_eq!(
            super::fill_path("/v1/keys/{account}/{device}", &["a", "1"]),
            "/v1/keys/a/1"
        );
        assert_eq!(super::fill_path("/v1/keys", &[]), "/v1/keys");
    }
}
