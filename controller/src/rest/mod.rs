//! The REST surface (axum): a thin adapter over [`Services`]. Every `/api/v1` route passes
//! through the same stack: request ID → timing/metrics/problem rendering → panic catcher →
//! bearer authentication; each handler converts in, calls one service method, converts out.

mod handlers;
mod middleware;
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
    )
    .route_layer(axum::middleware::from_fn_with_state(
        services.clone(),
        middleware::authenticate,
    ))
    .route("/openapi.json", get(handlers::openapi));

    // MCP rides the same stack; authentication and the Origin check are its route layers.
    let mcp = Router::new()
        .nest_service("/mcp", crate::mcp::service(services.clone(), shutdown))
        .layer(axum::middleware::from_fn_with_state(
            services.clone(),
            middleware::authenticate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            services.clone(),
            middleware::check_origin,
        ));

    Router::new()
        .nest("/api/v1", api)
        .merge(mcp)
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
