//! Backups against real components: a restic repository on another host over SFTP — the test
//! sshd, its host key pinned in a known_hosts file — made, written to, listed and drilled with
//! the agent's own argv builders, parsers and drill; and a host key that does not match
//! refused. Through the API (issue 16): a live container's volume backed up with its
//! application stopped and started in order, validated by a restore drill, then its
//! repository damaged — the check and the drill fail and say so; an RPO miss raising the
//! `backup_stale` alert; a configuration directory restored in place through the change
//! engine; and the same on an agentless host over SSH.

use std::path::Path;
use std::time::Duration;

use infrastructor_e2e::docker::{docker_cli, engine_with_image, run, Containers};
use infrastructor_e2e::sshd::{current_user, start_sshd};
use infrastructor_e2e::{eventually, path, TestAgent, TestController};
use infrastructor_hostops::backup::drill_directory;
use infrastructor_hostops::backup::BackupPolicy;
use infrastructor_hostops::checks::LocalRunner;
use infrastructor_hostops::names::ManagedPath;
use infrastructor_hostops::restic::{self, Repository, SnapshotId, TargetName};
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(60);

fn restic_or_skip() -> bool {
    let present = std::process::Command::new("restic")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        present || !infrastructor_e2e::services_required(),
        "restic is required (INFRASTRUCTOR_REQUIRE_SERVICES=1)"
    );
    present
}

fn managed(path: &std::path::Path) -> ManagedPath {
    ManagedPath::new(path.to_str().unwrap()).unwrap()
}

#[tokio::test]
async fn a_repository_over_sftp_with_a_pinned_host_key_is_backed_up_to_and_drilled() {
    let Some(sshd) = start_sshd() else { return };
    if !restic_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = sshd.dir.path().join("client_key");
    let known_hosts = dir.path().join("known_hosts");
    std::fs::write(
        &known_hosts,
        format!("[127.0.0.1]:{} {}", sshd.port, sshd.host_public_key),
    )
    .unwrap();
    let password = dir.path().join("password");
    std::fs::write(&password, "a long repository password\n").unwrap();
    let password = managed(&password);
    let remote = dir.path().join("remote-repo");
    let sftp = |known_hosts: &std::path::Path| Repository::Sftp {
        user: current_user(),
        host: "127.0.0.1".into(),
        port: sshd.port,
        path: remote.to_str().unwrap().into(),
        identity: Some(key.to_str().unwrap().into()),
        known_hosts: known_hosts.to_str().unwrap().into(),
    };
    let repo = sftp(&known_hosts).checked().unwrap();
    let source = dir.path().join("srv-app");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("data.db"), vec![3u8; 50_000]).unwrap();
    let target = TargetName::new("srv-app").unwrap();

    let init = restic::init(&repo, &password).run(TIMEOUT).await.unwrap();
    assert_eq!(init.code, Some(0), "{}", init.stderr);
    assert!(
        remote.join("config").exists(),
        "the repository is on the SFTP side"
    );
    let backup = restic::backup(&repo, &password, &target, &[managed(&source)])
        .run(TIMEOUT)
        .await
        .unwrap();
    assert_eq!(backup.code, Some(0), "{}", backup.stderr);
    let summary = restic::parse_backup(&backup.stdout).unwrap();
    let listed = restic::snapshots(&repo, &password, &target)
        .run(TIMEOUT)
        .await
        .unwrap();
    assert_eq!(restic::parse_snapshots(&listed.stdout).unwrap().len(), 1);
    let scratch = dir.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let snapshot = SnapshotId::new(&summary.snapshot_id).unwrap();
    let report = drill_directory(
        &LocalRunner,
        &repo,
        &password,
        &snapshot,
        &managed(&scratch),
    )
    .await
    .unwrap();
    assert!(report.passed, "{report:?}");
    assert_eq!(report.bytes_restored, 50_000);

    // A known_hosts that pins another key: refused, nothing written.
    let other = dir.path().join("other_known_hosts");
    let wrong_key =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    std::fs::write(&other, format!("[127.0.0.1]:{} {wrong_key}\n", sshd.port)).unwrap();
    let pinned_wrong = sftp(&other).checked().unwrap();
    let refused = restic::snapshots(&pinned_wrong, &password, &target)
        .run(TIMEOUT)
        .await
        .unwrap();
    assert_ne!(refused.code, Some(0), "a changed host key is refused");
}

