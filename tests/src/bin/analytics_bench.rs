//! Analytics benchmark: forecast accuracy on synthetic series with a known truth, next to a
//! single-window `predict_linear` and to augurs (MSTL with daily and weekly seasons, AutoETS
//! for the trend) on the same data; then, over a fleet of hourly history in
//! the real store on SQLite and PostgreSQL, a 90-day trend of one series from the 1-hour
//! rollup (p50/p99 through REST) and a fleet-wide capacity forecast (wall time), with the
//! query plans that serve them.
//!
//!   cargo run --release -p infrastructor-e2e --bin analytics-bench -- --help

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use augurs_core::{Fit, Predict};
use augurs_ets::{trend::AutoETSTrendModel, AutoETS};
use augurs_mstl::MSTLModel;
use clap::Parser;
use infrastructor_controller::ratelimit::RateLimit;
use infrastructor_controller::services::analytics::forecast::{self, Question};
use infrastructor_controller::services::analytics::history::{History, HourBucket};
use infrastructor_controller::services::analytics::synthetic::Synthetic;
use infrastructor_controller::services::analytics::trend::Point;
use infrastructor_controller::store::{IngestSample, Pool};
use infrastructor_e2e::{controller_config, fresh_postgres_database, Backend, TestController};
use serde_json::json;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;
const HOST_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

#[derive(Parser)]
#[command(about = "Forecast accuracy against predict_linear, and analytics query speed")]
struct Args {
    /// Devices in the fleet (each with `--series` disk series of 90 days, hourly).
    #[arg(long, default_value_t = 100)]
    devices: usize,
    #[arg(long, default_value_t = 10)]
    series: usize,
    /// 90-day trend calls timed.
    #[arg(long, default_value_t = 200)]
    trend_calls: usize,
}

/// The series the accuracy table is made of: what operators see.
fn scenarios(end_ms: i64) -> Vec<(&'static str, Synthetic, f64)> {
    let base = |days, start, slope| Synthetic::growth(end_ms, days, start, slope);
    vec![
        (
            "steady growth, noise",
            Synthetic {
                noise_sd: 0.5,
                seed: 1,
                ..base(60, 40.0, 0.4)
            },
            85.0,
        ),
        (
            "daily cycle (a backup job)",
            Synthetic {
                daily_amplitude: 4.0,
                noise_sd: 0.5,
                seed: 2,
                ..base(60, 40.0, 0.4)
            },
            90.0,
        ),
        (
            "daily + weekly cycles",
            Synthetic {
                daily_amplitude: 2.0,
                weekly_amplitude: 2.0,
                noise_sd: 0.5,
                seed: 3,
                ..base(90, 30.0, 0.3)
            },
            80.0,
        ),
        (
            "cleanup 10 days ago",
            Synthetic {
                daily_amplitude: 1.0,
                noise_sd: 0.5,
                cleanup: Some((50 * 24, 20.0)),
                seed: 4,
                ..base(60, 45.0, 0.6)
            },
            90.0,
        ),
        (
            "outliers (log bursts)",
            Synthetic {
                noise_sd: 0.4,
                outliers: (0..20).map(|i| (100 + i * 70, 15.0)).collect(),
                seed: 5,
                ..base(60, 40.0, 0.5)
            },
            90.0,
        ),
        ("everything at once", Synthetic::everything(end_ms), 85.0),
    ]
}

