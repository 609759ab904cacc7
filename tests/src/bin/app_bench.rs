//! Application benchmark on the real Docker engine: the status of an application of
//! `--members` containers spread over three hosts — two real agents and one agentless host
//! over SSH — read through REST (one container list per host, all hosts at once; p50/p99),
//! and a start of the whole application in dependency order, its wall time next to the sum
//! of the members' own start times and to its critical path's, the difference being the
//! scheduling overhead.
//!
//!   cargo run --release -p infrastructor-e2e --bin app-bench -- --help

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use infrastructor_controller::ratelimit::RateLimit;
use infrastructor_e2e::docker::{create, docker_cli, engine_with_image, Containers};
use infrastructor_e2e::sshd::start_sshd;
use infrastructor_e2e::{agent_config, controller_config, path, temp_dir, Backend};
use infrastructor_e2e::{SequenceSource, TestAgent, TestController};
use serde_json::{json, Value};

#[derive(Parser)]
#[command(about = "Application status across hosts, and the start's scheduling overhead")]
struct Args {
    /// Members of the application, spread over the three hosts.
    #[arg(long, default_value_t = 20)]
    members: usize,
    /// Status reads timed.
    #[arg(long, default_value_t = 100)]
    status_calls: usize,
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    ms(sorted[i.min(sorted.len() - 1)])
}

/// Member `i` depends on member `(i - 1) / 2`: a binary tree, so there is parallelism at
/// every level and a critical path of log2(n) members.
fn parent(i: usize) -> Option<usize> {
    (i > 0).then(|| (i - 1) / 2)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if engine_with_image().await.is_none() {
        bail!("the Docker engine and busybox-static are needed");
    }
    let sshd = start_sshd().context("sshd is needed (openssh-server)")?;
    let dir = temp_dir();
    let mut config = controller_config(&path(&dir, "controller"), &Backend::Sqlite);
    config.rate_limit = RateLimit {
        per_second: 100_000.0,
        burst: 100_000,
    };
    let controller = TestController::start(config).await;
    let mut devices = Vec::new();
    let mut agents = Vec::new();
    for n in 0..2 {
        let state = path(&dir, &format!("agent-{n}"));
        devices.push(controller.enroll(&state).await.meta.device_id);
        let mut config = agent_config(&state, Duration::from_secs(3600));
        config.checks.interval = Duration::from_secs(3600);
        agents.push(TestAgent::start(
            config,
            Box::new(SequenceSource::new(0, 0).0),
        ));
    }
    devices.push(sshd.register(&controller, "nas").await);
    for agent in &agents {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !agent.handle.is_connected() {
            if Instant::now() > deadline {
                bail!("an agent did not connect");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    let prefix = format!("bench{}", std::process::id());
    let names: Vec<String> = (0..args.members)
        .map(|i| format!("{prefix}-m{i:02}"))
        .collect();
    let _cleanup = Containers(names.clone());
    for name in &names {
        docker_cli(&["rm", "-f", name]);
        create(name, &[], &["sleep", "3600"]);
    }
    let members: Vec<Value> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let depends: Vec<Value> = parent(i)
                .map(|p| json!({"member": format!("m{p:02}")}))
                .into_iter()
                .collect();
            json!({"name": format!("m{i:02}"), "device": devices[i % devices.len()],
                "container": name, "depends_on": depends})
        })
        .collect();
    let (status, body) = controller
        .put_body(
            &format!("/applications/{prefix}"),
            &json!({"members": members}),
        )
        .await;
    if status != 200 {
        bail!("declaring: {status} {body}");
    }

    println!(
        "application of {} members on 3 hosts (2 agents, 1 over SSH), one Docker engine",
        args.members
    );
    let status_path = format!("/applications/{prefix}");
    controller.get_json(&status_path).await;
    let mut latencies = Vec::with_capacity(args.status_calls);
    for _ in 0..args.status_calls {
        let started = Instant::now();
        let (status, view) = controller.get_json(&status_path).await;
        latencies.push(started.elapsed());
        if status != 200 {
            bail!("status: {status} {view}");
        }
    }
    latencies.sort();
    println!(
        "  status through REST (one container list per host, at once): p50 {:.1} ms | p99 {:.1} ms \
         (target <= 200 ms)",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );

    let started = Instant::now();
    let (status, run) = controller
        .post_body(
            &format!("/applications/{prefix}/actions?wait=300"),
            &json!({"action": "start"}),
        )
        .await;
    let wall = started.elapsed();
    if status != 200 || run["outcome"] != "succeeded" {
        bail!("start: {status} {run}");
    }
    let own: Vec<u64> = (0..args.members)
        .map(|i| {
            run["members"]
                .as_array()
                .and_then(|m| m.iter().find(|m| m["member"] == format!("m{i:02}")))
                .and_then(|m| m["own_ms"].as_u64())
                .unwrap_or(0)
        })
        .collect();
    let sum: u64 = own.iter().sum();
    // The critical path: the slowest chain of own times from the root to a leaf.
    let mut path_ms = vec![0u64; args.members];
    for i in 0..args.members {
        path_ms[i] = own[i] + parent(i).map_or(0, |p| path_ms[p]);
    }
    let critical = path_ms.iter().copied().max().unwrap_or(0);
    let job_ms = run["duration_ms"].as_u64().unwrap_or(0);
    println!(
        "  start in dependency order: wall {:.0} ms (job {job_ms} ms) | members' own starts: \
         sum {sum} ms, critical path {critical} ms",
        ms(wall)
    );
    // A member's own time ends when its step is recorded, after its dependants were told it
    // started: chained own times overlap a little, so the difference can be negative.
    let overhead = job_ms as i64 - critical as i64;
    println!(
        "  scheduling overhead: {overhead:+} ms against the critical path; the parallel start \
         took {:.2}x the sum of one-by-one starts",
        job_ms as f64 / sum.max(1) as f64
    );
    let (status, _) = controller
        .post_body(
            &format!("/applications/{prefix}/actions?wait=300"),
            &json!({"action": "stop", "grace_seconds": 0}),
        )
        .await;
    if status != 200 {
        bail!("stop: {status}");
    }
    for agent in agents {
        agent.stop().await;
    }
    controller.shutdown().await;
    Ok(())
}
