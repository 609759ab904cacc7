//! The change engine on this host's real filesystem: validation, diffs, atomic swaps,
//! health-check rollback, confirmation deadlines, later rollbacks and every refusal.

// Test code: unwrap() is how a test says "this must hold".
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use infrastructor_hostops::change::{
    ChangeEngine, ChangeError, ChangePolicy, ChangeSet, CommitOptions, LocalHost, TxnState,
};
use infrastructor_hostops::names::{ManagedPath, TxnId};

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
    engine: ChangeEngine<LocalHost>,
}

fn id(text: &str) -> TxnId {
    TxnId::new(text).unwrap()
}
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("managed");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    let policy = ChangePolicy {
        roots: vec![ManagedPath::new(root.to_str().unwrap()).unwrap()],
        validators: BTreeMap::from([(
            "has-valid".to_string(),
            vec![
                "grep".into(),
                "-q".into(),
                "valid".into(),
                "{staged}".into(),
            ],
        )]),
        ..Default::default()
    };
    let engine = ChangeEngine::open(LocalHost, policy, &dir.path().join("state/changes")).unwrap();
    Fixture {
        _dir: dir,
        root,
        outside,
        engine,
    }
}

fn set(json: serde_json::Value) -> ChangeSet {
    serde_json::from_value(json).unwrap()
}

