//! The application fabric, with a real MCP client, real Redis and real PostgreSQL: rate limits
//! (in process and shared through Redis across replicas), the cache invalidated by writes
//! from either surface, the audit log, the performance summary, human approval of MCP
//! requests, and the lifecycle (graceful shutdown with a request in flight, unwinding after a
//! failed start).

use std::time::Duration;

use infrastructor_controller::auth::Scope;
use infrastructor_controller::ratelimit::RateLimit;
use infrastructor_controller::{Controller, ControllerConfig};
use infrastructor_e2e::mcp::{call, call_confirmed, connect, structured};
use infrastructor_e2e::{
    controller_config, fresh_postgres_database, path, temp_dir, test_redis, Backend, TestController,
};
use serde_json::{json, Value};

const HOST_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

async fn get(controller: &TestController, token: &str, path: &str) -> reqwest::Response {
    controller
        .http()
        .get(controller.api_url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

fn with_redis(config: &mut ControllerConfig, redis: &Option<(String, String)>) {
    if let Some((url, prefix)) = redis {
        config.redis_url = Some(url.clone());
        config.redis_key_prefix = prefix.clone();
    }
}

/// In process, and — when Redis is there — through Redis.
fn cache_variants() -> Vec<Option<(String, String)>> {
    let mut variants = vec![None];
    if let Some(redis) = test_redis() {
        variants.push(Some(redis));
    }
    variants
}

#[tokio::test]
async fn rate_limits_refuse_with_429_on_both_surfaces_then_recover() {
    for redis in cache_variants() {
        let dir = temp_dir();
        let mut config = controller_config(&path(&dir, "controller"), &Backend::Sqlite);
        config.rate_limit = RateLimit {
            per_second: 1.0,
            burst: 3,
        };
        with_redis(&mut config, &redis);
        let controller = TestController::start(config).await;
        let reader = controller.api_token("reader", Scope::Read).await;
        // MCP session setup takes tokens too; open it before the bucket is drained.
        let client = connect(&controller, &reader).await;
        let mut refused = None;
        for _ in 0..8 {
            let response = get(&controller, &reader, "/devices").await;
            if response.status() == 429 {
                refused = Some(response);
                break;
            }
            assert_eq!(response.status(), 200);
        }
        let refused = refused.expect("the bucket runs dry within 8 requests");
        let retry_after: u64 = refused.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=2).contains(&retry_after), "{retry_after}");
        let problem: Value = refused.json().await.unwrap();
        assert_eq!(problem["status"], 429);
        assert!(problem["detail"].as_str().unwrap().contains("rate limit"));
        assert!(problem["request_id"].is_string());

        // The same bucket over MCP: a tool error with the same status.
        let limited = call(&client, "list_devices", json!({})).await;
        assert_eq!(limited.is_error, Some(true));
        assert_eq!(structured(&limited)["status"], 429);
        assert!(
            structured(&limited)["retry_after_seconds"]
                .as_u64()
                .unwrap()
                >= 1
        );

        // Buckets are per principal: the admin is not affected.
        let admin = get(&controller, &controller.admin_token, "/devices").await;
        assert_eq!(admin.status(), 200);

        // Recovery: after Retry-After, requests pass again, on either surface.
        tokio::time::sleep(Duration::from_secs(retry_after) + Duration::from_millis(100)).await;
        assert_eq!(get(&controller, &reader, "/devices").await.status(), 200);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let recovered = call(&client, "list_devices", json!({})).await;
        assert_eq!(recovered.is_error, Some(false), "{recovered:?}");
        client.cancel().await.unwrap();
        controller.shutdown().await;
    }
}

