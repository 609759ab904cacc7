//! Every registered operation, called with valid arguments through REST and, when it is
//! offered as a tool, through MCP (a real client, under the tool's name): each answers with
//! success. The arguments below are the
//! only hand-written part; an operation added to the registry without an example here fails
//! this suite, so none goes untested.

use std::collections::HashMap;
use std::time::Duration;

use infrastructor_controller::auth::Scope;
use infrastructor_controller::operations::REGISTRY;
use infrastructor_controller::services::tokens::NewApiToken;
use infrastructor_e2e::docker::{self, Containers};
use infrastructor_e2e::mcp::{call, call_confirmed, connect, structured, Client};
use infrastructor_e2e::{
    agent_config, change_policy, controller_config, path, Backend, SequenceSource,
};
use infrastructor_e2e::{eventually, TestAgent, TestController};
use serde_json::{json, Value};

/// Pinned host key for the agentless device each pass registers (and deletes).
const HOST_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

/// What the examples refer to, made once per surface so one pass cannot use up the other's.
struct Fixture {
    surface: &'static str,
    agent: String,
    root: String,
    awaiting_confirmation: String,
    applied: String,
    /// A deploy whose health check keeps failing for a few seconds: a job still running
    /// (started just before `cancel_job`, as the host runs one change at a time).
    running: String,
    approvals: [String; 2],
    /// A silence to end, and a dead letter to send again.
    silence: String,
    dead_letter: i64,
    /// A running container on the agent's host; `None` without a Docker engine (the
    /// container operations are then skipped, unless services are required).
    container: Option<String>,
}

impl Fixture {
    fn file(&self, name: &str) -> Value {
        json!({"path": format!("{}/{}-{name}.conf", self.root, self.surface), "content": "x=1\n"})
    }

    /// The backup target each pass declares (the managed directory, to a local repository).
    fn backup_target(&self) -> Value {
        json!({"target": format!("every-op-{}", self.surface), "device": self.agent,
            "source": {"kind": "paths", "paths": [self.root]},
            "repository": {"kind": "local", "path": format!("{}-repo-{}", self.root, self.surface)},
            "password_file": "main"})
    }

    /// The DR plan each pass declares: one step, a diagnosis of the agent's device.
    fn dr_plan(&self) -> Value {
        let yaml = format!(
            "name: every-op-{}\nsteps:\n  - id: look\n    operation: diagnose_device\n    \
             arguments: {{device: {}}}\n",
            self.surface, self.agent
        );
        json!({"plan": format!("every-op-{}", self.surface), "yaml": yaml})
    }

    /// The application each pass declares (one member: the pass's container).
    fn app(&self) -> String {
        format!("every-op-{}", self.surface)
    }

