//! The HTTP API, version 1: one module per concern, one [`Endpoint`] type
//! per route.
//!
//! Authentication: every route marked `AUTHENTICATED` takes HTTP Basic
//! credentials, `account_id.device_id` as the user name and the device's
//! password (chosen by the device at registration or linking; the hub keeps
//! only a hash) as the password.
//!
//! [`Endpoint`]: crate::Endpoint

pub mod accounts;
pub mod devices;
pub mod keys;
pub mod messages;

use serde::{Deserialize, Serialize};

/// The JSON body of routes that take none, and the answer of routes that
/// answer 204.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Empty {}

macro_rules! endpoint {
    (
        $(#[$meta:meta])*
        $name:ident: $method:ident $path:literal, auth = $auth:literal,
        $request:ty => $response:ty
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug)]
        pub struct $name;

        impl $crate::endpoint::Endpoint for $name {
            const METHOD: $crate::endpoint::Method = $crate::endpoint::Method::$method;
            const PATH: &'static str = $path;
            const AUTHENTICATED: bool = $auth;
            type Request = $request;
            type Response = $response;
        }
    };
}
pub(crate) use endpoint;
