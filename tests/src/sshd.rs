//! A real OpenSSH sshd on a loopback port, with a generated host key and authorized key —
//! optionally inside a private mount namespace, so that it is a host whose files differ from
//! this machine's at the same paths.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use infrastructor_controller::fleet::ssh_driver::SshTarget;

use crate::services_required;

pub struct Sshd {
    child: Child,
    pub port: u16,
    pub host_public_key: String,
    pub client_private_key: String,
    /// Holds the config, keys and `authorized_keys`.
    pub dir: tempfile::TempDir,
}

impl Sshd {
    /// This sshd as the driver reaches it: loopback, the current user, its real host key.
    pub fn target(&self) -> SshTarget {
        self.target_pinned_to(&self.host_public_key)
    }

    /// This sshd with `host_key` pinned instead of its real one.
    pub fn target_pinned_to(&self, host_key: &str) -> SshTarget {
        SshTarget::new("127.0.0.1", self.port, &current_user(), host_key).expect("SSH target")
    }

    /// Authorizes the controller's key and registers this sshd as the agentless device `name`;
    /// the device's ID.
    pub async fn register(&self, controller: &crate::TestController, name: &str) -> String {
        self.authorize(controller).await;
        let (status, device) = controller
            .post_body(
                "/devices",
                &serde_json::json!({"name": name, "ssh_address": format!("127.0.0.1:{}", self.port),
                    "ssh_user": current_user(), "ssh_host_key": self.host_public_key}),
            )
            .await;
        assert_eq!(status, 201, "{device}");
        device["id"].as_str().expect("device ID").to_string()
    }

    /// Authorizes the controller's own SSH key (`GET /ssh-public-key`), as an operator would.
    pub async fn authorize(&self, controller: &crate::TestController) {
        let (status, key) = controller.get_json("/ssh-public-key").await;
        assert_eq!(status, 200, "{key}");
        let public_key = key["public_key"].as_str().expect("public_key");
        assert!(public_key.starts_with("ssh-ed25519 "), "{public_key}");
        std::fs::write(
            self.dir.path().join("authorized_keys"),
            format!("{public_key}\n"),
        )
        .expect("authorized_keys written");
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen");
    assert!(status.success());
}

pub fn current_user() -> String {
    let output = Command::new("id").arg("-un").output().expect("id");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Starts sshd, or returns `None` (test skipped) when OpenSSH is not installed.
pub fn start_sshd() -> Option<Sshd> {
    start_sshd_in(None)
}

/// Starts sshd inside `namespace` (when given): a host with its own view of the filesystem.
pub fn start_sshd_in(namespace: Option<&MountNamespace>) -> Option<Sshd> {
    if !Path::new("/usr/sbin/sshd").exists() {
        assert!(
            !services_required(),
            "INFRASTRUCTOR_REQUIRE_SERVICES=1 but /usr/sbin/sshd is missing"
        );
        eprintln!("skipping: no /usr/sbin/sshd (apt-get install openssh-server)");
        return None;
    }
    let dir = tempfile::tempdir().expect("sshd setup");
    keygen(&dir.path().join("host_key"));
    keygen(&dir.path().join("client_key"));
    std::fs::copy(
        dir.path().join("client_key.pub"),
        dir.path().join("authorized_keys"),
    )
    .expect("sshd setup");
    // sshd needs its privilege-separation directory.
    let _ = std::fs::create_dir_all("/run/sshd");
    // Ports are picked by binding :0 and releasing it, so a parallel test can take the same
    // one: retry with a fresh port when sshd does not come up.
    let (child, port) = (0..5)
        .find_map(|_| {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("sshd setup");
            let port = listener.local_addr().expect("sshd setup").port();
            drop(listener);
            let config = format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/host_key\nPidFile {dir}/sshd-{port}.pid\n\
                 AuthorizedKeysFile {dir}/authorized_keys\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n\
                 Subsystem sftp internal-sftp\n",
                dir = dir.path().display()
            );
            std::fs::write(dir.path().join("sshd_config"), config).expect("sshd setup");
            let mut command = match namespace {
                Some(namespace) => namespace.command("/usr/sbin/sshd"),
                None => Command::new("/usr/sbin/sshd"),
            };
            let mut child = command
                .args(["-D", "-e", "-f"])
                .arg(dir.path().join("sshd_config"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("sshd");
            for _ in 0..300 {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Some((child, port));
                }
                if child.try_wait().ok().flatten().is_some() {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            None
        })
        .expect("sshd did not start");
    Some(Sshd {
        child,
        port,
        host_public_key: std::fs::read_to_string(dir.path().join("host_key.pub"))
            .expect("sshd setup"),
        client_private_key: std::fs::read_to_string(dir.path().join("client_key"))
            .expect("sshd setup"),
        dir,
    })
}

/// A private mount namespace, kept alive by a `sleep` process: paths mounted over inside it
/// (with [`mount_tmpfs`](Self::mount_tmpfs)) are different files from the same paths outside.
pub struct MountNamespace {
    holder: Child,
}

impl MountNamespace {
    /// `None` (test skipped) when this machine does not allow mount namespaces.
    pub fn new() -> Option<Self> {
        let holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sleep", "3600"])
            .spawn()
            .ok()?;
        let namespace = Self { holder };
        // The holder must have entered its namespace before anyone joins it.
        for _ in 0..100 {
            let own = std::fs::read_link("/proc/self/ns/mnt").ok();
            let theirs = std::fs::read_link(format!("/proc/{}/ns/mnt", namespace.holder.id())).ok();
            if theirs.is_some() && theirs != own {
                return Some(namespace);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            !services_required(),
            "cannot create a mount namespace (unshare --mount)"
        );
        eprintln!("skipping: mount namespaces are not available here");
        None
    }

    /// `program` to be run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg("-t")
            .arg(self.holder.id().to_string())
            .args(["-m", "--", program]);
        command
    }

    fn run(&self, program: &str, args: &[&str]) -> std::process::Output {
        let output = self.command(program).args(args).output().expect("nsenter");
        assert!(
            output.status.success(),
            "{program} {args:?} in namespace: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// Shadows `dir` (which must exist) with an empty tmpfs inside the namespace.
    pub fn mount_tmpfs(&self, dir: &Path) {
        self.run(
            "mount",
            &["-t", "tmpfs", "tmpfs", dir.to_str().expect("UTF-8 path")],
        );
    }

    pub fn write(&self, path: &Path, content: &str) {
        let source = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(source.path(), content).expect("write");
        let (source, path) = (source.path().to_str().unwrap(), path.to_str().unwrap());
        self.run("cp", &["--", source, path]);
    }

    pub fn read(&self, path: &Path) -> String {
        let output = self.run("cat", &["--", path.to_str().expect("UTF-8 path")]);
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for MountNamespace {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}
