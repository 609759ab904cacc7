//! The REST surface (axum): a thin adapter over [`Services`]. Every `/api/v1` route passes
//! through the same stack: request ID → timing/metrics/problem rendering → panic catcher →
//! bearer authentication; each handler converts in, calls one service method, converts out.

mod handlers;
mod middleware;
pub mod openapi;
pub mod problem;

use axum::routing::{get, post};
use axum::Router;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use crate::services::Services;

/// The whole HTTP application.
pub fn router(services: Services) -> Router {
    let api = Router::new()
        .route(
            "/devices",
            get(handlers::list_devices).post(handlers::create_agentless_device),
        )
        .route(
            "/devices/{device}",
            get(handlers::get_device).delete(handlers::delete_device),
        )
        .route("/devices/{device}/metrics", get(handlers::query_metrics))
        .route(
            "/devices/{device}/metrics/latest",
            get(handlers::latest_metrics),
        )
        .route("/devices/{device}/checks", get(handlers::list_checks))
        .route(
            "/devices/{device}/checks/history",
            get(handlers::check_history),
        )
        .route(
            "/devices/{device}/capabilities",
            get(handlers::device_capabilities),
        )
        .route(
            "/devices/{device}/containers",
            get(handlers::list_containers),
        )
        .route(
            "/enrollment-tokens",
            post(handlers::create_enrollment_token),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            services.clone(),
            middleware::authenticate,
        ))
        .route("/openapi.json", get(handlers::openapi));

    Router::new()
        .nest("/api/v1", api)
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/metrics", get(handlers::prometheus))
        .fallback(handlers::not_found)
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(axum::middleware::from_fn_with_state(
                    services.clone(),
                    middleware::observe,
                ))
                .layer(CatchPanicLayer::custom(problem::panic_response)),
        )
        .with_state(services)
}
