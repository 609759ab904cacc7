//! The README's first command, as shipped: `infrastructor-controller up` starts the controller
//! and the agent binary as a child process, enrolls it over the real gateway, prints where to
//! reach it, serves this host online within seconds, reuses everything on a second run, and
//! stops its agent on SIGTERM.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use infrastructor_e2e::{eventually, temp_dir};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A binary of the workspace, built beside the test binary (`target/<profile>/`).
fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "{} is not built: run the workspace's tests (`cargo test --workspace`)",
        path.display()
    );
    path
}

/// What `up` printed before "Press Ctrl-C".
struct Started {
    child: Child,
    api: String,
    device_id: String,
}

async fn up(data_dir: &Path) -> Started {
    let mut child = Command::new(workspace_binary("infrastructor-controller"))
        .args([
            "up",
            "--http-listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
        ])
        .arg("--agent-bin")
        .arg(workspace_binary("infrastructor-agent"))
        .env("INFRASTRUCTOR_DATA_DIR", data_dir)
        .env("INFRASTRUCTOR_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start `up`");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let (mut api, mut device_id) = (None, None);
    let read = async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            if let Some(url) = line.trim().strip_prefix("REST API:") {
                api = Some(url.trim().to_string());
            }
            if let Some(device) = line.trim().strip_prefix("local agent:") {
                device_id = device.split_whitespace().nth(1).map(str::to_string);
            }
            if line.starts_with("Press Ctrl-C") {
                return;
            }
        }
        panic!("`up` exited before it was ready");
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("`up` ready within 60s");
    Started {
        child,
        api: api.expect("REST API line"),
        device_id: device_id.expect("local agent line"),
    }
}

/// SIGTERM, as systemd or Ctrl-C would; `up` must stop its agent and exit 0.
async fn stop(mut started: Started) {
    let pid = started.child.id().expect("pid") as i32;
    let status = Command::new("kill")
        .args(["-TERM", "--", &pid.to_string()])
        .status()
        .await
        .expect("kill");
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(30), started.child.wait())
        .await
        .expect("`up` stops within 30s")
        .expect("wait");
    assert!(exit.success(), "`up` exited with {exit}");
}

async fn devices(api: &str, data_dir: &Path) -> serde_json::Value {
    let token = std::fs::read_to_string(data_dir.join("admin-token")).expect("admin token");
    reqwest::Client::new()
        .get(format!("{api}/devices"))
        .bearer_auth(token.trim())
        .send()
        .await
        .expect("GET /devices")
        .json()
        .await
        .expect("JSON")
}

/// Whether any process still runs the agent with this data directory's configuration.
fn agent_running(data_dir: &Path) -> bool {
    let config = data_dir.join("local-agent.toml");
    let needle = config.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .any(|cmdline| String::from_utf8_lossy(&cmdline).contains(&needle))
}

#[tokio::test]
async fn up_runs_the_controller_and_a_local_agent_process_and_stops_both() {
    let data = temp_dir();
    let started = up(data.path()).await;
    let api = started.api.clone();
    let device_id = started.device_id.clone();
    let online = eventually(
        Duration::from_secs(30),
        "the local agent online",
        || async {
            let list = devices(&api, data.path()).await;
            let device = list.as_array()?.iter().find(|d| d["id"] == device_id)?;
            (device["status"] == "online" && !device["summary"].is_null()).then(|| device.clone())
        },
    )
    .await;
    assert_eq!(online["kind"], "agent");
    assert!(
        agent_running(data.path()),
        "the agent runs as its own process"
    );
    stop(started).await;
    assert!(!agent_running(data.path()), "the agent stopped with `up`");

    // A second run reuses the identity, the CA and the admin token.
    let again = up(data.path()).await;
    assert_eq!(again.device_id, device_id, "the same enrolled device");
    let list = devices(&again.api, data.path()).await;
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    stop(again).await;
}
