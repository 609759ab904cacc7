//! Parsers on realistic captured output (tests/fixtures/): the same parsers the controller's
//! SSH driver uses, so these cover both sides.

// Test code: unwrap() is how a test says "this must hold".
#![allow(clippy::unwrap_used)]

use infrastructor_hostops::journal::{self, Pattern};
use infrastructor_hostops::systemd;
use infrastructor_hostops::zfs::{self, Scan};
use infrastructor_hostops::CheckStatus;
use time::macros::datetime;

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}

const NOW: time::PrimitiveDateTime = datetime!(2025-11-24 12:00:00);

#[test]
fn online_pool_with_recent_scrub_is_ok() {
    let pools = zfs::parse_zpool_status(&fixture("zpool-status-online.txt"));
    assert_eq!(pools.len(), 1);
    let pool = &pools[0];
    assert_eq!(
        (pool.name.as_str(), pool.state.as_str()),
        ("tank", "ONLINE")
    );
    assert_eq!(pool.vdevs.len(), 4);
    assert_eq!(
        (pool.vdevs[1].name.as_str(), pool.vdevs[1].depth),
        ("mirror-0", 1)
    );
    assert_eq!(pool.vdevs[2].depth, 2);
    assert_eq!(
        pool.scan,
        Scan::ScrubFinished {
            repaired: "0B".into(),
            errors: 0,
            finished_at: Some("Sun Nov 9 00:36:35 2025".into())
        }
    );
    assert_eq!(zfs::scrub_age_days(&pool.scan, NOW), Some(15));
    let report = zfs::check_pool(pool, None, NOW);
    assert_eq!(report.status, CheckStatus::Ok, "{}", report.message);
}

#[test]
fn degraded_pool_with_faulted_disk_is_critical() {
    let pool = &zfs::parse_zpool_status(&fixture("zpool-status-degraded.txt"))[0];
    assert_eq!(pool.state, "DEGRADED");
    assert!(pool
        .status
        .as_deref()
        .unwrap()
        .contains("continue functioning in a degraded state"));
    let faulted = pool.vdevs.iter().find(|v| v.name == "sdb").unwrap();
    assert_eq!(
        (
            faulted.state.as_str(),
            faulted.read_errors,
            faulted.write_errors
        ),
        ("FAULTED", 3, 47)
    );
    assert_eq!(faulted.note.as_deref(), Some("too many errors"));
    let report = zfs::check_pool(pool, None, NOW);
    assert_eq!(report.status, CheckStatus::Critical);
    assert!(
        report.message.contains("sdb is FAULTED"),
        "{}",
        report.message
    );
    assert!(
        report.message.contains("last scrub 43 days ago"),
        "{}",
        report.message
    );
}

#[test]
fn scrub_in_progress_reports_progress() {
    let pool = &zfs::parse_zpool_status(&fixture("zpool-status-scrubbing.txt"))[0];
    assert_eq!(
        pool.scan,
        Scan::ScrubInProgress {
            percent_done: Some(22.35),
            since: "Mon Nov 24 02:00:01 2025".into()
        }
    );
    assert_eq!(zfs::check_pool(pool, None, NOW).status, CheckStatus::Ok);
}

#[test]
fn resilver_is_tracked() {
    let pool = &zfs::parse_zpool_status(&fixture("zpool-status-resilvering.txt"))[0];
    assert!(
        matches!(pool.scan, Scan::ResilverInProgress { percent_done: Some(p), .. } if (p - 21.73).abs() < 1e-9)
    );
    let replacing = pool.vdevs.iter().find(|v| v.name == "sde").unwrap();
    assert_eq!(
        (replacing.depth, replacing.note.as_deref()),
        (3, Some("(resilvering)"))
    );
    let report = zfs::check_pool(pool, None, NOW);
    assert_eq!(report.status, CheckStatus::Critical);
    assert!(
        report
            .message
            .contains("resilver in progress (21.73% done)"),
        "{}",
        report.message
    );
}

#[test]
fn checksum_and_data_errors_are_reported() {
    let pool = &zfs::parse_zpool_status(&fixture("zpool-status-checksum.txt"))[0];
    assert_eq!(
        pool.vdevs
            .iter()
            .find(|v| v.name == "sdb")
            .unwrap()
            .checksum_errors,
        12
    );
    assert_eq!(pool.data_errors, 2);
    assert!(pool.action.as_deref().unwrap().contains("zpool replace"));
    let report = zfs::check_pool(pool, None, NOW);
    assert_eq!(report.status, CheckStatus::Critical);
    assert!(report.message.contains("checksum 12"), "{}", report.message);
    assert!(
        report.message.contains("2 permanent data errors"),
        "{}",
        report.message
    );
}

