//! REST handlers: each converts the request, calls one service method, converts the result.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::problem::{ApiError, Problem};
use crate::ctx::Ctx;
use crate::error::Error;
use crate::performance::PerformanceSummary;
use crate::services::approvals::Approval;
use crate::services::audit::{AuditQuery, AuditRecord};
use crate::services::changes::{ChangeRequest, ChangeSummary, ChangeView};
use crate::services::checks::{Capabilities, CheckHistoryQuery, CheckView};
use crate::services::devices::{CreateAgentlessDevice, DeviceView, SshPublicKey};
use crate::services::diagnostics::{DeviceDiagnosis, InfrastructureDiagnosis};
use crate::services::enrollment::{CreateEnrollmentToken, EnrollmentToken};
use crate::services::metrics::{LatestValue, MetricQuery, MetricQueryResult};
use crate::services::Readiness;
use crate::services::Services;

type ApiResult<T> = Result<T, ApiError>;

/// The caller, as established by the authentication middleware.
impl FromRequestParts<Services> for Ctx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &Services) -> Result<Self, Self::Rejection> {
        super::middleware::caller(parts)
            .ok_or_else(|| ApiError(Error::Unauthorized("authentication required".into())))
    }
}

fn bad_json(rejection: JsonRejection) -> ApiError {
    ApiError(Error::invalid(format!(
        "invalid JSON body: {}",
        rejection.body_text()
    )))
}

fn bad_query(rejection: QueryRejection) -> ApiError {
    ApiError(Error::invalid(format!(
        "invalid query string: {}",
        rejection.body_text()
    )))
}

pub async fn list_devices(
    State(services): State<Services>,
    ctx: Ctx,
) -> ApiResult<Json<Vec<DeviceView>>> {
    Ok(Json(services.list_devices(&ctx).await?))
}

pub async fn get_device(
    State(services): State<Services>,
    ctx: Ctx,
    Path(device): Path<String>,
) -> ApiResult<Json<DeviceView>> {
    Ok(Json(services.get_device(&ctx, &device).await?))
}

pub async fn create_agentless_device(
    State(services): State<Services>,
    ctx: Ctx,
    body: Result<Json<CreateAgentlessDevice>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<DeviceView>)> {
    let Json(request) = body.map_err(bad_json)?;
    Ok((
        StatusCode::CREATED,
        Json(services.create_agentless_device(&ctx, request).await?),
    ))
}

