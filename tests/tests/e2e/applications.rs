//! Applications against the real Docker engine, with containers made here from the busybox
//! image: a Compose-labelled project discovered from its labels alone and started in
//! dependency order — proved by the engine's own `StartedAt` times and health logs — then
//! stopped in reverse; a member whose health never comes halts the start with a clear report
//! and the rest put back; a cycle refused with its path; an application across an agent
//! host and an agentless one.

use std::time::Duration;

use bollard::query_parameters::InspectContainerOptions;
use bollard::Docker;
use infrastructor_e2e::docker::{create, docker_cli, engine_with_image, Containers};
use infrastructor_e2e::sshd::start_sshd;
use infrastructor_e2e::TestController;
use infrastructor_e2e::{eventually, path, TestAgent};
use serde_json::{json, Value};
use tempfile::TempDir;

/// A member container: made, not started, with Compose's labels and, when `ready_after`
/// is given, a health check that passes that long after it starts.
fn member(project: &str, service: &str, depends_on: &str, ready_after: Option<&str>) -> String {
    let name = format!("{project}-{service}-1");
    docker_cli(&["rm", "-f", &name]);
    let project_label = format!("com.docker.compose.project={project}");
    let service_label = format!("com.docker.compose.service={service}");
    let depends_label = format!("com.docker.compose.depends_on={depends_on}");
    let mut extra = vec![
        "--label",
        &project_label,
        "--label",
        &service_label,
        "--label",
        &depends_label,
    ];
    let script;
    let command: Vec<&str> = match ready_after {
        Some(delay) => {
            extra.extend([
                "--health-cmd",
                "test -f /ready",
                "--health-interval",
                "1s",
                "--health-retries",
                "1000",
                "--health-timeout",
                "2s",
            ]);
            script = format!("sleep {delay}; touch /ready; exec sleep 3600");
            vec!["sh", "-c", &script]
        }
        None => vec!["sleep", "3600"],
    };
    create(&name, &extra, &command);
    name
}

/// Unix milliseconds of an engine time.
fn ms(stamp: &str) -> i64 {
    let parsed =
        time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339).unwrap();
    (parsed.unix_timestamp_nanos() / 1_000_000) as i64
}

/// When the engine started the container, and when it turned healthy: the end of the first
/// passing probe after a failing one. The engine keeps only the last five probes, so the
/// turn is `None` when it has scrolled out of the log.
async fn started_and_healthy(docker: &Docker, name: &str) -> (i64, Option<i64>) {
    let details = docker
        .inspect_container(name, None::<InspectContainerOptions>)
        .await
        .unwrap();
    let state = details.state.unwrap();
    let started = ms(state.started_at.as_deref().unwrap());
    let healthy = state.health.and_then(|h| {
        let probes = h.log?;
        let failed_first = probes.first()?.exit_code != Some(0);
        let turn = probes
            .into_iter()
            .filter(|probe| probe.exit_code == Some(0))
            .filter_map(|probe| probe.end.map(|end| ms(&end)))
            .filter(|end| *end >= started)
            .min();
        turn.filter(|_| failed_first)
    });
    (started, healthy)
}

async fn finished(docker: &Docker, name: &str) -> i64 {
    let details = docker
        .inspect_container(name, None::<InspectContainerOptions>)
        .await
        .unwrap();
    ms(details.state.unwrap().finished_at.as_deref().unwrap())
}

async fn with_agent() -> (TempDir, TestController, TestAgent, String) {
    let (dir, controller) = TestController::start_sqlite().await;
    let (agent, device) = TestAgent::connected(&controller, &path(&dir, "agent")).await;
    (dir, controller, agent, device)
}

async fn manage(controller: &TestController, app: &str, body: Value) -> Value {
    let (status, run) = controller
        .post_body(&format!("/applications/{app}/actions?wait=120"), &body)
        .await;
    assert_eq!(status, 200, "{body}: {run}");
    run
}

fn outcome<'a>(run: &'a Value, member: &str) -> &'a Value {
    run["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["member"] == member)
        .unwrap_or_else(|| panic!("{member} not in {run}"))
}

