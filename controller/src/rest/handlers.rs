//! REST handlers: [`operation`], the one adapter every registered operation is served by
//! (decode the request, run the pipeline, render the outcome), and the few routes that are
//! not operations (health, readiness, metrics, the OpenAPI document).

use std::collections::HashMap;

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
    let decode = decode::<O>(path, parts, RequestBody::new(body));
    match execute::<O>(&services, &ctx, How::Rest, decode).await {
        Ok(Outcome::Done(response)) => done::<O>(response),
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
