//! The hub's one error type, [`ApiError`], and how it becomes an RFC 9457
//! `application/problem+json` answer.
//!
//! Client errors carry a [`ProblemType`], a detail for a human and, for
//! some, extension members. Internal errors carry a message for the
//! operator's log only: the client sees `500 internal` and nothing more.
//! A store that cannot be reached is `503 unavailable` with `Retry-After`:
//! nothing was done, and the same request will work once it is back.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use passerelle_proto::problem::CONTENT_TYPE;
use passerelle_proto::{Problem, ProblemType};
use passerelle_store::StoreError;
use serde::Serialize;

/// An error answered to a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// Something the client can act on.
    #[error("{0}")]
    Problem(Box<Problem>),
    /// `429 rate-limited`, answered with a `Retry-After` header (whole
    /// seconds, at least 1).
    #[error("{0}")]
    RateLimited(Box<Problem>, std::time::Duration),
    /// Something failed inside the hub; the text goes to the log, never to
    /// the client.
    #[error("internal error: {0}")]
    Internal(String),
    /// The store cannot be reached now; the text goes to the log, the
    /// client is told to retry after [`UNAVAILABLE_RETRY_AFTER`].
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// How long a client waits before retrying when the store is unreachable:
/// about what a database takes to restart or fail over.
pub const UNAVAILABLE_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

/// The result type of the hub's services.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// A problem of a kind, with a detail for a human.
    pub fn new(kind: ProblemType, detail: impl Into<String>) -> Self {
        Self::Problem(Box::new(Problem::new(kind, detail)))
    }

    /// An internal error: `context` is logged, never disclosed.
    pub fn internal(context: impl std::fmt::Display) -> Self {
        Self::Internal(context.to_string())
    }

    /// Adds extension members (a struct serializing to an object).
    pub fn with<T: Serialize>(self, extension: &T) -> Self {
        match self {
            Self::Problem(p) => Self::Problem(Box::new(p.with(extension))),
            Self::RateLimited(p, after) => Self::RateLimited(Box::new(p.with(extension)), after),
            internal => internal,
        }
    }

    /// `400 invalid-request`.
    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::InvalidRequest, detail)
    }

    /// `429 rate-limited`: try again after `retry_after`.
    pub fn rate_limited(detail: impl Into<String>, retry_after: std::time::Duration) -> Self {
        Self::RateLimited(
            Box::new(Problem::new(ProblemType::RateLimited, detail)),
            retry_after,
        )
    }

    /// `404 not-found`.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::NotFound, detail)
    }

    /// `403 forbidden`.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::Forbidden, detail)
    }

    /// `401 unauthorized`.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::Unauthorized, detail)
    }

    /// The problem type, if this is a client error.
    pub fn kind(&self) -> Option<ProblemType> {
        match self {
            Self::Problem(p) | Self::RateLimited(p, _) => p.kind(),
            Self::Internal(_) => None,
            Self::Unavailable(_) => Some(ProblemType::Unavailable),
        }
    }

    /// The document the client receives. Internal errors are logged here.
    pub fn into_problem(self) -> Problem {
        match self {
            Self::Problem(p) | Self::RateLimited(p, _) => *p,
            Self::Internal(message) => {
                tracing::error!(error = %message, "request failed inside the hub");
                Problem::new(
                    ProblemType::Internal,
                    "something failed inside the hub; the operator's log has the details",
                )
            }
            Self::Unavailable(message) => {
                tracing::warn!(error = %message, "the store is unavailable");
                Problem::new(
                    ProblemType::Unavailable,
                    "the hub cannot reach its database right now; nothing was done, try again \
                     after the time in Retry-After",
                )
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::AddressTaken(address) => {
                Self::new(ProblemType::HandleTaken, format!("{address} is taken"))
            }
            StoreError::TooManyDevices(n) => Self::new(
                ProblemType::TooManyDevices,
                format!("the account has {n} devices, the most its app allows"),
            ),
            StoreError::DeviceIdsExhausted => Self::new(
                ProblemType::TooManyDevices,
                "the account has used every device id (1 to 127); ids are never given again",
            ),
            StoreError::NoSuchAccount => Self::not_found("no such account"),
            StoreError::NoSuchDevice => Self::not_found("no such device"),
            StoreError::Unavailable(why) => Self::Unavailable(why),
            other => Self::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry_after = match &self {
            Self::RateLimited(_, after) => Some(after.as_secs_f64().ceil().max(1.0)),
            Self::Unavailable(_) => Some(UNAVAILABLE_RETRY_AFTER.as_secs_f64()),
            _ => None,
        };
        let mut response = problem_response(self.into_problem());
        if let Some(seconds) = retry_after {
            // Whole seconds, rounded up: never earlier than the hub allows.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let seconds = seconds.min(86_400.0) as u64;
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// A problem document as an HTTP answer.
pub fn problem_response(problem: Problem) -> Response {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(&problem).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"passerelle\", charset=\"UTF-8\""),
        );
    }
    response
}

/// The fallback for unknown routes: `404 no-such-route`.
pub(crate) async fn no_such_route(uri: axum::http::Uri) -> ApiError {
    // The path is echoed to the caller who sent it; it is not logged.
    ApiError::new(
        ProblemType::NoSuchRoute,
        format!("there is no route {}", uri.path()),
    )
}

/// The fallback for known routes called with another method: `405`.
pub(crate) async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError::new(
        ProblemType::MethodNotAllowed,
        format!("this route does not take {method}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn internal_errors_disclose_nothing() {
        let response =
            ApiError::internal("database /secret/path is locked by pid 4242").into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let problem: Problem = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem.kind(), Some(ProblemType::Internal));
        let text = String::from_utf8_lossy(&body);
        assert!(!text.contains("secret") && !text.contains("4242"), "{text}");
    }

    #[test]
    fn store_errors_map_to_problems() {
        let taken = StoreError::AddressTaken("alice@parley".parse().unwrap());
        assert_eq!(ApiError::from(taken).kind(), Some(ProblemType::HandleTaken));
        assert_eq!(
            ApiError::from(StoreError::TooManyDevices(5)).kind(),
            Some(ProblemType::TooManyDevices)
        );
        assert!(matches!(
            ApiError::from(StoreError::Backend("disk full".into())),
            ApiError::Internal(_)
        ));
    }

    #[tokio::test]
    async fn an_unreachable_store_is_503_with_retry_after() {
        let error = ApiError::from(StoreError::Unavailable(
            "connection refused to db.internal:5432".into(),
        ));
        assert_eq!(error.kind(), Some(ProblemType::Unavailable));
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let problem: Problem = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem.kind(), Some(ProblemType::Unavailable));
        let text = String::from_utf8_lossy(&body);
        assert!(!text.contains("db.internal"), "{text}");
    }
}
