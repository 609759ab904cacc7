//! restic itself (Debian's package), driven by the same argv builders and parsers the agent
//! uses: a local repository initialised with a password file, a directory backed up and
//! listed, restored elsewhere and compared byte for byte with what the repository holds
//! (`dump`), retention applied, and a corrupted pack found by `check`.

// Test code: unwrap() is how a test says "this must hold".
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use infrastructor_hostops::backup::drill_directory;
use infrastructor_hostops::names::ManagedPath;
use infrastructor_hostops::restic::{self, Keep, NodeKind, Repository, SnapshotId, TargetName};

const TIMEOUT: Duration = Duration::from_secs(60);

fn restic_available() -> bool {
    let present = std::process::Command::new("restic")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        assert!(
            std::env::var("INFRASTRUCTOR_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "restic is required (INFRASTRUCTOR_REQUIRE_SERVICES=1)"
        );
        eprintln!("skipping: restic is not installed");
    }
    present
}

fn managed(path: &std::path::Path) -> ManagedPath {
    ManagedPath::new(path.to_str().unwrap()).unwrap()
}

#[tokio::test]
async fn a_directory_is_backed_up_restored_to_the_same_bytes_and_corruption_is_found() {
    if !restic_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("etc-app");
    std::fs::create_dir_all(source.join("conf.d")).unwrap();
    std::fs::write(source.join("app.conf"), "listen 8080\n").unwrap();
    std::fs::write(source.join("conf.d/tls.conf"), vec![7u8; 300_000]).unwrap();
    let password = dir.path().join("password");
    std::fs::write(&password, "correct horse battery staple\n").unwrap();
    let password = managed(&password);
    let repo = Repository::Local {
        path: dir.path().join("repo").to_str().unwrap().into(),
    }
    .checked()
    .unwrap();
    let target = TargetName::new("etc-app").unwrap();

    let run = |command: infrastructor_hostops::command::HostCommand| async move {
        command.run(TIMEOUT).await.unwrap()
    };
    let missing = run(restic::snapshots(&repo, &password, &target)).await;
    assert_eq!(
        restic::classify(&missing.stderr),
        restic::ResticError::NoRepository
    );
    assert_eq!(run(restic::init(&repo, &password)).await.code, Some(0));
    let backup = run(restic::backup(
        &repo,
        &password,
        &target,
        &[managed(&source)],
    ))
    .await;
    assert_eq!(backup.code, Some(0), "{}", backup.stderr);
    let summary = restic::parse_backup(&backup.stdout).unwrap();
    assert_eq!(summary.files_new, 2);
    let listed = run(restic::snapshots(&repo, &password, &target)).await;
    let snapshots = restic::parse_snapshots(&listed.stdout).unwrap();
    assert_eq!(snapshots.len(), 1);
    assert!(snapshots[0].tags.contains(&"target=etc-app".to_string()));
    assert_eq!(snapshots[0].short_id, summary.snapshot_id);

    // The manifest, the restore, and the bytes the repository holds.
    let snapshot = SnapshotId::new(&summary.snapshot_id).unwrap();
    let nodes =
        restic::parse_ls(&run(restic::ls(&repo, &password, &snapshot)).await.stdout).unwrap();
    let files: Vec<_> = nodes.iter().filter(|n| n.kind == NodeKind::File).collect();
    assert_eq!(files.len(), 2);
    let into = dir.path().join("drill");
    std::fs::create_dir_all(&into).unwrap();
    let restored = run(restic::restore(
        &repo,
        &password,
        &snapshot,
        &managed(&into),
    ))
    .await;
    assert_eq!(restored.code, Some(0), "{}", restored.stderr);
    for file in files {
        let here = into.join(file.path.trim_start_matches('/'));
        let bytes = std::fs::read(&here).unwrap();
        assert_eq!(Some(bytes.len() as u64), file.size, "{}", file.path);
        let held = run(restic::dump(
            &repo,
            &password,
            &snapshot,
            &ManagedPath::new(&file.path).unwrap(),
        ))
        .await;
        assert_eq!(held.stdout.as_bytes(), bytes.as_slice(), "{}", file.path);
    }

    // The drill: restored into scratch, verified, compared with the manifest, removed.
    let scratch = dir.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let runner = infrastructor_hostops::checks::LocalRunner;
    let report = drill_directory(&runner, &repo, &password, &snapshot, &managed(&scratch))
        .await
        .unwrap();
    assert!(report.passed, "{report:?}");
    assert_eq!((report.files_expected, report.files_verified), (2, 2));
    assert_eq!(report.bytes_restored, 300_012);
    assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0, "torn down");

    // Retention keeps the newest of the day.
    std::fs::write(source.join("app.conf"), "listen 8081\n").unwrap();
    run(restic::backup(
        &repo,
        &password,
        &target,
        &[managed(&source)],
    ))
    .await;
    let keep = Keep {
        daily: 1,
        weekly: 0,
        monthly: 0,
    };
    let forgot = run(restic::forget(&repo, &password, &target, keep)).await;
    assert_eq!(forgot.code, Some(0), "{}", forgot.stderr);
    let forgot = restic::parse_forget(&forgot.stdout).unwrap();
    assert_eq!((forgot.kept, forgot.removed), (1, 1));

    // A sound repository checks out; one with a damaged pack does not, and says so.
    let checked = run(restic::check(&repo, &password, 1, 1)).await;
    assert!(
        restic::parse_check(
            &format!("{}{}", checked.stdout, checked.stderr),
            checked.code
        )
        .ok
    );
    let packs = dir.path().join("repo/data");
    // Every pack, data and tree alike (which one a directory lists first varies): restic
    // itself may crash on a damaged tree, and the drill must still say "failed", not error.
    let packs: Vec<_> = std::fs::read_dir(&packs)
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
    let checked = run(restic::check(&repo, &password, 1, 1)).await;
    let verdict = restic::parse_check(
        &format!("{}{}", checked.stdout, checked.stderr),
        checked.code,
    );
    assert!(!verdict.ok, "{verdict:?}");
    assert!(!verdict.problems.is_empty(), "{verdict:?}");

    let latest = SnapshotId::new("latest").unwrap();
    let report = drill_directory(&runner, &repo, &password, &latest, &managed(&scratch))
        .await
        .unwrap();
    assert!(
        !report.passed,
        "a damaged repository fails its drill: {report:?}"
    );
    assert!(!report.problems.is_empty(), "{report:?}");
    assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0, "torn down");

    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "nope\n").unwrap();
    let denied = run(restic::snapshots(&repo, &managed(&wrong), &target)).await;
    assert_eq!(
        restic::classify(&denied.stderr),
        restic::ResticError::WrongPassword
    );
}
