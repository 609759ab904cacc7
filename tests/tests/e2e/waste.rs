//! The waste report on both backends: two weeks of rolled-up usage for an idle host, an
//! oversized one and a young one, and a Docker check round from the real engine holding an
//! idle container, a stopped one with a written layer, an unused image and an unused volume.
//! Each finding is there with its figures and saving, priced; the two backends agree; the
//! metric store's tiers are measured; bad input is a 400.

use infrastructor_controller::ctx::Ctx;
use infrastructor_controller::domain::ReportedRound;
use infrastructor_controller::services::analytics::trend::Point;
use infrastructor_controller::services::analytics::waste::rules::Prices;
use infrastructor_controller::store::IngestSample;
use infrastructor_e2e::docker::{docker_cli, engine_with_image, run, Containers, IMAGE};
use infrastructor_e2e::{controller_config, fresh_postgres_database, Backend, TestController};
use serde_json::Value;

const FIVE_MINUTES: i64 = 300_000;
const BUCKETS: i64 = 14 * 288;
const GIB: f64 = (1u64 << 30) as f64;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// What the engine holds for the report, removed when dropped.
struct DockerFixture {
    idle: String,
    stopped: String,
    image: String,
    volume: String,
    _containers: Containers,
}

impl Drop for DockerFixture {
    fn drop(&mut self) {
        let _ = docker_cli(&["rm", "-f", &self.stopped, &self.idle]);
        let _ = docker_cli(&["volume", "rm", "-f", &self.volume]);
        let _ = docker_cli(&["rmi", "-f", &self.image]);
    }
}

/// One series to store: its name, its labels (JSON) and its value in bucket `i`.
type SeriesSpec<'a> = (&'a str, String, &'a dyn Fn(i64) -> f64);

