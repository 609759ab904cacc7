//! The SSH driver against a real OpenSSH sshd started here on a loopback port, with a
//! generated host key and authorized key: commands run, connections are reused, a changed
//! host key is refused, quoting defeats injection.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use infrastructor_agent::hostops::command;
use infrastructor_controller::fleet::ssh_driver::{
    remote_command_line, SshDriver, SshError, SshTarget,
};
use infrastructor_e2e::services_required;

struct Sshd {
    child: Child,
    port: u16,
    host_public_key: String,
    client_private_key: String,
    _dir: tempfile::TempDir,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen");
    assert!(status.success());
}

fn current_user() -> String {
    let output = Command::new("id").arg("-un").output().expect("id");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Starts sshd, or returns `None` (test skipped) when OpenSSH is not installed.
fn start_sshd() -> Option<Sshd> {
    if !Path::new("/usr/sbin/sshd").exists() {
        assert!(
            !services_required(),
            "INFRASTRUCTOR_REQUIRE_SERVICES=1 but /usr/sbin/sshd is missing"
        );
        eprintln!("skipping: no /usr/sbin/sshd (apt-get install openssh-server)");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    keygen(&dir.path().join("host_key"));
    keygen(&dir.path().join("client_key"));
    std::fs::copy(
        dir.path().join("client_key.pub"),
        dir.path().join("authorized_keys"),
    )
    .unwrap();
    // sshd needs its privilege-separation directory.
    let _ = std::fs::create_dir_all("/run/sshd");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/host_key\nPidFile {dir}/sshd.pid\n\
         AuthorizedKeysFile {dir}/authorized_keys\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
         PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n",
        dir = dir.path().display()
    );
    std::fs::write(dir.path().join("sshd_config"), config).unwrap();
    let child = Command::new("/usr/sbin/sshd")
        .args(["-D", "-e", "-f"])
        .arg(dir.path().join("sshd_config"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sshd");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(Sshd {
        child,
        port,
        host_public_key: std::fs::read_to_string(dir.path().join("host_key.pub")).unwrap(),
        client_private_key: std::fs::read_to_string(dir.path().join("client_key")).unwrap(),
        _dir: dir,
    })
}

#[tokio::test]
async fn commands_run_over_ssh_with_a_pinned_host_key() {
    let Some(sshd) = start_sshd() else { return };
    let driver = SshDriver::new(&sshd.client_private_key, 2).unwrap();
    let target = SshTarget::new(
        "127.0.0.1",
        sshd.port,
        &current_user(),
        &sshd.host_public_key,
    )
    .unwrap();

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
    let target = SshTarget::new("127.0.0.1", sshd.port, &current_user(), &wrong_key).unwrap();
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
    let target = SshTarget::new(
        "127.0.0.1",
        sshd.port,
        &current_user(),
        &sshd.host_public_key,
    )
    .unwrap();
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
    use infrastructor_agent::hostops::names::UnitName;
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