    /// Valid arguments for operation `id`, flat (path, query and body fields side by side).
    fn arguments(&self, id: &str) -> Value {
        let agentless = format!("{}-nas", self.surface);
        match id {
            "list_devices" | "diagnose_infrastructure" | "ssh_public_key" => json!({}),
            "create_agentless_device" => json!({"name": agentless,
                "ssh_address": "127.0.0.1:1", "ssh_user": "monitor", "ssh_host_key": HOST_KEY}),
            "delete_device" => json!({"device": agentless}),
            "get_device"
            | "device_overview"
            | "latest_metrics"
            | "list_checks"
            | "run_checks"
            | "device_capabilities"
            | "list_containers"
            | "diagnose_device" => {
                json!({"device": self.agent})
            }
            "query_metrics" => json!({"device": self.agent, "series": "cpu.usage_percent",
                "from": "-1h", "step": "1m"}),
            "analyze_performance_trends" => json!({"devices": self.agent,
                "resource": "cpu", "window": "1h"}),
            "predict_capacity" => json!({"device": self.agent, "resource": "disk"}),
            "analyze_cost_optimization" => json!({"window": "1d"}),
            "check_history" => json!({"device": self.agent, "limit": 5}),
            "create_enrollment_token" => json!({"expires_in": "1h"}),
            "plan_change" => json!({"devices": [self.agent],
                "change": {"files": [self.file("planned")]}}),
            "deploy_change" => json!({"devices": [self.agent],
                "change": {"files": [self.file("deployed")]}}),
            "list_changes" => json!({"device": self.agent, "limit": 10}),
            "get_change" => json!({"change": self.applied}),
            "confirm_change" => json!({"change": self.awaiting_confirmation}),
            "rollback_change" => json!({"change": self.applied}),
            "list_audit" => json!({"operation": "deploy_change", "limit": 10}),
            "list_jobs" => json!({"device": self.agent, "state": "succeeded", "limit": 10}),
            // A change's ID is its deploy job's.
            "get_job" => json!({"job": self.applied}),
            "cancel_job" => json!({"job": self.running}),
            "performance_summary" => json!({"window": "1h"}),
            "list_approvals" => json!({"state": "pending", "limit": 10}),
            "get_approval" => json!({"approval": self.approvals[0]}),
            "approve_request" => json!({"approval": self.approvals[0]}),
            "reject_request" => json!({"approval": self.approvals[1]}),
            "inspect_container" | "container_stats" => match &self.container {
                Some(c) => json!({"device": self.agent, "container": c}),
                None => Value::Null,
            },
            "container_logs" => match &self.container {
                Some(c) => json!({"device": self.agent, "container": c, "tail": 10,
                    "since": "1h"}),
                None => Value::Null,
            },
            "container_action" => match &self.container {
                Some(c) => json!({"device": self.agent, "container": c,
                    "action": "restart", "grace_seconds": 1}),
                None => Value::Null,
            },
            "list_applications" => json!({}),
            "get_application" => json!({"app": self.app()}),
            "declare_application" => json!({"app": self.app(), "members": [
                {"name": "main", "device": self.agent,
                 "container": format!("every-op-{}", self.surface)}]}),
            "manage_application" => json!({"app": self.app(), "action": "status"}),
            "remove_application" => json!({"app": self.app()}),
            "set_maintenance_mode" => json!({"device": self.agent, "enable": true,
                "reason": format!("every operation ({})", self.surface), "duration": "1h"}),
            "list_alerts" => json!({"device": self.agent, "all": true}),
            "list_alert_rules" | "list_silences" | "list_notification_channels" => json!({}),
            "create_silence" => json!({"devices": [self.agent], "reason": "every operation",
                "expires": "1h"}),
            "end_silence" => json!({"silence": self.silence}),
            "test_notification_channel" => json!({"channel": "every-op"}),
            "list_notifications" => json!({"state": "dead", "limit": 10}),
            "retry_notification" => json!({"notification": self.dead_letter.to_string()}),
            "list_backups" | "list_dr_plans" => json!({}),
            "declare_dr_plan" => self.dr_plan(),
            "get_dr_plan" => json!({"plan": format!("every-op-{}", self.surface)}),
            "execute_dr_plan" => json!({"plan": format!("every-op-{}", self.surface),
                "dry_run": false}),
            "declare_backup_target" => self.backup_target(),
            "get_backup_target" | "remove_backup_target" => {
                json!({"target": format!("every-op-{}", self.surface)})
            }
            "manage_backups" => json!({"target": format!("every-op-{}", self.surface),
                "action": "trigger"}),
            other => panic!("no example arguments for operation {other:?}: add them here"),
        }
    }
}

async fn deploy_awaiting_confirmation(
    controller: &TestController,
    fixture: &Fixture,
    name: &str,
) -> String {
    let body = json!({"devices": [fixture.agent],
        "change": {"files": [fixture.file(name)]},
        "options": {"auto_confirm": false, "confirm_timeout_seconds": 600}});
    let (status, change) = controller.post_body("/changes?wait=120", &body).await;
    assert_eq!(status, 200, "{change}");
    assert_eq!(change["state"], "awaiting_confirmation", "{change}");
    change["id"].as_str().unwrap().to_string()
}

/// Starts a deploy that stays running for a few seconds (its health check fails until its
/// timeout); its job ID.
async fn running_job(controller: &TestController, fixture: &Fixture) -> String {
    let slow = json!({"devices": [fixture.agent],
        "change": {"files": [fixture.file("slow")],
            "health_checks": [{"tcp_connect": "127.0.0.1:1"}]},
        "options": {"health_timeout_seconds": 5}});
    let (status, job) = controller.post_body("/changes", &slow).await;
    assert_eq!(status, 202, "{job}");
    job["id"].as_str().unwrap().to_string()
}