#[tokio::test]
async fn redis_rate_limits_hold_across_controller_replicas() {
    let (Some(redis), Some(database)) = (test_redis(), fresh_postgres_database().await) else {
        return;
    };
    let dir = temp_dir();
    let replica = |name: &str| {
        let mut config = controller_config(&path(&dir, name), &Backend::Postgres(database.clone()));
        config.rate_limit = RateLimit {
            per_second: 0.2,
            burst: 3,
        };
        with_redis(&mut config, &Some(redis.clone()));
        config
    };
    let first = TestController::start(replica("first")).await;
    let second = TestController::start(replica("second")).await;
    let reader = first.api_token("reader", Scope::Read).await;
    for _ in 0..3 {
        assert_eq!(get(&first, &reader, "/devices").await.status(), 200);
    }
    // The bucket is shared: the other replica refuses the same principal.
    assert_eq!(get(&second, &reader, "/devices").await.status(), 429);
    first.shutdown().await;
    second.shutdown().await;
}

#[tokio::test]
async fn writes_through_either_surface_invalidate_what_the_other_reads() {
    for redis in cache_variants() {
        let dir = temp_dir();
        let mut config = controller_config(&path(&dir, "controller"), &Backend::Sqlite);
        with_redis(&mut config, &redis);
        let controller = TestController::start(config).await;
        let client = connect(&controller, &controller.admin_token).await;

        assert_eq!(controller.get_json("/devices").await.1, json!([]));
        assert_eq!(controller.get_json("/devices").await.1, json!([]));
        let created = call_confirmed(
            &client,
            "add_agentless_device",
            json!({"name": "nas", "ssh_address": "127.0.0.1:22", "ssh_user": "monitor", "ssh_host_key": HOST_KEY}),
        )
        .await;
        assert_eq!(created.is_error, Some(false), "{created:?}");
        // Well within the list's TTL: only invalidation explains seeing the new device.
        let (_, devices) = controller.get_json("/devices").await;
        assert_eq!(devices[0]["name"], "nas", "{devices}");

        let response = controller
            .http()
            .delete(controller.api_url("/devices/nas"))
            .bearer_auth(&controller.admin_token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
        let listed = call(&client, "list_devices", json!({})).await;
        assert_eq!(structured(&listed), &json!({"items": []}));

        let (_, ready) = controller
            .http()
            .get(format!("http://{}/readyz", controller.http_addr))
            .send()
            .await
            .map(|r| (r.status(), r))
            .unwrap();
        let ready: Value = ready.json().await.unwrap();
        let backend = if redis.is_some() {
            "redis"
        } else {
            "in-process"
        };
        assert_eq!(ready["cache"]["backend"], backend, "{ready}");
        assert_eq!(ready["cache_status"], "ok");
        assert!(ready["cache"]["hits"].as_u64().unwrap() >= 1, "{ready}");
        assert!(ready["cache"]["misses"].as_u64().unwrap() >= 3, "{ready}");
        let metrics = controller.metrics_text().await;
        assert!(
            metrics.contains("infrastructor_cache_lookups_total{result=\"hit\"}"),
            "{metrics}"
        );
        client.cancel().await.unwrap();
        controller.shutdown().await;
    }
}

#[tokio::test]
async fn every_mutation_from_either_surface_is_audited_with_secrets_redacted() {
    let (_dir, controller) = TestController::start_sqlite().await;
    let reader = controller.api_token("reader", Scope::Read).await;
    let http = controller.http();
    let create = http
        .post(controller.api_url("/devices"))
        .bearer_auth(&controller.admin_token)
        .header("x-request-id", "audit-rest-create")
        .json(&json!({"name": "nas", "ssh_address": "127.0.0.1:22", "ssh_user": "monitor", "ssh_host_key": HOST_KEY}))
        .send()
        .await
        .unwrap();
    assert_eq!(create.status(), 201);
    // A refused mutation is audited too.
    let refused = http
        .post(controller.api_url("/devices"))
        .bearer_auth(&reader)
        .json(&json!({"name": "other", "ssh_address": "127.0.0.1:22", "ssh_user": "x", "ssh_host_key": HOST_KEY}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    // File contents never reach the audit log; their digest does. (The deployment itself
    // fails on the host: no roots are allowlisted for agentless changes.)
    let deploy = http
        .post(controller.api_url("/changes?wait=120"))
        .bearer_auth(&controller.admin_token)
        .json(&json!({"devices": ["nas"],
            "change": {"files": [{"path": "/etc/app.conf", "content": "password=hunter2\n"}]}}))
        .send()
        .await
        .unwrap();
    let deployed: Value = deploy.json().await.unwrap();
    assert_ne!(deployed["state"], "committed", "{deployed}");
    let client = connect(&controller, &controller.admin_token).await;
    let deleted = call_confirmed(&client, "remove_device", json!({"device": "nas"})).await;
    assert_eq!(deleted.is_error, Some(false), "{deleted:?}");
    // Reads are not audited.
    controller.get_json("/devices").await;

    let (status, records) = controller.get_json("/audit").await;
    assert_eq!(status, 200, "{records}");
    let records = records.as_array().unwrap().clone();
    let summary: Vec<(String, String, String, u64)> = records
        .iter()
        .map(|r| {
            (
                r["surface"].as_str().unwrap().to_string(),
                r["operation"].as_str().unwrap().to_string(),
                r["outcome"].as_str().unwrap().to_string(),
                r["status"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected = [
        ("mcp", "delete_device", "ok", 200),
        // The job's end (the deploy ran and aborted), then its acceptance.
        ("rest", "deploy_change", "failed", 200),
        ("rest", "deploy_change", "accepted", 202),
        ("rest", "create_agentless_device", "error", 403),
        ("rest", "create_agentless_device", "ok", 201),
    ];
    let expected: Vec<(String, String, String, u64)> = expected
        .iter()
        .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), *d))
        .collect();
    assert_eq!(summary, expected, "newest first");
    let text = serde_json::to_string(&records).unwrap();
    assert!(!text.contains("hunter2"), "{text}");
    let content = records[1]["arguments"]["change"]["files"][0]["content"].as_str();
    assert!(
        content.is_some_and(|c| c.starts_with("[redacted: 17 bytes, sha256 ")),
        "{content:?}"
    );
    assert_eq!(
        records[1]["request_id"], records[2]["request_id"],
        "one correlation ID"
    );
    assert_eq!(records[4]["request_id"], "audit-rest-create");
    assert_eq!(records[4]["arguments"]["name"], "nas");
    assert_eq!(records[0]["arguments"]["device"], "nas");
    assert!(records[3]["principal_name"] == "reader");

    let (_, only) = controller
        .get_json("/audit?request_id=audit-rest-create")
        .await;
    assert_eq!(only.as_array().unwrap().len(), 1);
    assert_eq!(get(&controller, &reader, "/audit").await.status(), 403);
    let (status, bad) = controller.get_json("/audit?limit=0").await;
    assert_eq!(status, 400, "{bad}");
    // The MCP tool remove_device is recorded under its operation, delete_device.
    let (_, deleted) = controller.get_json("/audit?operation=delete_device").await;
    assert_eq!(deleted.as_array().unwrap().len(), 1, "{deleted}");
    client.cancel().await.unwrap();
    controller.shutdown().await;
}

#[tokio::test]
async fn mcp_changes_wait_for_a_human_when_approval_is_required() {
    let dir = temp_dir();
    let mut config = controller_config(&path(&dir, "controller"), &Backend::Sqlite);
    config.require_approval = true;
    let controller = TestController::start(config).await;
    let operator = controller.api_token("llm-client", Scope::Operate).await;
    let client = connect(&controller, &operator).await;
    let device = json!({"name": "nas", "ssh_address": "127.0.0.1:22", "ssh_user": "monitor", "ssh_host_key": HOST_KEY});

    let held = call_confirmed(&client, "add_agentless_device", device.clone()).await;
    assert_eq!(held.is_error, Some(false), "{held:?}");
    let held = structured(&held).clone();
    assert_eq!(held["state"], "pending", "{held}");
    assert_eq!(held["plan"]["name"], "nas");
    let id = held["id"].as_str().unwrap().to_string();
    assert_eq!(controller.get_json("/devices/nas").await.0, 404, "not yet");

    // Approving is REST-only, admin-only, and never by the requester itself.
    let tools = client.list_all_tools().await.unwrap();
    assert!(!tools.iter().any(|t| t.name.contains("approve")));
    let http = controller.http();
    let approve = |token: &str| {
        http.post(controller.api_url(&format!("/approvals/{id}/approve")))
            .bearer_auth(token.to_string())
            .send()
    };
    assert_eq!(approve(&operator).await.unwrap().status(), 403);
    let response = approve(&controller.admin_token).await.unwrap();
    assert_eq!(response.status(), 200);
    let approved: Value = response.json().await.unwrap();
    assert_eq!(approved["state"], "approved", "{approved}");
    assert_eq!(approved["result"]["ok"]["name"], "nas", "{approved}");
    assert_eq!(controller.get_json("/devices/nas").await.0, 200);
    assert_eq!(
        approve(&controller.admin_token).await.unwrap().status(),
        409
    );

    // A request beyond the caller's scope is refused outright, never held.
    let delete = call(&client, "remove_device", json!({"device": "nas"})).await;
    assert_eq!(structured(&delete)["status"], 403);

    // A rejected request never runs.
    let mut other = device.clone();
    other["name"] = json!("nas-2");
    let held = call_confirmed(&client, "add_agentless_device", other).await;
    let held_id = structured(&held)["id"].as_str().unwrap().to_string();
    let (status, rejected) = controller
        .post_json(&format!("/approvals/{held_id}/reject"))
        .await;
    assert_eq!(
        (status, rejected["state"].as_str()),
        (200, Some("rejected"))
    );
    assert_eq!(
        controller.get_json("/devices/nas-2").await.0,
        404,
        "never created"
    );
    let (_, pending) = controller.get_json("/approvals?state=pending").await;
    assert_eq!(pending, json!([]));
    let (status, _) = controller.get_json("/approvals?state=maybe").await;
    assert_eq!(status, 400);

    // The audit trail tells the story: held, then run once approved.
    let (_, audit) = controller.get_json("/audit").await;
    let outcomes: Vec<(&str, &str, &str)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["surface"].as_str().unwrap(),
                r["operation"].as_str().unwrap(),
                r["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("rest", "reject_request", "ok"),
            ("mcp", "create_agentless_device", "pending_approval"),
            // Refused outright, and audited like a refused REST mutation.
            ("mcp", "delete_device", "error"),
            ("rest", "approve_request", "error"),
            ("rest", "approve_request", "ok"),
            ("mcp", "create_agentless_device", "ok"),
            ("rest", "approve_request", "error"),
            ("mcp", "create_agentless_device", "pending_approval"),
        ]
    );
    client.cancel().await.unwrap();
    controller.shutdown().await;
}

#[tokio::test]
async fn operation_timings_are_summarized_and_survive_a_restart() {
    let (_dir, controller) = TestController::start_sqlite().await;
    let client = connect(&controller, &controller.admin_token).await;
    for _ in 0..3 {
        controller.get_json("/devices").await;
        call(&client, "list_devices", json!({})).await;
    }
    controller.get_json("/devices/nope").await;
    let line = |summary: &Value, surface: &str, operation: &str| -> Value {
        summary["operations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["surface"] == surface && l["operation"] == operation)
            .cloned()
            .unwrap_or_else(|| panic!("no {surface} {operation} in {summary}"))
    };
    let (status, summary) = controller.get_json("/performance/summary?window=1h").await;
    assert_eq!(status, 200, "{summary}");
    let rest = line(&summary, "rest", "list_devices");
    assert_eq!(rest["count"], 3);
    assert_eq!(rest["error_rate"], 0.0);
    let p50 = rest["p50_ms"].as_f64().unwrap();
    let p99 = rest["p99_ms"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 <= p99 && p99 <= rest["max_ms"].as_f64().unwrap());
    assert_eq!(line(&summary, "mcp", "list_devices")["count"], 3);
    assert_eq!(line(&summary, "rest", "get_device")["count"], 1);
    let (status, _) = controller
        .get_json("/performance/summary?window=forever")
        .await;
    assert_eq!(status, 400);
    let metrics = controller.metrics_text().await;
    assert!(
        metrics.contains(
            "infrastructor_operation_seconds_count{surface=\"mcp\",operation=\"list_devices\"} 3"
        ),
        "{metrics}"
    );
    client.cancel().await.unwrap();

    // Shutdown flushes what is in memory; the next instance reads it from the database.
    let config = controller.restart_config();
    controller.shutdown().await;
    let controller = TestController::start(config).await;
    let (_, summary) = controller.get_json("/performance/summary").await;
    assert_eq!(line(&summary, "mcp", "list_devices")["count"], 3);
    controller.shutdown().await;
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_request_finish() {
    use infrastructor_proto::v1::{
        agent_message, command, command_result, controller_message, AgentMessage, CheckReports,
        CommandResult, CommandSucceeded,
    };

    let (dir, controller) = TestController::start_sqlite().await;
    let identity = controller.enroll(&path(&dir, "agent")).await;
    let device_id = identity.meta.device_id.clone();
    // A hand-driven agent: it answers only when the test says so.
    let (agent, mut inbound) = controller.raw_agent(&identity, "slow").await;

    let http = controller.http();
    let url = controller.api_url(&format!("/devices/{device_id}/checks/run"));
    let token = controller.admin_token.clone();
    let request = tokio::spawn(async move {
        http.post(url)
            .bearer_auth(token)
            .header("x-request-id", "in-flight")
            .send()
            .await
    });
    let command = loop {
        let message = inbound.message().await.unwrap().unwrap();
        if let Some(controller_message::Body::Command(command)) = message.body {
            break command;
        }
    };
    assert!(matches!(command.kind, Some(command::Kind::RunChecks(_))));
    assert!(command.request_id.starts_with("in-flight:"));

    let http_addr = controller.http_addr;
    let stopping = tokio::spawn(controller.shutdown());
    // New connections are refused once HTTP stops accepting…
    infrastructor_e2e::eventually(Duration::from_secs(10), "listener closed", || async {
        tokio::net::TcpStream::connect(http_addr)
            .await
            .is_err()
            .then_some(())
    })
    .await;
    // …while the request in flight still waits for its agent, which is still connected.
    assert!(!request.is_finished() && !stopping.is_finished());
    let answer = AgentMessage {
        body: Some(agent_message::Body::CommandResult(CommandResult {
            request_id: command.request_id,
            outcome: Some(command_result::Outcome::Succeeded(CommandSucceeded {
                message: "checks triggered".into(),
                payload: None,
            })),
        })),
    };
    agent.send(answer).await.unwrap();
    let reports = AgentMessage {
        body: Some(agent_message::Body::CheckReports(CheckReports {
            reports: vec![],
            capabilities: vec!["systemd".into()],
        })),
    };
    agent.send(reports).await.unwrap();
    let response = request.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "in-flight");
    tokio::time::timeout(Duration::from_secs(30), stopping)
        .await
        .expect("shutdown completes once the request is done")
        .unwrap();
}

#[tokio::test]
async fn a_failed_start_stops_what_had_started() {
    let dir = temp_dir();
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let grpc_addr = grpc.local_addr().unwrap();
    drop(grpc);
    let mut config = controller_config(&path(&dir, "controller"), &Backend::Sqlite);
    config.grpc_listen = grpc_addr;
    config.http_listen = taken.local_addr().unwrap();
    let error = Controller::start(config.clone())
        .await
        .err()
        .expect("the HTTP port is taken");
    assert!(error.to_string().contains("cannot listen"), "{error}");
    // The gateway that had started is stopped: its port is free again, and the same data
    // directory opens cleanly.
    drop(taken);
    let rebound = std::net::TcpListener::bind(grpc_addr);
    assert!(rebound.is_ok(), "gRPC port still held: {rebound:?}");
    drop(rebound);
    config.http_listen = "127.0.0.1:0".parse().unwrap();

    // A configured Redis that does not answer stops the start with a clear error (the
    // database opened before it is closed again).
    let mut unreachable = config.clone();
    unreachable.redis_url = Some(format!("redis://{grpc_addr}"));
    let error = Controller::start(unreachable)
        .await
        .err()
        .expect("no Redis there");
    assert!(
        error.to_string().contains("cannot connect to Redis"),
        "{error}"
    );

    let controller = Controller::start(config).await.unwrap();
    controller.shutdown().await;
}
