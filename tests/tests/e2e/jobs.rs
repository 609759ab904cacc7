//! Durable jobs end to end: a deploy outlives its client, streams its steps as Server-Sent
//! Events (resumable with Last-Event-ID), holds its files against a second deploy, cancels
//! safely, and — with the controller killed at each step of a two-device deploy, on SQLite
//! and PostgreSQL — ends in a state that the change, each target and each file agree on.

use std::path::{Path, PathBuf};
use std::time::Duration;

use infrastructor_e2e::{
    change_policy, controller_config, eventually, Backend, TestAgent, TestController,
};
use serde_json::{json, Value};

fn text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// A loopback port that starts accepting connections only after `delay`: a service that
/// takes a while to come up, for a health check to wait on.
fn port_opening_after(delay: Duration) -> u16 {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        loop {
            let _ = listener.accept().await;
        }
    });
    port
}

/// The events of a finished job's stream, as (id, event name, data).
fn parse_sse(body: &str) -> Vec<(i64, String, Value)> {
    body.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .filter_map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|line| line.strip_prefix(&format!("{name}: ")))
                    .or_else(|| {
                        block
                            .lines()
                            .find_map(|line| line.strip_prefix(&format!("{name}:")))
                    })
            };
            let id = field("id")?.trim().parse().ok()?;
            let event = field("event")?.trim().to_string();
            let data = serde_json::from_str(field("data")?).ok()?;
            Some((id, event, data))
        })
        .collect()
}