fn docker_ok(args: &[&str]) {
    let output = docker_cli(args);
    assert!(
        output.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// An idle running container, a stopped one that wrote 2 MiB, an image with 3 MiB of its own
/// that nothing runs, and a volume holding 1 MiB that nothing mounts.
fn docker_fixture() -> DockerFixture {
    let suffix = std::process::id();
    let idle = format!("ifr-waste-idle-{suffix}");
    let stopped = format!("ifr-waste-stopped-{suffix}");
    let volume = format!("ifr-waste-volume-{suffix}");
    let image = format!("ifr-waste-old:{suffix}");
    let fixture = DockerFixture {
        idle: idle.clone(),
        stopped: stopped.clone(),
        image: image.clone(),
        volume: volume.clone(),
        _containers: Containers(vec![idle.clone(), stopped.clone()]),
    };
    run(&idle, &[], &["sleep", "600"]);
    run(
        &stopped,
        &[],
        &["dd", "if=/dev/zero", "of=/junk", "bs=1M", "count=2"],
    );
    docker_ok(&["volume", "create", &volume]);
    let mount = format!("{volume}:/data");
    docker_ok(&[
        "run",
        "--rm",
        "-v",
        &mount,
        IMAGE,
        "dd",
        "if=/dev/zero",
        "of=/data/blob",
        "bs=1M",
        "count=1",
    ]);
    let context = tempfile::tempdir().unwrap();
    std::fs::write(
        context.path().join("Dockerfile"),
        format!("FROM {IMAGE}\nRUN dd if=/dev/zero of=/blob bs=1M count=3\n"),
    )
    .unwrap();
    docker_ok(&[
        "build",
        "-q",
        "-t",
        &image,
        context.path().to_str().unwrap(),
    ]);
    for _ in 0..100 {
        let state = docker_cli(&["inspect", "-f", "{{.State.Status}}", &stopped]);
        if String::from_utf8_lossy(&state.stdout).trim() == "exited" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    fixture
}

/// One sample per 5-minute bucket of the last two weeks (`buckets` of them, newest last), of
/// each `(series, labels, value)`; then every bucket rolled up.
async fn ingest(
    controller: &TestController,
    device: &str,
    buckets: i64,
    series: &[SeriesSpec<'_>],
) {
    let end = now_ms() / FIVE_MINUTES * FIVE_MINUTES;
    let mut samples = Vec::new();
    for (name, labels, value) in series {
        samples.extend((0..buckets).map(|i| {
            let point = Point {
                ts_ms: end - (buckets - i) * FIVE_MINUTES,
                value: value(i),
            };
            IngestSample {
                series: name.to_string(),
                labels: labels.clone(),
                ts_ms: point.ts_ms,
                value: point.value,
            }
        }));
    }
    let store = controller.services.store.clone();
    let device = device.to_string();
    controller
        .run(async move {
            for (seq, chunk) in samples.chunks(5000).enumerate() {
                store
                    .ingest_batch(&device, seq as u64 + 1, chunk, (0, 0), now_ms())
                    .await
                    .unwrap();
            }
            while store.run_rollups(0, 1000).await.unwrap() > 0 {}
        })
        .await;
}

fn cores(n: u32) -> Vec<SeriesSpec<'static>> {
    (0..n)
        .map(|core| {
            (
                "cpu.core_usage_percent",
                format!(r#"{{"core":"{core}"}}"#),
                &(|_| 5.0) as &dyn Fn(i64) -> f64,
            )
        })
        .collect()
}

/// "idle": 4 cores at 2-3% (a busy bucket in 50), 8 GiB, 1 KB/s on eth0 (and loopback
/// chatter, which does not count). "big": 16 cores at 4-9%, 64 GiB with 9 used, 50 MB/s, and
/// the idle container's CPU. "young": two hours of history.
async fn fleet(controller: &TestController, idle_container: &str) -> String {
    let idle = controller.unreachable_device("idle").await;
    let big = controller.unreachable_device("big").await;
    let young = controller.unreachable_device("young").await;
    let none = "{}".to_string();
    let eth0 = r#"{"interface":"eth0"}"#.to_string();
    let lo = r#"{"interface":"lo"}"#.to_string();
    let mut idle_series: Vec<SeriesSpec> = vec![
        ("cpu.usage_percent", none.clone(), &|i| {
            if i % 50 == 0 {
                30.0
            } else {
                2.0 + (i % 3) as f64 * 0.5
            }
        }),
        ("memory.total_bytes", none.clone(), &|_| 8.0 * GIB),
        ("memory.used_bytes", none.clone(), &|_| 1.5 * GIB),
        ("net.rx_bytes_per_second", eth0.clone(), &|_| 1000.0),
        ("net.tx_bytes_per_second", eth0.clone(), &|_| 800.0),
        ("net.rx_bytes_per_second", lo.clone(), &|_| 5e7),
    ];
    idle_series.extend(cores(4));
    ingest(controller, &idle, BUCKETS, &idle_series).await;

    let container = format!(r#"{{"name":"{idle_container}"}}"#);
    let mut big_series: Vec<SeriesSpec> = vec![
        ("cpu.usage_percent", none.clone(), &|i| 4.0 + (i % 6) as f64),
        ("memory.total_bytes", none.clone(), &|_| 64.0 * GIB),
        ("memory.used_bytes", none.clone(), &|_| 9.0 * GIB),
        ("net.rx_bytes_per_second", eth0.clone(), &|_| 5e7),
        ("container.cpu_percent", container.clone(), &|_| 0.05),
        ("container.memory_bytes", container, &|_| 0.25 * GIB),
    ];
    big_series.extend(cores(16));
    ingest(controller, &big, BUCKETS, &big_series).await;

    let young_series: Vec<SeriesSpec> = vec![("cpu.usage_percent", none, &|_| 1.0)];
    ingest(controller, &young, 24, &young_series).await;
    big
}

async fn report(backend: Backend, round: &ReportedRound, idle_container: &str) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let mut config = controller_config(dir.path(), &backend);
    // Its own rollups would skip history older than raw retention, racing the test's.
    config.maintenance_interval = std::time::Duration::from_secs(86_400);
    config.waste.stopped_container_age = std::time::Duration::from_secs(1);
    config.waste.prices = Prices {
        core_hour: Some(0.01),
        memory_gib_month: Some(1.0),
        storage_gib_month: Some(0.1),
        kwh: Some(0.3),
        ..Prices::default()
    };
    let controller = TestController::start(config).await;
    let big = fleet(&controller, idle_container).await;
    let services = controller.services.clone();
    let round = round.clone();
    controller
        .run(async move {
            services
                .record_check_reports(&Ctx::system("test"), &big, &round)
                .await
                .unwrap();
        })
        .await;
    let (status, body) = controller.get_json("/analytics/waste").await;
    assert_eq!(status, 200, "{body}");
    refusals(&controller).await;
    controller.shutdown().await;
    body
}

async fn refusals(controller: &TestController) {
    for (query, status, says) in [
        ("/analytics/waste?window=forever", 400, "invalid window"),
        ("/analytics/waste?window=120d", 400, "at most"),
        ("/analytics/waste?devices=nope", 404, "not found"),
        ("/analytics/waste?color=red", 400, "unknown field"),
    ] {
        let (got, body) = controller.get_json(query).await;
        assert_eq!(got, status, "{query}: {body}");
        assert!(
            body["detail"].as_str().unwrap_or_default().contains(says),
            "{query}: {body}"
        );
    }
}

fn finding<'a>(report: &'a Value, kind: &str, subject: &str) -> &'a Value {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == kind && f["subject"].as_str().unwrap().contains(subject))
        .unwrap_or_else(|| panic!("no {kind} finding about {subject}: {report:#}"))
}

/// The host and Docker findings, without the figures that move with the clock or the backend.
fn comparable(report: &Value) -> Vec<Value> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] != "metric_retention")
        .map(|f| {
            let mut f = f.clone();
            let finding = f.as_object_mut().unwrap();
            // Its own per controller.
            finding.remove("device_id");
            if finding["kind"] == "stopped_container" {
                // Stopped for seconds when this runs: age and confidence move with the clock.
                finding.remove("confidence");
                finding.remove("summary");
                finding["evidence"]
                    .as_object_mut()
                    .unwrap()
                    .remove("stopped_days");
            }
            f
        })
        .collect()
}

