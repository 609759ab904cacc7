//! Database targets through the host's backup engine, with real engines: a PostgreSQL
//! database (the CI server) dumped with `pg_dump -Fc`, backed up, and drilled into a
//! throwaway cluster with invariant queries; an SQLite database copied by its online backup
//! and drilled with its integrity check. A wrong invariant fails the drill and says why.

// Test code: unwrap() is how a test says "this must hold".
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use infrastructor_hostops::backup::source::{DatabaseName, PostgresSource};
use infrastructor_hostops::backup::{self, BackupAnswer, BackupPolicy, BackupRequest};
use infrastructor_hostops::backup::{Invariant, SecretFile, Source, TargetSpec};
use infrastructor_hostops::checks::LocalRunner;
use infrastructor_hostops::names::{AccountName, ManagedPath};
use infrastructor_hostops::restic::{Repository, SnapshotId, TargetName};

fn required(what: &str) {
    assert!(
        std::env::var("INFRASTRUCTOR_REQUIRE_SERVICES").as_deref() != Ok("1"),
        "{what} is required (INFRASTRUCTOR_REQUIRE_SERVICES=1)"
    );
    eprintln!("skipping: {what} is not available");
}

fn available(program: &str, arg: &str) -> bool {
    let present = Command::new(program)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        required(program);
    }
    present
}

fn managed(path: &std::path::Path) -> ManagedPath {
    ManagedPath::new(path.to_str().unwrap()).unwrap()
}

/// A policy whose every directory is below `root`, with the password file in place.
fn policy(root: &std::path::Path) -> BackupPolicy {
    let passwords = root.join("passwords");
    std::fs::create_dir_all(&passwords).unwrap();
    std::fs::write(passwords.join("main"), "drill password\n").unwrap();
    let scratch = root.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    BackupPolicy {
        sources: vec![managed(root)],
        password_dir: managed(&passwords),
        scratch: managed(&scratch),
        staging: managed(&root.join("staging")),
        ..BackupPolicy::default()
    }
}

fn target(
    root: &std::path::Path,
    name: &str,
    source: Source,
    invariants: &[(&str, u64)],
) -> TargetSpec {
    TargetSpec {
        name: TargetName::new(name).unwrap(),
        repository: Repository::Local {
            path: root.join("repo").to_str().unwrap().into(),
        },
        password: SecretFile::new("main").unwrap(),
        source,
        invariants: invariants
            .iter()
            .map(|(table, min)| Invariant {
                table: table.to_string(),
                min_rows: Some(*min),
                max_rows: None,
            })
            .collect(),
    }
}

async fn back_up_and_drill(policy: &BackupPolicy, target: &TargetSpec) -> backup::DrillReport {
    let request = BackupRequest::Backup {
        target: target.clone(),
        keep: None,
    };
    let BackupAnswer::Backup(done) = backup::execute(&LocalRunner, policy, &request)
        .await
        .unwrap()
    else {
        panic!("not a backup answer")
    };
    assert!(done.initialized);
    let drill = BackupRequest::Drill {
        target: target.clone(),
        snapshot: SnapshotId::new("latest").unwrap(),
    };
    match backup::execute(&LocalRunner, policy, &drill).await.unwrap() {
        BackupAnswer::Drill(report) => {
            assert!(report.snapshot.starts_with(&done.summary.snapshot_id));
            report
        }
        other => panic!("not a drill: {other:?}"),
    }
}

/// The newest PostgreSQL server binaries Debian installed.
fn postgres_bin() -> Option<ManagedPath> {
    let mut versions: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    versions.sort();
    ManagedPath::new(&format!("/usr/lib/postgresql/{}/bin", versions.last()?)).ok()
}

struct Server {
    host: String,
    port: u16,
    user: String,
    password: String,
}

fn server() -> Option<Server> {
    let url = std::env::var("INFRASTRUCTOR_TEST_POSTGRES_URL").ok()?;
    let rest = url.strip_prefix("postgres://")?;
    let (credentials, address) = rest.split_once('@')?;
    let (user, password) = credentials.split_once(':')?;
    let address = address.split('/').next()?;
    let (host, port) = address.split_once(':').unwrap_or((address, "5432"));
    Some(Server {
        host: host.into(),
        port: port.parse().ok()?,
        user: user.into(),
        password: password.into(),
    })
}

