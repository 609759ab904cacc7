//! One container's operations end to end on the real engine — inspect, logs, stats, stop,
//! start, restart, kill — through an agent's stream and, for an agentless host, through the
//! SSH tunnel to its Docker socket: the same answers either way, refusals included.

use std::time::Duration;

use infrastructor_e2e::docker::{docker_cli, engine_with_image, run, Containers};
use infrastructor_e2e::sshd::start_sshd;
use infrastructor_e2e::TestController;
use infrastructor_e2e::{eventually, path, TestAgent};
use serde_json::{json, Value};

/// A container that prints a numbered line five times a second (PID 1 ignores SIGTERM, so a
/// stop waits out its grace period).
fn chatty(name: &str) {
    docker_cli(&["rm", "-f", name]);
    run(
        name,
        &[],
        &[
            "sh",
            "-c",
            "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.2; done",
        ],
    );
}

async fn act(controller: &TestController, device: &str, name: &str, body: Value) -> Value {
    let (status, result) = controller
        .post_body(
            &format!("/devices/{device}/containers/{name}/actions"),
            &body,
        )
        .await;
    assert_eq!(status, 200, "{body}: {result}");
    result
}

async fn exercise(controller: &TestController, device: &str, name: &str) {
    let base = format!("/devices/{device}/containers/{name}");
    let (status, view) = controller.get_json(&base).await;
    assert_eq!(status, 200, "{view}");
    let container = &view["container"];
    assert_eq!(container["name"], name);
    assert_eq!(container["state"], "running", "{view}");
    assert!(container["started_at_ms"].as_i64().unwrap() > 0, "{view}");
    assert_eq!(container["compose"], Value::Null);

    let logs = eventually(Duration::from_secs(10), "a few log lines", || async {
        let (status, logs) = controller.get_json(&format!("{base}/logs?tail=3")).await;
        assert_eq!(status, 200, "{logs}");
        (logs["logs"]["lines"].as_array()?.len() == 3).then_some(logs)
    })
    .await;
    for line in logs["logs"]["lines"].as_array().unwrap() {
        assert!(
            line["text"].as_str().unwrap().starts_with("line "),
            "{logs}"
        );
        assert_eq!(line["stream"], "stdout");
        assert!(line["ts_ms"].as_i64().unwrap() > 0, "{logs}");
    }
    let (status, recent) = controller
        .get_json(&format!("{base}/logs?tail=5000&since=1h"))
        .await;
    assert_eq!(status, 200, "{recent}");
    assert!(recent["logs"]["lines"].as_array().unwrap().len() >= 3);

    let (status, stats) = controller.get_json(&format!("{base}/stats")).await;
    assert_eq!(status, 200, "{stats}");
    assert!(
        stats["stats"]["memory_bytes"].as_u64().unwrap() > 0,
        "{stats}"
    );
    assert!(stats["stats"]["pids"].as_u64().unwrap() >= 1, "{stats}");

    let stopped = act(
        controller,
        device,
        name,
        json!({"action": "stop", "grace_seconds": 1}),
    )
    .await;
    assert_eq!(stopped["before"]["state"], "running");
    assert_eq!(stopped["after"]["state"], "exited", "{stopped}");
    let started = act(controller, device, name, json!({"action": "start"})).await;
    assert_eq!(started["after"]["state"], "running", "{started}");
    // Starting what runs changes nothing and is no error.
    let again = act(controller, device, name, json!({"action": "start"})).await;
    assert_eq!(
        again["after"]["started_at_ms"],
        started["after"]["started_at_ms"]
    );
    let restarted = act(
        controller,
        device,
        name,
        json!({"action": "restart", "grace_seconds": 1}),
    )
    .await;
    assert!(
        restarted["after"]["started_at_ms"].as_i64() > started["after"]["started_at_ms"].as_i64(),
        "{restarted}"
    );
    let killed = act(
        controller,
        device,
        name,
        json!({"action": "kill", "signal": "SIGKILL"}),
    )
    .await;
    assert_eq!(killed["after"]["state"], "exited", "{killed}");
    assert_eq!(killed["after"]["exit_code"], 137, "{killed}");

    // Refusals: a clear 4xx, nothing done.
    let (status, body) = controller
        .get_json(&format!("/devices/{device}/containers/no-such-container"))
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = controller
        .post_body(
            &format!("{base}/actions"),
            &json!({"action": "stop", "signal": "SIGHUP"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["detail"]
        .as_str()
        .unwrap()
        .contains("signal applies to kill"));
    let (status, body) = controller
        .post_body(
            &format!("{base}/actions"),
            &json!({"action": "kill", "signal": "HUP; reboot"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = controller.get_json(&format!("{base}/logs?tail=0")).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = controller
        .get_json(&format!("/devices/{device}/containers/-rf"))
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, inspected) = controller.get_json(&base).await;
    assert_eq!(status, 200);
    assert_eq!(
        inspected["container"]["state"], "exited",
        "unchanged by refusals"
    );

    // Every action is audited.
    let (status, audit) = controller
        .get_json("/audit?operation=container_action&limit=50")
        .await;
    assert_eq!(status, 200, "{audit}");
    let records = audit.as_array().unwrap();
    assert!(records.len() >= 5, "{audit}");
}

#[tokio::test]
async fn container_operations_through_an_agent() {
    let Some(_docker) = engine_with_image().await else {
        return;
    };
    let name = format!("ifr-ops-agent-{}", std::process::id());
    let _cleanup = Containers(vec![name.clone()]);
    chatty(&name);
    let (dir, controller) = TestController::start_sqlite().await;
    let (agent, device) = TestAgent::connected(&controller, &path(&dir, "agent")).await;
    exercise(&controller, &device, &name).await;
    agent.stop().await;
    controller.shutdown().await;
}

#[tokio::test]
async fn container_operations_on_an_agentless_host_over_ssh() {
    let Some(_docker) = engine_with_image().await else {
        return;
    };
    let Some(sshd) = start_sshd() else { return };
    let name = format!("ifr-ops-ssh-{}", std::process::id());
    let _cleanup = Containers(vec![name.clone()]);
    chatty(&name);
    let (_dir, controller) = TestController::start_sqlite().await;
    let device = sshd.register(&controller, "nas").await;
    exercise(&controller, &device, &name).await;
    controller.shutdown().await;
}
