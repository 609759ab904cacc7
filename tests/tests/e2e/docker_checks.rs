//! Docker checks against the real engine, with a tiny image built here (`FROM scratch` plus
//! Debian's static busybox): healthy, unhealthy, exited-non-zero and restarting containers.

use std::time::Duration;

use infrastructor_e2e::docker::{engine_with_image, run, Containers, IMAGE};
use infrastructor_hostops::docker::{self, ContainerInfo};
use infrastructor_hostops::names::ContainerName;
use infrastructor_hostops::CheckStatus;

fn find<'a>(containers: &'a [ContainerInfo], name: &str) -> &'a ContainerInfo {
    containers
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("{name} not listed"))
}

#[tokio::test]
async fn container_states_health_and_metrics_from_the_real_engine() {
    let Some(docker) = engine_with_image().await else {
        return;
    };
    let suffix = std::process::id();
    let names: Vec<String> = ["healthy", "unhealthy", "crashed", "flapping"]
        .iter()
        .map(|n| format!("ifr-{n}-{suffix}"))
        .collect();
    let _cleanup = Containers(names.clone());
    let health = |cmd: &'static str| {
        [
            "--health-cmd",
            cmd,
            "--health-interval",
            "1s",
            "--health-retries",
            "1",
            "--health-timeout",
            "2s",
        ]
    };
    run(&names[0], &health("true"), &["sleep", "600"]);
    run(&names[1], &health("false"), &["sleep", "600"]);
    run(&names[2], &[], &["sh", "-c", "exit 3"]);
    run(
        &names[3],
        &["--restart", "always"],
        &["sh", "-c", "sleep 0.2; exit 1"],
    );

    let mut containers = Vec::new();
    for _ in 0..120 {
        containers = docker::list_containers(&docker).await.unwrap();
        let settled = find(&containers, &names[0]).health.as_deref() == Some("healthy")
            && find(&containers, &names[1]).health.as_deref() == Some("unhealthy")
            && find(&containers, &names[2]).state == "exited"
            && find(&containers, &names[3]).restart_count > 0;
        if settled {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let healthy = find(&containers, &names[0]);
    assert_eq!(
        (healthy.state.as_str(), healthy.health.as_deref()),
        ("running", Some("healthy"))
    );
    assert_eq!(healthy.image, IMAGE);
    assert!(healthy.uptime_seconds.is_some());
    assert_eq!(healthy.stopped_seconds, None);
    assert_eq!(
        find(&containers, &names[1]).health.as_deref(),
        Some("unhealthy")
    );
    let crashed = find(&containers, &names[2]);
    assert_eq!(
        (crashed.state.as_str(), crashed.exit_code),
        ("exited", Some(3))
    );
    // Exited moments ago: stopped for seconds, not since the zero time.
    assert!(
        crashed.stopped_seconds.is_some_and(|s| s < 600),
        "{crashed:?}"
    );
    assert!(find(&containers, &names[3]).restart_count > 0);

    let ours: Vec<ContainerInfo> = containers
        .iter()
        .filter(|c| names.contains(&c.name))
        .cloned()
        .collect();
    let report = docker::check_containers(&ours);
    assert_eq!(report.status, CheckStatus::Critical);
    assert!(
        report
            .message
            .contains(&format!("{} is unhealthy", names[1])),
        "{}",
        report.message
    );
    assert!(
        report
            .message
            .contains(&format!("{} exited with code 3", names[2])),
        "{}",
        report.message
    );
    assert!(
        report
            .message
            .contains(&format!("{} is restarting", names[3])),
        "{}",
        report.message
    );
    assert!(
        !report.message.contains(&format!("{} ", names[0])),
        "the healthy one is not flagged: {}",
        report.message
    );
    assert_eq!(docker::check_containers(&ours[..0]).status, CheckStatus::Ok);

    let by_name = docker::inspect_container(&docker, &ContainerName::new(&names[0]).unwrap())
        .await
        .unwrap();
    assert_eq!(by_name.name, names[0]);

    let samples = docker::container_metrics(&docker, std::slice::from_ref(healthy)).await;
    let series: Vec<&str> = samples.iter().map(|s| s.series.as_str()).collect();
    assert!(series.contains(&"container.cpu_percent"), "{series:?}");
    assert!(series.contains(&"container.memory_bytes"), "{series:?}");
    assert!(samples
        .iter()
        .all(|s| s.labels.get("name") == Some(&names[0])));

    // What the engine keeps on disk: the test image is in use by the containers above.
    let usage = infrastructor_hostops::docker_disk::disk_usage(&docker)
        .await
        .unwrap();
    assert!(usage.images_bytes > 0, "{usage:?}");
    assert!(
        usage
            .unused_images
            .iter()
            .all(|i| !i.tags.iter().any(|t| t.starts_with(IMAGE))),
        "an image in use is not reclaimable: {usage:?}"
    );
    assert!(
        usage
            .stopped_containers
            .iter()
            .any(|c| c.name == names[2] && c.state == "exited"),
        "the crashed container is stopped: {usage:?}"
    );
    let report = infrastructor_hostops::docker_disk::check(&usage);
    assert_eq!(report.check, "docker.disk");
    assert!(
        report.evidence["reclaimable"]["images_bytes"].is_u64(),
        "{}",
        report.evidence
    );
}