#[test]
fn several_pools_at_once() {
    let pools = zfs::parse_zpool_status(&fixture("zpool-status-multiple.txt"));
    let names: Vec<&str> = pools.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["tank", "backup", "rpool"]);
    assert_eq!(pools[2].scan, Scan::None);
    assert_eq!(pools[2].vdevs.len(), 2);
    assert!(zfs::check_pool(&pools[2], None, NOW)
        .message
        .contains("never scrubbed"));
}

#[test]
fn zpool_list_gives_exact_sizes_and_capacity_verdicts() {
    let usage = zfs::parse_zpool_list(&fixture("zpool-list.txt")).unwrap();
    assert_eq!(usage.len(), 3);
    assert_eq!(usage[0].size_bytes, 3_985_729_650_688);
    assert_eq!(usage[0].fragmentation_percent, Some(12.0));
    assert_eq!(usage[2].fragmentation_percent, None, "'-' means unknown");
    assert_eq!(usage[1].capacity_percent, 87.0);
    let tank = &zfs::parse_zpool_status(&fixture("zpool-status-online.txt"))[0];
    let mut full = usage[0].clone();
    full.capacity_percent = 85.0;
    assert_eq!(
        zfs::check_pool(tank, Some(&full), NOW).status,
        CheckStatus::Warning
    );
    full.capacity_percent = 95.0;
    assert_eq!(
        zfs::check_pool(tank, Some(&full), NOW).status,
        CheckStatus::Critical
    );
    assert!(zfs::parse_zpool_list("tank\t1\t2\n").is_err());
    assert!(zfs::parse_zpool_list("tank\tbig\t1\t1\t1\t1\tONLINE\n").is_err());
}

#[test]
fn systemctl_failed_units_and_watched_units() {
    let failed = systemd::parse_failed_units(&fixture("systemctl-failed.txt"));
    assert_eq!(failed.len(), 2);
    assert_eq!(failed[1].unit, "backup@nightly.service");
    assert_eq!(
        failed[0].description,
        "A high performance web server and a reverse proxy server"
    );
    assert!(systemd::parse_failed_units(&fixture("systemctl-none-failed.txt")).is_empty());
    assert_eq!(
        systemd::parse_failed_units("● nginx.service loaded failed failed web\n")[0].unit,
        "nginx.service"
    );

    let watched = systemd::parse_show(&fixture("systemctl-show.txt"));
    assert_eq!(watched.len(), 3);
    assert_eq!(watched[1].id, "postgresql@15-main.service");
    assert_eq!(watched[1].active_state, "failed");
    let report = systemd::check_units(&[], &watched);
    assert_eq!(report.status, CheckStatus::Critical);
    assert!(
        report
            .message
            .contains("postgresql@15-main.service is failed"),
        "{}",
        report.message
    );
    assert!(
        report.message.contains("nosuch.service does not exist"),
        "{}",
        report.message
    );
    let healthy = systemd::check_units(&[], &watched[..1]);
    assert_eq!(healthy.status, CheckStatus::Ok, "{}", healthy.message);
}

#[test]
fn journal_lines_are_scanned_with_patterns() {
    let text = fixture("journal.jsonl");
    let entry = journal::parse_journal_line(text.lines().nth(1).unwrap()).unwrap();
    assert_eq!(
        (entry.priority, entry.unit.as_deref()),
        (Some(3), Some("nginx.service"))
    );
    assert_eq!(entry.timestamp_us, Some(1_795_510_001_123_456));
    let binary = journal::parse_journal_line(text.lines().nth(3).unwrap()).unwrap();
    assert!(
        binary.message.starts_with("ERROR binary"),
        "byte-array messages are decoded"
    );

    let scan = journal::scan(&text, true, &journal::default_patterns());
    assert_eq!((scan.lines, scan.unparsable_lines), (7, 1));
    assert_eq!(scan.hits["error"].count, 3, "{:?}", scan.hits);
    assert_eq!(scan.hits["oom"].count, 1);
    assert_eq!(scan.hits["critical"].count, 1);
    assert!(scan.hits["oom"].samples[0].contains("Killed process 4242"));
    let report = journal::check_logs("journal", &scan);
    assert_eq!(report.status, CheckStatus::Critical);

    let custom = [Pattern::new("upstream", "connect\\(\\) failed").unwrap()];
    let scan = journal::scan("plain line\nconnect() failed (111)\n", false, &custom);
    assert_eq!(scan.hits["upstream"].count, 1);
    assert_eq!(
        journal::check_logs("/var/log/app.log", &scan).status,
        CheckStatus::Warning
    );
    assert!(Pattern::new("bad", "(").is_err());
}

