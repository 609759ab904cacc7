//! The analyses through REST on both backends, over history ingested and rolled up by the
//! real store: trends answer identically on SQLite and PostgreSQL (PostgreSQL's `regr_*`
//! and `percentile_cont` against the same figures computed in Rust), capacity forecasts land
//! near the synthetic truth and the fleet is ranked by what fills first, and bad input is a
//! 400 naming the problem.

use infrastructor_controller::services::analytics::synthetic::Synthetic;
use infrastructor_controller::services::analytics::trend::Point;
use infrastructor_controller::store::IngestSample;
use infrastructor_e2e::{controller_config, fresh_postgres_database, Backend, TestController};
use serde_json::Value;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The disk of "filling": 60 days growing half a point a day with cycles, noise, outliers
/// and a cleanup 20 days ago.
fn filling(end_ms: i64) -> Synthetic {
    Synthetic {
        daily_amplitude: 2.0,
        weekly_amplitude: 1.5,
        noise_sd: 0.6,
        cleanup: Some((40 * 24, 15.0)),
        outliers: vec![(300, 25.0), (700, -20.0), (1200, 30.0)],
        seed: 7,
        ..Synthetic::growth(end_ms, 60, 50.0, 0.5)
    }
}

/// Stores `points` as raw samples of one series and rolls every bucket up, history included.
async fn ingest(
    controller: &TestController,
    device: &str,
    series: &str,
    labels: &str,
    points: &[Point],
    seq: u64,
) {
    let samples: Vec<IngestSample> = points
        .iter()
        .map(|p| IngestSample {
            series: series.into(),
            labels: labels.into(),
            ts_ms: p.ts_ms,
            value: p.value,
        })
        .collect();
    let store = controller.services.store.clone();
    let device = device.to_string();
    controller
        .run(async move {
            store
                .ingest_batch(&device, seq, &samples, (0, 0), now_ms())
                .await
                .unwrap();
            // A cutoff of 0: roll up history older than raw retention too.
            while store.run_rollups(0, 1000).await.unwrap() > 0 {}
        })
        .await;
}

/// The fleet every backend gets: "filling" (a disk with everything that fools a line, and a
/// CPU sampled each minute for a day), "steady" (a flat disk) and "full" (memory above 90%).
async fn fleet(controller: &TestController, end_ms: i64) -> (String, String, String) {
    let filling_id = controller.unreachable_device("filling").await;
    let steady_id = controller.unreachable_device("steady").await;
    let full_id = controller.unreachable_device("full").await;
    let mount = r#"{"mount":"/data"}"#;
    ingest(
        controller,
        &filling_id,
        "disk.used_percent",
        mount,
        &filling(end_ms).points(),
        1,
    )
    .await;
    let cpu: Vec<Point> = (0..20 * 60)
        .map(|m| Point {
            ts_ms: end_ms - 20 * HOUR_MS + m * 60_000,
            value: 20.0 + (m % 17) as f64 + if m % 97 == 0 { 50.0 } else { 0.0 },
        })
        .collect();
    ingest(controller, &filling_id, "cpu.usage_percent", "{}", &cpu, 2).await;
    let steady = Synthetic {
        noise_sd: 0.5,
        seed: 3,
        ..Synthetic::growth(end_ms, 30, 40.0, 0.0)
    };
    ingest(
        controller,
        &steady_id,
        "disk.used_percent",
        mount,
        &steady.points(),
        1,
    )
    .await;
    let full = Synthetic::growth(end_ms, 3, 93.0, 0.0);
    ingest(
        controller,
        &full_id,
        "memory.used_percent",
        "{}",
        &full.points(),
        1,
    )
    .await;
    (filling_id, steady_id, full_id)
}

/// What differs between two runs by nature: IDs generated per database, and the instant
/// each call was answered.
const UNSHARED: [&str; 4] = ["device_id", "from", "to", "generated_at"];

/// Numbers equal to 1e-9 relative; everything else equal; [`UNSHARED`] fields skipped.
fn assert_same(a: &Value, b: &Value, path: &str) {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            let scale = x.abs().max(y.abs()).max(1e-12);
            assert!((x - y).abs() / scale < 1e-9, "{path}: {x} vs {y}");
        }
        (Value::Object(x), Value::Object(y)) => {
            let keys: Vec<&String> = x
                .keys()
                .filter(|k| !UNSHARED.contains(&k.as_str()))
                .collect();
            let other: Vec<&String> = y
                .keys()
                .filter(|k| !UNSHARED.contains(&k.as_str()))
                .collect();
            assert_eq!(keys, other, "{path}");
            for key in keys {
                assert_same(&x[key], &y[key], &format!("{path}.{key}"));
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{path}: lengths");
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                assert_same(x, y, &format!("{path}[{i}]"));
            }
        }
        _ => assert_eq!(a, b, "{path}"),
    }
}

