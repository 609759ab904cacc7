//! The HTTP application (axum): the REST surface under `/api/v1` and MCP at `/mcp`, behind one
//! stack: request ID → timing/metrics/problem rendering → panic catcher → bearer
//! authentication → per-principal rate limit (→ audit of mutations, for REST). Each REST
//! handler converts in, calls one service method, converts out.

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

use crate::operations::OPERATIONS;
use crate::services::Services;

/// Adds the operation `id` from [`OPERATIONS`] with `handler`. A missing entry is a
/// programming error caught the first time the router is built (every test builds it).
fn operation<H, T>(router: Router<Services>, id: &str, handler: H) -> Router<Services>
where
    H: axum::handler::Handler<T, Services>,
    T: 'static,
{
    let Some(operation) = OPERATIONS.iter().find(|o| o.id == id) else {
        panic!("route {id:?} has no entry in operations::OPERATIONS");
    };
    let method = match operation.method {
        "get" => MethodFilter::GET,
        "post" => MethodFilter::POST,
        "put" => MethodFilter::PUT,
        "patch" => MethodFilter::PATCH,
        "delete" => MethodFilter::DELETE,
        other => panic!("operation {id:?} has unsupported method {other:?}"),
    };
    router.route(operation.path, on(method, handler))
}

/// The whole HTTP application: REST under `/api/v1` and MCP at `/mcp`, behind one stack.
pub fn router(services: Services, shutdown: CancellationToken) -> Router {
    // Every API route is registered through the operation table: its method and path come
    // from `operations::OPERATIONS`, so the routes and the OpenAPI document cannot drift apart.
    let api = Router::new();
    let api = operation(api, "list_devices", handlers::list_devices);
    let api = operation(
        api,
        "create_agentless_device",
        handlers::create_agentless_device,
    );
    let api = operation(api, "get_device", handlers::get_device);
    let api = operation(api, "delete_device", handlers::delete_device);
    let api = operation(api, "query_metrics", handlers::query_metrics);
    let api = operation(api, "latest_metrics", handlers::latest_metrics);
    let api = operation(api, "list_checks", handlers::list_checks);
    let api = operation(api, "run_checks", handlers::run_checks);
    let api = operation(api, "check_history", handlers::check_history);
    let api = operation(api, "device_capabilities", handlers::device_capabilities);
    let api = operation(api, "list_containers", handlers::list_containers);
    let api = operation(api, "diagnose_device", handlers::diagnose_device);
    let api = operation(api, "ssh_public_key", handlers::ssh_public_key);
    let api = operation(api, "plan_change", handlers::plan_change);
    let api = operation(api, "deploy_change", handlers::deploy_change);
    let api = operation(api, "list_changes", handlers::list_changes);
    let api = operation(api, "get_change", handlers::get_change);
    let api = operation(api, "confirm_change", handlers::confirm_change);
    let api = operation(api, "rollback_change", handlers::rollback_change);
    let api = operation(
        api,
        "diagnose_infrastructure",
        handlers::diagnose_infrastructure,
    );
    let api = operation(
        api,
        "create_enrollment_token",
        handlers::create_enrollment_token,
    );
    let api = operation(api, "list_audit", handlers::list_audit);
    let api = operation(api, "performance_summary", handlers::performance_summary);
    let api = operation(api, "list_approvals", handlers::list_approvals);
    let api = operation(api, "get_approval", handlers::get_approval);
    let api = operation(api, "approve_request", handlers::approve_request);
    let api = operation(api, "reject_request", handlers::reject_request)
        // Route layers run outermost-last: authenticate → rate limit → audit → handler.
        .route_layer(axum::middleware::from_fn_with_state(
            services.clone(),
            middleware::audit,
        ))
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