#[tokio::test]
async fn a_compose_project_is_discovered_started_in_dependency_order_and_stopped_in_reverse() {
    let Some(docker) = engine_with_image().await else {
        return;
    };
    let project = format!("shop{}", std::process::id());
    let names = vec![
        member(&project, "db", "", Some("1.5")),
        member(&project, "cache", "", None),
        member(
            &project,
            "api",
            "db:service_healthy:false,cache:service_started:false",
            Some("0.5"),
        ),
        member(&project, "worker", "db:service_healthy:false", None),
        member(&project, "web", "api:service_healthy:false", None),
    ];
    let _cleanup = Containers(names.clone());
    let (_dir, controller, agent, device) = with_agent().await;
    let (status, _) = controller
        .post_body(&format!("/devices/{device}/checks/run"), &json!({}))
        .await;
    assert_eq!(status, 200);

    // Discovered from the labels alone.
    let (status, apps) = controller.get_json("/applications").await;
    assert_eq!(status, 200, "{apps}");
    let found = apps
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == project.as_str())
        .unwrap_or_else(|| panic!("{project} not discovered: {apps}"));
    assert_eq!(found["source"]["kind"], "discovered");
    assert_eq!(found["members"], 5);
    let (status, view) = controller
        .get_json(&format!("/applications/{project}"))
        .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(
        view["start"]["groups"],
        json!([["cache", "db"], ["api", "worker"], ["web"]])
    );
    for m in view["members"].as_array().unwrap() {
        assert_eq!(m["state"]["state"], "created", "{m}");
    }

    // A dry run answers the plan and touches nothing.
    let dry = manage(
        &controller,
        &project,
        json!({"action": "start", "dry_run": true}),
    )
    .await;
    assert_eq!(dry["outcome"], "not_run", "{dry}");
    assert_eq!(dry["plan"]["steps"].as_array().unwrap().len(), 5);
    assert_eq!(outcome(&dry, "db")["state"]["state"], "created");

    let run = manage(
        &controller,
        &project,
        json!({"action": "start", "timeout_seconds": 30}),
    )
    .await;
    assert_eq!(run["outcome"], "succeeded", "{run}");
    for member in ["db", "cache", "api", "worker", "web"] {
        assert_eq!(outcome(&run, member)["result"], "started", "{run}");
    }
    let name = |service: &str| format!("{project}-{service}-1");
    let (db_started, db_healthy) = started_and_healthy(&docker, &name("db")).await;
    let (cache_started, _) = started_and_healthy(&docker, &name("cache")).await;
    let (api_started, api_healthy) = started_and_healthy(&docker, &name("api")).await;
    let (worker_started, _) = started_and_healthy(&docker, &name("worker")).await;
    let (web_started, _) = started_and_healthy(&docker, &name("web")).await;
    // Healthy no sooner than the ready file exists (1.5 s and 0.5 s after start), and, where
    // the engine's log still shows the turn, no sooner than the first passing probe.
    let db_healthy = db_healthy.unwrap_or(0).max(db_started + 1500);
    let api_healthy = api_healthy.unwrap_or(0).max(api_started + 500);
    assert!(
        api_started >= db_healthy,
        "api {api_started} before db healthy {db_healthy}"
    );
    assert!(worker_started >= db_healthy, "worker before db was healthy");
    assert!(
        web_started >= api_healthy,
        "web {web_started} before api healthy {api_healthy}"
    );
    // Not in waves: cache and db go at once, and cache is not held for db's health.
    assert!(
        (cache_started - db_started).abs() < 1000,
        "cache {cache_started} and db {db_started} in parallel"
    );
    assert!(cache_started < db_healthy);

    // The job: one step per member, progress to the end.
    let (_, jobs) = controller.get_json("/jobs?state=succeeded&limit=10").await;
    let job = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["operation"] == "manage_application")
        .unwrap_or_else(|| panic!("no job: {jobs}"));
    assert_eq!(job["progress"]["done"], job["progress"]["total"], "{job}");

    let stop = manage(
        &controller,
        &project,
        json!({"action": "stop", "grace_seconds": 1}),
    )
    .await;
    assert_eq!(stop["outcome"], "succeeded", "{stop}");
    let web_done = finished(&docker, &name("web")).await;
    let api_done = finished(&docker, &name("api")).await;
    let worker_done = finished(&docker, &name("worker")).await;
    let db_done = finished(&docker, &name("db")).await;
    let cache_done = finished(&docker, &name("cache")).await;
    assert!(web_done <= api_done, "web stops before api");
    assert!(
        api_done <= db_done && api_done <= cache_done,
        "api before its dependencies"
    );
    assert!(worker_done <= db_done, "worker before db");
    let again = manage(&controller, &project, json!({"action": "stop"})).await;
    assert_eq!(
        outcome(&again, "db")["result"],
        "already_stopped",
        "{again}"
    );

    agent.stop().await;
    controller.shutdown().await;
}