fn accuracy() -> (f64, f64) {
    let end_ms = 1_780_272_000_000;
    println!("forecast accuracy: days until the threshold, error against the truth");
    println!(
        "{:>28} | {:>6} | {:>14} | {:>8} | {:>22} | {:>22} | {:>16} | {:>8}",
        "series",
        "truth",
        "ours",
        "in band",
        "predict_linear[1d]",
        "predict_linear[7d]",
        "augurs MSTL+ETS",
        "in band"
    );
    let (mut ours_total, mut peer_total, mut augurs_total) = (0.0, 0.0, 0.0);
    let (mut ours_time, mut augurs_time) = (Duration::ZERO, Duration::ZERO);
    for (name, series, threshold) in scenarios(end_ms) {
        let points = series.points();
        let buckets: Vec<HourBucket> = points
            .iter()
            .map(|p| HourBucket {
                ts_ms: p.ts_ms,
                avg: p.value,
                max: p.value,
            })
            .collect();
        let question = Question {
            threshold,
            horizon_days: 365.0,
            now_ms: series.end_ms(),
        };
        let truth = series
            .true_crossing_ms(threshold, 365.0)
            .unwrap_or(i64::MAX);
        let ahead = (truth - series.end_ms()) as f64;
        let started = Instant::now();
        let answer = forecast::forecast(&History::from_hours(&buckets, question.now_ms), question);
        ours_time += started.elapsed();
        let started = Instant::now();
        let augurs = augurs_crossing(&points, question);
        augurs_time += started.elapsed();
        let error = |at: Option<i64>| at.map_or(1.0, |at| ((at - truth) as f64 / ahead).abs());
        let days = |at: Option<i64>| {
            at.map_or("never".to_string(), |at| {
                format!("{:.1}", (at - series.end_ms()) as f64 / DAY_MS as f64)
            })
        };
        let inside = answer.low_ms.is_some_and(|low| low <= truth)
            && answer.high_ms.is_none_or(|high| truth <= high);
        let peer_1d = forecast::predict_linear_crossing(&points, DAY_MS, question);
        let peer_7d = forecast::predict_linear_crossing(&points, 7 * DAY_MS, question);
        ours_total += error(answer.date_ms);
        peer_total += error(peer_1d);
        augurs_total += error(augurs.date_ms);
        println!(
            "{name:>28} | {:>6.1} | {:>6} {:>+6.1}% | {:>8} | {:>12} {:>+8.1}% | {:>12} {:>+8.1}% \
             | {:>6} {:>+8.1}% | {:>8}",
            ahead / DAY_MS as f64,
            days(answer.date_ms),
            signed(answer.date_ms, truth, ahead),
            if inside { "yes" } else { "no" },
            days(peer_1d),
            signed(peer_1d, truth, ahead),
            days(peer_7d),
            signed(peer_7d, truth, ahead),
            days(augurs.date_ms),
            signed(augurs.date_ms, truth, ahead),
            match augurs.inside(truth) {
                Some(true) => "yes",
                Some(false) => "no",
                None => "-",
            },
        );
    }
    let n = scenarios(end_ms).len() as f64;
    println!(
        "mean absolute error: ours {:.1}% | predict_linear[1d] {:.1}% (never = 100%) | ratio {:.2}",
        ours_total / n * 100.0,
        peer_total / n * 100.0,
        (ours_total / n) / (peer_total / n).max(1e-9)
    );
    println!(
        "against augurs: ours {:.1}% | augurs {:.1}% | ratio {:.2}; time per series: ours {:.2} ms \
         | augurs {:.2} ms | ratio {:.2}",
        ours_total / n * 100.0,
        augurs_total / n * 100.0,
        (ours_total / n) / (augurs_total / n).max(1e-9),
        ours_time.as_secs_f64() * 1000.0 / n,
        augurs_time.as_secs_f64() * 1000.0 / n,
        ours_time.as_secs_f64() / augurs_time.as_secs_f64().max(1e-9),
    );
    (ours_total / n, peer_total / n)
}

/// augurs' answer to the same question: its point forecast's first hour at the threshold,
/// and the first hours its 80% interval's upper and lower bounds reach it.
struct PeerCrossing {
    date_ms: Option<i64>,
    low_ms: Option<i64>,
    high_ms: Option<i64>,
    fitted: bool,
}

impl PeerCrossing {
    /// Whether the truth lies in the interval; `None` when there is no interval to judge.
    fn inside(&self, truth: i64) -> Option<bool> {
        if !self.fitted {
            return None;
        }
        Some(
            self.low_ms.is_some_and(|low| low <= truth)
                && self.high_ms.is_none_or(|high| truth <= high),
        )
    }
}