/// A backup policy whose directories are all below `root`, with password file `main`.
fn policy(root: &Path) -> BackupPolicy {
    let passwords = root.join("passwords");
    std::fs::create_dir_all(&passwords).unwrap();
    std::fs::write(passwords.join("main"), "an e2e repository password\n").unwrap();
    for dir in ["scratch", "restores"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    BackupPolicy {
        sources: vec![managed(root)],
        volumes: true,
        restore_roots: vec![managed(&root.join("restores"))],
        password_dir: managed(&passwords),
        scratch: managed(&root.join("scratch")),
        staging: managed(&root.join("staging")),
        ..BackupPolicy::default()
    }
}

/// A controller and an agent whose backup policy covers `<dir>/host`, with `files` (relative
/// to it) written there: the root, the controller's data directory, the controller, the
/// agent and its device ID.
async fn agent_host(
    dir: &Path,
    files: &[(&str, &str)],
) -> (
    std::path::PathBuf,
    tempfile::TempDir,
    TestController,
    TestAgent,
    String,
) {
    let root = dir.join("host");
    for (name, content) in files {
        let file = root.join(name);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, content).unwrap();
    }
    std::fs::create_dir_all(&root).unwrap();
    let (data, controller) = TestController::start_sqlite().await;
    let backups = policy(&root);
    let agent_dir = dir.join("agent");
    let (agent, device) =
        TestAgent::connected_with(&controller, &agent_dir, |c| c.backups = backups).await;
    (root, data, controller, agent, device)
}

/// A paths target of directory `name` below `root`, to a local repository there.
fn paths_target(device: &str, root: &Path, name: &str) -> Value {
    json!({
        "device": device,
        "source": {"kind": "paths", "paths": [root.join(name).to_str().unwrap()]},
        "repository": {"kind": "local", "path": root.join("repo").to_str().unwrap()},
        "password_file": "main",
    })
}

async fn act(controller: &TestController, target: &str, body: Value) -> Value {
    let (status, run) = controller
        .post_body(&format!("/backups/{target}/actions?wait=300"), &body)
        .await;
    assert_eq!(status, 200, "{run}");
    run
}

fn target_status<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("{name} listed: {list}"))
}