async fn events(controller: &TestController, job: &str, last: Option<i64>) -> String {
    let mut request = controller
        .http()
        .get(controller.api_url(&format!("/jobs/{job}/events")))
        .bearer_auth(&controller.admin_token);
    if let Some(last) = last {
        request = request.header("Last-Event-ID", last.to_string());
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    response.text().await.unwrap()
}

async fn finished_job(controller: &TestController, job: &str) -> Value {
    eventually(Duration::from_secs(90), "the job ended", || async {
        let (status, job) = controller.get_json(&format!("/jobs/{job}")).await;
        assert_eq!(status, 200, "{job}");
        (!["queued", "running"].contains(&job["state"].as_str().unwrap())).then_some(job)
    })
    .await
}

fn step_names(job: &Value) -> Vec<String> {
    job["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_deploy_is_a_job_that_outlives_its_client_and_streams_its_steps() {
    let (dir, controller) = TestController::start_sqlite().await;
    let root = dir.path().join("managed");
    std::fs::create_dir_all(&root).unwrap();
    let conf = root.join("app.conf");
    std::fs::write(&conf, "old\n").unwrap();
    let (agent, device) = TestAgent::connected_with_changes(
        &controller,
        &dir.path().join("agent"),
        change_policy(&root, &[]),
    )
    .await;
    // The service comes up 3 s after the change: the health check waits for it.
    let port = port_opening_after(Duration::from_secs(3));
    let request = json!({"devices": [device],
        "change": {"files": [{"path": conf.to_str().unwrap(), "content": "new\n"}],
            "health_checks": [{"tcp_connect": format!("127.0.0.1:{port}")}]}});

    // The client gives up after 1 s of a 30 s wait; the deploy goes on without it.
    let gave_up = controller
        .http()
        .post(controller.api_url("/changes?wait=30"))
        .bearer_auth(&controller.admin_token)
        .timeout(Duration::from_secs(1))
        .json(&request)
        .send()
        .await;
    assert!(gave_up.is_err(), "the client timed out");
    let (status, jobs) = controller.get_json(&format!("/jobs?device={device}")).await;
    assert_eq!(status, 200, "{jobs}");
    assert_eq!(jobs.as_array().unwrap().len(), 1, "{jobs}");
    let id = jobs[0]["id"].as_str().unwrap().to_string();
    assert_eq!(jobs[0]["operation"], "deploy_change");

    let job = finished_job(&controller, &id).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(
        step_names(&job),
        ["prepare", "commit 1/1", "confirm"],
        "{job}"
    );
    for step in job["steps"].as_array().unwrap() {
        assert_eq!(step["state"], "succeeded", "{step}");
        assert!(step["duration_ms"].as_i64().unwrap() >= 0, "{step}");
    }
    assert!(
        job["steps"][1]["duration_ms"].as_i64().unwrap() >= 2000,
        "the commit waited for the health check: {job}"
    );
    assert_eq!(job["progress"], json!({"done": 1, "total": 1}));
    assert_eq!(job["result"]["state"], "committed", "{job}");
    assert_eq!(job["result"]["id"], id.as_str(), "the change is the job");
    assert_eq!(text(&conf), "new\n");
    let (_, change) = controller.get_json(&format!("/changes/{id}")).await;
    assert_eq!(change["state"], "committed", "{change}");
    assert_eq!(change["targets"][0]["state"], "committed", "{change}");

    // The device's view shows its jobs.
    let (_, view) = controller.get_json(&format!("/devices/{device}")).await;
    assert_eq!(view["jobs"][0]["id"], id.as_str(), "{view}");
    assert_eq!(view["jobs"][0]["state"], "succeeded");

    // The whole stream of a finished job, numbered from 1 without gaps, ending in its state.
    let all = parse_sse(&events(&controller, &id, None).await);
    let ids: Vec<i64> = all.iter().map(|(id, _, _)| *id).collect();
    assert_eq!(ids, (1..=all.len() as i64).collect::<Vec<_>>(), "{all:?}");
    assert_eq!(all[0].1, "step_started");
    assert_eq!(all[0].2["data"]["name"], "prepare");
    assert!(all.iter().any(
        |(_, kind, data)| kind == "progress" && data["data"] == json!({"done": 1, "total": 1})
    ));
    assert!(all.iter().any(|(_, kind, _)| kind == "log"));
    let (_, last_kind, last) = all.last().unwrap();
    assert_eq!(last_kind, "state");
    assert_eq!(last["data"]["state"], "succeeded");
    // Resumed after event 3: exactly the rest.
    let rest = parse_sse(&events(&controller, &id, Some(3)).await);
    assert_eq!(rest, all[3..].to_vec());
    let refused = controller
        .http()
        .get(controller.api_url(&format!("/jobs/{id}/events")))
        .bearer_auth(&controller.admin_token)
        .header("Last-Event-ID", "three")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);

    // Audited when accepted and when it ended, under one correlation ID.
    let (_, audit) = controller.get_json("/audit?operation=deploy_change").await;
    let outcomes: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["ok", "accepted"], "{audit}");
    assert_eq!(audit[0]["request_id"], audit[1]["request_id"]);
    agent.stop().await;
    controller.shutdown().await;
}

