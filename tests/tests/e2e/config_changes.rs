//! Two-phase configuration changes end to end: REST → controller → agents (real daemons over
//! mTLS) → files, a real container, a cut link. Nothing is ever half-changed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use infrastructor_e2e::docker::{self, Containers};
use infrastructor_e2e::{change_policy, eventually, TestAgent, TestController};
use infrastructor_hostops::change::ChangePolicy;
use serde_json::json;

fn policy(root: &Path, validators: &[(&str, &[&str])]) -> ChangePolicy {
    change_policy(root, validators)
}

/// An enrolled agent daemon with the given change policy, connected.
async fn agent(
    controller: &TestController,
    state: &Path,
    policy: ChangePolicy,
) -> (TestAgent, String) {
    TestAgent::connected_with_changes(controller, state, policy).await
}

fn managed_dir(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    let root = dir.path().join(name);
    std::fs::create_dir_all(&root).unwrap();
    root
}

fn text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

fn target<'a>(change: &'a serde_json::Value, device_id: &str) -> &'a serde_json::Value {
    change["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["device_id"] == device_id)
        .unwrap_or_else(|| panic!("no target {device_id} in {change}"))
}

#[tokio::test]
async fn a_multi_device_change_where_one_device_fails_prepare_changes_no_device() {
    let (dir, controller) = TestController::start_sqlite().await;
    let root = managed_dir(&dir, "managed");
    let conf = root.join("app.conf");
    std::fs::write(&conf, "valid: old\n").unwrap();
    // The same validator name means different things on each host: the second is stricter.
    let lenient: &[&str] = &["grep", "-q", "valid", "{staged}"];
    let strict: &[&str] = &["grep", "-q", "strict", "{staged}"];
    let (a, a_id) = agent(
        &controller,
        &dir.path().join("a"),
        policy(&root, &[("check", lenient)]),
    )
    .await;
    let (b, b_id) = agent(
        &controller,
        &dir.path().join("b"),
        policy(&root, &[("check", strict)]),
    )
    .await;
    let request = json!({
        "devices": [a_id, b_id],
        "change": {
            "files": [{"path": conf.to_str().unwrap(), "content": "valid: new\n"}],
            "validators": [{"name": "check", "file": conf.to_str().unwrap()}]
        }
    });

    let (status, plan) = controller.post_body("/changes/plan", &request).await;
    assert_eq!(status, 200, "{plan}");
    assert_eq!(plan["state"], "invalid");
    let diff = target(&plan, &a_id)["files"][0]["diff"].as_str().unwrap();
    assert!(diff.contains("-valid: old\n+valid: new\n"), "{diff}");
    assert_eq!(
        target(&plan, &a_id)["validators"][0]["passed"],
        true,
        "{plan}"
    );
    assert_eq!(target(&plan, &b_id)["validators"][0]["passed"], false);

    let (status, change) = controller.post_body("/changes?wait=120", &request).await;
    assert_eq!(status, 200, "{change}");
    assert_eq!(change["state"], "aborted", "{change}");
    assert!(
        change["error"]
            .as_str()
            .unwrap()
            .contains("validator check failed"),
        "{change}"
    );
    assert_eq!(target(&change, &a_id)["state"], "aborted");
    assert_eq!(target(&change, &b_id)["state"], "aborted");
    assert_eq!(
        std::fs::read(&conf).unwrap(),
        b"valid: old\n",
        "no device changed"
    );
    assert!(
        !change["requested_by"].as_str().unwrap().is_empty(),
        "who asked is recorded"
    );
    assert!(change["created_at"].is_string());

    let id = change["id"].as_str().unwrap();
    let (status, stored) = controller.get_json(&format!("/changes/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(stored["state"], "aborted");
    assert_eq!(stored["change"]["files"][0]["content"], "valid: new\n");
    let (_, history) = controller
        .get_json(&format!("/changes?device={a_id}"))
        .await;
    let ids: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&id) && ids.len() == 2,
        "plan and deploy are both recorded: {history}"
    );

    a.stop().await;
    b.stop().await;
    controller.shutdown().await;
}