fn damage_every_pack(repo: &Path) {
    let packs: Vec<_> = std::fs::read_dir(repo.join("data"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|f| f.unwrap().path())
        .collect();
    assert!(!packs.is_empty());
    for pack in packs {
        let mut bytes = std::fs::read(&pack).unwrap();
        bytes[20] ^= 0xff;
        std::fs::write(&pack, bytes).unwrap();
    }
}

#[tokio::test]
async fn a_live_volume_is_backed_up_with_its_application_quiesced_drilled_and_damage_is_caught() {
    let Some(_docker) = engine_with_image().await else {
        return;
    };
    if !restic_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("host");
    std::fs::create_dir_all(&root).unwrap();
    let (_data, controller) = TestController::start_sqlite().await;
    let backups = policy(&root);
    let (agent, device) =
        TestAgent::connected_with(&controller, &path(&dir, "agent"), |c| c.backups = backups).await;
    let volume = format!("infratest-shop-{}", std::process::id());
    let container = format!("{volume}-db");
    docker_cli(&["rm", "-f", &container]);
    docker_cli(&["volume", "rm", "-f", &volume]);
    let _cleanup = Containers(vec![container.clone()]);
    let mount = format!("{volume}:/data");
    run(
        &container,
        &["-v", &mount],
        &[
            "sh",
            "-c",
            "echo order-1 > /data/orders.log; head -c 70000 /dev/zero > \
                       /data/blob.bin; exec sleep 3600",
        ],
    );
    let app = format!("{volume}-app");
    let spec = json!({"members": [{"name": "db", "device": device, "container": container}]});
    let (status, body) = controller
        .put_body(&format!("/applications/{app}"), &spec)
        .await;
    assert_eq!(status, 200, "{body}");
    let repo = root.join("repo");
    let target = json!({
        "device": device,
        "source": {"kind": "volume", "volume": volume},
        "repository": {"kind": "local", "path": repo.to_str().unwrap()},
        "password_file": "main",
        "rpo": "1h",
        "quiesce": app,
    });
    let (status, declared) = controller.put_body("/backups/shop-volume", &target).await;
    assert_eq!(status, 200, "{declared}");
    assert_eq!(declared["version"], 1);
    assert_eq!(declared["status"]["rpo"], "missed", "nothing verified yet");

    // A dry run plans and touches nothing.
    let planned = act(
        &controller,
        "shop-volume",
        json!({"action": "trigger", "dry_run": true}),
    )
    .await;
    assert_eq!(planned["outcome"], "planned", "{planned}");
    assert!(planned["plan"]["steps"][0]
        .as_str()
        .unwrap()
        .contains("stop application"));
    assert!(!repo.exists(), "a dry run makes no repository");

    let backed = act(&controller, "shop-volume", json!({"action": "trigger"})).await;
    assert_eq!(backed["outcome"], "succeeded", "{backed}");
    assert_eq!(backed["backup"]["initialized"], true, "{backed}");
    assert_eq!(backed["backup"]["summary"]["files_new"], 2, "{backed}");
    let running = docker_cli(&["inspect", "-f", "{{.State.Running}}", &container]);
    assert_eq!(
        String::from_utf8_lossy(&running.stdout).trim(),
        "true",
        "started again"
    );
    let restarted = docker_cli(&[
        "inspect",
        "-f",
        "{{.RestartCount}} {{.State.StartedAt}}",
        &container,
    ]);
    assert!(!String::from_utf8_lossy(&restarted.stdout).is_empty());

    let validated = act(&controller, "shop-volume", json!({"action": "validate"})).await;
    assert_eq!(validated["outcome"], "succeeded", "{validated}");
    assert_eq!(validated["check"]["ok"], true, "{validated}");
    let drill = &validated["drill"];
    assert_eq!(drill["passed"], true, "{drill}");
    assert_eq!(
        (
            drill["files_expected"].as_u64(),
            drill["files_verified"].as_u64()
        ),
        (Some(2), Some(2))
    );
    assert_eq!(validated["verified"], true);
    let (_, list) = controller.get_json("/backups").await;
    let status = &target_status(&list, "shop-volume")["status"];
    assert_eq!(status["rpo"], "met", "{status}");
    assert!(
        status["verified"]["restore_ms"].is_u64(),
        "the RTO is recorded: {status}"
    );
    assert_eq!(status["last_drill"]["passed"], true);
    let (_, detail) = controller.get_json("/backups/shop-volume").await;
    let snapshots = detail["snapshots"].as_array().unwrap();
    assert_eq!(snapshots.len(), 1, "{detail}");
    assert_eq!(snapshots[0]["verified"], true, "{detail}");
    assert_eq!(
        std::fs::read_dir(root.join("scratch")).unwrap().count(),
        0,
        "torn down"
    );

    // A damaged repository: the check and the drill both fail, say so, and the job fails.
    damage_every_pack(&repo);
    let failed = act(&controller, "shop-volume", json!({"action": "validate"})).await;
    assert_eq!(failed["outcome"], "failed", "{failed}");
    assert_eq!(failed["check"]["ok"], false, "{failed}");
    assert!(!failed["check"]["problems"].as_array().unwrap().is_empty());
    assert_eq!(failed["drill"]["passed"], false, "{failed}");
    assert_eq!(failed["verified"], false);
    let problems = failed["problems"].to_string();
    assert!(
        problems.contains("check found problems") && problems.contains("drill"),
        "{problems}"
    );
    let (_, list) = controller.get_json("/backups").await;
    let status = &target_status(&list, "shop-volume")["status"];
    assert_eq!(status["last_check"]["passed"], false, "{status}");
    assert_eq!(status["last_drill"]["passed"], false, "{status}");
    assert_eq!(
        std::fs::read_dir(root.join("scratch")).unwrap().count(),
        0,
        "torn down"
    );

    docker_cli(&["rm", "-f", &container]);
    docker_cli(&["volume", "rm", "-f", &volume]);
    agent.stop().await;
    controller.shutdown().await;
}

#[tokio::test]
async fn an_rpo_miss_raises_the_backup_stale_alert() {
    if !restic_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let files = [("etc-app/app.conf", "workers = 4\n")];
    let (root, _data, controller, agent, device) = agent_host(dir.path(), &files).await;
    let mut target = paths_target(&device, &root, "etc-app");
    target["rpo"] = json!("10s");
    let (status, body) = controller.put_body("/backups/etc-app", &target).await;
    assert_eq!(status, 200, "{body}");
    // A backup alone is not verified; a passing drill is.
    act(&controller, "etc-app", json!({"action": "trigger"})).await;
    let validated = act(&controller, "etc-app", json!({"action": "validate"})).await;
    assert_eq!(validated["verified"], true, "{validated}");
    let stale = || async {
        let (_, alerts) = controller.get_json("/alerts").await;
        alerts
            .as_array()?
            .iter()
            .find(|a| a["alert"] == "backup_stale" && a["subject"] == "etc-app")
            .cloned()
    };
    assert!(stale().await.is_none(), "within its RPO");
    let alert = eventually(Duration::from_secs(40), "backup_stale fires", || async {
        stale().await.filter(|a| a["state"] == "firing")
    })
    .await;
    assert_eq!(alert["device_id"], device.as_str(), "{alert}");
    let summary = alert["summary"].as_str().unwrap();
    assert!(summary.contains("older than its RPO of 10s"), "{summary}");
    let (_, list) = controller.get_json("/backups").await;
    assert_eq!(target_status(&list, "etc-app")["status"]["rpo"], "missed");

    // Bad input changes nothing and says why.
    let mut bad = target.clone();
    bad["rpo"] = json!("1s");
    let (status, problem) = controller.put_body("/backups/etc-app", &bad).await;
    assert_eq!(status, 400, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("rpo"),
        "{problem}"
    );
    let (status, problem) = controller
        .post_body(
            "/backups/etc-app/actions",
            &json!({"action": "restore", "in_place": true, "into": "/srv/x"}),
        )
        .await;
    assert_eq!(status, 400, "{problem}");
    // Without `into`, a fresh directory in the host's first restore root.
    let restored = act(&controller, "etc-app", json!({"action": "restore"})).await;
    assert_eq!(restored["outcome"], "succeeded", "{restored}");
    let into = restored["restore"]["into"].as_str().unwrap();
    assert!(
        into.starts_with(root.join("restores/etc-app-").to_str().unwrap()),
        "{into}"
    );
    let copy = Path::new(into).join(root.join("etc-app/app.conf").strip_prefix("/").unwrap());
    assert_eq!(std::fs::read_to_string(copy).unwrap(), "workers = 4\n");
    let (_, detail) = controller.get_json("/backups/etc-app").await;
    assert_eq!(
        detail["version"], 1,
        "the refused declaration changed nothing"
    );
    agent.stop().await;
    controller.shutdown().await;
}

#[tokio::test]
async fn a_configuration_directory_is_restored_in_place_through_the_change_engine_over_ssh() {
    let Some(sshd) = start_sshd() else { return };
    if !restic_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("host");
    let conf = root.join("etc-app");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(conf.join("app.conf"), "workers = 4\n").unwrap();
    std::fs::write(conf.join("limits.conf"), "max = 10\n").unwrap();
    let mut config = infrastructor_e2e::controller_config(
        &path(&dir, "controller"),
        &infrastructor_e2e::Backend::Sqlite,
    );
    config.agentless_backups = policy(&root);
    config.agentless_changes = infrastructor_e2e::change_policy(&conf, &[]);
    let controller = TestController::start(config).await;
    let device = sshd.register(&controller, "nas").await;
    let target = json!({
        "device": "nas",
        "source": {"kind": "paths", "paths": [conf.to_str().unwrap()]},
        "repository": {"kind": "local", "path": root.join("repo").to_str().unwrap()},
        "password_file": "main",
    });
    let (status, body) = controller.put_body("/backups/etc-app", &target).await;
    assert_eq!(status, 200, "{body}");
    let backed = act(&controller, "etc-app", json!({"action": "trigger"})).await;
    assert_eq!(backed["outcome"], "succeeded", "{backed}");
    assert_eq!(backed["plan"]["device_id"], device.as_str());

    // Someone breaks the configuration.
    std::fs::write(conf.join("app.conf"), "workers = oops\n").unwrap();
    let dry = act(
        &controller,
        "etc-app",
        json!({"action": "restore", "in_place": true, "dry_run": true}),
    )
    .await;
    assert_eq!(dry["outcome"], "planned", "{dry}");
    let files = dry["plan"]["files"].as_array().unwrap();
    let changed: Vec<&Value> = files.iter().filter(|f| f["changed"] == true).collect();
    assert_eq!(changed.len(), 1, "only app.conf differs: {files:?}");
    assert!(
        changed[0]["diff"]
            .as_str()
            .unwrap()
            .contains("-workers = oops"),
        "{files:?}"
    );
    assert_eq!(
        std::fs::read_to_string(conf.join("app.conf")).unwrap(),
        "workers = oops\n"
    );

    let restored = act(
        &controller,
        "etc-app",
        json!({"action": "restore", "in_place": true}),
    )
    .await;
    assert_eq!(restored["outcome"], "succeeded", "{restored}");
    let change = restored["change_id"].as_str().unwrap();
    assert_eq!(
        std::fs::read_to_string(conf.join("app.conf")).unwrap(),
        "workers = 4\n"
    );
    let (_, view) = controller.get_json(&format!("/changes/{change}")).await;
    assert_eq!(view["state"], "committed", "{view}");

    // To a new directory: below a restore root only, never over an existing one.
    let into = root.join("restores/etc-app-copy");
    let copied = act(
        &controller,
        "etc-app",
        json!({"action": "restore", "into": into.to_str().unwrap()}),
    )
    .await;
    assert_eq!(copied["outcome"], "succeeded", "{copied}");
    let copy = into
        .join(conf.strip_prefix("/").unwrap())
        .join("limits.conf");
    assert_eq!(std::fs::read_to_string(copy).unwrap(), "max = 10\n");
    let (status, problem) = controller
        .post_body(
            "/backups/etc-app/actions?wait=60",
            &json!({"action": "restore", "into": "/etc/evil"}),
        )
        .await;
    assert!(status == 400 || status == 200, "{problem}");
    assert!(problem.to_string().contains("restore roots"), "{problem}");
    controller.shutdown().await;
}

#[tokio::test]
async fn a_schedule_backs_up_and_drills_on_its_own() {
    if !restic_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let files = [("srv/data.txt", "42\n")];
    let (root, _data, controller, agent, device) = agent_host(dir.path(), &files).await;
    let mut target = paths_target(&device, &root, "srv");
    target["schedule"] = json!({"backup_every": "1h", "validate_every": "1d"});
    target["keep"] = json!({"daily": 3, "weekly": 0, "monthly": 0});
    let (status, body) = controller.put_body("/backups/srv", &target).await;
    assert_eq!(status, 200, "{body}");
    // Nothing ran yet, so both are due: the backup first, then its validation.
    let status = eventually(Duration::from_secs(60), "a scheduled drill", || async {
        let (_, list) = controller.get_json("/backups").await;
        let status = target_status(&list, "srv")["status"].clone();
        status["last_drill"]["passed"].as_bool()?.then_some(status)
    })
    .await;
    assert_eq!(status["last_backup"]["passed"], true, "{status}");
    assert_eq!(
        status["verified"]["snapshot"],
        status["last_drill"]["snapshot"]
    );
    let (_, jobs) = controller.get_json("/jobs?limit=20").await;
    let scheduled: Vec<&Value> = jobs
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["operation"] == "manage_backups")
        .collect();
    assert_eq!(scheduled.len(), 2, "one backup, one validation: {jobs}");
    assert!(
        scheduled
            .iter()
            .all(|j| j["requested_by"] == "backup schedule"),
        "{jobs}"
    );
    // Not due again for an hour: nothing more starts.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, jobs) = controller.get_json("/jobs?limit=20").await;
    let count = jobs
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["operation"] == "manage_backups")
        .count();
    assert_eq!(count, 2);
    agent.stop().await;
    controller.shutdown().await;
}