#[tokio::test]
async fn a_running_deploy_holds_its_files_streams_live_and_cancels_safely() {
    let (dir, controller) = TestController::start_sqlite().await;
    let root = dir.path().join("managed");
    std::fs::create_dir_all(&root).unwrap();
    let conf = root.join("app.conf");
    std::fs::write(&conf, "old\n").unwrap();
    let (agent, device) = TestAgent::connected_with_changes(
        &controller,
        &dir.path().join("agent"),
        change_policy(&root, &[]),
    )
    .await;
    let port = port_opening_after(Duration::from_secs(4));
    let deploy = |content: &str| {
        json!({"devices": [device],
            "change": {"files": [{"path": conf.to_str().unwrap(), "content": content}],
                "health_checks": [{"tcp_connect": format!("127.0.0.1:{port}")}]}})
    };
    let response = controller
        .http()
        .post(controller.api_url("/changes"))
        .bearer_auth(&controller.admin_token)
        .json(&deploy("new\n"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let job: Value = response.json().await.unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    assert_eq!(location, format!("/api/v1/jobs/{id}"));
    assert!(
        ["queued", "running"].contains(&job["state"].as_str().unwrap()),
        "{job}"
    );

    // Followed live from the start: the stream ends by itself when the job does.
    let live = {
        let client = controller.http();
        let url = controller.api_url(&format!("/jobs/{id}/events"));
        let token = controller.admin_token.clone();
        tokio::spawn(async move {
            let response = client.get(url).bearer_auth(token).send().await.unwrap();
            response.text().await.unwrap()
        })
    };

    // The same file on the same device is held by the running job.
    let (status, problem) = controller.post_body("/changes", &deploy("other\n")).await;
    assert_eq!(status, 409, "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains(&id) && detail.contains("app.conf"),
        "{detail}"
    );

    // Cancelled while it commits: it rolls back what it committed.
    eventually(Duration::from_secs(10), "the commit started", || async {
        let (_, job) = controller.get_json(&format!("/jobs/{id}")).await;
        step_names(&job)
            .contains(&"commit 1/1".to_string())
            .then_some(())
    })
    .await;
    let (status, cancelling) = controller
        .post_body(&format!("/jobs/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{cancelling}");
    assert_eq!(cancelling["cancel_requested"], true);
    let job = finished_job(&controller, &id).await;
    assert_eq!(job["state"], "cancelled", "{job}");
    assert_eq!(job["result"]["state"], "rolled_back", "{job}");
    assert!(
        job["error"].as_str().unwrap().contains("cancelled"),
        "{job}"
    );
    assert_eq!(step_names(&job).last().unwrap(), "rollback", "{job}");
    assert_eq!(text(&conf), "old\n", "the committed file was rolled back");
    let (_, change) = controller.get_json(&format!("/changes/{id}")).await;
    assert_eq!(change["targets"][0]["state"], "rolled_back", "{change}");

    let streamed = parse_sse(
        &tokio::time::timeout(Duration::from_secs(10), live)
            .await
            .expect("the stream ended with the job")
            .unwrap(),
    );
    let (_, kind, last) = streamed.last().unwrap();
    assert_eq!(
        (kind.as_str(), &last["data"]["state"]),
        ("state", &json!("cancelled"))
    );
    assert!(streamed
        .iter()
        .any(|(_, _, e)| e["data"]["name"] == "rollback"));

    // Nothing is left to cancel, and the lock is free again.
    let (status, _) = controller
        .post_body(&format!("/jobs/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 409);
    let (status, done) = controller
        .post_body("/changes?wait=60", &deploy("again\n"))
        .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["state"], "committed", "{done}");
    assert_eq!(text(&conf), "again\n");
    agent.stop().await;
    controller.shutdown().await;
}

/// An `app.conf` reading "old\n" here (an agent host's file) and, at the same path, in a
/// private mount namespace served by its own sshd (an agentless host's different file).
struct TwoHosts {
    dir: tempfile::TempDir,
    root: PathBuf,
    conf: PathBuf,
    namespace: infrastructor_e2e::sshd::MountNamespace,
    sshd: infrastructor_e2e::sshd::Sshd,
}

fn two_hosts() -> Option<TwoHosts> {
    use infrastructor_e2e::sshd::{start_sshd_in, MountNamespace};
    let namespace = MountNamespace::new()?;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("managed");
    std::fs::create_dir_all(&root).unwrap();
    let conf = root.join("app.conf");
    std::fs::write(&conf, "old\n").unwrap();
    namespace.mount_tmpfs(&root);
    namespace.write(&conf, "old\n");
    let sshd = start_sshd_in(Some(&namespace))?;
    Some(TwoHosts {
        dir,
        root,
        conf,
        namespace,
        sshd,
    })
}

/// Where the controller is killed in a two-device deploy (an agent host, then an agentless
/// one over SSH), and what must be true after it restarts: the change's state, each
/// target's, and the file on each host.
struct Crash {
    /// The step the first controller halts at, right after recording its start; `None`:
    /// it runs to its end (awaiting confirmation) and is killed there.
    halt_at: Option<&'static str>,
    options: Value,
    job: &'static str,
    change: &'static str,
    /// The agent host's target state, then the agentless host's.
    targets: [&'static str; 2],
    /// The file's content on both hosts at the end.
    content: &'static str,
}

async fn crash_and_recover(backend: Backend, crash: Crash) {
    let Some(TwoHosts {
        dir,
        root,
        conf,
        namespace,
        sshd,
    }) = two_hosts()
    else {
        return;
    };
    let mut config = controller_config(&dir.path().join("controller"), &backend);
    config.agentless_changes = change_policy(&root, &[]);
    config.jobs.lease = Duration::from_secs(3);
    config.jobs.halt_before_step = crash.halt_at.map(String::from);
    let controller = TestController::start(config).await;
    let nas = sshd.register(&controller, "nas").await;
    let (agent, device) = TestAgent::connected_with_changes(
        &controller,
        &dir.path().join("agent"),
        change_policy(&root, &[]),
    )
    .await;
    let request = json!({"devices": [device, "nas"],
        "change": {"files": [{"path": conf.to_str().unwrap(), "content": "new\n"}]},
        "options": crash.options});
    let (status, job) = controller.post_body("/changes", &request).await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    match crash.halt_at {
        Some(step) => {
            eventually(
                Duration::from_secs(60),
                "the job reached its halt",
                || async {
                    let (_, job) = controller.get_json(&format!("/jobs/{id}")).await;
                    step_names(&job).contains(&step.to_string()).then_some(())
                },
            )
            .await;
        }
        None => {
            let job = finished_job(&controller, &id).await;
            assert_eq!(job["result"]["state"], "awaiting_confirmation", "{job}");
        }
    }
    let mut restart = controller.restart_config();
    restart.jobs.halt_before_step = None;
    controller.kill();
    let controller = TestController::start(restart).await;

    let job = finished_job(&controller, &id).await;
    assert_eq!(job["state"], crash.job, "{job}");
    if crash.halt_at.is_some() {
        assert_eq!(job["attempts"], 2, "resumed once: {job}");
    }
    let settled = eventually(Duration::from_secs(60), "the change settled", || async {
        let (_, change) = controller.get_json(&format!("/changes/{id}")).await;
        (change["state"] == crash.change).then_some(change)
    })
    .await;
    let state_of = |id: &str| {
        settled["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["device_id"] == id)
            .map(|t| t["state"].as_str().unwrap().to_string())
            .unwrap_or_default()
    };
    assert_eq!(
        [state_of(&device), state_of(&nas)],
        crash.targets,
        "{settled}"
    );
    assert_eq!(
        text(&conf),
        crash.content,
        "the agent host's file: {settled}"
    );
    assert_eq!(
        namespace.read(&conf),
        crash.content,
        "the agentless host's file"
    );
    agent.stop().await;
    controller.shutdown().await;
}

fn crash_before_prepare() -> Crash {
    Crash {
        halt_at: Some("prepare"),
        options: json!({}),
        job: "failed",
        change: "aborted",
        targets: ["aborted", "aborted"],
        content: "old\n",
    }
}

fn crash_after_prepare() -> Crash {
    Crash {
        halt_at: Some("commit 1/2"),
        options: json!({"max_parallel": 1}),
        job: "failed",
        change: "aborted",
        targets: ["aborted", "aborted"],
        content: "old\n",
    }
}

fn crash_mid_commit() -> Crash {
    Crash {
        halt_at: Some("commit 2/2"),
        options: json!({"max_parallel": 1}),
        job: "failed",
        change: "rolled_back",
        // The agent host had committed (rolled back); the NAS was only prepared (aborted).
        targets: ["rolled_back", "aborted"],
        content: "old\n",
    }
}

fn crash_while_confirming() -> Crash {
    Crash {
        halt_at: Some("confirm"),
        options: json!({}),
        job: "succeeded",
        change: "committed",
        targets: ["committed", "committed"],
        content: "new\n",
    }
}

fn crash_while_awaiting_confirmation() -> Crash {
    Crash {
        halt_at: None,
        options: json!({"auto_confirm": false, "confirm_timeout_seconds": 5}),
        job: "succeeded",
        change: "rolled_back",
        targets: ["rolled_back", "rolled_back"],
        content: "old\n",
    }
}

macro_rules! crash_tests {
    ($($name:ident: $crash:expr,)*) => {
        mod killed {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    crash_and_recover(Backend::Sqlite, $crash).await;
                }
            )*
        }
        mod killed_on_postgres {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    if let Some(url) = infrastructor_e2e::fresh_postgres_database().await {
                        crash_and_recover(Backend::Postgres(url), $crash).await;
                    }
                }
            )*
        }
    };
}

crash_tests! {
    before_prepare: crash_before_prepare(),
    after_prepare: crash_after_prepare(),
    mid_commit: crash_mid_commit(),
    while_confirming: crash_while_confirming(),
    while_awaiting_confirmation: crash_while_awaiting_confirmation(),
}

#[tokio::test]
async fn a_long_tool_sends_progress_to_a_real_mcp_client_and_get_job_follows_it() {
    use infrastructor_e2e::mcp::{call_with_progress, connect_recording, structured};
    let (dir, controller) = TestController::start_sqlite().await;
    let root = dir.path().join("managed");
    std::fs::create_dir_all(&root).unwrap();
    let conf = root.join("app.conf");
    std::fs::write(&conf, "old\n").unwrap();
    let (agent, device) = TestAgent::connected_with_changes(
        &controller,
        &dir.path().join("agent"),
        change_policy(&root, &[]),
    )
    .await;
    let port = port_opening_after(Duration::from_secs(2));
    let arguments = json!({"devices": [device],
        "change": {"files": [{"path": conf.to_str().unwrap(), "content": "new\n"}],
            "health_checks": [{"tcp_connect": format!("127.0.0.1:{port}")}]}});
    let (client, recorder) = connect_recording(&controller, &controller.admin_token).await;
    let tool = "deploy_configuration_change";
    let plan = call_with_progress(&client, tool, arguments.clone(), "plan").await;
    let confirmation = structured(&plan)["confirmation_id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut confirmed = arguments;
    confirmed["confirmation_id"] = json!(confirmation);
    let done = call_with_progress(&client, tool, confirmed, "deploy-1").await;
    assert_eq!(done.is_error, Some(false), "{done:?}");
    let change = structured(&done);
    assert_eq!(change["state"], "committed", "{change}");
    assert_eq!(text(&conf), "new\n");

    let received = recorder.received.lock().unwrap().clone();
    // Only the deploy's call ran a job (rmcp's client numbers the tokens itself).
    let ours: Vec<_> = received.iter().collect();
    assert!(
        ours.iter()
            .all(|p| p.progress_token == ours[0].progress_token),
        "{received:?}"
    );
    assert!(ours.len() >= 4, "{received:?}");
    assert!(
        ours.windows(2).all(|w| w[0].progress < w[1].progress),
        "progress only grows: {ours:?}"
    );
    let messages: Vec<&str> = ours.iter().filter_map(|p| p.message.as_deref()).collect();
    assert!(messages.contains(&"prepare started"), "{messages:?}");
    assert!(messages.contains(&"1/1 done"), "{messages:?}");
    assert!(messages.contains(&"confirm succeeded"), "{messages:?}");

    // The job behind it, read by the tool a model follows long jobs with.
    let job = call_with_progress(&client, "get_job", json!({"job": change["id"]}), "read").await;
    let job = structured(&job);
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["operation"], "deploy_change");
    assert_eq!(job["result"]["state"], "committed");
    client.cancel().await.unwrap();
    agent.stop().await;
    controller.shutdown().await;
}

/// Two controllers on one PostgreSQL database (sharing the CA, as replicas behind one
/// address do). The one running a deploy dies mid-commit; the other takes
/// the job over when its lease runs out and finishes it from what the hosts say.
#[tokio::test]
async fn a_dead_replicas_job_is_taken_over_and_finished_by_another() {
    use infrastructor_e2e::{agent_config, Forwarder, SequenceSource};
    let Some(url) = infrastructor_e2e::fresh_postgres_database().await else {
        return;
    };
    let Some(TwoHosts {
        dir,
        root,
        conf,
        namespace,
        sshd,
    }) = two_hosts()
    else {
        return;
    };
    let backend = Backend::Postgres(url);
    let mut config = controller_config(&dir.path().join("controller"), &backend);
    config.agentless_changes = change_policy(&root, &[]);
    config.jobs.lease = Duration::from_secs(3);
    let mut first = config.clone();
    first.jobs.halt_before_step = Some("commit 2/2".into());
    let a = TestController::start(first).await;
    let b = TestController::start(config).await;
    let nas = sshd.register(&a, "nas").await;

    // The agent dials one address; behind it, controller A first.
    let forwarder = Forwarder::start(a.grpc_addr).await;
    let state = dir.path().join("agent");
    let identity = a.enroll_via(&state, &forwarder.url()).await;
    let mut agent_settings = agent_config(&state, Duration::from_secs(1));
    agent_settings.changes = change_policy(&root, &[]);
    let agent = TestAgent::start(agent_settings, Box::new(SequenceSource::new(0, 0).0));
    let device = identity.meta.device_id;
    let handle = agent.handle.clone();
    eventually(Duration::from_secs(10), "agent connected", || {
        let connected = handle.is_connected();
        async move { connected.then_some(()) }
    })
    .await;

    let request = json!({"devices": [device, "nas"],
        "change": {"files": [{"path": conf.to_str().unwrap(), "content": "new\n"}]},
        "options": {"max_parallel": 1}});
    let (status, job) = a.post_body("/changes", &request).await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    eventually(Duration::from_secs(60), "A halted mid-commit", || async {
        let (_, job) = a.get_json(&format!("/jobs/{id}")).await;
        step_names(&job)
            .contains(&"commit 2/2".to_string())
            .then_some(())
    })
    .await;
    assert_eq!(text(&conf), "new\n", "the agent host had committed");
    // B sees the job, owned by A while A renews its lease.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (_, seen) = b.get_json(&format!("/jobs/{id}")).await;
    assert_eq!(
        (seen["state"].as_str(), seen["attempts"].as_i64()),
        (Some("running"), Some(1)),
        "{seen}"
    );

    forwarder.point_to(b.grpc_addr);
    a.kill();
    let job = finished_job(&b, &id).await;
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(job["attempts"], 2, "{job}");
    assert!(step_names(&job).contains(&"reconcile".to_string()), "{job}");
    let (_, change) = b.get_json(&format!("/changes/{id}")).await;
    assert_eq!(change["state"], "rolled_back", "{change}");
    let state_of = |d: &str| {
        change["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["device_id"] == d)
            .map(|t| t["state"].clone())
    };
    assert_eq!(state_of(&device), Some(json!("rolled_back")), "{change}");
    assert_eq!(state_of(&nas), Some(json!("aborted")), "{change}");
    assert_eq!(text(&conf), "old\n");
    assert_eq!(namespace.read(&conf), "old\n");
    agent.stop().await;
    b.shutdown().await;
}

/// Two controllers on one PostgreSQL database, each with its own data directory (on two
/// machines they share only the database and the SSH identity). A dies while an agentless
/// host's file is swapped in and its health check runs; B reads the host's journal from the
/// database, takes the job over and rolls the host back.
#[tokio::test]
async fn an_agentless_change_a_dead_replica_left_mid_commit_is_rolled_back_by_another() {
    let Some(url) = infrastructor_e2e::fresh_postgres_database().await else {
        return;
    };
    let Some(TwoHosts {
        dir,
        root,
        conf,
        namespace,
        sshd,
    }) = two_hosts()
    else {
        return;
    };
    let backend = Backend::Postgres(url);
    let config = |name: &str| {
        let mut config = controller_config(&dir.path().join(name), &backend);
        config.agentless_changes = change_policy(&root, &[]);
        config.jobs.lease = Duration::from_secs(3);
        config
    };
    let a = TestController::start(config("a")).await;
    copy_dir(&dir.path().join("a/ssh"), &dir.path().join("b/ssh"));
    let b = TestController::start(config("b")).await;
    let nas = sshd.register(&a, "nas").await;

    // A service that never comes up: the health check keeps the commit open.
    let port = port_opening_after(Duration::from_secs(3600));
    let request = json!({"devices": [nas],
        "change": {"files": [{"path": conf.to_str().unwrap(), "content": "new\n"}],
            "health_checks": [{"tcp_connect": format!("127.0.0.1:{port}")}]},
        "options": {"health_timeout_seconds": 300}});
    let (status, job) = a.post_body("/changes", &request).await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    eventually(Duration::from_secs(60), "the file swapped in", || async {
        (namespace.read(&conf) == "new\n").then_some(())
    })
    .await;
    a.kill();

    let job = finished_job(&b, &id).await;
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(job["attempts"], 2, "{job}");
    let (_, change) = b.get_json(&format!("/changes/{id}")).await;
    assert_eq!(change["state"], "rolled_back", "{change}");
    assert_eq!(change["targets"][0]["state"], "rolled_back", "{change}");
    assert_eq!(namespace.read(&conf), "old\n", "the agentless host's file");
    assert!(
        !dir.path().join("b/changes").exists() && !dir.path().join("a/changes").exists(),
        "no journal on a controller's disk"
    );
    b.shutdown().await;
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[tokio::test]
async fn a_long_tool_that_outlives_its_call_answers_with_the_job_to_follow() {
    use infrastructor_e2e::mcp::{call, call_confirmed, connect, structured};
    let dir = tempfile::tempdir().unwrap();
    let mut config = controller_config(&dir.path().join("controller"), &Backend::Sqlite);
    config.mcp_job_wait = Duration::from_secs(1);
    let controller = TestController::start(config).await;
    let root = dir.path().join("managed");
    std::fs::create_dir_all(&root).unwrap();
    let conf = root.join("app.conf");
    std::fs::write(&conf, "old\n").unwrap();
    let (agent, device) = TestAgent::connected_with_changes(
        &controller,
        &dir.path().join("agent"),
        change_policy(&root, &[]),
    )
    .await;
    let port = port_opening_after(Duration::from_secs(3));
    let client = connect(&controller, &controller.admin_token).await;
    let arguments = json!({"devices": [device],
        "change": {"files": [{"path": conf.to_str().unwrap(), "content": "new\n"}],
            "health_checks": [{"tcp_connect": format!("127.0.0.1:{port}")}]}});
    let answer = call_confirmed(&client, "deploy_configuration_change", arguments).await;
    assert_eq!(answer.is_error, Some(false), "{answer:?}");
    let job = structured(&answer).clone();
    assert_eq!(
        job["operation"], "deploy_change",
        "the job, not the change: {job}"
    );
    assert!(
        ["queued", "running"].contains(&job["state"].as_str().unwrap()),
        "{job}"
    );
    let id = job["id"].as_str().unwrap().to_string();
    let done = eventually(Duration::from_secs(60), "the job ended", || async {
        let read = call(&client, "get_job", json!({"job": id})).await;
        let job = structured(&read).clone();
        (job["state"] == "succeeded").then_some(job)
    })
    .await;
    assert_eq!(done["result"]["state"], "committed", "{done}");
    assert_eq!(text(&conf), "new\n");
    client.cancel().await.unwrap();
    agent.stop().await;
    controller.shutdown().await;
}
