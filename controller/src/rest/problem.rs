//! Errors as RFC 9457 problem+json. A handler's error becomes a [`Problem`] in the response
//! extensions; the `observe` middleware, which knows the request ID, renders and logs it.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::{Error, ErrorKind};

#[derive(Clone, Debug, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Logged, never sent.
    #[serde(skip)]
    pub internal: Option<String>,
    /// Sent as `Retry-After` (429).
    #[serde(skip)]
    pub retry_after_seconds: Option<u64>,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: detail.into(),
            request_id: None,
            internal: None,
            retry_after_seconds: None,
        }
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The final response body (with the request ID filled in by the middleware).
    pub fn render(&self) -> Response {
        let body = serde_json::to_vec(self).unwrap_or_default();
        let mut response = (self.status(), body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if self.status == 401 {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"infrastructor\""),
            );
        }
        if let Some(seconds) = self.retry_after_seconds {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

pub fn status_for(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A service error on its way out of a handler.
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        Self(error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut problem = Problem::new(status_for(self.0.kind()), self.0.public_message());
        if matches!(self.0.kind(), ErrorKind::Internal | ErrorKind::Unavailable) {
            problem.internal = Some(self.0.to_string());
        }
        problem.retry_after_seconds = self.0.retry_after_seconds();
        let mut response = problem.render();
        response.extensions_mut().insert(problem);
        response
    }
}

pub fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let mut problem = Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
    problem.internal = Some("handler panicked".into());
    let mut response = problem.render();
    response.extensions_mut().insert(problem);
    response
}
