//! DR plans as code (issue 16), against a real agent host with the Docker engine: a plan that
//! puts the device in maintenance, restores its configuration directory from backup through
//! the change engine, restarts its application in order, diagnoses the device and leaves
//! maintenance. Its dry run plans every step and changes nothing; with the application's
//! container gone the critical restart fails and the run halts there; once the container is
//! back, resuming the halted run completes it from that step. A malformed plan is refused
//! with its line and column, and every revision is kept.

use std::time::Duration;

use infrastructor_e2e::docker::{docker_cli, engine_with_image, run, Containers};
use infrastructor_e2e::{change_policy, eventually, path, TestAgent, TestController};
use infrastructor_hostops::backup::BackupPolicy;
use infrastructor_hostops::names::ManagedPath;
use serde_json::{json, Value};

fn managed(path: &std::path::Path) -> ManagedPath {
    ManagedPath::new(path.to_str().unwrap()).unwrap()
}

fn step<'a>(run: &'a Value, id: &str) -> &'a Value {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("step {id}: {run}"))
}

fn plan(device: &str, app: &str) -> String {
    format!(
        "name: restore-web
description: Bring web back from its last good configuration.
steps:
  - id: maintenance
    operation: set_maintenance_mode
    arguments: {{device: {device}, enable: true, reason: 'DR: restore web', duration: 1h}}
  - id: restore
    operation: manage_backups
    arguments: {{target: etc-web, action: restore, in_place: true}}
    timeout: 5m
  - id: restart
    operation: manage_application
    arguments: {{app: {app}, action: restart}}
  - id: diagnose
    operation: diagnose_device
    arguments:
      device: ${{{{ steps.restore.output.plan.device_id }}}}
  - id: leave
    operation: set_maintenance_mode
    arguments: {{device: {device}, enable: false}}
"
    )
}

async fn execute(controller: &TestController, body: Value) -> (String, Value) {
    let (status, job) = controller
        .post_body("/dr-plans/restore-web/executions", &body)
        .await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let job = eventually(Duration::from_secs(240), "the run ended", || async {
        let (_, job) = controller.get_json(&format!("/jobs/{id}")).await;
        (!["queued", "running"].contains(&job["state"].as_str()?)).then_some(job)
    })
    .await;
    (id, job)
}