pub async fn delete_device(
    State(services): State<Services>,
    ctx: Ctx,
    Path(device): Path<String>,
) -> ApiResult<StatusCode> {
    services.delete_device(&ctx, &device).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn query_metrics(
    State(services): State<Services>,
    ctx: Ctx,
    Path(device): Path<String>,
    query: Result<Query<MetricQuery>, QueryRejection>,
) -> ApiResult<Json<MetricQueryResult>> {
    let Query(query) = query.map_err(bad_query)?;
    Ok(Json(services.query_metrics(&ctx, &device, query).await?))
}

pub async fn latest_metrics(
    State(services): State<Services>,
    ctx: Ctx,
    Path(device): Path<String>,
) -> ApiResult<Json<Vec<LatestValue>>> {
    Ok(Json(services.latest_metrics(&ctx, &device).await?))
}

pub async fn list_checks(
    State(services): State<Services>,
    ctx: Ctx,
    Path(device): Path<String>,
) -> ApiResult<Json<Vec<CheckView>>> {
    Ok(Json(services.list_checks(&ctx, &device).await?))
}

pub async fn run_checks(
    State(services): State<Services>,
    ctx: Ctx,
    Path(device): Path<String>,
) -> ApiResult<Json<Vec<CheckView>>> {
    Ok(Json(services.run_checks(&ctx, &device).await?))
}

pub async fn diagnose_device(
    State(services): State<Services>,
    ctx: Ctx,
    Path(device): Path<String>,
) -> ApiResult<Json<DeviceDiagnosis>> {
    Ok(Json(services.diagnose_device(&ctx, &device).await?))
}

pub async fn diagnose_infrastructure(
    State(services): State<Services>,
    ctx: Ctx,
) -> ApiResult<Json<InfrastructureDiagnosis>> {
    Ok(Json(services.diagnose_infrastructure(&ctx).await?))
}

pub async fn check_history(
    State(services): State<Services>,
    ctx: Ctx,
    Path(device): Path<String>,
    query: Result<Query<CheckHistoryQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<CheckView>>> {
    let Query(query) = query.map_err(bad_query)?;
    Ok(Json(services.check_history(&ctx, &device, query).await?))
}

pub async fn device_capabilities(
    State(services): State<Services>,
    ctx: Ctx,
    Path(device): Path<String>,
) -> ApiResult<Json<Capabilities>> {
    Ok(Json(services.device_capabilities(&ctx, &device).await?))
}

pub async fn list_containers(
    State(services): State<Services>,
    ctx: Ctx,
    Path(device): Path<String>,
) -> ApiResult<Json<Vec<serde_json::Value>>> {
    Ok(Json(services.list_containers(&ctx, &device).await?))
}

pub async fn create_enrollment_token(
    State(services): State<Services>,
    ctx: Ctx,
    body: Option<Json<serde_json::Value>>,
) -> ApiResult<(StatusCode, Json<EnrollmentToken>)> {
    // An empty body means "defaults"; a present body must be a valid request.
    let request = match body {
        None => CreateEnrollmentToken::default(),
        Some(Json(value)) => serde_json::from_value(value)
            .map_err(|e| ApiError(Error::invalid(format!("invalid JSON body: {e}"))))?,
    };
    Ok((
        StatusCode::CREATED,
        Json(services.create_enrollment_token(&ctx, request).await?),
    ))
}

pub async fn ssh_public_key(
    State(services): State<Services>,
    ctx: Ctx,
) -> ApiResult<Json<SshPublicKey>> {
    Ok(Json(services.ssh_public_key(&ctx)?))
}

pub async fn plan_change(
    State(services): State<Services>,
    ctx: Ctx,
    body: Result<Json<ChangeRequest>, JsonRejection>,
) -> ApiResult<Json<ChangeView>> {
    let Json(request) = body.map_err(bad_json)?;
    Ok(Json(services.plan_change(&ctx, request).await?))
}

pub async fn deploy_change(
    State(services): State<Services>,
    ctx: Ctx,
    body: Result<Json<ChangeRequest>, JsonRejection>,
) -> ApiResult<Json<ChangeView>> {
    let Json(request) = body.map_err(bad_json)?;
    Ok(Json(services.deploy_change(&ctx, request).await?))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeHistoryQuery {
    device: Option<String>,
    limit: Option<i64>,
}

pub async fn list_changes(
    State(services): State<Services>,
    ctx: Ctx,
    query: Result<Query<ChangeHistoryQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<ChangeSummary>>> {
    let Query(query) = query.map_err(bad_query)?;
    let changes = services
        .list_changes(&ctx, query.device.as_deref(), query.limit)
        .await?;
    Ok(Json(changes))
}

pub async fn get_change(
    State(services): State<Services>,
    ctx: Ctx,
    Path(change): Path<String>,
) -> ApiResult<Json<ChangeView>> {
    Ok(Json(services.get_change(&ctx, &change).await?))
}

pub async fn confirm_change(
    State(services): State<Services>,
    ctx: Ctx,
    Path(change): Path<String>,
) -> ApiResult<Json<ChangeView>> {
    Ok(Json(services.confirm_change(&ctx, &change).await?))
}

pub async fn rollback_change(
    State(services): State<Services>,
    ctx: Ctx,
    Path(change): Path<String>,
) -> ApiResult<Json<ChangeView>> {
    Ok(Json(services.rollback_change(&ctx, &change).await?))
}

pub async fn list_audit(
    State(services): State<Services>,
    ctx: Ctx,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<AuditRecord>>> {
    let Query(query) = query.map_err(bad_query)?;
    Ok(Json(services.list_audit(&ctx, query).await?))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowQuery {
    window: Option<String>,
}

pub async fn performance_summary(
    State(services): State<Services>,
    ctx: Ctx,
    query: Result<Query<WindowQuery>, QueryRejection>,
) -> ApiResult<Json<PerformanceSummary>> {
    let Query(query) = query.map_err(bad_query)?;
    let summary = services
        .performance_summary(&ctx, query.window.as_deref())
        .await?;
    Ok(Json(summary))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsQuery {
    state: Option<String>,
    limit: Option<i64>,
}

pub async fn list_approvals(
    State(services): State<Services>,
    ctx: Ctx,
    query: Result<Query<ApprovalsQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<Approval>>> {
    let Query(query) = query.map_err(bad_query)?;
    let approvals = services
        .list_approvals(&ctx, query.state.as_deref(), query.limit)
        .await?;
    Ok(Json(approvals))
}

pub async fn get_approval(
    State(services): State<Services>,
    ctx: Ctx,
    Path(approval): Path<String>,
) -> ApiResult<Json<Approval>> {
    Ok(Json(services.get_approval(&ctx, &approval).await?))
}

pub async fn approve_request(
    State(services): State<Services>,
    ctx: Ctx,
    Path(approval): Path<String>,
) -> ApiResult<Json<Approval>> {
    Ok(Json(services.approve_request(&ctx, &approval).await?))
}

pub async fn reject_request(
    State(services): State<Services>,
    ctx: Ctx,
    Path(approval): Path<String>,
) -> ApiResult<Json<Approval>> {
    Ok(Json(services.reject_request(&ctx, &approval).await?))
}

pub async fn openapi() -> Json<serde_json::Value> {
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