#[tokio::test]
async fn bad_change_requests_are_clear_4xx_and_change_nothing() {
    let (dir, controller) = TestController::start_sqlite().await;
    let root = managed_dir(&dir, "managed");
    let (agent, device_id) = agent(&controller, &dir.path().join("a"), policy(&root, &[])).await;
    let file = |path: &str| json!({"devices": [device_id], "change": {"files": [{"path": path, "content": "x"}]}});
    let cases = [
        (
            json!({"devices": [], "change": {"files": []}}),
            400,
            "devices must list",
        ),
        (file("relative/path"), 400, "absolute path"),
        (file("/etc/../etc/passwd"), 400, "'..'"),
        (
            json!({"devices": ["nope"], "change": {"files": [{"path": "/x/y", "content": ""}]}}),
            404,
            "not found",
        ),
        (
            json!({"devices": [device_id],
                "change": {"files": [{"path": "/x/y", "content": ""}]},
                "options": {"max_parallel": 0}}),
            400,
            "max_parallel",
        ),
        (
            json!({"devices": [device_id],
                "change": {"files": [{"path": "/x/y", "content": ""}], "actions": [{"restart_unit": "x;reboot"}]}}),
            400,
            "invalid unit name",
        ),
        (
            json!({"devices": [device_id, device_id], "change": {"files": [{"path": "/x/y", "content": ""}]}}),
            400,
            "listed twice",
        ),
    ];
    for (body, expected, message) in cases {
        let (status, problem) = controller.post_body("/changes?wait=120", &body).await;
        assert_eq!(status, expected, "{body} → {problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains(message),
            "{problem}"
        );
    }
    // Outside the agent's roots: refused by the agent itself, recorded, nothing written.
    let (status, change) = controller
        .post_body("/changes?wait=120", &file("/etc/infrastructor-test.conf"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(change["state"], "aborted");
    assert!(
        target(&change, &device_id)["error"]
            .as_str()
            .unwrap()
            .contains("outside the allowlisted roots"),
        "{change}"
    );
    assert!(!Path::new("/etc/infrastructor-test.conf").exists());

    let id = change["id"].as_str().unwrap();
    let (status, problem) = controller
        .post_body(&format!("/changes/{id}/rollback?wait=120"), &json!({}))
        .await;
    assert_eq!(status, 409, "{problem}");
    let (status, _) = controller
        .post_body(&format!("/changes/{id}/confirm"), &json!({}))
        .await;
    assert_eq!(status, 409);
    let (status, _) = controller.get_json("/changes/0123456789abcdef").await;
    assert_eq!(status, 404);
    let (status, _) = controller.get_json("/changes/not%20an%20id").await;
    assert_eq!(status, 400);
    agent.stop().await;
    controller.shutdown().await;
}

#[tokio::test]
async fn the_link_cut_while_awaiting_confirmation_rolls_back_by_the_deadline() {
    let (dir, controller) = TestController::start_sqlite().await;
    let root = managed_dir(&dir, "managed");
    let conf = root.join("app.conf");
    std::fs::write(&conf, "old\n").unwrap();
    let (agent, device_id) = agent(&controller, &dir.path().join("a"), policy(&root, &[])).await;
    let request = |content: &str| {
        json!({
            "devices": [device_id],
            "change": {"files": [{"path": conf.to_str().unwrap(), "content": content}]},
            "options": {"auto_confirm": false, "confirm_timeout_seconds": 5}
        })
    };

    // Confirmed in time: it stays.
    let (status, change) = controller
        .post_body("/changes?wait=120", &request("kept\n"))
        .await;
    assert_eq!(status, 200, "{change}");
    assert_eq!(change["state"], "awaiting_confirmation");
    let id = change["id"].as_str().unwrap().to_string();
    // While it awaits confirmation, no other change may touch the file.
    let (_, second) = controller
        .post_body("/changes?wait=120", &request("second\n"))
        .await;
    assert_eq!(second["state"], "aborted", "{second}");
    let refusal = target(&second, &device_id)["error"].as_str().unwrap();
    assert!(
        refusal.contains(&format!("part of transaction {id}")),
        "{refusal}"
    );
    assert_eq!(text(&conf), "kept\n");
    let (status, confirmed) = controller
        .post_body(&format!("/changes/{id}/confirm"), &json!({}))
        .await;
    assert_eq!(status, 200, "{confirmed}");
    assert_eq!(confirmed["state"], "committed");
    assert_eq!(target(&confirmed, &device_id)["state"], "committed");

    // Not confirmed, and the controller is gone: the agent rolls back on its own.
    let (_, change) = controller
        .post_body("/changes?wait=120", &request("unconfirmed\n"))
        .await;
    assert_eq!(change["state"], "awaiting_confirmation", "{change}");
    let id = change["id"].as_str().unwrap().to_string();
    assert_eq!(text(&conf), "unconfirmed\n");
    let config = controller.restart_config();
    controller.kill();
    eventually(
        Duration::from_secs(20),
        "agent rolled back on its own",
        || {
            let content = text(&conf);
            async move { (content == "kept\n").then_some(()) }
        },
    )
    .await;
    assert!(!agent.handle.is_connected());

    // Back online, the controller learns what happened.
    let controller = TestController::start(config).await;
    let change = eventually(Duration::from_secs(20), "rollback reported", || {
        let controller = &controller;
        let id = id.clone();
        async move {
            let (_, change) = controller.get_json(&format!("/changes/{id}")).await;
            (change["state"] == "rolled_back").then_some(change)
        }
    })
    .await;
    let reason = target(&change, &device_id)["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reason.contains("not confirmed by the deadline"), "{reason}");
    agent.stop().await;
    controller.shutdown().await;
}

#[tokio::test]
async fn a_change_that_breaks_the_service_is_rolled_back_and_the_service_is_healthy_again() {
    let Some(_engine) = docker::engine_with_image().await else {
        return;
    };
    let (dir, controller) = TestController::start_sqlite().await;
    let root = managed_dir(&dir, "httpd");
    let www = managed_dir(&dir, "www");
    let conf = root.join("httpd.conf");
    std::fs::write(&conf, "A:*\n").unwrap();
    std::fs::write(www.join("index.html"), "hello\n").unwrap();
    let name = format!("ifr-httpd-{}", std::process::id());
    let _cleanup = Containers(vec![name.clone()]);
    let conf_mount = format!("{}:/etc/httpd", root.display());
    let www_mount = format!("{}:/www:ro", www.display());
    // A fixed host port: an ephemeral one may change when the container restarts.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let publish = format!("127.0.0.1:{port}:8080");
    docker::run(
        &name,
        &[
            "-p",
            &publish,
            "--stop-timeout",
            "1",
            "-v",
            &conf_mount,
            "-v",
            &www_mount,
        ],
        &[
            "httpd",
            "-f",
            "-p",
            "8080",
            "-h",
            "/www",
            "-c",
            "/etc/httpd/httpd.conf",
        ],
    );
    let url = format!("http://127.0.0.1:{port}/");
    let http = reqwest::Client::new();
    let status_of = |url: String| {
        let http = http.clone();
        async move {
            http.get(&url)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .ok()
        }
    };
    eventually(Duration::from_secs(15), "httpd serving", || {
        let status = status_of(url.clone());
        async move { (status.await == Some(200)).then_some(()) }
    })
    .await;

    let (agent, device_id) =
        agent(&controller, &dir.path().join("agent"), policy(&root, &[])).await;
    let request = |content: &str| {
        json!({
            "devices": [device_id],
            "change": {
                "files": [{"path": conf.to_str().unwrap(), "content": content}],
                "actions": [{"restart_container": name}],
                "health_checks": [{"container_running": name}, {"http_get": url}]
            },
            "options": {"health_timeout_seconds": 5}
        })
    };

    // Valid syntax, broken service: every request now needs a password.
    let (status, change) = controller
        .post_body("/changes?wait=120", &request("A:*\n/:admin:secret\n"))
        .await;
    assert_eq!(status, 200, "{change}");
    assert_eq!(change["state"], "rolled_back", "{change}");
    let outcome = target(&change, &device_id);
    assert_eq!(outcome["state"], "rolled_back");
    let reason = outcome["error"].as_str().unwrap();
    assert!(
        reason.contains("health check failed: GET") && reason.contains("HTTP 401"),
        "{outcome}"
    );
    assert_eq!(text(&conf), "A:*\n", "old config restored byte for byte");
    eventually(
        Duration::from_secs(15),
        "httpd healthy on the old config",
        || {
            let status = status_of(url.clone());
            async move { (status.await == Some(200)).then_some(()) }
        },
    )
    .await;

    // A good change is committed and confirmed; rolling it back later restores the old file.
    let (_, change) = controller
        .post_body("/changes?wait=120", &request("# managed\nA:*\n"))
        .await;
    assert_eq!(change["state"], "committed", "{change}");
    assert_eq!(text(&conf), "# managed\nA:*\n");
    assert!(target(&change, &device_id)["health"]
        .as_array()
        .unwrap()
        .iter()
        .all(|h| h["passed"] == true));
    let id = change["id"].as_str().unwrap();
    let (status, rolled) = controller
        .post_body(&format!("/changes/{id}/rollback?wait=120"), &json!({}))
        .await;
    assert_eq!(status, 200, "{rolled}");
    assert_eq!(rolled["state"], "rolled_back");
    assert_eq!(text(&conf), "A:*\n");
    agent.stop().await;
    controller.shutdown().await;
}

/// An agent host and an agentless host (sshd in its own mount namespace, so the same path is a
/// different file there) changed together; then rolling, where the second host fails.
#[tokio::test]
async fn agent_and_agentless_hosts_change_together_and_roll_back_together() {
    use infrastructor_e2e::sshd::{start_sshd_in, MountNamespace};
    use infrastructor_e2e::{controller_config, Backend};
    let Some(namespace) = MountNamespace::new() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = managed_dir(&dir, "managed");
    let conf = root.join("app.conf");
    std::fs::write(&conf, "valid: agent old\n").unwrap();
    namespace.mount_tmpfs(&root);
    namespace.write(&conf, "valid: nas old\n");
    let Some(sshd) = start_sshd_in(Some(&namespace)) else {
        return;
    };
    let check: &[&str] = &["grep", "-q", "valid", "{staged}"];
    let mut config = controller_config(&dir.path().join("controller"), &Backend::Sqlite);
    config.agentless_changes = policy(&root, &[("check", check)]);
    let controller = TestController::start(config).await;
    let nas_id = sshd.register(&controller, "nas").await;
    let (agent, agent_id) = agent(
        &controller,
        &dir.path().join("agent"),
        policy(&root, &[("check", check)]),
    )
    .await;
    let request = |content: &str, options: serde_json::Value| {
        json!({
            "devices": [agent_id, "nas"],
            "change": {
                "files": [{"path": conf.to_str().unwrap(), "content": content, "mode": "0640"}],
                "validators": [{"name": "check", "file": conf.to_str().unwrap()}],
                "health_checks": [{"tcp_connect": format!("127.0.0.1:{}", sshd.port)}]
            },
            "options": options
        })
    };

    let (status, change) = controller
        .post_body("/changes?wait=120", &request("valid: new\n", json!({})))
        .await;
    assert_eq!(status, 200, "{change}");
    assert_eq!(change["state"], "committed", "{change}");
    assert!(target(&change, &nas_id)["files"][0]["diff"]
        .as_str()
        .unwrap()
        .contains("-valid: nas old"));
    assert_eq!(text(&conf), "valid: new\n");
    assert_eq!(namespace.read(&conf), "valid: new\n");
    let mode = namespace
        .command("stat")
        .args(["-c", "%a", "--", conf.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&mode.stdout).trim(), "640");
    let id = change["id"].as_str().unwrap();
    let (status, rolled) = controller
        .post_body(&format!("/changes/{id}/rollback?wait=120"), &json!({}))
        .await;
    assert_eq!(status, 200, "{rolled}");
    assert_eq!(rolled["state"], "rolled_back", "{rolled}");
    assert_eq!(text(&conf), "valid: agent old\n");
    assert_eq!(namespace.read(&conf), "valid: nas old\n");

    // Rolling, one at a time: the agent host commits first; then the NAS's filesystem turns
    // out read-only, so its commit fails and the agent host is rolled back too.
    let remount = namespace
        .command("mount")
        .args(["-o", "remount,ro", "--", root.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(remount.success());
    let (_, change) = controller
        .post_body(
            "/changes?wait=120",
            &request("valid: rolling\n", json!({"max_parallel": 1})),
        )
        .await;
    assert_eq!(change["state"], "rolled_back", "{change}");
    assert!(
        change["error"].as_str().unwrap().contains(&nas_id),
        "{change}"
    );
    assert_eq!(
        target(&change, &agent_id)["state"],
        "rolled_back",
        "{change}"
    );
    assert_eq!(
        text(&conf),
        "valid: agent old\n",
        "the committed host was rolled back"
    );
    assert_eq!(namespace.read(&conf), "valid: nas old\n");
    agent.stop().await;
    controller.shutdown().await;
}
