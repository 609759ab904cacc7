//! REST handlers: [`operation`], the one adapter every registered operation is served by
//! (decode the request, run the pipeline, render the outcome), and the few routes that are
//! not operations (health, readiness, metrics, the OpenAPI document).

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

use super::body::RequestBody;
use super::problem::{ApiError, Problem};
use crate::error::Error;
use crate::operations::pipeline::{execute, Decoded, How, Outcome};
use crate::operations::{Arguments, Input, Operation};
use crate::services::jobs::{JobView, MAX_WAIT};
use crate::services::Readiness;
use crate::services::Services;

type ApiResult<T> = Result<T, ApiError>;

/// Largest request body an operation reads (larger ones are refused before any work).
pub const MAX_BODY: usize = 8 * 1024 * 1024;

/// Serves operation `O`: the caller's scope is checked before the body is read, then the
/// path, query and body are decoded into `O`'s request and the pipeline runs it.
pub async fn operation<O: Operation>(
    State(services): State<Services>,
    request: Request,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let Some(ctx) = super::middleware::caller(&parts) else {
        return ApiError(Error::Unauthorized("authentication required".into())).into_response();
    };
    let path = Path::<HashMap<String, String>>::from_request_parts(&mut parts, &services)
        .await
        .map(|Path(params)| params)
        .unwrap_or_default();
    let wait = match job_wait::<O>(&mut parts) {
        Ok(wait) => wait,
        Err(error) => return ApiError(error).into_response(),
    };
    let decode = decode::<O>(path, parts, RequestBody::new(body));
    match execute::<O>(&services, &ctx, How::Rest, decode).await {
        Ok(Outcome::Done(response)) => done::<O>(response),
        Ok(Outcome::Accepted(job)) => accepted::<O>(&services, &ctx, *job, wait).await,
        Ok(Outcome::Held(approval)) => {
            let location = format!("/api/v1/approvals/{}", approval.id);
            (
                StatusCode::ACCEPTED,
                [(header::LOCATION, location)],
                Json(approval),
            )
                .into_response()
        }
        Ok(Outcome::Planned(plan)) => Json(plan).into_response(),
        Err(error) => ApiError(error).into_response(),
    }
}

/// A job operation's `?wait=` (seconds, `s` optional), taken out of the query so the
/// operation's own parameters decode without it.
fn job_wait<O: Operation>(parts: &mut Parts) -> Result<Option<Duration>, Error> {
    let Some(query) = parts.uri.query().filter(|_| O::JOB) else {
        return Ok(None);
    };
    let mut wait = None;
    let mut rest = Vec::new();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("wait", value)) => wait = Some(parse_wait(value)?),
            _ if pair == "wait" => {
                return Err(Error::invalid("wait needs a duration, e.g. wait=30s"))
            }
            _ => rest.push(pair),
        }
    }
    let path = parts.uri.path();
    let uri = if rest.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", rest.join("&"))
    };
    parts.uri = uri
        .parse()
        .map_err(|_| Error::invalid("invalid query string"))?;
    Ok(wait)
}

fn parse_wait(value: &str) -> Result<Duration, Error> {
    let digits = value.strip_suffix('s').unwrap_or(value);
    let seconds = Some(digits)
        // Exactly the documented form: no sign, no leading zero.
        .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        .filter(|d| d.len() == 1 || !d.starts_with('0'))
        .and_then(|d| d.parse::<u64>().ok())
        .filter(|seconds| *seconds <= MAX_WAIT.as_secs())
        .ok_or_else(|| {
            Error::invalid(format!(
                "wait must be 0 to {} seconds, e.g. wait=30s (got {value:?})",
                MAX_WAIT.as_secs()
            ))
        })?;
    Ok(Duration::from_secs(seconds))
}

/// `202 Accepted` with the job and its `Location`; with `?wait=`, the operation's own answer
/// if the job ended within the wait (its result, or its error as a problem).
async fn accepted<O: Operation>(
    services: &Services,
    ctx: &crate::ctx::Ctx,
    job: JobView,
    wait: Option<Duration>,
) -> Response {
    let location = format!("/api/v1/jobs/{}", job.id);
    let job = match wait {
        None => job,
        Some(wait) => match services.wait_for_job(&job.id, wait).await {
            Ok(row) if row.state.is_final() => {
                let status = StatusCode::from_u16(O::META.success).unwrap_or(StatusCode::OK);
                return match services.job_outcome(ctx, &row) {
                    Ok(result) => (status, [(header::CONTENT_LOCATION, location)], Json(result))
                        .into_response(),
                    Err(error) => ApiError(error).into_response(),
                };
            }
            Ok(_) => match services.job_view(ctx, &job.id).await {
                Ok(view) => view,
                Err(error) => return ApiError(error).into_response(),
            },
            Err(error) => return ApiError(error).into_response(),
        },
    };
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(job),
    )
        .into_response()
}

fn done<O: Operation>(response: O::Response) -> Response {
    let status = StatusCode::from_u16(O::META.success).unwrap_or(StatusCode::OK);
    if status == StatusCode::NO_CONTENT {
        status.into_response()
    } else {
        (status, Json(response)).into_response()
    }
}

/// The request's path parameters, query string and JSON body as `O`'s request; with the
/// arguments as sent, for the audit of a request that does not decode.
async fn decode<O: Operation>(
    path: HashMap<String, String>,
    parts: Parts,
    body: RequestBody,
) -> Decoded<O> {
    let mut sent: Arguments = path
        .iter()
        .map(|(name, value)| (name.clone(), Value::from(value.as_str())))
        .collect();
    let decoded = async {
        let path: O::Path = serde_json::from_value(Value::Object(sent.clone()))
            .map_err(|e| Error::invalid(format!("invalid path: {e}")))?;
        let Query(query) = Query::<O::Query>::try_from_uri(&parts.uri)
            .map_err(|e| Error::invalid(format!("invalid query string: {}", e.body_text())))?;
        let bytes = body
            .read(MAX_BODY)
            .await
            .map_err(|_| Error::invalid(format!("request body larger than {MAX_BODY} bytes")))?;
        let fields = if bytes.iter().all(u8::is_ascii_whitespace) {
            Value::Object(Arguments::new())
        } else {
            match serde_json::from_slice(&bytes) {
                Ok(fields) => fields,
                Err(error) => {
                    sent.insert("body".into(), Value::from("<not JSON>"));
                    return Err(Error::invalid(format!("invalid JSON body: {error}")));
                }
            }
        };
        if let Value::Object(fields) = &fields {
            sent.extend(fields.clone());
        }
        let body: O::Body = serde_json::from_value(fields)
            .map_err(|e| Error::invalid(format!("invalid JSON body: {e}")))?;
        Ok(Input { path, query, body })
    }
    .await;
    (decoded, sent)
}

pub async fn openapi() -> Json<Value> {
    Json(super::openapi::document())
}

pub async fn healthz() -> &'static str {
    "ok\n"
}

pub async fn readyz(State(services): State<Services>) -> ApiResult<Json<Readiness>> {
    Ok(Json(services.readiness().await?))
}

pub async fn prometheus(State(services): State<Services>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        services.telemetry.render(),
    )
        .into_response()
}

pub async fn not_found() -> Response {
    let problem = Problem::new(
        StatusCode::NOT_FOUND,
        "no such route; see /api/v1/openapi.json",
    );
    let mut response = problem.render();
    response.extensions_mut().insert(problem);
    response
}
