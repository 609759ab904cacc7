//! Host checks end to end: the agent detects capabilities, runs the checks that apply on
//! this host, streams the reports; the controller keeps their history and serves them.

use std::time::Duration;

use infrastructor_e2e::{
    agent_config, eventually, path, services_required, TestAgent, TestController,
};
use infrastructor_proto::v1::{CheckReport, CheckReports, CheckStatus};

#[tokio::test]
async fn agent_check_reports_reach_rest_with_history() {
    let docker_here = infrastructor_hostops::docker::connect().await.is_ok();
    assert!(
        docker_here || !services_required(),
        "INFRASTRUCTOR_REQUIRE_SERVICES=1 but the Docker engine is unreachable"
    );
    let (dir, controller) = TestController::start_sqlite().await;
    let state_dir = path(&dir, "agent");
    let device_id = controller.enroll(&state_dir).await.meta.device_id;
    let mut config = agent_config(&state_dir, Duration::from_secs(3600));
    config.checks.interval = Duration::from_secs(1);
    let agent = TestAgent::start(
        config,
        Box::new(infrastructor_agent::metrics::HostMetrics::new()),
    );

    let capabilities = eventually(Duration::from_secs(60), "capabilities reported", || async {
        let (status, body) = controller
            .get_json(&format!("/devices/{device_id}/capabilities"))
            .await;
        (status == 200 && body["detected_at"].is_string()).then_some(body)
    })
    .await;
    let detected: Vec<&str> = capabilities["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    assert_eq!(detected.contains(&"docker"), docker_here, "{detected:?}");

    if docker_here {
        let checks = eventually(Duration::from_secs(60), "docker check reported", || async {
            let (_, body) = controller
                .get_json(&format!("/devices/{device_id}/checks"))
                .await;
            body.as_array()?
                .iter()
                .any(|c| c["check"] == "docker.containers")
                .then_some(body)
        })
        .await;
        let docker = checks
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == "docker.containers")
            .unwrap();
        assert!(["ok", "warning", "critical"].contains(&docker["status"].as_str().unwrap()));
        assert!(docker["evidence"]["containers"].is_array());
        let (status, containers) = controller
            .get_json(&format!("/devices/{device_id}/containers"))
            .await;
        assert_eq!(status, 200);
        assert!(containers.is_array());
        // History accumulates one report per round.
        eventually(Duration::from_secs(60), "two rounds of history", || async {
            let (_, history) = controller
                .get_json(&format!(
                    "/devices/{device_id}/checks/history?check=docker.containers&limit=5"
                ))
                .await;
            (history.as_array()?.len() >= 2).then_some(())
        })
        .await;
    } else {
        let (status, _) = controller
            .get_json(&format!("/devices/{device_id}/containers"))
            .await;
        assert_eq!(status, 404);
    }
    let (status, body) = controller
        .get_json(&format!("/devices/{device_id}/checks/history?limit=0"))
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = controller
        .get_json(&format!("/devices/{device_id}/checks/history?check=a;b"))
        .await;
    assert_eq!(status, 400);
    agent.stop().await;
    controller.shutdown().await;
}

