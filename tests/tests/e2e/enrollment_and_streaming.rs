//! Enrollment, streaming and queries end to end: a real controller and a real agent over
//! TLS 1.3 with mutual authentication on loopback.

use std::time::Duration;

use infrastructor_agent::enroll::{enroll, EnrollOptions};
use infrastructor_agent::metrics::HostMetrics;
use infrastructor_e2e::{
    agent_config, controller_config, eventually, path, temp_dir, Backend, TestAgent, TestController,
};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn enrolled_agent_streams_host_metrics_that_rest_can_query() {
    let (dir, controller) = TestController::start_sqlite().await;
    let state_dir = path(&dir, "agent");
    let identity = controller.enroll(&state_dir).await;
    let device_id = identity.meta.device_id.clone();

    let agent = TestAgent::start(
        agent_config(&state_dir, Duration::from_millis(200)),
        Box::new(HostMetrics::new()),
    );
    let device = eventually(WAIT, "device online with a metric summary", || async {
        let (status, body) = controller.get_json(&format!("/devices/{device_id}")).await;
        (status == 200
            && body["status"] == "online"
            && body["summary"]["cpu_usage_percent"].is_number())
        .then_some(body)
    })
    .await;
    assert_eq!(device["kind"], "agent");
    assert_eq!(device["name"], "test-host");

    let (status, list) = controller.get_json("/devices").await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().map(Vec::len), Some(1));

    let (status, query) = controller
        .get_json(&format!(
            "/devices/{device_id}/metrics?series=memory.used_percent&from=-5m&step=1s"
        ))
        .await;
    assert_eq!(status, 200, "{query}");
    assert_eq!(query["resolution"], "raw");
    let points = query["results"][0]["points"].as_array().expect("points");
    assert!(!points.is_empty());
    assert!(points
        .iter()
        .all(|p| p["min"].as_f64() <= p["avg"].as_f64() && p["avg"].as_f64() <= p["max"].as_f64()));

    // Label matchers select one series of many.
    let (status, per_core) = controller
        .get_json(&format!(
            "/devices/{device_id}/metrics?series=cpu.core_usage_percent{{core=0}}&from=-5m"
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(per_core["results"].as_array().map(Vec::len), Some(1));

    let (status, latest) = controller
        .get_json(&format!("/devices/{device_id}/metrics/latest"))
        .await;
    assert_eq!(status, 200);
    let names: Vec<&str> = latest
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["series"].as_str())
        .collect();
    for expected in [
        "cpu.usage_percent",
        "memory.used_percent",
        "load.1m",
        "host.uptime_seconds",
        "disk.used_percent",
    ] {
        assert!(
            names.contains(&expected),
            "latest lacks {expected}: {names:?}"
        );
    }

    // Lookup by name works like lookup by ID.
    let (status, by_name) = controller.get_json("/devices/test-host").await;
    assert_eq!(
        (status, by_name["id"].as_str()),
        (200, Some(device_id.as_str()))
    );

    agent.stop().await;
    controller.shutdown().await;
}

#[tokio::test]
async fn join_tokens_are_single_use_and_ca_is_pinned() {
    let (dir, controller) = TestController::start_sqlite().await;
    let (token, fingerprint) = controller.join_token().await;
    let url = controller.gateway_url();
    let options = |state: &'static str, token: &'static str, fingerprint: &'static str| {
        (state, token, fingerprint)
    };
    let _ = options;

    // A wrong fingerprint: refused before the token is ever sent, so the token stays valid.
    let wrong = "00".repeat(32);
    let error = enroll(EnrollOptions {
        state_dir: &path(&dir, "a"),
        controller_url: &url,
        join_token: &token,
        ca_fingerprint: &wrong,
        hostname: "a",
        force: false,
    })
    .await
    .unwrap_err();
    assert!(error.to_string().contains("pinned fingerprint"), "{error}");

    let first = enroll(EnrollOptions {
        state_dir: &path(&dir, "a"),
        controller_url: &url,
        join_token: &token,
        ca_fingerprint: &fingerprint,
        hostname: "a",
        force: false,
    })
    .await;
    assert!(first.is_ok(), "{first:?}");

    let replay = enroll(EnrollOptions {
        state_dir: &path(&dir, "b"),
        controller_url: &url,
        join_token: &token,
        ca_fingerprint: &fingerprint,
        hostname: "b",
        force: false,
    })
    .await
    .unwrap_err();
    assert!(replay.to_string().contains("already used"), "{replay}");

    // Enrolling twice into the same state directory needs --force.
    let (token2, _) = controller.join_token().await;
    let again = enroll(EnrollOptions {
        state_dir: &path(&dir, "a"),
        controller_url: &url,
        join_token: &token2,
        ca_fingerprint: &fingerprint,
        hostname: "a",
        force: false,
    })
    .await
    .unwrap_err();
    assert!(again.to_string().contains("already enrolled"), "{again}");

    // An expired token (created directly with a past expiry).
    let expired = "ifj_expired-token-for-test";
    let store = controller.services.store.clone();
    let now = infrastructor_agent::metrics::now_ms();
    controller
        .run(async move {
            store
                .insert_join_token(
                    &infrastructor_controller::auth::hash_token(expired),
                    now - 7_200_000,
                    now - 3_600_000,
                    "test",
                )
                .await
        })
        .await
        .unwrap();
    let error = enroll(EnrollOptions {
        state_dir: &path(&dir, "c"),
        controller_url: &url,
        join_token: expired,
        ca_fingerprint: &fingerprint,
        hostname: "c",
        force: false,
    })
    .await
    .unwrap_err();
    assert!(error.to_string().contains("expired"), "{error}");

    let (_, devices) = controller.get_json("/devices").await;
    assert_eq!(
        devices.as_array().map(Vec::len),
        Some(1),
        "refused enrollments create no device"
    );
    controller.shutdown().await;
}

#[tokio::test]
async fn agent_renews_its_certificate_before_expiry() {
    let dir = temp_dir();
    let mut config = controller_config(&path(&dir, "controller"), &Backend::Sqlite);
    config.certificate_lifetime = Duration::from_secs(300);
    let controller = TestController::start(config).await;
    let state_dir = path(&dir, "agent");
    let mut identity = controller.enroll(&state_dir).await;
    // Pretend the certificate was issued long ago, so two thirds of its lifetime have passed.
    identity.meta.issued_at_ms = identity.meta.not_after_ms - 1_000_000;
    identity.store(&state_dir).unwrap();
    let before = identity.cert_pem.clone();

    let agent = TestAgent::start(
        agent_config(&state_dir, Duration::from_millis(200)),
        Box::new(HostMetrics::new()),
    );
    let renewed = eventually(WAIT, "renewed certificate on disk", || async {
        let current = infrastructor_agent::identity::Identity::load(&state_dir).ok()??;
        (current.cert_pem != before).then_some(current)
    })
    .await;
    assert!(renewed.meta.not_after_ms > identity.meta.not_after_ms);
    assert!(
        renewed.key_pem == identity.key_pem,
        "the key never changes hands"
    );
    agent.stop().await;
    controller.shutdown().await;
}
