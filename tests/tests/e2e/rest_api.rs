//! The REST API: routes match the documented operations, scopes are enforced, and bad input
//! always gets a 4xx problem+json with a clear message — never a 5xx.

use infrastructor_controller::auth::Scope;
use infrastructor_controller::operations::REGISTRY;
use infrastructor_e2e::TestController;
use reqwest::Method;

/// The pinned host key of the example device, spliced into the JSON bodies below.
macro_rules! host_key {
    () => {
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJWRSzIpjq16vgiLvN1lgOMwVPvO2TzHBk4+ciuHURCy"
    };
}

async fn call(
    controller: &TestController,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, serde_json::Value, reqwest::header::HeaderMap) {
    let mut request = controller
        .http()
        .request(method, format!("http://{}{path}", controller.http_addr));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        headers,
    )
}

#[tokio::test]
async fn every_documented_operation_is_routed_and_documented() {
    let (_dir, controller) = TestController::start_sqlite().await;
    let (status, document, _) =
        call(&controller, Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(status, 200);
    for entry in REGISTRY {
        let operation = entry.meta();
        let documented =
            &document["paths"][format!("/api/v1{}", operation.path)][operation.method.as_str()];
        assert_eq!(documented["operationId"], operation.id);
        let path = format!(
            "/api/v1{}",
            operation.path.replace("{device}", "no-such-device")
        );
        let method =
            Method::from_bytes(operation.method.as_str().to_uppercase().as_bytes()).unwrap();
        let (status, body, _) = call(
            &controller,
            method,
            &path,
            Some(&controller.admin_token),
            Some("{}"),
        )
        .await;
        // Routed: the handler answered (possibly "device not found"), not the router.
        assert_ne!(status, 405, "{:?} {}", operation.method, operation.path);
        assert!(
            !body.to_string().contains("no such route"),
            "{:?} {} is not routed",
            operation.method,
            operation.path
        );
    }
    let (status, body, _) = call(
        &controller,
        Method::GET,
        "/api/v1/nothing-here",
        Some(&controller.admin_token),
        None,
    )
    .await;
    assert_eq!(status, 404);
    assert!(body["detail"].as_str().unwrap().contains("no such route"));
    controller.shutdown().await;
}

#[tokio::test]
async fn scopes_are_enforced_and_named() {
    let (_dir, controller) = TestController::start_sqlite().await;
    let read = controller.api_token("scoped", Scope::Read).await;
    let operate = controller.api_token("scoped", Scope::Operate).await;

    let (status, _, headers) = call(&controller, Method::GET, "/api/v1/devices", None, None).await;
    assert_eq!(status, 401);
    assert!(headers.get("www-authenticate").is_some());
    let (status, _, _) = call(
        &controller,
        Method::GET,
        "/api/v1/devices",
        Some("ifr_not-a-real-token"),
        None,
    )
    .await;
    assert_eq!(status, 401);

    let (status, _, _) = call(
        &controller,
        Method::GET,
        "/api/v1/devices",
        Some(&read),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let create = concat!(
        r#"{"name":"nas","ssh_address":"nas.home:22","ssh_user":"backup","ssh_host_key":""#,
        host_key!(),
        r#""}"#
    );
    let (status, body, _) = call(
        &controller,
        Method::POST,
        "/api/v1/devices",
        Some(&read),
        Some(create),
    )
    .await;
    assert_eq!(status, 403);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("requires scope 'operate'"),
        "{body}"
    );
    let (status, created, _) = call(
        &controller,
        Method::POST,
        "/api/v1/devices",
        Some(&operate),
        Some(create),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["status"], "agentless");
    let (status, body, _) = call(
        &controller,
        Method::DELETE,
        "/api/v1/devices/nas",
        Some(&operate),
        None,
    )
    .await;
    assert_eq!(status, 403);
    assert!(body["detail"]
        .as_str()
        .unwrap()
        .contains("requires scope 'admin'"));
    let (status, _, _) = call(
        &controller,
        Method::POST,
        "/api/v1/enrollment-tokens",
        Some(&operate),
        None,
    )
    .await;
    assert_eq!(status, 403);
    let (status, _, _) = call(
        &controller,
        Method::DELETE,
        "/api/v1/devices/nas",
        Some(&controller.admin_token),
        None,
    )
    .await;
    assert_eq!(status, 204);
    controller.shutdown().await;
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_changes_nothing() {
    let (_dir, controller) = TestController::start_sqlite().await;
    let admin = controller.admin_token.clone();
    let good = concat!(
        r#"{"name":"nas","ssh_address":"nas.home:22","ssh_user":"backup","ssh_host_key":""#,
        host_key!(),
        r#""}"#
    );
    let (status, _, _) = call(
        &controller,
        Method::POST,
        "/api/v1/devices",
        Some(&admin),
        Some(good),
    )
    .await;
    assert_eq!(status, 201);

    let cases: &[(Method, &str, Option<&str>, u16, &str)] = &[
        (
            Method::POST,
            "/api/v1/devices",
            Some(concat!(
                r#"{"name":"a;rm -rf /","ssh_address":"h","ssh_user":"u","ssh_host_key":""#,
                host_key!(),
                r#""}"#
            )),
            400,
            "invalid device name",
        ),
        (
            Method::POST,
            "/api/v1/devices",
            Some(concat!(
                r#"{"name":"x","ssh_address":"$(reboot)","ssh_user":"u","ssh_host_key":""#,
                host_key!(),
                r#""}"#
            )),
            400,
            "invalid SSH address",
        ),
        (
            Method::POST,
            "/api/v1/devices",
            Some(concat!(
                r#"{"name":"x","ssh_address":"h","ssh_user":"-oProxyCommand=x","ssh_host_key":""#,
                host_key!(),
                r#""}"#
            )),
            400,
            "invalid SSH user",
        ),
        (
            Method::POST,
            "/api/v1/devices",
            Some(r#"{"name":"x","ssh_address":"h"}"#),
            400,
            "ssh_user",
        ),
        (
            Method::POST,
            "/api/v1/devices",
            Some(concat!(
                r#"{"name":"x","ssh_address":"h","ssh_user":"u","ssh_host_key":""#,
                host_key!(),
                r#"","extra":1}"#
            )),
            400,
            "unknown field",
        ),
        (
            Method::POST,
            "/api/v1/devices",
            Some(
                r#"{"name":"x","ssh_address":"h","ssh_user":"u","ssh_host_key":"ssh-ed25519 garbage"}"#,
            ),
            400,
            "invalid pinned host key",
        ),
        (
            Method::POST,
            "/api/v1/devices",
            Some("{not json"),
            400,
            "invalid JSON",
        ),
        (
            Method::POST,
            "/api/v1/devices",
            Some(good),
            409,
            "already exists",
        ),
        (
            Method::GET,
            "/api/v1/devices/nas/metrics",
            None,
            400,
            "'series' is required",
        ),
        (
            Method::GET,
            "/api/v1/devices/nas/metrics?series=cpu.usage_percent&from=tomorrow",
            None,
            400,
            "invalid 'from'",
        ),
        (
            Method::GET,
            "/api/v1/devices/nas/metrics?series=cpu.usage_percent&step=0s",
            None,
            400,
            "at least 1s",
        ),
        (
            Method::GET,
            "/api/v1/devices/nas/metrics?series=cpu.usage_percent&from=-700d&step=1s",
            None,
            400,
            "buckets requested",
        ),
        (
            Method::GET,
            "/api/v1/devices/nas/metrics?series=x%27%3B%20DROP%20TABLE%20samples",
            None,
            400,
            "invalid series name",
        ),
        (
            Method::GET,
            "/api/v1/devices/ghost/metrics?series=cpu.usage_percent",
            None,
            404,
            "not found",
        ),
        (
            Method::GET,
            "/api/v1/devices/..%2F..%2Fetc",
            None,
            400,
            "invalid device ID or name",
        ),
        (
            Method::POST,
            "/api/v1/enrollment-tokens",
            Some(r#"{"expires_in":"forever"}"#),
            400,
            "invalid expires_in",
        ),
        (
            Method::POST,
            "/api/v1/enrollment-tokens",
            Some(r#"{"expires_in":"90d"}"#),
            400,
            "between 1m and 30d",
        ),
        (
            Method::DELETE,
            "/api/v1/devices/ghost",
            None,
            404,
            "not found",
        ),
    ];
    for (method, path, body, expected, message) in cases {
        let (status, problem, headers) =
            call(&controller, method.clone(), path, Some(&admin), *body).await;
        assert_eq!(status, *expected, "{method} {path}: {problem}");
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(message),
            "{method} {path}: {detail:?} lacks {message:?}"
        );
        assert_eq!(headers["content-type"], "application/problem+json");
        assert_eq!(
            problem["request_id"],
            headers["x-request-id"].to_str().unwrap(),
            "request ID in body and header"
        );
    }
    let (_, devices, _) = call(
        &controller,
        Method::GET,
        "/api/v1/devices",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(
        devices.as_array().map(Vec::len),
        Some(1),
        "nothing was created by bad input"
    );

    // A caller's correlation ID is kept.
    let response = controller
        .http()
        .get(controller.api_url("/devices/ghost"))
        .bearer_auth(&admin)
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-me-123");
    controller.shutdown().await;
}

#[tokio::test]
async fn health_readiness_and_prometheus_metrics() {
    let (_dir, controller) = TestController::start_sqlite().await;
    let (status, body, _) = call(&controller, Method::GET, "/healthz", None, None).await;
    assert_eq!((status, body.as_str()), (200, Some("ok\n")));
    let (status, body, _) = call(&controller, Method::GET, "/readyz", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(body["database"], "ok");
    let (status, body, _) = call(&controller, Method::GET, "/metrics", None, None).await;
    assert_eq!(status, 200);
    let text = body.as_str().unwrap();
    for metric in [
        "infrastructor_agents_connected",
        "infrastructor_ingest_samples_total",
        "infrastructor_http_requests_total",
    ] {
        assert!(text.contains(metric), "{metric} missing from /metrics");
    }
    // Not ready without a database: 503 naming the cause, while liveness stays 200.
    let store = controller.services.store.clone();
    controller.run(async move { store.close().await }).await;
    let (status, body, _) = call(&controller, Method::GET, "/readyz", None, None).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("database unreachable"),
        "{body}"
    );
    let (status, _, _) = call(&controller, Method::GET, "/healthz", None, None).await;
    assert_eq!(status, 200);
    controller.shutdown().await;
}

#[tokio::test]
async fn the_scope_is_checked_before_the_body_is_read() {
    let (_dir, controller) = TestController::start_sqlite().await;
    let read = controller.api_token("reader", Scope::Read).await;
    // Larger than any body an operation reads, and not even JSON: the scope decides first.
    let huge = "x".repeat(9 * 1024 * 1024);
    let (status, problem, _) = call(
        &controller,
        Method::POST,
        "/api/v1/changes",
        Some(&read),
        Some(&huge),
    )
    .await;
    assert_eq!(status, 403, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("operate"),
        "{problem}"
    );
    // With the scope, the same body is refused for its size.
    let (status, problem, _) = call(
        &controller,
        Method::POST,
        "/api/v1/changes",
        Some(&controller.admin_token),
        Some(&huge),
    )
    .await;
    assert_eq!(status, 400, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("larger than"),
        "{problem}"
    );
    controller.shutdown().await;
}