#[tokio::test]
async fn hostile_check_reports_are_filtered_and_bounded() {
    let (dir, controller) = TestController::start_sqlite().await;
    let identity = controller.enroll(&path(&dir, "agent")).await;
    let device_id = identity.meta.device_id.clone();
    let report =
        |check: &str, status: CheckStatus, message: String, evidence: String| CheckReport {
            check: check.into(),
            status: status as i32,
            message,
            evidence_json: evidence,
            checked_at_unix_ms: 0,
        };
    let round = CheckReports {
        capabilities: vec!["docker".into(), "$(reboot)".into()],
        reports: vec![
            report(
                "zfs.pool:tank",
                CheckStatus::Critical,
                "x".repeat(5000),
                "{\"a\":1}".into(),
            ),
            report("bad;name", CheckStatus::Ok, "m".into(), "{}".into()),
            report(
                "systemd.units",
                CheckStatus::Unspecified,
                "m".into(),
                "{}".into(),
            ),
            report(
                "logs:journal",
                CheckStatus::Warning,
                "line\nbreak".into(),
                "not json".into(),
            ),
        ],
    };
    // Sent as a hostile agent would: over its own mutual-TLS stream, through the gateway.
    let (outbound, _inbound) = controller.raw_agent(&identity, "hostile").await;
    let message = infrastructor_proto::v1::AgentMessage {
        body: Some(infrastructor_proto::v1::agent_message::Body::CheckReports(
            round,
        )),
    };
    outbound.send(message).await.unwrap();
    let checks = eventually(Duration::from_secs(10), "the round recorded", || async {
        let (_, checks) = controller
            .get_json(&format!("/devices/{device_id}/checks"))
            .await;
        (!checks.as_array()?.is_empty()).then_some(checks)
    })
    .await;
    let names: Vec<&str> = checks
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["check"].as_str())
        .collect();
    assert_eq!(
        names,
        ["logs:journal", "zfs.pool:tank"],
        "invalid names and statuses dropped"
    );
    let zfs = &checks[1];
    assert_eq!(
        zfs["message"].as_str().unwrap().len(),
        1000,
        "messages are bounded"
    );
    assert_eq!(zfs["evidence"]["a"], 1);
    assert!(
        checks[0]["evidence"].is_null(),
        "invalid evidence is dropped"
    );
    assert_eq!(
        checks[0]["message"], "linebreak",
        "control characters removed"
    );
    let (_, capabilities) = controller
        .get_json(&format!("/devices/{device_id}/capabilities"))
        .await;
    assert_eq!(capabilities["capabilities"], serde_json::json!(["docker"]));
    controller.shutdown().await;
}

#[tokio::test]
async fn checks_run_on_demand_through_the_agent_driver() {
    let (dir, controller) = TestController::start_sqlite().await;
    let state_dir = path(&dir, "agent");
    let device_id = controller.enroll(&state_dir).await.meta.device_id;

    // Offline: a clear error naming the cause.
    let (status, body) = controller
        .post_json(&format!("/devices/{device_id}/checks/run"))
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("offline"),
        "{body}"
    );

    // Connected, checks scheduled hourly: the command makes them run now.
    let mut config = agent_config(&state_dir, Duration::from_secs(3600));
    config.checks.interval = Duration::from_secs(3600);
    let agent = TestAgent::start(
        config,
        Box::new(infrastructor_agent::metrics::HostMetrics::new()),
    );
    eventually(Duration::from_secs(30), "agent connected", || async {
        agent.handle.is_connected().then_some(())
    })
    .await;
    // Let the scheduled first round pass, so the answer below comes from the command.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, checks) = controller
        .post_json(&format!("/devices/{device_id}/checks/run"))
        .await;
    assert_eq!(status, 200, "{checks}");
    assert!(checks.is_array());
    let (_, capabilities) = controller
        .get_json(&format!("/devices/{device_id}/capabilities"))
        .await;
    assert!(capabilities["detected_at"].is_string());
    agent.stop().await;

    // An agent with checks disabled says so instead of leaving the caller waiting: a conflict
    // with the host's configuration (retrying will not help), not an outage.
    let agent = TestAgent::start(
        agent_config(&state_dir, Duration::from_secs(3600)),
        Box::new(infrastructor_agent::metrics::HostMetrics::new()),
    );
    eventually(Duration::from_secs(30), "agent connected", || async {
        agent.handle.is_connected().then_some(())
    })
    .await;
    let (status, body) = controller
        .post_json(&format!("/devices/{device_id}/checks/run"))
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("disabled"),
        "{body}"
    );
    agent.stop().await;
    controller.shutdown().await;
}

#[tokio::test]
async fn an_agent_that_never_answers_times_out_cleanly() {
    let (dir, controller) = TestController::start_sqlite().await;
    let identity = controller.enroll(&path(&dir, "agent")).await;
    let device_id = identity.meta.device_id.clone();
    // A peer that completes the handshake and hello, then ignores every command.
    let (sender, _inbound) = controller.raw_agent(&identity, "mute").await;
    eventually(Duration::from_secs(10), "session registered", || async {
        (controller.services.sessions.count() == 1).then_some(())
    })
    .await;
    let started = std::time::Instant::now();
    let (status, body) = controller
        .post_json(&format!("/devices/{device_id}/checks/run"))
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("did not answer within 10s"),
        "{body}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    drop(sender);
    controller.shutdown().await;
}
