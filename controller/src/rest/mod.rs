//! The HTTP application (axum): the REST surface under `/api/v1` and MCP at `/mcp`, behind one
//! stack: request ID → request counters/problem rendering → panic catcher → bearer
//! authentication → per-principal rate limit. Every REST route is a registered operation
//! served by one adapter over the operation pipeline (scope, audit, approvals, timing).

mod body;
mod charts;
mod events;
mod handlers;
pub mod middleware;
pub mod openapi;
pub mod problem;

use axum::routing::{get, on, MethodFilter};
use axum::Router;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use crate::operations::{Method, Operation, REGISTRY};
use crate::services::Services;

/// Adds operation `O` at its method and path, served by the one operation adapter.
pub fn route<O: Operation>(router: Router<Services>) -> Router<Services> {
    let method = match O::META.method {
        Method::Get => MethodFilter::GET,
        Method::Post => MethodFilter::POST,
        Method::Put => MethodFilter::PUT,
        Method::Delete => MethodFilter::DELETE,
    };
    router.route(O::META.path, on(method, handlers::operation::<O>))
}

/// The whole HTTP application: REST under `/api/v1` and MCP at `/mcp`, behind one stack.
pub fn router(services: Services, shutdown: CancellationToken) -> Router {
    // Every API route comes from the registry, so routes, the OpenAPI document and the MCP
    // tools cannot drift apart.
    let api = REGISTRY
        .iter()
        .fold(Router::new(), |router, entry| entry.route(router))
        .route("/jobs/{job}/events", get(events::job_events))
        .route("/devices/{device}/metrics/chart", get(charts::metric_chart))
        // Route layers run outermost-last: authenticate → rate limit → operation.
        .route_layer(axum::middleware::from_fn_with_state(
            services.clone(),
            middleware::rate_limit,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            services.clone(),
            middleware::authenticate,
        ))
        .route("/openapi.json", get(handlers::openapi));

    // MCP rides the same stack: Origin check → authenticate → rate limit; the MCP server
    // times and audits each tool call itself, where the tool name is known.
    let mcp = Router::new()
        .nest_service("/mcp", crate::mcp::service(services.clone(), shutdown))
        .layer(axum::middleware::from_fn_with_state(
            services.clone(),
            middleware::rate_limit_mcp,
        ))
        .layer(axum::middleware::from_fn_with_state(
            services.clone(),
            middleware::authenticate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            services.clone(),
            middleware::check_origin,
        ));

    let app = Router::new()
        .nest("/api/v1", api)
        .merge(mcp)
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/metrics", get(handlers::prometheus))
        .fallback(handlers::not_found);
    with_outer_stack(app, services)
}

/// The layers every request passes, outermost first: request ID (a caller's vetted, else
/// generated; propagated to the response), `observe` (timing, counters, problem rendering),
/// panic catcher.
fn with_outer_stack(app: Router<Services>, services: Services) -> Router {
    app.layer(
        ServiceBuilder::new()
            .layer(axum::middleware::from_fn(middleware::vet_request_id))
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

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    async fn boom() -> &'static str {
        panic!("handler bug")
    }

    #[tokio::test]
    async fn the_outer_stack_turns_panics_into_500s_and_vets_request_ids() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::ControllerConfig {
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        let services = crate::server::open_services(&config).await.unwrap();
        let app = Router::new()
            .route("/boom", get(boom))
            .route("/fine", get(|| async { "fine" }));
        let app = with_outer_stack(app, services.clone());
        let request = Request::get("/boom")
            .header("x-request-id", "panic-1")
            .body(Body::empty())
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), 500);
        assert_eq!(response.headers()["x-request-id"], "panic-1");
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem["request_id"], "panic-1");
        assert_eq!(
            problem["detail"], "internal error",
            "no internal detail leaks"
        );
        let request = Request::get("/fine").body(Body::empty()).unwrap();
        assert_eq!(app.clone().oneshot(request).await.unwrap().status(), 200);

        // A request ID that could forge log fields is replaced by a generated one.
        let request = Request::get("/fine")
            .header("x-request-id", "a\" status=200 forged")
            .body(Body::empty())
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        let id = response.headers()["x-request-id"].to_str().unwrap();
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
        services.store.close().await;
    }
}
