//! Backups against real components: a restic repository on another host over SFTP — the test
//! sshd, its host key pinned in a known_hosts file — made, written to, listed and drilled with
//! the agent's own argv builders, parsers and drill; and a host key that does not match
//! refused.

use std::time::Duration;

use infrastructor_e2e::sshd::{current_user, start_sshd};
use infrastructor_hostops::backup::drill_directory;
use infrastructor_hostops::checks::LocalRunner;
use infrastructor_hostops::names::ManagedPath;
use infrastructor_hostops::restic::{self, Repository, SnapshotId, TargetName};

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