#[tokio::test]
async fn waste_is_found_with_its_evidence_and_saving_on_both_backends() {
    let Some(engine) = engine_with_image().await else {
        return;
    };
    let docker = docker_fixture();
    let mut round = infrastructor_hostops::checks::Round::default();
    infrastructor_hostops::checks::docker_checks(&engine, &mut round).await;
    let round = ReportedRound::from_host(&round, now_ms());

    let sqlite = report(Backend::Sqlite, &round, &docker.idle).await;
    check(&sqlite, &docker);
    assert_eq!(sqlite["metric_store"]["backend"], "sqlite");
    if let Some(url) = fresh_postgres_database().await {
        let postgres = report(Backend::Postgres(url), &round, &docker.idle).await;
        assert_eq!(postgres["metric_store"]["backend"], "postgres");
        check(&postgres, &docker);
        assert_eq!(comparable(&sqlite), comparable(&postgres));
    }
}

fn check(report: &Value, docker: &DockerFixture) {
    assert_eq!(report["window_days"], 14.0);
    assert_eq!(report["thresholds"]["idle_cpu_percent"], 5.0);
    assert_eq!(
        report["thresholds"]["idle_network_bytes_per_second"],
        2_500_000.0
    );

    let idle = finding(report, "idle_host", "idle");
    assert_eq!(idle["device"], "idle");
    assert_eq!(idle["confidence"], "high", "{idle}");
    assert!(idle["evidence"]["quiet_share"].as_f64().unwrap() >= 0.97);
    // Loopback's 50 MB/s is not traffic: eth0's 1 KB/s is.
    assert_eq!(idle["evidence"]["network_p95_bytes_per_second"], 1000.0);
    assert_eq!(idle["saving"]["cores"], 4.0);
    assert_eq!(idle["saving"]["memory_gib"], 8.0);
    // 4 × 0.01 × 730 + 8 × 1 + 29.2 kWh × 0.3
    assert_eq!(idle["saving"]["money_per_month"], 45.96, "{idle}");

    let big = finding(report, "oversized_host", "big");
    // p95 of 4-9% is 9%: 16 × 0.09 × 1.3 → 2 cores; 9 GiB × 1.3 → 12 GiB.
    assert_eq!(big["evidence"]["cores_needed"], 2.0, "{big}");
    assert_eq!(big["saving"]["cores"], 14.0);
    assert_eq!(big["saving"]["memory_gib"], 52.0);
    assert!(report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| !(f["kind"] == "idle_host" && f["device"] == "big")));

    let container = finding(report, "idle_container", &docker.idle);
    assert_eq!(container["device"], "big");
    assert_eq!(container["confidence"], "medium", "{container}");
    assert_eq!(container["saving"]["memory_gib"], 0.25);

    let stopped = finding(report, "stopped_container", &docker.stopped);
    assert!(
        stopped["saving"]["bytes"].as_u64().unwrap() >= 2 << 20,
        "its written layer: {stopped}"
    );
    let image = finding(report, "unused_images", &docker.image);
    assert!(
        image["saving"]["bytes"].as_u64().unwrap() >= 3 << 20,
        "{image}"
    );
    let volume = finding(report, "unused_volumes", &docker.volume);
    assert_eq!(volume["confidence"], "low", "volumes hold data");
    assert!(volume["saving"]["bytes"].as_u64().unwrap() >= 1 << 20);

    let not_assessed = report["not_assessed"].as_array().unwrap();
    assert_eq!(not_assessed.len(), 1, "{report:#}");
    assert_eq!(not_assessed[0]["device"], "young");
    assert!(not_assessed[0]["reason"]
        .as_str()
        .unwrap()
        .contains("2.0 hours"));

    // Biggest money first.
    let money: Vec<f64> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["saving"]["money_per_month"].as_f64())
        .collect();
    assert!(money.windows(2).all(|w| w[0] >= w[1]), "{money:?}");
    assert_eq!(report["currency"], "USD");
    assert!(report["total"]["money_per_month"].as_f64().unwrap() > 45.96 + 100.0);

    let tiers = report["metric_store"]["tiers"].as_array().unwrap();
    let names: Vec<&str> = tiers.iter().map(|t| t["tier"].as_str().unwrap()).collect();
    assert_eq!(names, ["raw", "5m", "1h"]);
    for tier in tiers {
        assert!(tier["bytes"].as_u64().unwrap() > 0, "{tier}");
        assert!(tier["held_days"].as_f64().unwrap() > 0.0, "{tier}");
    }
    assert!(tiers[1]["held_days"].as_f64().unwrap() > 13.9, "{tiers:?}");
    assert!(report["metric_store"]["database_bytes"].as_u64().unwrap() > 0);
}