#[tokio::test]
async fn a_member_that_never_becomes_healthy_halts_the_start_and_the_rest_is_put_back() {
    let Some(_docker) = engine_with_image().await else {
        return;
    };
    let project = format!("sick{}", std::process::id());
    // db's health check never passes: its ready file is never written.
    let names = vec![
        member(&project, "db", "", Some("3600")),
        member(&project, "cache", "", None),
        member(&project, "api", "", None),
    ];
    let _cleanup = Containers(names.clone());
    let (_dir, controller, agent, device) = with_agent().await;
    let spec = json!({"members": [
        {"name": "db", "device": device, "container": names[0]},
        {"name": "cache", "device": device, "container": names[1]},
        {"name": "api", "device": device, "container": names[2], "depends_on": [
            {"member": "db", "condition": "service_healthy"},
            {"member": "cache"}]},
    ]});
    let (status, declared) = controller
        .put_body(&format!("/applications/{project}"), &spec)
        .await;
    assert_eq!(status, 200, "{declared}");
    assert_eq!(declared["source"]["version"], 1);
    // A declaration over a version the caller has not seen is refused.
    let mut stale = spec.clone();
    stale["expected_version"] = json!(0);
    let (status, _) = controller
        .put_body(&format!("/applications/{project}"), &stale)
        .await;
    assert_eq!(status, 409);

    let (status, run) = controller
        .post_body(
            &format!("/applications/{project}/actions?wait=120"),
            &json!({"action": "start", "timeout_seconds": 3, "restore_on_failure": true}),
        )
        .await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["outcome"], "failed", "{run}");
    assert_eq!(run["failed"]["member"], "db", "{run}");
    let reason = run["failed"]["reason"].as_str().unwrap();
    assert!(reason.contains("not healthy within 3s"), "{reason}");
    assert_eq!(outcome(&run, "api")["result"], "skipped", "{run}");
    assert_eq!(
        outcome(&run, "api")["state"]["state"],
        "created",
        "never started"
    );
    // cache started on its own branch, then was put back.
    assert_eq!(outcome(&run, "cache")["result"], "restored", "{run}");
    assert_ne!(outcome(&run, "cache")["state"]["state"], "running", "{run}");
    assert_eq!(run["restored"], true, "{run}");

    // The job failed, saying who and why.
    let (_, jobs) = controller.get_json("/jobs?state=failed&limit=10").await;
    let job = &jobs.as_array().unwrap()[0];
    assert!(
        job["error"].as_str().unwrap().contains("db failed"),
        "{job}"
    );
    agent.stop().await;
    controller.shutdown().await;
}

