//! The real Docker engine for tests: a tiny image built here (`FROM scratch` plus Debian's
//! static busybox — no registry needed) and containers removed however a test ends.

use std::process::{Command, Output};

use crate::services_required;

pub const IMAGE: &str = "infrastructor-test-busybox:latest";

pub fn docker_cli(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI")
}

/// Connects to the engine and builds the test image; `None` (test skipped) when either is
/// impossible here and services are not required.
pub async fn engine_with_image() -> Option<bollard::Docker> {
    let docker = match infrastructor_hostops::docker::connect().await {
        Ok(docker) => docker,
        Err(error) => {
            assert!(
                !services_required(),
                "INFRASTRUCTOR_REQUIRE_SERVICES=1 but {error}"
            );
            eprintln!("skipping: {error}");
            return None;
        }
    };
    build_image()?;
    Some(docker)
}

fn build_image() -> Option<()> {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let Some(busybox) = busybox else {
        assert!(!services_required(), "busybox-static is not installed");
        eprintln!("skipping: no busybox (apt-get install busybox-static)");
        return None;
    };
    let context = tempfile::tempdir().expect("tempdir");
    std::fs::copy(busybox, context.path().join("busybox")).expect("copy busybox");
    std::fs::write(
        context.path().join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN \
            [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nCMD \
            [\"/bin/sh\"]\n",
    )
    .expect("Dockerfile");
    let context = context.path().to_str().expect("UTF-8 path");
    let output = docker_cli(&["build", "-q", "-t", IMAGE, context]);
    assert!(
        output.status.success(),
        "docker build: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(())
}

/// Removes the named containers when dropped.
pub struct Containers(pub Vec<String>);

impl Drop for Containers {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = docker_cli(&["rm", "-f", name]);
        }
    }
}

/// `docker run -d --name NAME EXTRA… IMAGE COMMAND…`
pub fn run(name: &str, extra: &[&str], command: &[&str]) {
    docker_new("run", name, extra, command);
}

/// `docker create --name NAME EXTRA… IMAGE COMMAND…`: made, not started.
pub fn create(name: &str, extra: &[&str], command: &[&str]) {
    docker_new("create", name, extra, command);
}

fn docker_new(verb: &str, name: &str, extra: &[&str], command: &[&str]) {
    let detached: &[&str] = if verb == "run" { &["-d"] } else { &[] };
    let mut args = vec![verb];
    args.extend_from_slice(detached);
    args.extend(["--name", name, "--label", "infrastructor-test=1"]);
    args.extend_from_slice(extra);
    args.push(IMAGE);
    args.extend_from_slice(command);
    let output = docker_cli(&args);
    assert!(
        output.status.success(),
        "docker {verb} {name}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
