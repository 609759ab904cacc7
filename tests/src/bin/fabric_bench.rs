//! Fabric benchmark: what the shared stack costs per request. A real controller on loopback
//! with a fleet of registered devices (each with an hour of metrics) answers `list_devices`
//! over REST and as an MCP tool (authentication, rate limit, timing, cache on every call); then the service call alone
//! with a cache hit and with a miss, and the rate limiter alone. Printed as requests per
//! second and latency percentiles, in process and, with `--redis`, through Redis.
//!
//!   cargo run --release -p infrastructor-e2e --bin fabric-bench -- --help

use std::time::{Duration, Instant};

use clap::Parser;
use infrastructor_controller::cache::key;
use infrastructor_controller::ctx::Ctx;
use infrastructor_controller::ratelimit::RateLimit;
use infrastructor_controller::services::devices::{CreateAgentlessDevice, SUMMARY_SERIES};
use infrastructor_controller::store::IngestSample;
use infrastructor_e2e::mcp::{call, connect};
use infrastructor_e2e::{controller_config, path, temp_dir, Backend, TestController};
use serde_json::json;

#[derive(Parser)]
#[command(about = "Requests per second and latency through the REST and MCP stack")]
struct Args {
    /// Requests per measurement.
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// Devices registered (the size of each list answer).
    #[arg(long, default_value_t = 50)]
    devices: usize,
    /// Also run with the cache and rate limits in Redis at this URL.
    #[arg(long)]
    redis: Option<String>,
}

/// An hour of one-minute samples of what a host reports: the three series a device list
/// summarises plus per-core, per-disk and per-interface series, so a list has real rows to find.
fn host_history(now_ms: i64) -> Vec<IngestSample> {
    let mut series: Vec<(String, String)> = SUMMARY_SERIES
        .iter()
        .map(|name| (name.to_string(), "{}".to_string()))
        .collect();
    for core in 0..8 {
        series.push(("cpu.core_percent".into(), format!(r#"{{"core":"{core}"}}"#)));
    }
    for mount in ["/", "/var", "/srv", "/home"] {
        series.push((
            "disk.used_percent".into(),
            format!(r#"{{"mount":"{mount}"}}"#),
        ));
    }
    for interface in ["eth0", "eth1"] {
        for direction in ["rx", "tx"] {
            series.push((
                format!("net.{direction}_bytes_per_second"),
                format!(r#"{{"interface":"{interface}"}}"#),
            ));
        }
    }
    let mut samples = Vec::new();
    for (name, labels) in series {
        for minute in 0..60 {
            samples.push(IngestSample {
                series: name.clone(),
                labels: labels.clone(),
                ts_ms: now_ms - (60 - minute) * 60_000,
                value: minute as f64,
            });
        }
    }
    samples
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

const HOST_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

/// Latencies of one measurement, printed as one line.
struct Measured(Vec<Duration>);

impl Measured {
    async fn run<F, Fut>(count: usize, mut once: F) -> Self
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let mut latencies = Vec::with_capacity(count);
        for _ in 0..count {
            let started = Instant::now();
            once().await;
            latencies.push(started.elapsed());
        }
        Self(latencies)
    }

    fn print(mut self, what: &str) {
        self.0.sort_unstable();
        let total: Duration = self.0.iter().sum();
        let at = |q: f64| self.0[((self.0.len() as f64 * q) as usize).min(self.0.len() - 1)];
        println!(
            "  {what:<34} {:>9.0} req/s   p50 {:>7.3} ms   p99 {:>7.3} ms",
            self.0.len() as f64 / total.as_secs_f64(),
            at(0.50).as_secs_f64() * 1000.0,
            at(0.99).as_secs_f64() * 1000.0,
        );
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!(
        "fabric: {} requests per line, {} devices per list",
        args.requests, args.devices
    );
    bench(&args, None).await?;
    if let Some(url) = &args.redis {
        bench(&args, Some(url.clone())).await?;
    }
    Ok(())
}

async fn bench(args: &Args, redis: Option<String>) -> anyhow::Result<()> {
    let dir = temp_dir();
    let mut config = controller_config(&path(&dir, "controller"), &Backend::Sqlite);
    // The limiter runs on every request but never refuses here.
    config.rate_limit = RateLimit {
        per_second: 100_000.0,
        burst: 100_000,
    };
    if let Some(url) = &redis {
        config.redis_url = Some(url.clone());
        config.redis_key_prefix = format!("bench-{}", std::process::id());
    }
    let controller = TestController::start(config).await;
    println!(
        "cache and rate limits: {}",
        controller.services.cache.backend_name()
    );
    let services = controller.services.clone();
    let count = args.devices;
    controller
        .run(async move {
            let ctx = Ctx::system("bench");
            for index in 0..count {
                let device = CreateAgentlessDevice {
                    name: format!("host-{index}"),
                    ssh_address: format!("10.0.0.{}:22", index % 250 + 1),
                    ssh_user: "monitor".into(),
                    ssh_host_key: Some(HOST_KEY.into()),
                };
                let device = services
                    .create_agentless_device(&ctx, device)
                    .await
                    .expect("device");
                let history = host_history(now_ms());
                services
                    .store
                    .ingest_batch(&device.id, 1, &history, (0, 0), now_ms())
                    .await
                    .expect("ingest");
            }
        })
        .await;

    let http = controller.http();
    let url = controller.api_url("/devices");
    let token = controller.admin_token.clone();
    Measured::run(args.requests, || async {
        let response = http
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status(), 200);
        response.bytes().await.expect("body");
    })
    .await
    .print("REST GET /devices");

    let client = connect(&controller, &controller.admin_token).await;
    Measured::run(args.requests, || async {
        let result = call(&client, "list_devices", json!({})).await;
        assert_eq!(result.is_error, Some(false));
    })
    .await
    .print("MCP tools/call list_devices");
    client.cancel().await?;

    let services = controller.services.clone();
    let requests = args.requests;
    controller
        .run(async move {
            let ctx = Ctx::system("bench");
            Measured::run(requests, || async {
                services.list_devices(&ctx).await.expect("list");
            })
            .await
            .print("service list_devices, cache hit");
            let devices = [key::DEVICES.to_string()];
            Measured::run(requests, || async {
                services.cache.invalidate(&devices).await;
                services.list_devices(&ctx).await.expect("list");
            })
            .await
            .print("service list_devices, cache miss");
            Measured::run(requests, || async {
                services.store.list_devices().await.expect("rows");
            })
            .await
            .print("  of which: device rows");
            Measured::run(requests, || async {
                services
                    .store
                    .latest_samples_of_all(&SUMMARY_SERIES)
                    .await
                    .expect("latest");
            })
            .await
            .print("  of which: newest summary samples");
            let mut principal = 0u64;
            Measured::run(requests, || {
                principal += 1;
                let services = services.clone();
                async move {
                    services.limiter.check(&format!("token:{principal}")).await;
                }
            })
            .await
            .print("rate limiter check");
        })
        .await;
    let (_, summary) = controller.get_json("/performance/summary?window=1h").await;
    for line in summary["operations"].as_array().into_iter().flatten() {
        if line["operation"] == "list_devices" {
            println!(
                "  controller's own timing, {:<4} list_devices: p50 {:.3} ms, p99 {:.3} ms ({} calls)",
                line["surface"].as_str().unwrap_or("?"),
                line["p50_ms"].as_f64().unwrap_or(0.0),
                line["p99_ms"].as_f64().unwrap_or(0.0),
                line["count"]
            );
        }
    }
    controller.shutdown().await;
    Ok(())
}
