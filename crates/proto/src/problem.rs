//! Errors on the wire: RFC 9457 problem details (`application/problem+json`).
//!
//! Every 4xx and 5xx answer of the hub is a [`Problem`] with a stable
//! `type` (a URN from [`ProblemType`]), a short `title`, the HTTP `status`,
//! and a `detail` written for a human. Some problems carry extension
//! members (for example the devices of a device mismatch).

use serde::{Deserialize, Serialize};

/// The media type of problem documents.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// The stable kinds of problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProblemType {
    /// The body is not valid JSON.
    MalformedJson,
    /// The JSON does not have the expected fields or types.
    InvalidRequest,
    /// A path or query parameter is malformed.
    InvalidParameter,
    /// The body is larger than the hub accepts.
    BodyTooLarge,
    /// The body is not `application/json`.
    UnsupportedMediaType,
    /// No credentials, or wrong ones.
    Unauthorized,
    /// The credentials are right, but do not allow this.
    Forbidden,
    /// No such route.
    NoSuchRoute,
    /// The route exists, but not with this method.
    MethodNotAllowed,
    /// No such account, device, key or session.
    NotFound,
    /// The handle is already taken.
    HandleTaken,
    /// No such app on this hub.
    UnknownApp,
    /// The verification code is wrong or expired.
    VerificationFailed,
    /// A signature on an uploaded key does not verify.
    BadSignature,
    /// The message's device list does not match the recipient's devices.
    MismatchedDevices,
    /// Some devices were re-registered since the sender's sessions started.
    StaleDevices,
    /// The account already has the most devices its app allows.
    TooManyDevices,
    /// The app does not allow this contact.
    NotAllowed,
    /// Too many requests; try again later.
    RateLimited,
    /// Something failed inside the hub; nothing about it is disclosed.
    Internal,
    /// The hub is not ready (starting or shutting down).
    Unavailable,
}

impl ProblemType {
    /// Every problem type, for documentation.
    pub const ALL: &'static [ProblemType] = &[
        Self::MalformedJson,
        Self::InvalidRequest,
        Self::InvalidParameter,
        Self::BodyTooLarge,
        Self::UnsupportedMediaType,
        Self::Unauthorized,
        Self::Forbidden,
        Self::NoSuchRoute,
        Self::MethodNotAllowed,
        Self::NotFound,
        Self::HandleTaken,
        Self::UnknownApp,
        Self::VerificationFailed,
        Self::BadSignature,
        Self::MismatchedDevices,
        Self::StaleDevices,
        Self::TooManyDevices,
        Self::NotAllowed,
        Self::RateLimited,
        Self::Internal,
        Self::Unavailable,
    ];

    /// The `type` URN.
    pub fn urn(self) -> &'static str {
        match self {
            Self::MalformedJson => "urn:passerelle:problem:malformed-json",
            Self::InvalidRequest => "urn:passerelle:problem:invalid-request",
            Self::InvalidParameter => "urn:passerelle:problem:invalid-parameter",
            Self::BodyTooLarge => "urn:passerelle:problem:body-too-large",
            Self::UnsupportedMediaType => "urn:passerelle:problem:unsupported-media-type",
            Self::Unauthorized => "urn:passerelle:problem:unauthorized",
            Self::Forbidden => "urn:passerelle:problem:forbidden",
            Self::NoSuchRoute => "urn:passerelle:problem:no-such-route",
            Self::MethodNotAllowed => "urn:passerelle:problem:method-not-allowed",
            Self::NotFound => "urn:passerelle:problem:not-found",
            Self::HandleTaken => "urn:passerelle:problem:handle-taken",
            Self::UnknownApp => "urn:passerelle:problem:unknown-app",
            Self::VerificationFailed => "urn:passerelle:problem:verification-failed",
            Self::BadSignature => "urn:passerelle:problem:bad-signature",
            Self::MismatchedDevices => "urn:passerelle:problem:mismatched-devices",
            Self::StaleDevices => "urn:passerelle:problem:stale-devices",
            Self::TooManyDevices => "urn:passerelle:problem:too-many-devices",
            Self::NotAllowed => "urn:passerelle:problem:not-allowed",
            Self::RateLimited => "urn:passerelle:problem:rate-limited",
            Self::Internal => "urn:passerelle:problem:internal",
            Self::Unavailable => "urn:passerelle:problem:unavailable",
        }
    }

    /// The HTTP status.
    pub fn status(self) -> u16 {
        match self {
            Self::MalformedJson | Self::InvalidRequest | Self::InvalidParameter => 400,
            Self::BadSignature => 400,
            Self::Unauthorized => 401,
            Self::Forbidden | Self::NotAllowed => 403,
            Self::NoSuchRoute | Self::NotFound | Self::UnknownApp => 404,
            Self::MethodNotAllowed => 405,
            Self::HandleTaken | Self::MismatchedDevices => 409,
            Self::TooManyDevices => 409,
            Self::StaleDevices => 410,
            Self::BodyTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::VerificationFailed => 422,
            Self::RateLimited => 429,
            Self::Internal => 500,
            Self::Unavailable => 503,
        }
    }

    /// The short title.
    pub fn title(self) -> &'static str {
        match self {
            Self::MalformedJson => "Malformed JSON",
            Self::InvalidRequest => "Invalid request",
            Self::InvalidParameter => "Invalid parameter",
            Self::BodyTooLarge => "Body too large",
            Self::UnsupportedMediaType => "Unsupported media type",
            Self::Unauthorized => "Unauthorized",
            Self::Forbidden => "Forbidden",
            Self::NoSuchRoute => "No such route",
            Self::MethodNotAllowed => "Method not allowed",
            Self::NotFound => "Not found",
            Self::HandleTaken => "Handle taken",
            Self::UnknownApp => "Unknown app",
            Self::VerificationFailed => "Verification failed",
            Self::BadSignature => "Bad signature",
            Self::MismatchedDevices => "Mismatched devices",
            Self::StaleDevices => "Stale devices",
            Self::TooManyDevices => "Too many devices",
            Self::NotAllowed => "Not allowed",
            Self::RateLimited => "Rate limited",
            Self::Internal => "Internal error",
            Self::Unavailable => "Unavailable",
        }
    }

    /// The problem type with this URN.
    pub fn from_urn(urn: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|t| t.urn() == urn)
    }
}

/// An RFC 9457 problem document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URN naming the kind of problem; stable.
    #[serde(rename = "type")]
    pub type_: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong in this case, for a human.
    pub detail: String,
    /// Extension members, for example `missing_devices`.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub extensions: serde_json::Map<String, serde_json::Value>,
}

impl Problem {
    /// A problem of a kind, with a detail.
    pub fn new(kind: ProblemType, detail: impl Into<String>) -> Self {
        Self {
            type_: kind.urn().to_owned(),
            title: kind.title().to_owned(),
            status: kind.status(),
            detail: detail.into(),
            extensions: serde_json::Map::new(),
        }
    }

    /// Adds the fields of `extension` (a struct serializing to an object).
    pub fn with<T: Serialize>(mut self, extension: &T) -> Self {
        if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(extension) {
            self.extensions.extend(fields);
        }
        self
    }

    /// The kind, if this hub knows it.
    pub fn kind(&self) -> Option<ProblemType> {
        ProblemType::from_urn(&self.type_)
    }

    /// Reads the extension members as `T`.
    pub fn extension<T: serde::de::DeserializeOwned>(&self) -> Option<T> {
        serde_json::from_value(serde_json::Value::Object(self.extensions.clone())).ok()
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.title, self.status, self.detail)
    }
}

impl std::error::Error for Problem {}