/// MSTL over the hourly values with a daily and a weekly season, the trend left to AutoETS
/// (which picks among additive, damped and no-trend models by AICc): the well-kept Rust
/// forecaster the issue names, given the same hours ours gets.
fn augurs_crossing(points: &[Point], question: Question) -> PeerCrossing {
    let none = PeerCrossing {
        date_ms: None,
        low_ms: None,
        high_ms: None,
        fitted: false,
    };
    let Some(last) = points.last() else {
        return none;
    };
    let values: Vec<f64> = points.iter().map(|p| p.value).collect();
    let trend: AutoETSTrendModel = AutoETS::non_seasonal().into_trend_model();
    let model = MSTLModel::new(vec![24, 168], trend);
    let horizon = (question.horizon_days * 24.0) as usize;
    let Ok(fitted) = model.fit(&values) else {
        return none;
    };
    let Ok(prediction) = fitted.predict(horizon, 0.8) else {
        return none;
    };
    let hour_at = |i: usize| last.ts_ms + (i as i64 + 1) * HOUR_MS;
    let first = |values: &[f64]| {
        values
            .iter()
            .position(|v| *v >= question.threshold)
            .map(hour_at)
    };
    let (low_ms, high_ms) = prediction
        .intervals
        .as_ref()
        .map_or((None, None), |i| (first(&i.upper), first(&i.lower)));
    PeerCrossing {
        date_ms: first(&prediction.point),
        low_ms,
        high_ms,
        fitted: true,
    }
}

fn signed(at: Option<i64>, truth: i64, ahead: f64) -> f64 {
    at.map_or(f64::NAN, |at| (at - truth) as f64 / ahead * 100.0)
}

