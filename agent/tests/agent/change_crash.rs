//! `kill -9` of the agent at every step of a configuration transaction: each file is always
//! either old or new, and on restart the journal resolves the transaction — rolled back, or
//! still awaiting confirmation when that is what it said.
//!
//! The real binary runs `change apply` with a failpoint that SIGKILLs it at the step; a second
//! run does what the daemon does at start (`change recover`).

// Test code: unwrap() is how a test says "this must hold".
#![allow(clippy::unwrap_used)]

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const AGENT: &str = env!("CARGO_BIN_EXE_infrastructor-agent");

struct Host {
    _dir: tempfile::TempDir,
    root: PathBuf,
    state: PathBuf,
    config: PathBuf,
    spec: PathBuf,
}

const FILES: [(&str, Option<&str>, &str); 3] = [
    ("a.conf", Some("a old\n"), "a new\n"),
    ("b.conf", Some("b old\n"), "b new\n"),
    ("c.conf", None, "c new\n"),
];

fn host(health_fails: bool) -> Host {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("managed");
    std::fs::create_dir_all(&root).unwrap();
    for (name, old, _) in FILES {
        if let Some(old) = old {
            std::fs::write(root.join(name), old).unwrap();
        }
    }
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!("[changes]\nroots = [{:?}]\n", root.to_str().unwrap()),
    )
    .unwrap();
    let mut spec = serde_json::json!({
        "files": FILES.iter().map(|(name, _, new)| serde_json::json!({
            "path": root.join(name).to_str().unwrap(), "content": new
        })).collect::<Vec<_>>()
    });
    if health_fails {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        spec["health_checks"] = serde_json::json!([{"tcp_connect": format!("127.0.0.1:{port}")}]);
    }
    let spec_path = dir.path().join("change.json");
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    Host {
        state: dir.path().join("state"),
        _dir: dir,
        root,
        config,
        spec: spec_path,
    }
}

impl Host {
    fn agent(&self, args: &[&str], failpoint: Option<&str>) -> Output {
        let mut command = Command::new(AGENT);
        command
            .arg("change")
            .arg("--config")
            .arg(&self.config)
            .arg("--state-dir")
            .arg(&self.state)
            .args(args)
            .env("RUST_LOG", "warn");
        if let Some(failpoint) = failpoint {
            command.env("INFRASTRUCTOR_FAILPOINTS", failpoint);
        }
        command.output().unwrap()
    }

    fn apply_and_get_killed(&self, failpoint: &str, confirm_timeout: &str) {
        let spec = self.spec.to_str().unwrap();
        let output = self.agent(
            &[
                "apply",
                spec,
                "--confirm-timeout",
                confirm_timeout,
                "--health-timeout",
                "200ms",
            ],
            Some(failpoint),
        );
        assert_eq!(
            output.status.signal(),
            Some(9),
            "{failpoint}: expected SIGKILL, got {:?}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn recover(&self) {
        let output = self.agent(&["recover"], None);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn transactions(&self) -> Vec<serde_json::Value> {
        let output = self.agent(&["status"], None);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    }

    /// Every file is exactly its old or its new version (a missing file counts as old when
    /// it did not exist before). Returns how many are new.
    fn old_or_new(&self, context: &str) -> usize {
        let mut new_count = 0;
        for (name, old, new) in FILES {
            let live = read(&self.root.join(name));
            if live.as_deref() == Some(new) {
                new_count += 1;
            } else {
                assert_eq!(
                    live.as_deref(),
                    old,
                    "{context}: {name} is neither old nor new"
                );
            }
        }
        new_count
    }

    fn assert_all_old(&self, context: &str) {
        assert_eq!(
            self.old_or_new(context),
            0,
            "{context}: every file is old again"
        );
    }
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

#[test]
fn kill_during_prepare_or_commit_leaves_old_files_after_recovery() {
    for failpoint in [
        "prepare.staged",
        "commit.journaled",
        "commit.installed_1",
        "commit.installed_2",
        "commit.installed_3",
        "commit.actions_done",
    ] {
        let host = host(false);
        host.apply_and_get_killed(failpoint, "60s");
        let new_files = host.old_or_new(failpoint);
        if failpoint.starts_with("commit.installed_") {
            let expected: usize = failpoint.rsplit('_').next().unwrap().parse().unwrap();
            assert_eq!(new_files, expected, "{failpoint}: killed mid-swap");
        }
        host.recover();
        host.assert_all_old(failpoint);
        let transactions = host.transactions();
        if failpoint == "prepare.staged" {
            assert!(
                transactions.is_empty(),
                "an unprepared transaction is discarded"
            );
        } else {
            assert_eq!(transactions[0]["state"], "rolled_back", "{failpoint}");
            let reason = transactions[0]["reason"].as_str().unwrap();
            assert!(reason.contains("restarted while committing"), "{reason}");
        }
    }
}

#[test]
fn kill_while_awaiting_confirmation_keeps_waiting_then_honours_the_deadline() {
    let host = host(false);
    host.apply_and_get_killed("commit.awaiting", "60s");
    assert_eq!(host.old_or_new("awaiting"), 3);
    host.recover();
    assert_eq!(
        host.old_or_new("recovered"),
        3,
        "still awaiting: files stay new"
    );
    let transactions = host.transactions();
    assert_eq!(transactions[0]["state"], "awaiting_confirmation");
    let txn_id = transactions[0]["txn_id"].as_str().unwrap();
    let confirmed = host.agent(&["confirm", txn_id], None);
    assert!(confirmed.status.success());
    assert_eq!(host.transactions()[0]["state"], "committed");
    assert_eq!(host.old_or_new("confirmed"), 3);

    let host = self::host(false);
    host.apply_and_get_killed("commit.awaiting", "1s");
    std::thread::sleep(Duration::from_millis(1500));
    host.recover();
    host.assert_all_old("deadline passed while the agent was down");
    let transactions = host.transactions();
    assert_eq!(transactions[0]["state"], "rolled_back");
    assert!(transactions[0]["reason"]
        .as_str()
        .unwrap()
        .contains("not confirmed by the deadline"));
}

#[test]
fn kill_during_a_rollback_is_finished_on_restart() {
    let host = host(true);
    host.apply_and_get_killed("rollback.restored_1", "60s");
    // c.conf (restored first, in reverse order) is gone again; a and b are still new.
    assert_eq!(host.old_or_new("mid-rollback"), 2);
    host.recover();
    host.assert_all_old("rollback finished");
    let transactions = host.transactions();
    assert_eq!(transactions[0]["state"], "rolled_back");
    let reason = transactions[0]["reason"].as_str().unwrap();
    assert!(reason.contains("restarted while rolling_back"), "{reason}");
}

#[test]
fn a_clean_apply_commits_and_a_failed_health_check_exits_non_zero() {
    let host = host(false);
    let output = host.agent(&["apply", host.spec.to_str().unwrap()], None);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(host.old_or_new("applied"), 3);
    assert_eq!(host.transactions()[0]["state"], "committed");

    let host = self::host(true);
    let output = host.agent(
        &[
            "apply",
            host.spec.to_str().unwrap(),
            "--health-timeout",
            "200ms",
        ],
        None,
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("rolled back: health check failed"),
        "{stderr}"
    );
    host.assert_all_old("health failed");
}