fn psql(server: &Server, database: &str, sql: &str) {
    let url = format!(
        "postgres://{}:{}@{}:{}/{database}",
        server.user, server.password, server.host, server.port
    );
    let out = Command::new("psql")
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-q", &url, "-c", sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_postgres_dump_is_drilled_in_a_throwaway_cluster_with_invariant_queries() {
    let (Some(server), Some(bin)) = (server(), postgres_bin()) else {
        required("PostgreSQL (INFRASTRUCTOR_TEST_POSTGRES_URL and its server binaries)");
        return;
    };
    if !available("restic", "version") || !available("pg_dump", "--version") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let mut policy = policy(root.path());
    policy.postgres_bin = bin;
    // The drill cluster runs as the postgres account, which must reach its directories.
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let database = format!("drill_{}", std::process::id());
    psql(
        &server,
        "postgres",
        &format!("DROP DATABASE IF EXISTS {database}"),
    );
    psql(&server, "postgres", &format!("CREATE DATABASE {database}"));
    psql(
        &server,
        &database,
        "CREATE SCHEMA shop; CREATE TABLE shop.orders (id int PRIMARY KEY, total numeric); \
         INSERT INTO shop.orders SELECT g, g * 1.5 FROM generate_series(1, 250) g; \
         CREATE TABLE customers (name text); INSERT INTO customers VALUES ('ada'), ('bob');",
    );
    let passfile = root.path().join("passwords/shop.pgpass");
    std::fs::write(
        &passfile,
        format!(
            "{}:{}:*:{}:{}\n",
            server.host, server.port, server.user, server.password
        ),
    )
    .unwrap();
    std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o600)).unwrap();
    let source = Source::Postgres(PostgresSource {
        host: server.host.clone(),
        port: server.port,
        user: AccountName::new(&server.user).unwrap(),
        database: DatabaseName::new(&database).unwrap(),
        passfile: Some(SecretFile::new("shop.pgpass").unwrap()),
        with: Vec::new(),
    });
    let good = target(
        root.path(),
        "shop-db",
        source.clone(),
        &[("shop.orders", 250), ("customers", 1)],
    );
    let report = back_up_and_drill(&policy, &good).await;
    assert!(report.passed, "{report:#?}");
    let opened = report.database.as_ref().unwrap();
    assert!(opened.started);
    assert_eq!(opened.invariants[0].rows, Some(250));
    assert_eq!(opened.invariants[1].rows, Some(2));
    assert_eq!(
        report.files_expected, 1,
        "the dump is the snapshot's one file"
    );

    // Bounds the data does not meet, and a table that is not there, fail the drill.
    let strict = target(
        root.path(),
        "shop-db",
        source,
        &[("shop.orders", 1000), ("shop.invoices", 1)],
    );
    let drill = BackupRequest::Drill {
        target: strict,
        snapshot: SnapshotId::new("latest").unwrap(),
    };
    let BackupAnswer::Drill(failed) = backup::execute(&LocalRunner, &policy, &drill)
        .await
        .unwrap()
    else {
        panic!("not a drill")
    };
    assert!(!failed.passed);
    let opened = failed.database.unwrap();
    assert_eq!(
        opened.invariants[0].problem.as_deref(),
        Some("250 rows, fewer than 1000")
    );
    assert_eq!(opened.invariants[1].rows, None);
    assert!(opened.invariants[1]
        .problem
        .as_deref()
        .unwrap()
        .contains("does not exist"));
    let left: Vec<_> = std::fs::read_dir(root.path().join("scratch"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "the throwaway clusters are gone");
    let staged = root
        .path()
        .join("staging/shop-db")
        .join(format!("{database}.dump"));
    assert!(
        !staged.exists(),
        "the staged dump is removed after the backup"
    );
    psql(&server, "postgres", &format!("DROP DATABASE {database}"));
}

#[tokio::test]
async fn an_sqlite_database_is_copied_online_and_drilled_with_its_integrity_check() {
    if !available("restic", "version") || !available("sqlite3", "-version") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let policy = policy(root.path());
    let db = root.path().join("app.sqlite");
    let made = Command::new("sqlite3")
        .arg(&db)
        .arg(
            "PRAGMA journal_mode=WAL; CREATE TABLE notes (body TEXT); \
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40) \
             INSERT INTO notes SELECT 'note ' || i FROM n;",
        )
        .output()
        .unwrap();
    assert!(made.status.success());
    // Its keys go with it, as a controller's CA goes with its database.
    let keys = root.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::write(keys.join("ca-key.pem"), "-----BEGIN PRIVATE KEY-----\n").unwrap();
    let source = Source::Sqlite {
        path: managed(&db),
        with: vec![managed(&keys)],
    };
    let report = back_up_and_drill(
        &policy,
        &target(root.path(), "notes", source, &[("notes", 40)]),
    )
    .await;
    assert!(report.passed, "{report:#?}");
    assert_eq!(
        report.files_expected, 2,
        "the copy and the key: {report:#?}"
    );
    let opened = report.database.unwrap();
    assert_eq!((opened.engine.as_str(), opened.started), ("sqlite", true));
    assert_eq!(opened.invariants[0].rows, Some(40));
}