async fn fixture(
    controller: &TestController,
    surface: &'static str,
    agent: &str,
    root: &str,
    requester: &str,
) -> Fixture {
    let mut fixture = Fixture {
        surface,
        agent: agent.to_string(),
        root: root.to_string(),
        awaiting_confirmation: String::new(),
        applied: String::new(),
        running: String::new(),
        approvals: [String::new(), String::new()],
        container: None,
        silence: String::new(),
        dead_letter: 0,
    };
    let declared = controller
        .put_body(
            &format!("/applications/{}", fixture.app()),
            &json!({"members": [{"name": "main", "device": agent,
                "container": format!("every-op-{surface}")}]}),
        )
        .await;
    assert_eq!(declared.0, 200, "{}", declared.1);
    let mut plan = fixture.dr_plan();
    let name = plan.as_object_mut().unwrap().remove("plan").unwrap();
    let declared = controller
        .put_body(&format!("/dr-plans/{}", name.as_str().unwrap()), &plan)
        .await;
    assert_eq!(declared.0, 200, "{}", declared.1);
    let mut target = fixture.backup_target();
    let name = target.as_object_mut().unwrap().remove("target").unwrap();
    let declared = controller
        .put_body(&format!("/backups/{}", name.as_str().unwrap()), &target)
        .await;
    assert_eq!(declared.0, 200, "{}", declared.1);
    if docker::engine_with_image().await.is_some() {
        let name = format!("every-op-{surface}");
        docker::docker_cli(&["rm", "-f", &name]);
        docker::run(&name, &[], &["sleep", "3600"]);
        fixture.container = Some(name);
    }
    // The other pass left the device in maintenance (its job may still run): leave it,
    // healthy or not.
    eventually(
        Duration::from_secs(60),
        "no maintenance job running",
        || async {
            let (_, jobs) = controller
                .get_json(&format!("/jobs?device={agent}&limit=100"))
                .await;
            let busy = jobs.as_array()?.iter().any(|j| {
                j["operation"] == "set_maintenance_mode"
                    && (j["state"] == "queued" || j["state"] == "running")
            });
            (!busy).then_some(())
        },
    )
    .await;
    let (_, view) = controller.get_json(&format!("/devices/{agent}")).await;
    if !view["maintenance"].is_null() {
        let leave = json!({"enable": false});
        let url = format!("/devices/{agent}/maintenance?wait=120");
        let (status, job) = controller.post_body(&url, &leave).await;
        assert_eq!(status, 200, "{job}");
    }
    let silence = json!({"devices": [agent], "reason": "to end", "expires": "2h"});
    let (status, silence) = controller.post_body("/silences", &silence).await;
    assert_eq!(status, 201, "{silence}");
    fixture.silence = silence["id"].as_str().unwrap().to_string();
    fixture.dead_letter = dead_letter(controller, agent).await;
    fixture.awaiting_confirmation =
        deploy_awaiting_confirmation(controller, &fixture, "to-confirm").await;
    fixture.applied = deploy_awaiting_confirmation(controller, &fixture, "to-roll-back").await;
    for (n, slot) in fixture.approvals.iter_mut().enumerate() {
        let held = controller
            .http()
            .post(controller.api_url("/enrollment-tokens"))
            .bearer_auth(requester)
            .json(&json!({"expires_in": format!("{}m", 10 + n)}))
            .send()
            .await
            .unwrap();
        assert_eq!(held.status(), 202, "held for approval");
        let held: Value = held.json().await.unwrap();
        *slot = held["id"].as_str().unwrap().to_string();
    }
    fixture
}

/// A notification the delivery loop gave up on: queued for the `every-op` channel, whose
/// receiver refuses connections, with one attempt allowed.
async fn dead_letter(controller: &TestController, device: &str) -> i64 {
    use infrastructor_controller::notify::payload::{Event, Item, Notification, Severity};
    let notification = Notification {
        device: device.to_string(),
        items: vec![Item {
            alert: "every_op".into(),
            severity: Severity::Warning,
            event: Event::Firing,
            summary: "queued by the every-operation suite".into(),
            since_ms: 0,
        }],
    };
    let queued = infrastructor_controller::store::NewNotification {
        channel: "every-op".into(),
        device_id: device.to_string(),
        body: serde_json::to_string(&notification).unwrap(),
    };
    let store = controller.services.store.clone();
    let now = infrastructor_controller::services::now_ms();
    controller
        .run(async move { store.save_evaluation(&[], &[], &[queued], now).await })
        .await
        .unwrap();
    eventually(Duration::from_secs(20), "a dead letter", || async {
        let (_, dead) = controller.get_json("/notifications?state=dead").await;
        dead.as_array()?.first()?["id"].as_i64()
    })
    .await
}