#[test]
fn docker_disk_usage_lists_what_nothing_uses() {
    use infrastructor_hostops::docker_disk;
    // `GET /system/df` from a real engine: an image in use, a dangling one, an unused tagged
    // one, an orphaned 3 MiB volume and a volume a stopped container mounts.
    let df: bollard::models::SystemDataUsageResponse =
        serde_json::from_str(&fixture("docker_system_df.json")).unwrap();
    let usage = docker_disk::summarize(&df);
    assert_eq!(usage.images_bytes, 4_985_472 + 3_985_472 + 1_985_472);
    let unused: Vec<(&str, bool, u64)> = usage
        .unused_images
        .iter()
        .map(|i| {
            (
                i.tags.first().map_or("", String::as_str),
                i.dangling,
                i.unique_bytes,
            )
        })
        .collect();
    assert_eq!(
        unused,
        [("infra-old:1", false, 3_000_000), ("", true, 2_000_000)]
    );
    assert_eq!(usage.reclaimable.images_bytes, 5_000_000);
    assert_eq!(usage.unused_volumes.len(), 1);
    assert_eq!(usage.unused_volumes[0].name, "orphan");
    assert_eq!(usage.reclaimable.volumes_bytes, 3 << 20);
    let report = docker_disk::check(&usage);
    assert_eq!(
        (report.check.as_str(), report.status),
        ("docker.disk", CheckStatus::Ok)
    );
    assert!(
        report
            .message
            .contains("2 unused images, 1 unused volumes, 1 stopped containers"),
        "{}",
        report.message
    );
    assert_eq!(report.evidence["unused_volumes"][0]["bytes"], 3 << 20);
    // The one container never ran: listed as stopped, with an empty writable layer.
    let stopped = &usage.stopped_containers;
    assert_eq!(stopped.len(), 1);
    assert_eq!(
        (stopped[0].name.as_str(), stopped[0].state.as_str()),
        ("stopped-app", "created")
    );
    assert_eq!(stopped[0].image, "infrastructor-test-busybox:latest");
    assert_eq!(usage.reclaimable.containers_bytes, 0);
}

#[test]
fn restic_backup_snapshots_ls_stats_and_forget_are_read_from_captured_json() {
    use infrastructor_hostops::restic::{self, NodeKind};
    let summary = restic::parse_backup(&fixture("restic/backup.jsonl")).unwrap();
    assert_eq!(summary.snapshot_id, "3745e56f");
    assert_eq!(
        (
            summary.files_new,
            summary.files_changed,
            summary.files_unmodified
        ),
        (0, 1, 3)
    );
    assert_eq!(summary.total_bytes_processed, 6015);
    let snapshots = restic::parse_snapshots(&fixture("restic/snapshots.json")).unwrap();
    assert_eq!(snapshots.len(), 2);
    assert_eq!(snapshots[1].short_id, "3745e56f");
    assert_eq!(snapshots[0].tags, ["infrastructor", "target=etc"]);
    assert!(snapshots[1].time_ms().unwrap() > snapshots[0].time_ms().unwrap());
    let nodes = restic::parse_ls(&fixture("restic/ls.jsonl")).unwrap();
    let files: Vec<_> = nodes.iter().filter(|n| n.kind == NodeKind::File).collect();
    assert_eq!(files.len(), 4);
    assert!(files
        .iter()
        .any(|n| n.path == "/tmp/rx/src/f1.bin" && n.size == Some(2002)));
    assert!(nodes
        .iter()
        .any(|n| n.kind == NodeKind::Dir && n.path == "/tmp/rx/src/sub"));
    let stats = restic::parse_stats(&fixture("restic/stats.json")).unwrap();
    assert_eq!(stats.total_file_count, 8, "four files and four directories");
    let forget = restic::parse_forget(&fixture("restic/forget.json")).unwrap();
    assert_eq!((forget.kept, forget.removed), (1, 1));
}

#[test]
fn restic_check_tells_a_sound_repository_from_a_corrupted_pack_and_a_lock() {
    use infrastructor_hostops::restic;
    let ok = restic::parse_check(&fixture("restic/check-ok.txt"), Some(0));
    assert!(ok.ok && ok.problems.is_empty(), "{ok:?}");
    let corrupt = restic::parse_check(&fixture("restic/check-corrupt.txt"), Some(1));
    assert!(!corrupt.ok);
    assert!(
        corrupt.problems[0].starts_with("Pack ID does not match"),
        "{corrupt:?}"
    );
    assert!(corrupt
        .problems
        .iter()
        .any(|p| p == "Fatal: repository contains errors"));
    let locked = restic::parse_check(&fixture("restic/locked.txt"), Some(1));
    assert!(!locked.ok);
    assert!(matches!(
        restic::classify(&fixture("restic/locked.txt")),
        restic::ResticError::Locked(_)
    ));
    assert_eq!(
        restic::classify(&fixture("restic/wrong-password.txt")),
        restic::ResticError::WrongPassword
    );
    assert_eq!(
        restic::classify(&fixture("restic/no-repo.txt")),
        restic::ResticError::NoRepository
    );
}
