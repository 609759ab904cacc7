//! Diagnostics end to end: an online agent, an enrolled agent that is offline, and an
//! agentless device; per device and for the whole infrastructure, with scores.

use std::time::Duration;

use infrastructor_e2e::{agent_config, eventually, path, TestAgent, TestController};

#[tokio::test]
async fn device_and_infrastructure_diagnoses() {
    let (dir, controller) = TestController::start_sqlite().await;
    let online_dir = path(&dir, "online");
    let online_id = controller.enroll(&online_dir).await.meta.device_id;
    let offline_id = controller
        .enroll(&path(&dir, "offline"))
        .await
        .meta
        .device_id;
    let response = controller
        .http()
        .post(controller.api_url("/devices"))
        .bearer_auth(&controller.admin_token)
        .json(&serde_json::json!({"name": "nas",
                "ssh_address": "127.0.0.1:1",
                "ssh_user": "backup",
                "ssh_host_key": "ssh-ed25519 \
                AAAAC3NzaC1lZDI1NTE5AAAAIJWRSzIpjq16vgiLvN1lgOMwVPvO2TzHBk4+ciuHURCy"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);

    let mut config = agent_config(&online_dir, Duration::from_millis(200));
    config.checks.interval = Duration::from_secs(3600);
    let agent = TestAgent::start(
        config,
        Box::new(infrastructor_agent::metrics::HostMetrics::new()),
    );
    eventually(Duration::from_secs(30), "metrics flowing", || async {
        let (_, device) = controller.get_json(&format!("/devices/{online_id}")).await;
        device["summary"]["cpu_usage_percent"]
            .is_number()
            .then_some(())
    })
    .await;
    // The list shows each device's own summary (one query for every device's samples).
    let list = eventually(Duration::from_secs(30), "summary in the list", || async {
        let (_, list) = controller.get_json("/devices").await;
        let online = list
            .as_array()?
            .iter()
            .find(|d| d["id"] == online_id.as_str())?;
        online["summary"]["cpu_usage_percent"]
            .is_number()
            .then_some(list)
    })
    .await;
    for device in list.as_array().unwrap() {
        if device["id"] != online_id.as_str() {
            assert!(device["summary"].is_null(), "{device}");
        }
    }
    assert_eq!(list.as_array().unwrap().len(), 3, "{list}");

    let (status, online) = controller
        .post_json(&format!("/devices/{online_id}/diagnose"))
        .await;
    assert_eq!(status, 200, "{online}");
    assert_eq!(online["fresh"], true, "checks were run for the diagnosis");
    let findings = online["findings"].as_array().unwrap();
    assert!(
        findings
            .iter()
            .any(|f| f["check"] == "metrics.freshness" && f["passed"] == true),
        "{online}"
    );
    assert!(online["score"].as_u64().unwrap() <= 100);

    let (status, offline) = controller
        .post_json(&format!("/devices/{offline_id}/diagnose"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(offline["status"], "unreachable");
    assert_eq!(offline["score"], 50, "agent offline costs 50");
    assert!(offline["recommendations"][0]
        .as_str()
        .unwrap()
        .contains("start the agent"));

    let (status, infrastructure) = controller.post_json("/diagnose").await;
    assert_eq!(status, 200, "{infrastructure}");
    assert_eq!(infrastructure["devices"].as_array().unwrap().len(), 3);
    let system = infrastructure["system"].as_array().unwrap();
    assert!(system
        .iter()
        .any(|f| f["check"] == "system.database" && f["status"] == "ok"));
    assert!(
        system.iter().any(|f| f["check"] == "system.ssh_pool")
            && system
                .iter()
                .any(|f| f["check"] == "system.cache" && f["status"] == "ok"),
        "{infrastructure}"
    );
    let links = system
        .iter()
        .find(|f| f["check"] == "system.agent_links")
        .unwrap();
    assert_eq!(links["status"], "warning");
    assert!(
        links["message"]
            .as_str()
            .unwrap()
            .contains("1 of 2 agents offline"),
        "{links}"
    );
    assert_eq!(infrastructure["status"], "unreachable");
    assert!(infrastructure["score_formula"]
        .as_str()
        .unwrap()
        .contains("mean of device scores"));
    let nas = infrastructure["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "nas")
        .unwrap();
    // Nothing listens on 127.0.0.1:1: the SSH link fails, reported as a finding, not fatal.
    assert_eq!(nas["status"], "critical", "{nas}");
    assert!(
        nas["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["check"] == "ssh.link" && f["passed"] == false),
        "{nas}"
    );

    agent.stop().await;
    controller.shutdown().await;
}