fn path(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn write(p: &Path, content: &str, mode: u32) {
    std::fs::write(p, content).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn fast(confirm: Duration) -> CommitOptions {
    CommitOptions {
        confirm_timeout: confirm,
        health_timeout: Duration::from_millis(300),
    }
}

#[tokio::test]
async fn a_failing_validator_leaves_live_files_byte_identical() {
    let f = fixture();
    let conf = f.root.join("app.conf");
    write(&conf, "valid old\n", 0o640);
    let report = f
        .engine
        .prepare(
            &id("t1"),
            &set(serde_json::json!({
                "files": [{"path": path(&conf), "content": "broken\n", "mode": "0600"}],
                "validators": [{"name": "has-valid", "file": path(&conf)}]
            })),
        )
        .await
        .unwrap();
    assert_eq!(report.state, TxnState::Aborted);
    assert!(!report.validators[0].passed);
    assert_eq!(std::fs::read(&conf).unwrap(), b"valid old\n");
    assert_eq!(mode(&conf), 0o640);
    assert_eq!(dir_entries(&f.root), ["app.conf"], "no temp files left");
    let error = f
        .engine
        .commit(&id("t1"), fast(Duration::ZERO))
        .await
        .unwrap_err();
    assert!(matches!(error, ChangeError::Conflict(_)), "{error}");
}

#[tokio::test]
async fn prepare_returns_unified_diffs_and_validator_output_without_touching_files() {
    let f = fixture();
    let conf = f.root.join("app.conf");
    let new = f.root.join("new.conf");
    write(&conf, "valid\nport 80\n", 0o644);
    let report = f
        .engine
        .prepare(
            &id("plan"),
            &set(serde_json::json!({
                "files": [
                    {"path": path(&conf), "content": "valid\nport 8080\n"},
                    {"path": path(&new), "content": "fresh\n"}
                ],
                "validators": [{"name": "has-valid", "file": path(&conf)}]
            })),
        )
        .await
        .unwrap();
    assert_eq!(report.state, TxnState::Prepared);
    assert!(report.validators[0].passed);
    let diff = &report.files[0].diff;
    assert!(
        diff.contains("-port 80\n") && diff.contains("+port 8080\n"),
        "{diff}"
    );
    assert!(diff.contains(&format!("--- a{}", path(&conf))), "{diff}");
    assert!(!report.files[1].existed);
    assert!(report.files[1].diff.contains("--- /dev/null"));
    assert_eq!(std::fs::read(&conf).unwrap(), b"valid\nport 80\n");
    assert!(!new.exists());
    f.engine.abort(&id("plan")).await.unwrap();
}

#[tokio::test]
async fn commit_swaps_every_file_with_the_requested_mode() {
    let f = fixture();
    let conf = f.root.join("app.conf");
    write(&conf, "old\n", 0o644);
    let new = f.root.join("new.conf");
    let change = set(serde_json::json!({
        "files": [
            {"path": path(&conf), "content": "new\n", "mode": "0600"},
            {"path": path(&new), "content": "fresh\n"}
        ]
    }));
    f.engine.prepare(&id("t"), &change).await.unwrap();
    let report = f
        .engine
        .commit(&id("t"), fast(Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(report.state, TxnState::Committed);
    assert_eq!(std::fs::read(&conf).unwrap(), b"new\n");
    assert_eq!(mode(&conf), 0o600);
    assert_eq!(std::fs::read(&new).unwrap(), b"fresh\n");
    assert_eq!(mode(&new), 0o644);
    assert_eq!(dir_entries(&f.root), ["app.conf", "new.conf"]);
}

#[tokio::test]
async fn a_failed_health_check_restores_every_file() {
    let f = fixture();
    let conf = f.root.join("app.conf");
    let new = f.root.join("new.conf");
    write(&conf, "old\n", 0o640);
    let port = closed_port();
    f.engine
        .prepare(
            &id("t"),
            &set(serde_json::json!({
                "files": [
                    {"path": path(&conf), "content": "new\n", "mode": "0600"},
                    {"path": path(&new), "content": "fresh\n"}
                ],
                "health_checks": [{"tcp_connect": format!("127.0.0.1:{port}")}]
            })),
        )
        .await
        .unwrap();
    let report = f
        .engine
        .commit(&id("t"), fast(Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(report.state, TxnState::RolledBack);
    let reason = report.reason.unwrap();
    assert!(reason.contains("health check failed"), "{reason}");
    assert!(!report.health[0].passed);
    assert_eq!(std::fs::read(&conf).unwrap(), b"old\n");
    assert_eq!(mode(&conf), 0o640);
    assert!(!new.exists(), "a file that did not exist is removed again");
    assert_eq!(
        f.engine.status(&id("t")).await.unwrap().state,
        TxnState::RolledBack
    );
}

#[tokio::test]
async fn an_unconfirmed_change_rolls_back_at_the_deadline_and_a_confirmed_one_stays() {
    let f = fixture();
    let conf = f.root.join("app.conf");
    write(&conf, "old\n", 0o644);
    let change = set(serde_json::json!({"files": [{"path": path(&conf), "content": "new\n"}]}));
    f.engine.prepare(&id("unconfirmed"), &change).await.unwrap();
    let report = f
        .engine
        .commit(&id("unconfirmed"), fast(Duration::from_millis(500)))
        .await
        .unwrap();
    assert_eq!(report.state, TxnState::AwaitingConfirmation);
    assert_eq!(std::fs::read(&conf).unwrap(), b"new\n");
    assert!(f.engine.next_deadline_ms().await.is_some());
    tokio::time::sleep(Duration::from_millis(700)).await;
    let expired = f.engine.expire().await.unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].state, TxnState::RolledBack);
    assert_eq!(std::fs::read(&conf).unwrap(), b"old\n");
    let late = f.engine.confirm(&id("unconfirmed")).await.unwrap_err();
    assert!(
        late.to_string().contains("can no longer be confirmed"),
        "{late}"
    );

    f.engine.prepare(&id("confirmed"), &change).await.unwrap();
    f.engine
        .commit(&id("confirmed"), fast(Duration::from_millis(500)))
        .await
        .unwrap();
    f.engine.confirm(&id("confirmed")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(f.engine.expire().await.unwrap().is_empty());
    assert_eq!(std::fs::read(&conf).unwrap(), b"new\n");
    assert_eq!(
        f.engine.status(&id("confirmed")).await.unwrap().state,
        TxnState::Committed
    );
}

#[tokio::test]
async fn a_committed_change_rolls_back_on_request_unless_the_file_changed_since() {
    let f = fixture();
    let conf = f.root.join("app.conf");
    write(&conf, "old\n", 0o644);
    let change = set(serde_json::json!({"files": [{"path": path(&conf), "content": "new\n"}]}));
    f.engine.prepare(&id("a"), &change).await.unwrap();
    f.engine
        .commit(&id("a"), fast(Duration::ZERO))
        .await
        .unwrap();
    let report = f.engine.rollback(&id("a"), "operator asked").await.unwrap();
    assert_eq!(report.state, TxnState::RolledBack);
    assert_eq!(std::fs::read(&conf).unwrap(), b"old\n");

    f.engine.prepare(&id("b"), &change).await.unwrap();
    f.engine
        .commit(&id("b"), fast(Duration::ZERO))
        .await
        .unwrap();
    std::fs::write(&conf, "edited by hand\n").unwrap();
    let error = f
        .engine
        .rollback(&id("b"), "operator asked")
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("changed after transaction b committed"),
        "{error}"
    );
    assert_eq!(std::fs::read(&conf).unwrap(), b"edited by hand\n");
}

#[tokio::test]
async fn rolling_back_what_was_never_applied_drops_it_and_touches_nothing() {
    let f = fixture();
    let conf = f.root.join("app.conf");
    write(
        &conf, "old
", 0o644,
    );
    let change = set(
        serde_json::json!({"files": [{"path": path(&conf), "content": "new
"}]}),
    );
    f.engine.prepare(&id("p"), &change).await.unwrap();
    let report = f
        .engine
        .rollback(&id("p"), "another host failed")
        .await
        .unwrap();
    assert_eq!(report.state, TxnState::Aborted);
    assert!(
        report
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("never applied"),
        "{report:?}"
    );
    assert_eq!(
        std::fs::read(&conf).unwrap(),
        b"old
"
    );
    // Idempotent, and the file is free for the next transaction.
    let again = f.engine.rollback(&id("p"), "again").await.unwrap();
    assert_eq!(again.state, TxnState::Aborted);
    f.engine.prepare(&id("q"), &change).await.unwrap();
}

#[tokio::test]
async fn a_file_changed_between_prepare_and_commit_is_not_overwritten() {
    let f = fixture();
    let conf = f.root.join("app.conf");
    write(&conf, "old\n", 0o644);
    let change = set(serde_json::json!({"files": [{"path": path(&conf), "content": "new\n"}]}));
    f.engine.prepare(&id("t"), &change).await.unwrap();
    std::fs::write(&conf, "someone else\n").unwrap();
    let error = f
        .engine
        .commit(&id("t"), fast(Duration::ZERO))
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("changed since the transaction was prepared"),
        "{error}"
    );
    assert_eq!(std::fs::read(&conf).unwrap(), b"someone else\n");
    assert_eq!(
        f.engine.status(&id("t")).await.unwrap().state,
        TxnState::Aborted
    );
}

#[tokio::test]
async fn traversal_symlinks_special_files_and_outside_paths_are_refused() {
    let f = fixture();
    let secret = f.outside.join("secret");
    write(&secret, "secret\n", 0o600);
    std::os::unix::fs::symlink(&secret, f.root.join("link.conf")).unwrap();
    std::os::unix::fs::symlink(&f.outside, f.root.join("escape")).unwrap();
    std::fs::create_dir(f.root.join("subdir")).unwrap();
    let fifo = f.root.join("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());

    let cases = [
        (path(&secret), "outside the allowlisted roots"),
        ("/etc/passwd".to_string(), "outside the allowlisted roots"),
        (path(&f.root.join("link.conf")), "symbolic link"),
        (path(&f.root.join("escape/secret")), "symlink escape"),
        (path(&f.root.join("escape/new")), "symlink escape"),
        (path(&fifo), "not a regular file"),
        (path(&f.root.join("subdir")), "not a regular file"),
        (path(&f.root.join("missing/x.conf")), "cannot be resolved"),
    ];
    for (index, (target, expected)) in cases.iter().enumerate() {
        let change = set(serde_json::json!({"files": [{"path": target, "content": "pwned\n"}]}));
        let error = f
            .engine
            .prepare(&id(&format!("t{index}")), &change)
            .await
            .unwrap_err();
        assert!(
            matches!(error, ChangeError::Refused(_)),
            "{target}: {error:?}"
        );
        assert!(error.to_string().contains(expected), "{target}: {error}");
    }
    let traversal = serde_json::from_value::<ChangeSet>(serde_json::json!({
        "files": [{"path": format!("{}/../outside/secret", path(&f.root)), "content": "x"}]
    }));
    assert!(traversal.unwrap_err().to_string().contains("'..'"));
    assert_eq!(std::fs::read(&secret).unwrap(), b"secret\n");
    assert_eq!(dir_entries(&f.outside), ["secret"]);
    assert!(
        f.engine.list().await.unwrap().is_empty(),
        "refusals leave no transaction"
    );
}

#[tokio::test]
async fn one_transaction_per_file() {
    let f = fixture();
    let conf = f.root.join("app.conf");
    write(&conf, "old\n", 0o644);
    let first = set(serde_json::json!({"files": [{"path": path(&conf), "content": "one\n"}]}));
    let second = set(serde_json::json!({"files": [
        {"path": path(&f.root.join("other.conf")), "content": "x\n"},
        {"path": path(&conf), "content": "two\n"}
    ]}));
    f.engine.prepare(&id("first"), &first).await.unwrap();
    let error = f.engine.prepare(&id("second"), &second).await.unwrap_err();
    assert!(matches!(error, ChangeError::Conflict(_)));
    assert!(
        error
            .to_string()
            .contains("part of transaction first (prepared)"),
        "{error}"
    );
    f.engine
        .commit(&id("first"), fast(Duration::from_secs(60)))
        .await
        .unwrap();
    let error = f.engine.prepare(&id("second"), &second).await.unwrap_err();
    assert!(
        error.to_string().contains("awaiting_confirmation"),
        "{error}"
    );
    f.engine.confirm(&id("first")).await.unwrap();
    f.engine.prepare(&id("second"), &second).await.unwrap();
    let duplicate = f.engine.prepare(&id("second"), &first).await.unwrap_err();
    assert!(
        duplicate.to_string().contains("part of transaction second"),
        "{duplicate}"
    );
}

#[tokio::test]
async fn two_engines_never_share_a_journal() {
    let f = fixture();
    let dir = f.root.parent().unwrap().join("state/changes");
    let error = ChangeEngine::open(LocalHost, ChangePolicy::default(), &dir)
        .err()
        .unwrap();
    assert!(error.to_string().contains("another process"), "{error}");
}

#[tokio::test]
async fn a_directory_swapped_for_a_symlink_after_prepare_is_not_written_through() {
    let f = fixture();
    let conf_d = f.root.join("conf.d");
    std::fs::create_dir(&conf_d).unwrap();
    let conf = conf_d.join("app.conf");
    write(&conf, "old\n", 0o644);
    let report = f
        .engine
        .prepare(
            &id("swap"),
            &set(serde_json::json!({"files": [{"path": path(&conf), "content": "new\n"}]})),
        )
        .await
        .unwrap();
    assert_eq!(report.state, TxnState::Prepared);
    // A local user who can write in the root swaps the directory for a link elsewhere, where
    // a file of the same name and content waits.
    std::fs::rename(&conf_d, f.root.join("conf.d.moved")).unwrap();
    std::os::unix::fs::symlink(&f.outside, &conf_d).unwrap();
    write(&f.outside.join("app.conf"), "old\n", 0o644);
    let outcome = f.engine.commit(&id("swap"), fast(Duration::ZERO)).await;
    assert!(outcome.is_err() || outcome.unwrap().state == TxnState::RolledBack);
    assert_eq!(
        std::fs::read_to_string(f.outside.join("app.conf")).unwrap(),
        "old\n",
        "nothing outside the root was written"
    );
    assert_eq!(dir_entries(&f.outside), ["app.conf"]);
}

#[tokio::test]
async fn hard_links_and_setuid_modes_are_refused() {
    let f = fixture();
    let secret = f.outside.join("shadow");
    write(&secret, "root:$6$secret-hash\n", 0o600);
    let linked = f.root.join("linked.conf");
    std::fs::hard_link(&secret, &linked).unwrap();
    let error = f
        .engine
        .prepare(
            &id("link"),
            &set(serde_json::json!({"files": [{"path": path(&linked), "content": "x\n"}]})),
        )
        .await
        .unwrap_err();
    assert!(error.to_string().contains("hard links"), "{error}");
    assert!(!error.to_string().contains("secret-hash"));
    assert_eq!(
        std::fs::read_to_string(&secret).unwrap(),
        "root:$6$secret-hash\n"
    );

    let conf = f.root.join("app.conf");
    let error = f
        .engine
        .prepare(
            &id("suid"),
            &set(serde_json::json!({"files": [{"path": path(&conf), "content": "x", "mode": "4755"}]})),
        )
        .await
        .unwrap_err();
    assert!(error.to_string().contains("setuid"), "{error}");
    // A setuid file already there is not taken over either (its mode would be kept).
    write(&conf, "x\n", 0o2755);
    let error = f
        .engine
        .prepare(
            &id("sgid"),
            &set(serde_json::json!({"files": [{"path": path(&conf), "content": "y\n"}]})),
        )
        .await
        .unwrap_err();
    assert!(error.to_string().contains("setuid or setgid"), "{error}");
    assert!(!conf.with_file_name("x").exists());
    assert_eq!(dir_entries(&f.root), ["app.conf", "linked.conf"]);
}