/// A fleet of `devices` × `series` disk series with 90 days of hourly history, rolled up.
async fn load_fleet(controller: &TestController, args: &Args, end_ms: i64) -> anyhow::Result<()> {
    let started = Instant::now();
    for d in 0..args.devices {
        let (status, device) = controller
            .post_body(
                "/devices",
                &json!({"name": format!("host-{d:03}"), "ssh_address": "127.0.0.1:1",
                    "ssh_user": "monitor", "ssh_host_key": HOST_KEY}),
            )
            .await;
        if status != 201 {
            bail!("creating a device: {status} {device}");
        }
        let id = device["id"].as_str().context("device id")?.to_string();
        let mut samples = Vec::with_capacity(args.series * 90 * 24);
        for s in 0..args.series {
            let series = Synthetic {
                daily_amplitude: 1.0 + (s % 3) as f64,
                noise_sd: 0.5,
                seed: (d * 100 + s) as u64,
                ..Synthetic::growth(end_ms, 90, 20.0 + (s * 3) as f64, 0.05 * (1 + d % 7) as f64)
            };
            let labels = format!(r#"{{"mount":"/d{s}"}}"#);
            samples.extend(series.points().into_iter().map(|p| IngestSample {
                series: "disk.used_percent".into(),
                labels: labels.clone(),
                ts_ms: p.ts_ms,
                value: p.value,
            }));
        }
        let store = controller.services.store.clone();
        controller
            .run(async move {
                store.ingest_batch(&id, 1, &samples, (0, 0), end_ms).await?;
                while store.run_rollups(0, 1000).await? > 0 {}
                Ok::<_, anyhow::Error>(())
            })
            .await?;
    }
    // What autovacuum does after a bulk load, so the planner knows the table's size.
    if let Pool::Postgres(pool) = controller.services.store.write_pool().clone() {
        controller
            .run(async move { sqlx::query("ANALYZE").execute(&pool).await })
            .await?;
    }
    println!(
        "  loaded {} series × 90 days hourly in {:.1} s",
        args.devices * args.series,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn timed_get(controller: &TestController, path: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let response = controller
        .http()
        .get(controller.api_url(path))
        .bearer_auth(&controller.admin_token)
        .send()
        .await?;
    let status = response.status();
    let body = response.bytes().await?;
    if !status.is_success() {
        bail!("{path}: {status} {}", String::from_utf8_lossy(&body));
    }
    Ok(started.elapsed())
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

/// The reads a fleet forecast makes, as the stores make them (see `store/analytics.rs`).
const PLANNED: [(&str, &str); 2] = [
    (
        "day summaries before the hourly tail",
        "SELECT series_id, bucket_ms / 86400000 AS day, MAX(max), \
         AVG(sum / CAST(count AS DOUBLE PRECISION)), COUNT(*) FROM rollups_1h \
         WHERE series_id IN (1, 2, 3) AND bucket_ms >= 0 AND bucket_ms < 9000000000000 \
         GROUP BY series_id, bucket_ms / 86400000",
    ),
    (
        "the hourly tail",
        "SELECT series_id, bucket_ms, sum / CAST(count AS DOUBLE PRECISION), max FROM rollups_1h \
         WHERE series_id IN (1, 2, 3) AND bucket_ms >= 0 AND bucket_ms < 9000000000000 \
         ORDER BY series_id, bucket_ms",
    ),
];

async fn plans(controller: &TestController) -> anyhow::Result<()> {
    for (what, sql) in PLANNED {
        let pool = controller.services.store.write_pool().clone();
        let lines: Vec<String> = controller
            .run(async move {
                match pool {
                    Pool::Sqlite(p) => sqlx::query_as::<_, (i64, i64, i64, String)>(&format!(
                        "EXPLAIN QUERY PLAN {sql}"
                    ))
                    .fetch_all(&p)
                    .await
                    .map(|rows| rows.into_iter().map(|r| r.3).collect()),
                    Pool::Postgres(p) => sqlx::query_as::<_, (String,)>(&format!("EXPLAIN {sql}"))
                        .fetch_all(&p)
                        .await
                        .map(|rows| rows.into_iter().map(|r| r.0).collect()),
                }
            })
            .await?;
        println!("  plan of the read of {what}:");
        for line in lines {
            println!("    {line}");
        }
    }
    Ok(())
}

async fn speed(backend: Backend, name: &str, args: &Args) -> anyhow::Result<()> {
    println!("{name}:");
    let dir = tempfile::tempdir()?;
    let mut config = controller_config(dir.path(), &backend);
    // Measuring the analyses, not the per-caller budget.
    config.rate_limit = RateLimit {
        per_second: 100_000.0,
        burst: 100_000,
    };
    let controller = TestController::start(config).await;
    let end_ms = infrastructor_controller::services::now_ms() / HOUR_MS * HOUR_MS;
    load_fleet(&controller, args, end_ms).await?;
    let trend = "/analytics/trends?devices=host-000&series=disk.used_percent%7Bmount%3D%2Fd0%7D\
                 &window=90d&bucket=1h&detail=summary";
    timed_get(&controller, trend).await?;
    let mut latencies = Vec::with_capacity(args.trend_calls);
    for _ in 0..args.trend_calls {
        latencies.push(timed_get(&controller, trend).await?);
    }
    latencies.sort();
    println!(
        "  90-day trend of one series from the 1 h rollup (2160 buckets): p50 {:.1} ms | p99 {:.1} ms",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );
    let mut runs = Vec::new();
    for _ in 0..3 {
        runs.push(timed_get(&controller, "/analytics/capacity").await?);
    }
    runs.sort();
    println!(
        "  fleet-wide capacity forecast, {} devices × {} series: best {:.2} s | median {:.2} s",
        args.devices,
        args.series,
        runs[0].as_secs_f64(),
        runs[runs.len() / 2].as_secs_f64()
    );
    breakdown(&controller).await?;
    plans(&controller).await?;
    controller.shutdown().await;
    Ok(())
}

/// Where the fleet forecast's time goes: the reads of the history (day summaries before
/// the hourly tail, hours within it), and the forecasts over it.
async fn breakdown(controller: &TestController) -> anyhow::Result<()> {
    let services = controller.services.clone();
    let (read, rows, series, compute) = controller
        .run(async move {
            let series = services
                .store
                .series_named(None, &["disk.used_percent"])
                .await?;
            let ids: Vec<i64> = series.iter().map(|s| s.id).collect();
            let now = infrastructor_controller::services::now_ms();
            let started = Instant::now();
            let histories = services
                .forecast_history(&ids, now - 90 * DAY_MS, now)
                .await?;
            let read = started.elapsed();
            let rows: usize = histories
                .values()
                .map(|h| h.days.len() + h.hours.len())
                .sum();
            let question = Question {
                threshold: 90.0,
                horizon_days: 90.0,
                now_ms: now,
            };
            let started = Instant::now();
            for history in histories.values() {
                std::hint::black_box(forecast::forecast(history, question));
            }
            Ok::<_, anyhow::Error>((read, rows, histories.len(), started.elapsed()))
        })
        .await?;
    println!(
        "    of which: reading {rows} rows (days, then hours) {:.2} s | {series} forecasts one \
         after another {:.2} s",
        read.as_secs_f64(),
        compute.as_secs_f64()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    accuracy();
    println!();
    speed(Backend::Sqlite, "SQLite", &args).await?;
    match fresh_postgres_database().await {
        Some(url) => speed(Backend::Postgres(url), "PostgreSQL", &args).await?,
        None => println!("PostgreSQL: not reachable (INFRASTRUCTOR_TEST_POSTGRES_URL); skipped"),
    }
    Ok(())
}
