//! The SSH driver against a real OpenSSH sshd started here on a loopback port, with a
//! generated host key and authorized key: commands run, connections are reused, a changed
//! host key is refused, quoting defeats injection.

use std::time::Duration;

use infrastructor_controller::fleet::ssh_driver::{
    remote_command_line, SshDriver, SshError, SshTarget,
};
use infrastructor_e2e::sshd::{current_user, keygen, start_sshd};
use infrastructor_hostops::command;

#[tokio::test]
async fn commands_run_over_ssh_with_a_pinned_host_key() {
    let Some(sshd) = start_sshd() else { return };
    let driver = SshDriver::new(&sshd.client_private_key, 2).unwrap();
    let target = sshd.target();

    let output = driver
        .run(&target, &command::uname(), Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(output.code, Some(0), "{output:?}");
    assert!(output.stdout.starts_with("Linux"), "{output:?}");
    // The connection went back to the pool and is reused.
    assert_eq!(driver.prune().idle_connections, 1);
    let again = driver
        .run(&target, &command::uname(), Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(again.stdout, output.stdout);
    assert_eq!(driver.prune().idle_connections, 1);

    // Same parsers as the agent: a failing command's exit code comes back intact.
    let missing = driver
        .run(&target, &command::zpool_list(), Duration::from_secs(20))
        .await
        .unwrap();
    assert_ne!(missing.code, Some(0), "no zpool here: {missing:?}");
}

#[tokio::test]
async fn a_changed_host_key_is_refused() {
    let Some(sshd) = start_sshd() else { return };
    let driver = SshDriver::new(&sshd.client_private_key, 2).unwrap();
    let other = tempfile::tempdir().unwrap();
    keygen(&other.path().join("impostor"));
    let wrong_key = std::fs::read_to_string(other.path().join("impostor.pub")).unwrap();
    let target = sshd.target_pinned_to(&wrong_key);
    let error = driver
        .run(&target, &command::uname(), Duration::from_secs(20))
        .await
        .unwrap_err();
    assert!(matches!(error, SshError::HostKeyMismatch { .. }), "{error}");
    assert!(error.to_string().contains("does not match the pinned key"));
    assert_eq!(driver.prune().idle_connections, 0);

    // A key the server does not authorize is refused too.
    keygen(&other.path().join("stranger"));
    let stranger = SshDriver::new(
        &std::fs::read_to_string(other.path().join("stranger")).unwrap(),
        2,
    )
    .unwrap();
    let target = sshd.target();
    let error = stranger
        .run(&target, &command::uname(), Duration::from_secs(20))
        .await
        .unwrap_err();
    assert!(
        matches!(error, SshError::AuthenticationFailed { .. }),
        "{error}"
    );
    assert!(SshTarget::new("h", 22, "u", "not a key").is_err());
}

#[test]
fn argv_is_quoted_for_the_remote_shell() {
    use infrastructor_hostops::names::UnitName;
    let unit = UnitName::new("nginx.service").unwrap();
    assert_eq!(
        remote_command_line(&command::journal_tail(10, Some(&unit))).unwrap(),
        "journalctl '--output=json' --no-pager '--lines=10' '--unit=nginx.service'"
    );
    // Even if a hostile string reached an argv, it would arrive as one literal argument.
    let quoted = shlex_quote("$(reboot); rm -rf /");
    assert_eq!(quoted, "'$(reboot); rm -rf /'");
}

fn shlex_quote(text: &str) -> String {
    shlex::try_quote(text).unwrap().into_owned()
}

#[tokio::test]
async fn an_agentless_device_is_checked_and_diagnosed_through_rest() {
    use infrastructor_e2e::TestController;
    let Some(sshd) = start_sshd() else { return };
    let (_dir, controller) = TestController::start_sqlite().await;
    sshd.authorize(&controller).await;

    let register = |name: &str, host_key: &str| {
        serde_json::json!({"name": name,
        "ssh_address": format!("127.0.0.1:{}", sshd.port),
        "ssh_user": current_user(),
        "ssh_host_key": host_key})
    };
    let client = controller.http();
    let created = client
        .post(controller.api_url("/devices"))
        .bearer_auth(&controller.admin_token)
        .json(&register("nas", &sshd.host_public_key))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status().as_u16(), 201);
    let run = client
        .post(controller.api_url("/devices/nas/checks/run"))
        .bearer_auth(&controller.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(run.status().as_u16(), 200, "{:?}", run.text().await);
    let (status, capabilities) = controller.get_json("/devices/nas/capabilities").await;
    assert_eq!(status, 200);
    assert!(
        capabilities["detected_at"].is_string(),
        "a round over SSH was recorded: {capabilities}"
    );
    // Docker through the engine API tunnelled over SSH: the same check as with an agent.
    if infrastructor_hostops::docker::connect().await.is_ok() {
        assert!(
            capabilities["capabilities"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c == "docker"),
            "{capabilities}"
        );
        let (status, containers) = controller.get_json("/devices/nas/containers").await;
        assert_eq!(status, 200, "{containers}");
        assert!(containers.is_array());
    }
    let diagnosis: serde_json::Value = client
        .post(controller.api_url("/devices/nas/diagnose"))
        .bearer_auth(&controller.admin_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(diagnosis["fresh"], true, "{diagnosis}");
    assert!(
        diagnosis["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["check"] == "ssh.link" && f["passed"] == true),
        "{diagnosis}"
    );

    // The same host registered with another key: refused, with the reason.
    let other = tempfile::tempdir().unwrap();
    keygen(&other.path().join("impostor"));
    let impostor = std::fs::read_to_string(other.path().join("impostor.pub")).unwrap();
    let created = client
        .post(controller.api_url("/devices"))
        .bearer_auth(&controller.admin_token)
        .json(&register("nas-moved", &impostor))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status().as_u16(), 201);
    let refused = client
        .post(controller.api_url("/devices/nas-moved/checks/run"))
        .bearer_auth(&controller.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 503);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("does not match the pinned key"),
        "{body}"
    );
    controller.shutdown().await;
}

#[tokio::test]
async fn a_pooled_connection_is_never_reused_for_a_different_pinned_key() {
    let Some(sshd) = start_sshd() else { return };
    let driver = SshDriver::new(&sshd.client_private_key, 2).unwrap();
    let genuine = sshd.target();
    driver
        .run(&genuine, &command::uname(), Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(driver.prune().idle_connections, 1);
    let other = tempfile::tempdir().unwrap();
    keygen(&other.path().join("impostor"));
    let wrong_key = std::fs::read_to_string(other.path().join("impostor.pub")).unwrap();
    let pinned_elsewhere = sshd.target_pinned_to(&wrong_key);
    let error = driver
        .run(
            &pinned_elsewhere,
            &command::uname(),
            Duration::from_secs(20),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, SshError::HostKeyMismatch { .. }), "{error}");
}

#[tokio::test]
async fn host_keys_can_come_from_a_known_hosts_file_at_registration() {
    use infrastructor_e2e::{controller_config, path, temp_dir, Backend, TestController};
    let Some(sshd) = start_sshd() else { return };
    let dir = temp_dir();
    let known_hosts = dir.path().join("known_hosts");
    std::fs::write(
        &known_hosts,
        format!("[127.0.0.1]:{} {}", sshd.port, sshd.host_public_key),
    )
    .unwrap();
    let mut config = controller_config(&path(&dir, "controller"), &Backend::Sqlite);
    config.ssh_known_hosts = Some(known_hosts);
    let controller = TestController::start(config).await;
    sshd.authorize(&controller).await;

    let register = |address: String| {
        serde_json::json!({"name": "box",
        "ssh_address": address,
        "ssh_user": current_user()})
    };
    let client = controller.http();
    let unknown = client
        .post(controller.api_url("/devices"))
        .bearer_auth(&controller.admin_token)
        .json(&register("127.0.0.1:1".into()))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status().as_u16(), 400);
    let body: serde_json::Value = unknown.json().await.unwrap();
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("no host key for 127.0.0.1:1"),
        "{body}"
    );

    let created = client
        .post(controller.api_url("/devices"))
        .bearer_auth(&controller.admin_token)
        .json(&register(format!("127.0.0.1:{}", sshd.port)))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status().as_u16(), 201);
    let (status, checks) = controller.post_json("/devices/box/checks/run").await;
    assert_eq!(status, 200, "{checks}");
    controller.shutdown().await;
}

#[tokio::test]
async fn connections_per_host_are_bounded_and_reused() {
    let Some(sshd) = start_sshd() else { return };
    let driver = std::sync::Arc::new(SshDriver::new(&sshd.client_private_key, 1).unwrap());
    let target = sshd.target();
    // Four concurrent commands with a limit of one connection: they queue for it.
    let runs = (0..4).map(|_| {
        let driver = driver.clone();
        let target = target.clone();
        tokio::spawn(async move {
            driver
                .run(&target, &command::uname(), Duration::from_secs(30))
                .await
        })
    });
    for run in futures::future::join_all(runs).await {
        assert_eq!(run.unwrap().unwrap().code, Some(0));
    }
    let stats = driver.prune();
    assert_eq!(
        stats.connections_opened, 1,
        "one connection, reused: {stats:?}"
    );
    assert_eq!(stats.idle_connections, 1);
}
