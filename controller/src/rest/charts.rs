//! `GET /devices/{device}/metrics/chart`: a series as an SVG image (history, trend, and the
//! forecast up to a threshold), for people and pages rather than scripts. Not an operation:
//! its answer is an image, not JSON; it passes the same authentication and rate limits.

use axum::extract::{Path, Query, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::problem::ApiError;
use crate::error::Error;
use crate::operations::params::DeviceRef;
use crate::services::analytics::ChartQuery;
use crate::services::Services;

pub async fn metric_chart(
    State(services): State<Services>,
    Path(device): Path<String>,
    request: Request,
) -> Response {
    let (parts, _) = request.into_parts();
    let Some(ctx) = super::middleware::caller(&parts) else {
        return ApiError(Error::Unauthorized("authentication required".into())).into_response();
    };
    let drawn = async {
        let device = DeviceRef::try_from(device)?;
        let Query(query) = Query::<ChartQuery>::try_from_uri(&parts.uri)
            .map_err(|rejection| Error::invalid(rejection.body_text()))?;
        services.metric_chart(&ctx, device.as_str(), query).await
    };
    match drawn.await {
        Ok(svg) => (
            [
                (header::CONTENT_TYPE, "image/svg+xml"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            svg,
        )
            .into_response(),
        Err(error) => ApiError(error).into_response(),
    }
}