#[tokio::test]
async fn bad_declarations_are_refused_with_the_reason_and_change_nothing() {
    let (_dir, controller) = TestController::start_sqlite().await;
    let (status, device) = controller
        .post_body(
            "/devices",
            &json!({"name": "nas", "ssh_address": "127.0.0.1:1", "ssh_user": "monitor",
                "ssh_host_key":
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"}),
        )
        .await;
    assert_eq!(status, 201, "{device}");
    let cycle = json!({"members": [
        {"name": "db", "device": "nas", "container": "db",
         "depends_on": [{"member": "api"}]},
        {"name": "api", "device": "nas", "container": "api",
         "depends_on": [{"member": "db", "condition": "service_healthy"}]},
    ]});
    let (status, body) = controller.put_body("/applications/loop", &cycle).await;
    assert_eq!(status, 400, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("cycle: api -> db -> api") || detail.contains("cycle: db -> api -> db"),
        "{detail}"
    );
    for (bad, why) in [
        (
            json!({"members": [{"name": "a", "device": "nas", "container": "a",
                "depends_on": [{"member": "b"}]}]}),
            "not a member",
        ),
        (
            json!({"members": [{"name": "a", "device": "nowhere", "container": "a"}]}),
            "nowhere",
        ),
        (
            json!({"members": [{"name": "a", "device": "nas", "container": "a; rm"}]}),
            "invalid container name",
        ),
    ] {
        let (status, body) = controller.put_body("/applications/bad", &bad).await;
        assert!(status == 400 || status == 404, "{bad}: {status} {body}");
        assert!(body["detail"].as_str().unwrap().contains(why), "{body}");
    }
    let (status, body) = controller.get_json("/applications/loop").await;
    assert_eq!(status, 404, "nothing was stored: {body}");
    let (status, body) = controller
        .post_body("/applications/loop/actions", &json!({"action": "start"}))
        .await;
    assert_eq!(status, 404, "{body}");
    controller.shutdown().await;
}

#[tokio::test]
async fn an_application_spans_an_agent_host_and_an_agentless_one() {
    let Some(_docker) = engine_with_image().await else {
        return;
    };
    let Some(sshd) = start_sshd() else { return };
    let project = format!("span{}", std::process::id());
    let names = vec![
        member(&project, "db", "", Some("0.5")),
        member(&project, "api", "", None),
    ];
    let _cleanup = Containers(names.clone());
    let (_dir, controller, agent, device) = with_agent().await;
    let nas = sshd.register(&controller, "nas").await;
    let spec = json!({"members": [
        {"name": "db", "device": "nas", "container": names[0]},
        {"name": "api", "device": device, "container": names[1],
         "depends_on": [{"member": "db", "condition": "service_healthy"}]},
    ]});
    let (status, body) = controller
        .put_body(&format!("/applications/{project}"), &spec)
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, view) = controller
        .get_json(&format!("/applications/{project}"))
        .await;
    assert_eq!(status, 200, "{view}");
    let devices: Vec<&str> = view["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["device_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        devices,
        [device.as_str(), nas.as_str()],
        "api on the agent, db over SSH"
    );
    let run = manage(
        &controller,
        &project,
        json!({"action": "restart", "grace_seconds": 1}),
    )
    .await;
    assert_eq!(run["outcome"], "succeeded", "{run}");
    assert_eq!(outcome(&run, "db")["device_id"], nas.as_str());
    assert_eq!(outcome(&run, "db")["state"]["health"], "healthy", "{run}");
    assert_eq!(outcome(&run, "api")["state"]["state"], "running", "{run}");
    let (status, status_run) = controller
        .post_body(
            &format!("/applications/{project}/actions?wait=60"),
            &json!({"action": "status"}),
        )
        .await;
    assert_eq!(status, 200, "{status_run}");
    assert_eq!(outcome(&status_run, "api")["result"], "unchanged");
    let (status, removed) = controller.delete(&format!("/applications/{project}")).await;
    assert_eq!(status, 200, "{removed}");
    assert_eq!(removed["source"]["version"], 2);
    agent.stop().await;
    controller.shutdown().await;
}

#[tokio::test]
async fn a_start_interrupted_by_a_controller_crash_is_taken_over_and_finished() {
    use infrastructor_e2e::controller_config;
    use infrastructor_e2e::Backend;
    let Some(_docker) = engine_with_image().await else {
        return;
    };
    let Some(sshd) = start_sshd() else { return };
    let project = format!("crash{}", std::process::id());
    let names = vec![
        member(&project, "db", "", Some("0.3")),
        member(&project, "api", "", None),
    ];
    let _cleanup = Containers(names.clone());
    let dir = tempfile::tempdir().unwrap();
    let mut config = controller_config(&path(&dir, "controller"), &Backend::Sqlite);
    config.jobs.lease = Duration::from_secs(3);
    config.jobs.halt_before_step = Some("start api".into());
    let controller = TestController::start(config).await;
    sshd.register(&controller, "nas").await;
    let spec = json!({"members": [
        {"name": "db", "device": "nas", "container": names[0]},
        {"name": "api", "device": "nas", "container": names[1],
         "depends_on": [{"member": "db", "condition": "service_healthy"}]},
    ]});
    let (status, body) = controller
        .put_body(&format!("/applications/{project}"), &spec)
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, job) = controller
        .post_body(
            &format!("/applications/{project}/actions"),
            &json!({"action": "start"}),
        )
        .await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    eventually(
        Duration::from_secs(60),
        "halted before starting api",
        || async {
            let (_, job) = controller.get_json(&format!("/jobs/{id}")).await;
            job["steps"]
                .as_array()?
                .iter()
                .any(|s| s["name"] == "start api")
                .then_some(())
        },
    )
    .await;
    let mut restart = controller.restart_config();
    restart.jobs.halt_before_step = None;
    controller.kill();
    let controller = TestController::start(restart).await;
    let job = eventually(Duration::from_secs(90), "the job ended", || async {
        let (_, job) = controller.get_json(&format!("/jobs/{id}")).await;
        (!["queued", "running"].contains(&job["state"].as_str()?)).then_some(job)
    })
    .await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 2, "taken over once: {job}");
    let run = &job["result"];
    // The second attempt found db as the first left it, and finished with api.
    assert_eq!(outcome(run, "db")["result"], "already_running", "{run}");
    assert_eq!(outcome(run, "api")["result"], "started", "{run}");
    assert_eq!(outcome(run, "api")["state"]["state"], "running", "{run}");
    controller.shutdown().await;
}