/// The REST request for `arguments`: path parameters into the path, query parameters into
/// the query string (as the OpenAPI document places them), the rest as the JSON body.
async fn over_rest(
    controller: &TestController,
    document: &Value,
    id: &str,
    arguments: &Value,
) -> (u16, Value) {
    let entry = REGISTRY.iter().find(|e| e.meta().id == id).unwrap();
    let meta = entry.meta();
    let documented = &document["paths"][format!("/api/v1{}", meta.path)][meta.method.as_str()];
    let mut body = arguments.as_object().unwrap().clone();
    let mut route = meta.path.to_string();
    let mut query = Vec::new();
    for parameter in documented["parameters"].as_array().unwrap() {
        let name = parameter["name"].as_str().unwrap();
        let Some(value) = body.remove(name) else {
            continue;
        };
        let text = value
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| value.to_string());
        match parameter["in"].as_str().unwrap() {
            "path" => route = route.replace(&format!("{{{name}}}"), &text),
            _ => query.push((name.to_string(), text)),
        }
    }
    let method =
        reqwest::Method::from_bytes(meta.method.as_str().to_uppercase().as_bytes()).unwrap();
    let mut request = controller
        .http()
        .request(method, controller.api_url(&route))
        .bearer_auth(&controller.admin_token)
        .query(&query);
    if !body.is_empty() {
        request = request.json(&Value::Object(body));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn over_mcp(client: &Client, id: &str, mutating: bool, arguments: Value) -> (bool, Value) {
    let result = if mutating {
        call_confirmed(client, id, arguments).await
    } else {
        call(client, id, arguments).await
    };
    (result.is_error == Some(false), structured(&result).clone())
}

#[tokio::test]
async fn every_registered_operation_succeeds_over_rest_and_over_mcp() {
    let dir = infrastructor_e2e::temp_dir();
    let mut config = controller_config(&path(&dir, "controller"), &Backend::Sqlite);
    // Nothing listens on port 1: the channel's test answers "not delivered", and what is
    // queued for it becomes a dead letter after one attempt.
    config.notifications = serde_json::from_value(json!({"max_attempts": 1,
        "channels": {"every-op": {"kind": "webhook", "url": "http://127.0.0.1:1/"}}}))
    .unwrap();
    let controller = TestController::start(config).await;
    let root = path(&dir, "managed");
    std::fs::create_dir_all(&root).unwrap();
    let identity = controller.enroll(&path(&dir, "agent")).await;
    let mut config = agent_config(&path(&dir, "agent"), Duration::from_secs(1));
    config.changes = change_policy(&root, &[]);
    let passwords = path(&dir, "passwords");
    std::fs::create_dir_all(&passwords).unwrap();
    std::fs::write(passwords.join("main"), "every operation\n").unwrap();
    let managed = |p: &std::path::Path| {
        infrastructor_hostops::names::ManagedPath::new(p.to_str().unwrap()).unwrap()
    };
    config.backups.sources = vec![managed(&root)];
    config.backups.password_dir = managed(&passwords);
    // run_checks needs host checks on; a long interval keeps them to the rounds asked for.
    config.checks.interval = Duration::from_secs(3600);
    let agent = TestAgent::start(config, Box::new(SequenceSource::new(0, 0).0));
    let handle = agent.handle.clone();
    eventually(Duration::from_secs(10), "agent connected", || {
        let connected = handle.is_connected();
        async move { connected.then_some(()) }
    })
    .await;
    let device = identity.meta.device_id;
    let mut request = NewApiToken::new("requester", Scope::Admin);
    request.requires_approval = true;
    let requester = controller.api_token_for(request).await;
    let root = root.to_str().unwrap().to_string();
    let (_, document) = controller.get_json("/openapi.json").await;

    let _containers = Containers(vec!["every-op-rest".into(), "every-op-mcp".into()]);
    let mut rest = fixture(&controller, "rest", &device, &root, &requester).await;
    let mut answered = HashMap::new();
    for entry in REGISTRY {
        let id = entry.meta().id;
        if id == "cancel_job" {
            rest.running = running_job(&controller, &rest).await;
        }
        let arguments = rest.arguments(id);
        if arguments.is_null() {
            continue;
        }
        let (status, body) = over_rest(&controller, &document, id, &arguments).await;
        assert!(
            (200..300).contains(&status),
            "{id} over REST: {status} {body}"
        );
        answered.insert(id, status);
    }
    let skipped = if rest.container.is_some() { 0 } else { 4 };
    assert_eq!(answered.len() + skipped, REGISTRY.len());

    let mut mcp = fixture(&controller, "mcp", &device, &root, &requester).await;
    let client = connect(&controller, &controller.admin_token).await;
    let mut offered = 0;
    for entry in REGISTRY.iter().filter(|e| e.meta().mcp()) {
        let meta = entry.meta();
        let tool = meta.tool.as_ref().unwrap().name;
        if meta.id == "cancel_job" {
            mcp.running = running_job(&controller, &mcp).await;
        }
        let arguments = mcp.arguments(meta.id);
        if arguments.is_null() {
            continue;
        }
        let (ok, output) = over_mcp(&client, tool, meta.mutating(), arguments).await;
        assert!(ok, "{tool} ({}) over MCP: {output}", meta.id);
        offered += 1;
    }
    assert!(offered >= 15, "MCP offers the operations a model needs");
    client.cancel().await.unwrap();
    agent.stop().await;
    controller.shutdown().await;
}