#[tokio::test]
async fn a_rest_repository_is_backed_up_to_and_drilled_and_credentials_in_its_url_refused() {
    if !restic_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let served = dir.path().join("rest");
    std::fs::create_dir_all(&served).unwrap();
    let rest = infrastructor_e2e::rest_repo::RestRepository::start(&served).await;
    let files = [("srv/report.csv", "a,b\n1,2\n")];
    let (root, _data, controller, agent, device) = agent_host(dir.path(), &files).await;
    let mut target = paths_target(&device, &root, "srv");
    target["repository"] = json!({"kind": "rest", "url": rest.url()});
    let (status, body) = controller.put_body("/backups/srv", &target).await;
    assert_eq!(status, 200, "{body}");
    let backed = act(&controller, "srv", json!({"action": "trigger"})).await;
    assert_eq!(backed["outcome"], "succeeded", "{backed}");
    assert!(
        served.join("config").exists(),
        "the repository is on the REST server"
    );
    assert!(std::fs::read_dir(served.join("snapshots")).unwrap().count() == 1);
    let validated = act(&controller, "srv", json!({"action": "validate"})).await;
    assert_eq!(validated["verified"], true, "{validated}");
    assert_eq!(
        validated["plan"]["repository"],
        format!("rest:{}", rest.url())
    );

    target["repository"]["url"] = json!(format!("http://backup:hunter2@{}/", rest.addr));
    let (status, problem) = controller.put_body("/backups/srv", &target).await;
    assert_eq!(status, 400, "{problem}");
    assert!(problem["detail"]
        .as_str()
        .unwrap()
        .contains("may not carry credentials"));
    agent.stop().await;
    controller.shutdown().await;
}