const TREND_QUERIES: [&str; 3] = [
    "/analytics/trends?devices=filling&series=disk.used_percent&window=60d&bucket=1d",
    // Since the cleanup, 20 days ago.
    "/analytics/trends?devices=filling,steady&resource=disk&window=14d",
    // Within raw retention: raw samples, with p95 per bucket.
    "/analytics/trends?devices=filling&resource=cpu&window=1d&bucket=1h",
];

async fn answers(backend: Backend, end_ms: i64) -> (Vec<Value>, Value) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = controller_config(dir.path(), &backend);
    // Its own rollups would skip history older than raw retention, racing the test's.
    config.maintenance_interval = std::time::Duration::from_secs(86_400);
    let controller = TestController::start(config).await;
    fleet(&controller, end_ms).await;
    let mut trends = Vec::new();
    for query in TREND_QUERIES {
        let (status, body) = controller.get_json(query).await;
        assert_eq!(status, 200, "{query}: {body}");
        trends.push(body);
    }
    let (status, capacity) = controller.get_json("/analytics/capacity").await;
    assert_eq!(status, 200, "{capacity}");
    chart(&controller).await;
    refusals(&controller).await;
    controller.shutdown().await;
    (trends, capacity)
}

async fn refusals(controller: &TestController) {
    for (query, says) in [
        (
            "/analytics/trends?resource=cpu&window=forever",
            "invalid window",
        ),
        (
            "/analytics/trends?resource=cpu&series=cpu.usage_percent",
            "not both",
        ),
        ("/analytics/trends?window=7d", "give 'series'"),
        ("/analytics/trends?devices=nope&resource=cpu", "not found"),
        ("/analytics/capacity?resource=cpu", "does not fill up"),
        ("/analytics/capacity?threshold=150", "percentage"),
        ("/analytics/capacity?horizon=0s", "horizon"),
    ] {
        let (status, body) = controller.get_json(query).await;
        let expected = if says == "not found" { 404 } else { 400 };
        assert_eq!(status, expected, "{query}: {body}");
        assert!(
            body["detail"].as_str().unwrap_or_default().contains(says),
            "{query}: {body}"
        );
    }
}

#[tokio::test]
async fn trends_and_forecasts_are_right_and_the_same_on_both_backends() {
    // Both runs must see the same buckets: not across an hour boundary.
    let minute = (now_ms() % HOUR_MS) / 60_000;
    if minute >= 58 {
        tokio::time::sleep(std::time::Duration::from_secs(150)).await;
    }
    let end_ms = now_ms() / HOUR_MS * HOUR_MS;
    let (trends, capacity) = answers(Backend::Sqlite, end_ms).await;
    check_trends(&trends);
    check_capacity(&capacity, end_ms);
    if let Some(url) = fresh_postgres_database().await {
        let (pg_trends, pg_capacity) = answers(Backend::Postgres(url), end_ms).await;
        for (sqlite, postgres) in trends.iter().zip(&pg_trends) {
            assert_same(sqlite, postgres, "trends");
        }
        assert_same(&capacity, &pg_capacity, "capacity");
    }
}

