//! Several controllers on one PostgreSQL database: an agent's stream lands on one replica,
//! while requests and jobs run on another; the command is routed to the replica holding the
//! stream, and the answer comes back.

use std::time::Duration;

use infrastructor_e2e::{
    agent_config, change_policy, controller_config, eventually, Backend, SequenceSource, TestAgent,
    TestController,
};
use serde_json::json;

#[tokio::test]
async fn a_call_on_one_replica_reaches_an_agent_connected_to_another() {
    let Some(url) = infrastructor_e2e::fresh_postgres_database().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("managed");
    std::fs::create_dir_all(&root).unwrap();
    let conf = root.join("app.conf");
    std::fs::write(&conf, "old\n").unwrap();
    // Replicas share the CA (one data directory here) and the database.
    let config = controller_config(&dir.path().join("controller"), &Backend::Postgres(url));
    let a = TestController::start(config.clone()).await;
    let b = TestController::start(config).await;
    let state = dir.path().join("agent");
    let identity = b.enroll(&state).await;
    let mut settings = agent_config(&state, Duration::from_secs(1));
    settings.changes = change_policy(&root, &[]);
    // Host checks on; a long interval keeps them to the rounds asked for.
    settings.checks.interval = Duration::from_secs(3600);
    let agent = TestAgent::start(settings, Box::new(SequenceSource::new(0, 0).0));
    let device = identity.meta.device_id;

    // A learns that B holds the stream.
    eventually(
        Duration::from_secs(15),
        "A sees the agent online",
        || async {
            let (_, view) = a.get_json(&format!("/devices/{device}")).await;
            (view["status"] == "online").then_some(())
        },
    )
    .await;

    // Checks asked of A run on the agent through B, and A answers with the fresh round.
    let (status, checks) = a
        .post_body(&format!("/devices/{device}/checks/run"), &json!({}))
        .await;
    assert_eq!(status, 200, "{checks}");
    let reports = checks.as_array().expect("reports");
    assert!(!reports.is_empty(), "{checks}");
    assert!(
        reports.iter().all(|r| r["checked_at"].is_string()),
        "{checks}"
    );

    // A deploy job on A changes the file on the agent B holds.
    let request = json!({"devices": [device],
        "change": {"files": [{"path": conf.to_str().unwrap(), "content": "new\n"}]}});
    let (status, change) = a.post_body("/changes?wait=60", &request).await;
    assert_eq!(status, 200, "{change}");
    assert_eq!(change["state"], "committed", "{change}");
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), "new\n");

    // Without B, A cannot reach the agent: it was B's stream all along.
    b.kill();
    let (status, problem) = a
        .post_body(&format!("/devices/{device}/checks/run"), &json!({}))
        .await;
    assert_eq!(status, 503, "{problem}");
    agent.stop().await;
    a.shutdown().await;
}
