//! Extractors that answer bad input with problem documents: [`Json`] for
//! bodies and [`Path`] for path parameters.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use passerelle_proto::ProblemType;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::problem::ApiError;
use crate::state::AppState;

/// A JSON body in, or a JSON answer out.
///
/// In: the content type must be `application/json` (`415` otherwise); a
/// body over the limit is refused with `413` as soon as that is known (by
/// its `Content-Length`, or while reading); bad JSON is `400
/// malformed-json`, and JSON of the wrong shape `400 invalid-request` with
/// serde's explanation.
#[derive(Clone, Copy, Debug, Default)]
pub struct Json<T>(pub T);

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        ProblemType::BodyTooLarge,
        format!("the body is larger than {limit} bytes"),
    )
}

/// Decodes a JSON body, mapping serde's errors to problems.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Syntax | Category::Eof => ApiError::new(
                ProblemType::MalformedJson,
                format!("the body is not valid JSON: {e}"),
            ),
            Category::Data | Category::Io => ApiError::invalid(e.to_string()),
        }
    })
}

impl<T: DeserializeOwned> FromRequest<AppState> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::new(
                ProblemType::UnsupportedMediaType,
                "the body must be application/json",
            ));
        }
        let limit = state.config().limits.max_body_bytes;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large(limit));
        }
        // `DefaultBodyLimit` (set in `app`) stops reading past the limit.
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large(limit)
            } else {
                ApiError::invalid("the body could not be read")
            }
        })?;
        decode(&bytes).map(Json)
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Path parameters; a malformed one is `400 invalid-parameter`.
#[derive(Clone, Copy, Debug)]
pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(e) => Err(ApiError::new(ProblemType::InvalidParameter, e.body_text())),
        }
    }
}