fn check_trends(trends: &[Value]) {
    let disk = &trends[0]["series"][0];
    assert_eq!(trends[0]["resolution"], "1h", "{}", trends[0]);
    assert_eq!(disk["device"], "filling");
    assert_eq!(disk["labels"]["mount"], "/data");
    let steps = disk["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "the cleanup: {disk}");
    // Daily buckets smear the 15-point drop over a day, and the trend fills part of it.
    let change = steps[0]["change"].as_f64().unwrap();
    assert!((-18.0..-9.0).contains(&change), "{disk}");
    let slope = disk["slope_per_day"].as_f64().unwrap();
    assert!(slope.is_finite(), "{disk}");
    let days = disk["buckets"].as_array().unwrap().len();
    assert!(
        (60..=61).contains(&days),
        "a bucket a day (the first one partial): {disk}"
    );

    let by_device = |device: &str| {
        trends[1]["series"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["device"] == device)
            .cloned()
            .unwrap()
    };
    assert_eq!(by_device("steady")["direction"], "flat", "{}", trends[1]);
    assert_eq!(by_device("filling")["direction"], "rising", "{}", trends[1]);
    assert!(
        by_device("steady")["previous_mean"].is_number(),
        "{}",
        trends[1]
    );

    let cpu = &trends[2];
    assert_eq!(cpu["resolution"], "1h", "{cpu}");
    let buckets = cpu["series"][0]["buckets"].as_array().unwrap();
    assert!(buckets.len() >= 20, "{cpu}");
    for bucket in buckets {
        let p95 = bucket["p95"].as_f64().expect("p95 from raw samples");
        assert!(p95 <= bucket["max"].as_f64().unwrap() && p95 >= bucket["avg"].as_f64().unwrap());
    }
    let anomalies = cpu["series"][0]["anomalies"].as_array().unwrap();
    assert!(
        anomalies.is_empty(),
        "hourly means smooth the spikes out: {cpu}"
    );
}

fn check_capacity(capacity: &Value, end_ms: i64) {
    let forecasts = capacity["forecasts"].as_array().unwrap();
    let order: Vec<&str> = forecasts
        .iter()
        .map(|f| f["device"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["full", "filling", "steady"], "{capacity}");
    assert_eq!(forecasts[0]["outlook"], "already_above", "{capacity}");
    assert_eq!(forecasts[2]["outlook"], "not_within_horizon", "{capacity}");
    let disk = &forecasts[1];
    assert_eq!(disk["outlook"], "crosses", "{disk}");
    let truth = filling(end_ms).true_crossing_ms(90.0, 90.0).unwrap();
    let at = |field: &str| {
        let text = disk[field].as_str().unwrap();
        humantime::parse_rfc3339(text)
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    let ahead = (truth - end_ms) as f64;
    assert!(
        ((at("date") - truth) as f64 / ahead).abs() <= 0.1,
        "truth in {:.1} d: {disk}",
        ahead / DAY_MS as f64
    );
    assert!(
        at("low") <= truth && (disk["high"].is_null() || truth <= at("high")),
        "{disk}"
    );
    assert!(
        disk["method"]["since_step_ms"].is_i64(),
        "fitted after the cleanup: {disk}"
    );
}

/// The SVG chart parses as XML and draws what it says: history and its band, the trend, the
/// forecast inside its band, the threshold and the crossing.
async fn chart(controller: &TestController) {
    let response = controller
        .http()
        .get(controller.api_url(
            "/devices/filling/metrics/chart?series=disk.used_percent%7Bmount%3D%2Fdata%7D&window=60d&horizon=90d",
        ))
        .bearer_auth(&controller.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let kind = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(kind, "image/svg+xml");
    let body = response.text().await.unwrap();
    if let Ok(path) = std::env::var("INFRASTRUCTOR_CHART_OUT") {
        std::fs::write(path, &body).unwrap();
    }
    let svg = roxmltree::Document::parse(&body).expect("well-formed SVG");
    let root = svg.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    let with_class = |class: &str| {
        svg.descendants()
            .filter(|n| n.attribute("class") == Some(class))
            .collect::<Vec<_>>()
    };
    let history = with_class("history");
    let points = history[0].attribute("points").unwrap().split(' ').count();
    assert!((100..=130).contains(&points), "{points} history points");
    assert_eq!(with_class("band").len(), 2, "history and forecast bands");
    for drawn in ["trend", "forecast", "threshold", "crossing"] {
        assert_eq!(with_class(drawn).len(), 1, "{drawn} in {body}");
    }
    let texts: Vec<&str> = svg
        .descendants()
        .filter_map(|n| n.text())
        .map(str::trim)
        .collect();
    assert!(texts
        .iter()
        .any(|t| t.contains("filling") && t.contains("disk.used_percent")));
    assert!(
        texts.iter().any(|t| t.starts_with("crosses 20")),
        "{texts:?}"
    );
    for (query, status) in [
        ("/devices/filling/metrics/chart", 400),
        ("/devices/filling/metrics/chart?series=nope", 404),
        (
            "/devices/nobody/metrics/chart?series=cpu.usage_percent",
            404,
        ),
        (
            "/devices/filling/metrics/chart?series=cpu.usage_percent&window=x",
            400,
        ),
    ] {
        let (got, body) = controller.get_json(query).await;
        assert_eq!(got, status, "{query}: {body}");
    }
}
