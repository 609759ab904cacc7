//! Middleware shared by every route: bearer authentication, and the outer `observe` layer
//! (timing, request counters, problem rendering with the request ID, error logging).

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::problem::{ApiError, Problem};
use crate::error::Error;
use crate::services::Services;

/// Resolves `Authorization: Bearer …` to a principal and stores it in the request
/// extensions; anything else is a 401 with `WWW-Authenticate`.
pub async fn authenticate(
    State(services): State<Services>,
    mut request: Request,
    next: Next,
) -> Response {
    let bearer = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(bearer) = bearer else {
        return ApiError(Error::Unauthorized(
            "missing bearer token: send 'Authorization: Bearer <token>'".into(),
        ))
        .into_response();
    };
    match services.authenticate(bearer).await {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(error) => ApiError(error).into_response(),
    }
}

/// Refuses browser requests from origins not allowlisted (`mcp_allowed_origins`): a web page
/// must not be able to drive the controller through a user's browser. Clients that are not
/// browsers send no `Origin` and pass.
pub async fn check_origin(
    State(services): State<Services>,
    request: Request,
    next: Next,
) -> Response {
    let origin = request
        .headers()
        .get(axum::http::header::ORIGIN)
        .map(|v| v.to_str().unwrap_or("<not UTF-8>").to_string());
    match origin {
        Some(origin) if !services.config.mcp_allowed_origins.contains(&origin) => {
            ApiError(Error::Forbidden(format!(
                "origin {origin:?} is not allowed (mcp_allowed_origins)"
            )))
            .into_response()
        }
        _ => next.run(request).await,
    }
}

pub fn request_id_of(request: &Request) -> String {
    request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string()
}

pub async fn observe(State(services): State<Services>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = request_id_of(&request);
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let mut response = next.run(request).await;
    let status = response.status();
    if let Some(mut problem) = response.extensions_mut().remove::<Problem>() {
        if let Some(internal) = problem.internal.take() {
            tracing::error!(%request_id, %method, %route, error = %internal, "request failed");
        }
        problem.request_id = Some(request_id.clone());
        let headers = response.headers().clone();
        response = problem.render();
        for (name, value) in headers.iter() {
            if name != axum::http::header::CONTENT_LENGTH && !response.headers().contains_key(name)
            {
                response.headers_mut().insert(name, value.clone());
            }
        }
    }
    services
        .telemetry
        .count_request(method.as_str(), &route, status.as_u16());
    tracing::info!(
        %request_id,
        %method,
        %route,
        status = status.as_u16(),
        elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    response
}
