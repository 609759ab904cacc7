//! Middleware, written once and applied to both surfaces (REST and `/mcp`): bearer
//! authentication, per-principal rate limits, the `Origin` check for `/mcp`, and the outer
//! `observe` layer (request counters, timing of routes that are not operations, problem
//! rendering with the request ID, error logging). Auditing, approvals and operation timing
//! are the operation pipeline's.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use super::problem::{ApiError, Problem};
use crate::auth::Principal;
use crate::ctx::Ctx;
use crate::error::Error;
use crate::ratelimit::Decision;
use crate::services::Services;

/// Resolves `Authorization: Bearer …` to a principal and stores it in the request
/// extensions; anything else is a 401 with `WWW-Authenticate`. A peer address whose recent
/// attempts failed too often is refused with 429 before its token is looked up.
pub async fn authenticate(
    State(services): State<Services>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = crate::connections::peer_of(request.extensions()).map(|addr| addr.ip());
    let bearer = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    let token_hash = bearer.map(crate::auth::hash_token);
    let refused = peer.and_then(|ip| services.auth_failures.refused(ip, token_hash.as_deref()));
    if let Some(retry_after) = refused {
        services.telemetry.count_rate_limited();
        return ApiError(Error::RateLimited { retry_after }).into_response();
    }
    let outcome = match bearer {
        None => Err(Error::Unauthorized(
            "missing bearer token: send 'Authorization: Bearer <token>'".into(),
        )),
        Some(bearer) => services.authenticate(bearer).await,
    };
    match outcome {
        Ok(principal) => {
            if let Some(hash) = token_hash {
                services.auth_failures.succeeded(hash);
            }
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(error) => {
            if let (Some(ip), crate::error::ErrorKind::Unauthorized) = (peer, error.kind()) {
                services.auth_failures.record(ip);
            }
            ApiError(error).into_response()
        }
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

/// Set on `/mcp` requests over the caller's rate limit: the MCP server answers tool calls
/// with a tool error (429) instead of running them.
#[derive(Clone, Copy, Debug)]
pub struct RateLimited {
    pub retry_after: Duration,
}

/// Takes a token from the bucket of the request's principal; `Some(wait)` when it is empty.
async fn take_token(services: &Services, principal: Option<String>) -> Option<Duration> {
    match services.limiter.check(&principal?).await {
        Decision::Allowed => None,
        Decision::Limited { retry_after } => {
            services.telemetry.count_rate_limited();
            Some(retry_after)
        }
    }
}

fn principal_id(request: &Request) -> Option<String> {
    request
        .extensions()
        .get::<Principal>()
        .map(|principal| principal.id.clone())
}

/// REST: a request over the caller's limit is a 429 with `Retry-After`; nothing runs.
pub async fn rate_limit(
    State(services): State<Services>,
    request: Request,
    next: Next,
) -> Response {
    match take_token(&services, principal_id(&request)).await {
        Some(retry_after) => ApiError(Error::RateLimited { retry_after }).into_response(),
        None => next.run(request).await,
    }
}

/// MCP: the same bucket; a limited request is marked, and the MCP server answers each tool
/// call in it with a tool error, so clients see the limit in MCP's own terms.
pub async fn rate_limit_mcp(
    State(services): State<Services>,
    mut request: Request,
    next: Next,
) -> Response {
    if let Some(retry_after) = take_token(&services, principal_id(&request)).await {
        request.extensions_mut().insert(RateLimited { retry_after });
    }
    next.run(request).await
}

/// A caller's `x-request-id` is kept only if it is 1–128 characters of `A-Z a-z 0-9 . _ : -`;
/// anything else is dropped (and a fresh ID generated), so IDs are safe in logs, in agent
/// commands and in audit queries.
pub async fn vet_request_id(mut request: Request, next: Next) -> Response {
    let acceptable = |id: &str| {
        (1..=128).contains(&id.len())
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c))
    };
    let keep = request
        .headers()
        .get("x-request-id")
        .map(|value| value.to_str().is_ok_and(acceptable));
    if keep == Some(false) {
        request.headers_mut().remove("x-request-id");
    }
    next.run(request).await
}

/// The request's correlation ID (set by the outer layers before anything else runs).
pub fn request_id(headers: &HeaderMap) -> &str {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
}

fn request_id_of(request: &Request) -> String {
    request_id(request.headers()).to_string()
}

/// The caller this stack established for a request: the authenticated principal and the
/// correlation ID. REST handlers and MCP tool calls both take their [`Ctx`] from here.
pub fn caller(parts: &Parts) -> Option<Ctx> {
    let principal = parts.extensions.get::<Principal>().cloned()?;
    Some(Ctx::new(principal, request_id(&parts.headers)))
}

pub async fn observe(State(services): State<Services>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = request_id_of(&request);
    // A caller may send any method; only the standard ones become labels or log fields.
    let method = crate::telemetry::method_label(request.method().as_str());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    // Every log line of the operation carries its request ID through this span.
    let span = tracing::info_span!("request", %request_id);
    let mut response = next.run(request).instrument(span).await;
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
        .count_request(method, &route, status.as_u16());
    // Operations are timed by the pipeline under their ID (MCP tool calls too), so only
    // the routes that are not operations (health, `/mcp` transport, …) are timed here.
    if crate::operations::by_route(method, &route).is_none() {
        let operation = format!("{method} {route}");
        services.record_operation(
            "http",
            &operation,
            started.elapsed(),
            status.is_server_error(),
        );
    }
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