#[tokio::test]
async fn a_dr_plan_dry_runs_halts_on_a_critical_failure_and_resumes_from_it() {
    let Some(_docker) = engine_with_image().await else {
        return;
    };
    let restic = std::process::Command::new("restic").arg("version").output();
    if !restic.is_ok_and(|o| o.status.success()) {
        assert!(
            !infrastructor_e2e::services_required(),
            "restic is required"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("host");
    let conf = root.join("etc-web");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(conf.join("web.conf"), "listen 8080\n").unwrap();
    let passwords = root.join("passwords");
    std::fs::create_dir_all(&passwords).unwrap();
    std::fs::write(passwords.join("main"), "dr plan password\n").unwrap();
    let (_data, controller) = TestController::start_sqlite().await;
    let policy = BackupPolicy {
        sources: vec![managed(&root)],
        password_dir: managed(&passwords),
        ..BackupPolicy::default()
    };
    let changes = change_policy(&conf, &[]);
    let (agent, device) = TestAgent::connected_with(&controller, &path(&dir, "agent"), |c| {
        c.backups = policy;
        c.changes = changes;
        c.checks.interval = Duration::from_secs(3600);
    })
    .await;
    let app = format!("dr{}", std::process::id());
    let web = format!("{app}-web");
    docker_cli(&["rm", "-f", &web]);
    let _cleanup = Containers(vec![web.clone()]);
    run(&web, &[], &["sleep", "3600"]);
    let members = json!({"members": [{"name": "web", "device": device, "container": web}]});
    let (status, body) = controller
        .put_body(&format!("/applications/{app}"), &members)
        .await;
    assert_eq!(status, 200, "{body}");
    let target = json!({"device": device,
        "source": {"kind": "paths", "paths": [conf.to_str().unwrap()]},
        "repository": {"kind": "local", "path": root.join("repo").to_str().unwrap()},
        "password_file": "main"});
    let (status, body) = controller.put_body("/backups/etc-web", &target).await;
    assert_eq!(status, 200, "{body}");
    let (status, backed) = controller
        .post_body(
            "/backups/etc-web/actions?wait=120",
            &json!({"action": "trigger"}),
        )
        .await;
    assert_eq!(
        (status, &backed["outcome"]),
        (200, &json!("succeeded")),
        "{backed}"
    );

    // A malformed plan: refused with its line and column, nothing stored.
    let broken = "name: restore-web\nsteps:\n  - id: restore\n    operation: manage_backups\n    \
                  critical: maybe\n";
    let (status, problem) = controller
        .put_body("/dr-plans/restore-web", &json!({"yaml": broken}))
        .await;
    assert_eq!(status, 400, "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("line 5, column 15"), "{detail}");
    let unknown = plan(&device, &app).replace("diagnose_device", "diagnose_everything");
    let (status, problem) = controller
        .put_body("/dr-plans/restore-web", &json!({"yaml": unknown}))
        .await;
    assert_eq!(status, 400, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("line 15, column 16"),
        "{problem}"
    );
    let (status, _) = controller.get_json("/dr-plans/restore-web").await;
    assert_eq!(status, 404, "nothing stored");

    let yaml = plan(&device, &app);
    let first = yaml.replace("Bring web back", "Restore web");
    let (status, view) = controller
        .put_body("/dr-plans/restore-web", &json!({"yaml": first}))
        .await;
    assert_eq!((status, &view["revision"]), (200, &json!(1)), "{view}");
    let (status, view) = controller
        .put_body(
            "/dr-plans/restore-web",
            &json!({"yaml": yaml, "expected_revision": 1}),
        )
        .await;
    assert_eq!((status, &view["revision"]), (200, &json!(2)), "{view}");
    assert_eq!(view["steps"][3]["uses"], json!(["restore"]));
    let (_, detail) = controller.get_json("/dr-plans/restore-web").await;
    assert_eq!(detail["revisions"].as_array().unwrap().len(), 2, "{detail}");

    // Someone breaks the configuration.
    std::fs::write(conf.join("web.conf"), "listen oops\n").unwrap();

    // The dry run: every step's own plan, nothing changed.
    let (_, job) = execute(&controller, json!({"dry_run": true})).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let dry = &job["result"];
    assert_eq!(dry["outcome"], "planned", "{dry}");
    let restore = &step(dry, "restore")["output"];
    assert!(
        restore["files"][0]["diff"]
            .as_str()
            .unwrap()
            .contains("+listen 8080"),
        "{restore}"
    );
    let restart = &step(dry, "restart")["output"];
    assert!(
        restart["stop"].is_array() || restart.is_object(),
        "the restart's plan: {restart}"
    );
    assert_eq!(step(dry, "diagnose")["state"], "planned");
    assert_eq!(
        std::fs::read_to_string(conf.join("web.conf")).unwrap(),
        "listen oops\n"
    );
    let (_, device_view) = controller.get_json(&format!("/devices/{device}")).await;
    assert!(
        device_view["maintenance"].is_null(),
        "a dry run enters no maintenance"
    );

    // The application's container is gone: the critical restart fails and the run halts.
    docker_cli(&["rm", "-f", &web]);
    let (halted_id, job) = execute(&controller, json!({})).await;
    assert_eq!(job["state"], "failed", "{job}");
    let halted = &job["result"];
    assert_eq!(halted["outcome"], "halted", "{halted}");
    assert_eq!(halted["halted_at"], "restart");
    assert_eq!(step(halted, "restore")["state"], "succeeded");
    assert_eq!(step(halted, "restart")["state"], "failed");
    assert_eq!(step(halted, "diagnose")["state"], "not_run");
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("halted at step restart"),
        "{job}"
    );
    assert_eq!(
        std::fs::read_to_string(conf.join("web.conf")).unwrap(),
        "listen 8080\n"
    );
    let (_, device_view) = controller.get_json(&format!("/devices/{device}")).await;
    assert!(
        !device_view["maintenance"].is_null(),
        "still in maintenance after the halt"
    );

    // Fixed: resuming keeps what succeeded and completes from the failed step.
    run(&web, &[], &["sleep", "3600"]);
    let (_, job) = execute(&controller, json!({"resume": halted_id})).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let resumed = &job["result"];
    assert_eq!(resumed["outcome"], "completed", "{resumed}");
    assert_eq!(resumed["resumed"], halted_id.as_str());
    for reused in ["maintenance", "restore"] {
        assert_eq!(step(resumed, reused)["state"], "reused", "{resumed}");
    }
    for ran in ["restart", "diagnose", "leave"] {
        assert_eq!(step(resumed, ran)["state"], "succeeded", "{ran}: {resumed}");
    }
    assert_eq!(
        step(resumed, "diagnose")["output"]["device_id"],
        device.as_str()
    );
    let (_, device_view) = controller.get_json(&format!("/devices/{device}")).await;
    assert!(
        device_view["maintenance"].is_null(),
        "maintenance left at the end"
    );
    let (_, audit) = controller
        .get_json("/audit?operation=manage_application")
        .await;
    let from_plan = audit
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["surface"] == "dr_plan");
    assert!(from_plan, "every step is audited: {audit}");
    // A run of another plan cannot be resumed here.
    let (status, problem) = controller
        .post_body(
            "/dr-plans/restore-web/executions",
            &json!({"resume": "0123abcd"}),
        )
        .await;
    assert_eq!(status, 404, "{problem}");
    agent.stop().await;
    controller.shutdown().await;
}