#[tokio::test]
async fn the_controller_backs_itself_up_with_its_ca_and_a_drill_opens_the_copy() {
    if !restic_or_skip() {
        return;
    }
    for backend in infrastructor_e2e::backends().await {
        controller_backs_itself_up(&backend).await;
    }
}

async fn controller_backs_itself_up(backend: &infrastructor_e2e::Backend) {
    let dir = tempfile::tempdir().unwrap();
    let passwords = dir.path().join("passwords");
    std::fs::create_dir_all(&passwords).unwrap();
    std::fs::write(
        passwords.join("controller"),
        "the controller's own password\n",
    )
    .unwrap();
    let mut config = infrastructor_e2e::controller_config(&path(&dir, "controller"), backend);
    config.controller_backups.password_dir = managed(&passwords);
    let mut source = json!({"kind": "controller"});
    let engine = match backend {
        infrastructor_e2e::Backend::Sqlite => "sqlite",
        infrastructor_e2e::Backend::Postgres(url) => {
            // pg_dump reads the password from a passfile in the password directory.
            let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
            let password = url.split_once("://").unwrap().1.split_once('@').unwrap().0;
            let password = password.split_once(':').unwrap().1;
            let line = format!(
                "{}:{}:*:{}:{password}\n",
                options.get_host(),
                options.get_port(),
                options.get_username()
            );
            let passfile = passwords.join("controller.pgpass");
            std::fs::write(&passfile, line).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o600)).unwrap();
            source["passfile"] = json!("controller.pgpass");
            // The drill's throwaway cluster runs as the postgres account.
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            "postgresql"
        }
    };
    let controller = TestController::start(config).await;
    let repo = dir.path().join("controller-repo");
    let target = json!({
        "source": source,
        "repository": {"kind": "local", "path": repo.to_str().unwrap()},
        "password_file": "controller",
        "invariants": [{"table": "devices", "min_rows": 0}, {"table": "audit_log", "min_rows": 1}],
    });
    let (status, body) = controller.put_body("/backups/controller", &target).await;
    assert_eq!(status, 200, "{body}");
    let backed = act(&controller, "controller", json!({"action": "trigger"})).await;
    assert_eq!(backed["outcome"], "succeeded", "{backed}");
    assert_eq!(backed["plan"]["source"], "controller");
    let validated = act(&controller, "controller", json!({"action": "validate"})).await;
    assert_eq!(validated["verified"], true, "{engine}: {validated}");
    let drill = &validated["drill"];
    assert_eq!(drill["database"]["engine"], engine, "{drill}");
    assert_eq!(drill["database"]["started"], true, "{drill}");
    assert_eq!(
        drill["database"]["invariants"][1]["passed"], true,
        "{drill}"
    );
    // The database copy, the CA's certificate and key, the server's, the SSH identity.
    assert!(drill["files_expected"].as_u64().unwrap() >= 5, "{drill}");
    let (_, detail) = controller.get_json("/backups/controller").await;
    let paths = detail["snapshots"][0]["paths"].to_string();
    assert!(paths.contains("/pki") && paths.contains("/ssh"), "{paths}");
    let staged = path(&dir, "controller").join("backup-staging/controller");
    assert_eq!(
        std::fs::read_dir(&staged).unwrap().count(),
        0,
        "the copy is removed"
    );
    // Its own target names no device.
    let mut wrong = target.clone();
    wrong["device"] = json!("somewhere");
    let (status, problem) = controller.put_body("/backups/controller", &wrong).await;
    assert_eq!(status, 400, "{problem}");
    controller.shutdown().await;
}
