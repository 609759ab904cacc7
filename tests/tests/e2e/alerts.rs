//! Alerts and notifications against real receivers on loopback — an HTTP server that records
//! what arrives and a real SMTP server (aiosmtpd, STARTTLS and a login) — with check reports
//! sent over an agent's own mutual-TLS stream: a critical check notifies once through two
//! channels and resolves once, with a controller restart in between; a flapping check says
//! so once; a maintenance window holds back what begins and ends inside it and lets through
//! what still fires; an offline host holds back its containers' alerts; every channel's format
//! and signature; retries, dead letters and their retry; a rate limit; and the
//! `set_maintenance_mode` round trip on a real agent with real containers.

use std::time::Duration;

use hmac::{Hmac, Mac};
use infrastructor_controller::config::ControllerConfig;
use infrastructor_e2e::docker::{create, docker_cli, engine_with_image, Containers};
use infrastructor_e2e::receivers::{smtp_available, HttpReceiver, Received, SmtpReceiver};
use infrastructor_e2e::{
    backends, controller_config, eventually, path, services_required, temp_dir, Backend, TestAgent,
    TestController,
};
use infrastructor_proto::v1::{
    agent_message, AgentMessage, CheckReport, CheckReports, CheckStatus,
};
use serde_json::{json, Value};
use sha2::Sha256;

const SECRET: &str = "webhook signing key";

/// A controller on `backend` whose notifications go to `channels` (JSON), evaluating every
/// `interval`; `rules` (JSON) are merged over the built-in ones.
fn config(
    dir: &std::path::Path,
    backend: &Backend,
    channels: Value,
    rules: Value,
    interval: Duration,
) -> ControllerConfig {
    let mut config = controller_config(&path_in(dir, "controller"), backend);
    config.alerts.interval = interval;
    let overrides: std::collections::BTreeMap<String, Value> =
        serde_json::from_value(rules).unwrap();
    for (name, rule) in overrides {
        let mut merged = serde_json::to_value(config.alerts.rules.get(&name)).unwrap();
        match (&mut merged, rule) {
            (Value::Object(base), Value::Object(patch)) => base.extend(patch),
            (slot, rule) => *slot = rule,
        }
        config
            .alerts
            .rules
            .insert(name, serde_json::from_value(merged).unwrap());
    }
    config.notifications = serde_json::from_value(json!({
        "channels": channels, "retry_after": "1s", "retry_max": "2s", "max_attempts": 3,
    }))
    .unwrap();
    config
}

fn path_in(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::create_dir_all(&path).unwrap();
    path
}

fn webhook(receiver: &HttpReceiver, secret_file: &std::path::Path) -> Value {
    json!({"kind": "webhook", "url": receiver.url("/hook"), "secret_file": secret_file})
}

fn secret_file(dir: &std::path::Path) -> std::path::PathBuf {
    let file = dir.join("webhook-secret");
    std::fs::write(&file, format!("{SECRET}\n")).unwrap();
    file
}

fn email(smtp: &SmtpReceiver) -> Value {
    json!({"kind": "email", "smtp_host": "127.0.0.1", "smtp_port": smtp.port,
        "smtp_tls": "starttls", "smtp_ca_file": smtp.ca_file, "username": smtp.user,
        "password_file": smtp.password_file, "from": "Infrastructor <alerts@example.net>",
        "to": ["ops@example.net"]})
}

/// A round of check reports over the device's own stream.
fn round(reports: &[(&str, CheckStatus, &str)]) -> AgentMessage {
    AgentMessage {
        body: Some(agent_message::Body::CheckReports(CheckReports {
            capabilities: vec!["zfs".into(), "docker".into()],
            reports: reports
                .iter()
                .map(|(check, status, message)| CheckReport {
                    check: check.to_string(),
                    status: *status as i32,
                    message: message.to_string(),
                    evidence_json: "{}".into(),
                    checked_at_unix_ms: 0,
                })
                .collect(),
        })),
    }
}

/// Sends a round of check reports over the device's own stream.
async fn report(
    agent: &tokio::sync::mpsc::Sender<AgentMessage>,
    reports: &[(&str, CheckStatus, &str)],
) {
    agent.send(round(reports)).await.unwrap();
}

/// The events the webhook received, in order (`firing`, `resolved`, …), per alert.
fn events(received: &[Received], alert: &str) -> Vec<String> {
    received
        .iter()
        .flat_map(|r| {
            r.json()["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|a| a["alert"] == alert)
                .map(|a| a["event"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The header's `t=<seconds>,v1=<hex>` checks out against the body with the secret.
fn assert_signed(received: &Received) {
    let header = &received.headers["x-infrastructor-signature"];
    let (t, v1) = header.split_once(',').unwrap();
    let t = t.strip_prefix("t=").unwrap();
    let v1 = v1.strip_prefix("v1=").unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(received.body.as_bytes());
    mac.verify_slice(&hex::decode(v1).unwrap())
        .expect("the signature verifies with the shared secret");
    let age = infrastructor_controller::services::now_ms() / 1000 - t.parse::<i64>().unwrap();
    assert!((0..120).contains(&age), "a fresh timestamp: {age}s");
}

async fn alert(controller: &TestController, device: &str, rule: &str) -> Option<Value> {
    let (_, alerts) = controller
        .get_json(&format!("/alerts?device={device}&all=true"))
        .await;
    alerts
        .as_array()?
        .iter()
        .find(|a| a["alert"] == rule)
        .cloned()
}

fn smtp_or_skip(dir: &std::path::Path) -> Option<SmtpReceiver> {
    if smtp_available() {
        return Some(SmtpReceiver::start(dir));
    }
    assert!(
        !services_required(),
        "python3-aiosmtpd is required (INFRASTRUCTOR_REQUIRE_SERVICES=1)"
    );
    eprintln!("skipping: no python3-aiosmtpd");
    None
}

#[tokio::test]
async fn a_critical_check_notifies_once_through_two_channels_and_resolves_once_across_a_restart() {
    let dir = temp_dir();
    let Some(smtp) = smtp_or_skip(dir.path()) else {
        return;
    };
    for backend in backends().await {
        let hook = HttpReceiver::start().await;
        let name = match backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres(_) => "postgres",
        };
        let base = path_in(dir.path(), name);
        let channels =
            json!({"ops-hook": webhook(&hook, &secret_file(&base)), "mail": email(&smtp)});
        let mail_before = smtp.messages().len();
        let config = config(
            &base,
            &backend,
            channels,
            json!({}),
            Duration::from_millis(300),
        );
        let controller = TestController::start(config).await;
        let identity = controller.enroll(&path_in(&base, "agent")).await;
        let device = identity.meta.device_id.clone();
        let (_, view) = controller.get_json(&format!("/devices/{device}")).await;
        let host = view["name"].as_str().unwrap().to_string();
        let (agent, _inbound) = controller.raw_agent(&identity, "nas").await;
        report(
            &agent,
            &[("zfs.pool:tank", CheckStatus::Critical, "tank is DEGRADED")],
        )
        .await;
        eventually(
            Duration::from_secs(20),
            "firing on both channels",
            || async {
                let mail = smtp.messages().len() - mail_before;
                (hook.on("/hook").len() == 1 && mail == 1).then_some(())
            },
        )
        .await;
        let fired = &hook.on("/hook")[0];
        assert_signed(fired);
        let body = fired.json();
        assert_eq!(body["device"], host.as_str());
        assert_eq!(body["alerts"][0]["alert"], "degraded_pools");
        assert_eq!(body["alerts"][0]["severity"], "critical");
        assert!(body["alerts"][0]["summary"]
            .as_str()
            .unwrap()
            .contains("tank is DEGRADED"));
        let mail = &smtp.messages()[mail_before];
        let subject = format!("Subject: [CRITICAL] {host}: degraded_pools firing");
        assert!(mail.contains(&subject), "{mail}");
        assert!(mail.contains("To: ops@example.net"), "{mail}");

        // A restart between the two: the firing is not sent again.
        drop(agent);
        let restart = controller.restart_config();
        controller.shutdown().await;
        let controller = TestController::start(restart).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(events(&hook.on("/hook"), "degraded_pools"), ["firing"]);
        let (agent, _inbound) = controller.raw_agent(&identity, "nas").await;
        report(
            &agent,
            &[("zfs.pool:tank", CheckStatus::Ok, "tank is ONLINE")],
        )
        .await;
        eventually(
            Duration::from_secs(20),
            "resolved on both channels",
            || async {
                let mail = smtp.messages().len() - mail_before;
                (hook.on("/hook").len() == 2 && mail == 2).then_some(())
            },
        )
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            events(&hook.on("/hook"), "degraded_pools"),
            ["firing", "resolved"],
            "each once ({backend:?})"
        );
        assert_eq!(smtp.messages().len() - mail_before, 2);
        assert!(smtp.messages()[mail_before + 1].contains("degraded_pools resolved"));
        let (_, sent) = controller.get_json("/notifications?state=sent").await;
        assert_eq!(sent.as_array().unwrap().len(), 4, "{sent}");
        drop(agent);
        controller.shutdown().await;
    }
}

#[tokio::test]
async fn a_flapping_check_is_reported_as_flapping_not_twenty_times() {
    let dir = temp_dir();
    let hook = HttpReceiver::start().await;
    let channels = json!({"ops-hook": webhook(&hook, &secret_file(dir.path()))});
    let config = config(
        dir.path(),
        &Backend::Sqlite,
        channels,
        json!({}),
        Duration::from_millis(200),
    );
    let controller = TestController::start(config).await;
    let identity = controller.enroll(&path(&dir, "agent")).await;
    let device = identity.meta.device_id.clone();
    let (agent, _inbound) = controller.raw_agent(&identity, "web-1").await;
    for flip in 0..20 {
        let (status, firing) = if flip % 2 == 0 {
            (CheckStatus::Critical, true)
        } else {
            (CheckStatus::Ok, false)
        };
        report(&agent, &[("systemd.units", status, "nginx.service failed")]).await;
        // Wait for an evaluation to see it, so every flip is one.
        eventually(Duration::from_secs(10), "the flip evaluated", || async {
            let alert = alert(&controller, &device, "failed_units").await?;
            let is_firing = alert["state"] == "firing";
            (is_firing == firing).then_some(())
        })
        .await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let said = events(&hook.on("/hook"), "failed_units");
    assert_eq!(
        said.iter().filter(|e| *e == "flapping").count(),
        1,
        "flapping once: {said:?}"
    );
    assert!(said.len() <= 6, "not twenty notices: {said:?}");
    let alert = alert(&controller, &device, "failed_units").await.unwrap();
    assert_eq!(alert["flapping"], true, "{alert}");
    drop(agent);
    controller.shutdown().await;
}

#[tokio::test]
async fn a_maintenance_window_holds_back_then_lets_through_what_still_fires() {
    let dir = temp_dir();
    let hook = HttpReceiver::start().await;
    let channels = json!({"ops-hook": webhook(&hook, &secret_file(dir.path()))});
    let config = config(
        dir.path(),
        &Backend::Sqlite,
        channels,
        json!({}),
        Duration::from_millis(200),
    );
    let controller = TestController::start(config).await;
    let identity = controller.enroll(&path(&dir, "agent")).await;
    let device = identity.meta.device_id.clone();
    let (status, silence) = controller
        .post_body(
            "/silences",
            &json!({"devices": [device], "reason": "swapping a disk", "expires": "6s"}),
        )
        .await;
    assert_eq!(status, 201, "{silence}");
    assert_eq!(silence["active"], true);
    assert_eq!(silence["expiring_soon"], true, "{silence}");
    assert_eq!(silence["created_by"], "bootstrap-admin");
    let (agent, _inbound) = controller.raw_agent(&identity, "nas").await;
    // Begins and ends inside the window.
    report(
        &agent,
        &[
            (
                "systemd.units",
                CheckStatus::Critical,
                "smartd.service failed",
            ),
            ("zfs.pool:tank", CheckStatus::Critical, "tank is DEGRADED"),
        ],
    )
    .await;
    eventually(Duration::from_secs(10), "both firing, silenced", || async {
        let units = alert(&controller, &device, "failed_units").await?;
        let pool = alert(&controller, &device, "degraded_pools").await?;
        let held = |a: &Value| a["state"] == "firing" && a["suppressed"] == "silenced";
        (held(&units) && held(&pool)).then_some(())
    })
    .await;
    let pool_since = alert(&controller, &device, "degraded_pools").await.unwrap()["since"].clone();
    report(
        &agent,
        &[
            ("systemd.units", CheckStatus::Ok, "all units active"),
            ("zfs.pool:tank", CheckStatus::Critical, "tank is DEGRADED"),
        ],
    )
    .await;
    eventually(Duration::from_secs(10), "the unit cleared", || async {
        let units = alert(&controller, &device, "failed_units").await;
        units.is_none_or(|u| u["state"] == "inactive").then_some(())
    })
    .await;
    assert!(
        hook.on("/hook").is_empty(),
        "nothing sent during the window"
    );
    eventually(
        Duration::from_secs(20),
        "what still fires, once over",
        || async { (!hook.on("/hook").is_empty()).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let received = hook.on("/hook");
    assert_eq!(events(&received, "degraded_pools"), ["firing"]);
    assert!(
        events(&received, "failed_units").is_empty(),
        "no recovery notice for a problem that began and ended in the window"
    );
    let since = received[0].json()["alerts"][0]["since_ms"]
        .as_i64()
        .unwrap();
    assert_eq!(
        infrastructor_controller::services::rfc3339(since),
        pool_since.as_str().unwrap(),
        "the problem's start is known"
    );
    drop(agent);
    controller.shutdown().await;
}

#[tokio::test]
async fn an_offline_host_inhibits_its_containers_alerts() {
    let dir = temp_dir();
    let hook = HttpReceiver::start().await;
    let channels = json!({"ops-hook": webhook(&hook, &secret_file(dir.path()))});
    let rules = json!({
        "agent_offline": {"when": {"kind": "agent_offline", "after": "10s"},
            "keep_firing_for": "0s"},
        "unhealthy_containers": {"for": "15s"},
    });
    let config = config(
        dir.path(),
        &Backend::Sqlite,
        channels,
        rules,
        Duration::from_millis(300),
    );
    let controller = TestController::start(config).await;
    let identity = controller.enroll(&path(&dir, "agent")).await;
    let device = identity.meta.device_id.clone();
    let (agent, inbound) = controller.raw_agent(&identity, "web-2").await;
    report(
        &agent,
        &[(
            "docker.containers",
            CheckStatus::Critical,
            "api is unhealthy",
        )],
    )
    .await;
    eventually(Duration::from_secs(10), "pending", || async {
        let a = alert(&controller, &device, "unhealthy_containers").await?;
        (a["state"] == "pending").then_some(())
    })
    .await;
    // The host goes away before the container alert's `for` is up.
    drop(agent);
    drop(inbound);
    eventually(
        Duration::from_secs(30),
        "offline, and the container held back",
        || async {
            let offline = alert(&controller, &device, "agent_offline").await?;
            let container = alert(&controller, &device, "unhealthy_containers").await?;
            let held = container["state"] == "firing" && container["suppressed"] == "inhibited";
            (offline["state"] == "firing" && held).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let received = hook.on("/hook");
    assert_eq!(events(&received, "agent_offline"), ["firing"]);
    assert!(
        events(&received, "unhealthy_containers").is_empty(),
        "an offline host's container alerts are held back: {:?}",
        received.iter().map(|r| &r.body).collect::<Vec<_>>()
    );
    // Back, and the container is healthy again: the host's recovery is the only news.
    let (agent, _inbound) = controller.raw_agent(&identity, "web-2").await;
    report(
        &agent,
        &[("docker.containers", CheckStatus::Ok, "all healthy")],
    )
    .await;
    eventually(Duration::from_secs(20), "online again", || async {
        (events(&hook.on("/hook"), "agent_offline").len() == 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let received = hook.on("/hook");
    assert_eq!(events(&received, "agent_offline"), ["firing", "resolved"]);
    assert!(events(&received, "unhealthy_containers").is_empty());
    drop(agent);
    controller.shutdown().await;
}

#[tokio::test]
async fn every_channel_gets_its_format_and_failures_retry_then_wait_as_dead_letters() {
    let dir = temp_dir();
    let http = HttpReceiver::start().await;
    let token = dir.path().join("token");
    std::fs::write(&token, "app-token-123\n").unwrap();
    let slack_url = dir.path().join("slack-url");
    std::fs::write(&slack_url, http.url("/services/T000/B000/XXXXSECRET")).unwrap();
    let smtp = smtp_or_skip(dir.path());
    let mut channels = json!({
        "hook": webhook(&http, &secret_file(dir.path())),
        "phone": {"kind": "ntfy", "url": http.url("/alerts-topic"), "secret_file": token},
        "gotify": {"kind": "gotify", "url": http.url("/gotify"), "secret_file": token},
        "chat": {"kind": "slack", "url_file": slack_url},
        "discord": {"kind": "discord", "url": http.url("/discord")},
        "slow": {"kind": "webhook", "url": http.url("/slow"), "per_minute": 2},
    });
    if let Some(smtp) = &smtp {
        channels["mail"] = email(smtp);
    }
    let config = config(
        dir.path(),
        &Backend::Sqlite,
        channels,
        json!({}),
        Duration::from_millis(300),
    );
    let controller = TestController::start(config).await;

    // Views name where a channel goes, never its token or URL path.
    let (status, views) = controller.get_json("/notifications/channels").await;
    assert_eq!(status, 200);
    let shown = views.to_string();
    assert!(
        !shown.contains("XXXXSECRET") && !shown.contains("app-token-123"),
        "{shown}"
    );
    assert!(!shown.contains(SECRET), "{shown}");
    for channel in ["hook", "phone", "gotify", "chat", "discord"] {
        let (status, test) = controller
            .post_json(&format!("/notifications/channels/{channel}/test"))
            .await;
        assert_eq!(status, 200, "{test}");
        assert_eq!(test["delivered"], true, "{channel}: {test}");
    }
    assert_signed(&http.on("/hook")[0]);
    let ntfy = &http.on("/alerts-topic")[0];
    assert_eq!(ntfy.headers["title"], "[WARNING] controller: test test");
    assert_eq!(ntfy.headers["priority"], "4");
    assert_eq!(ntfy.headers["authorization"], "Bearer app-token-123");
    assert!(
        ntfy.body.starts_with("A test notification"),
        "{}",
        ntfy.body
    );
    let gotify = &http.on("/gotify/message")[0];
    assert_eq!(gotify.headers["x-gotify-key"], "app-token-123");
    assert_eq!(gotify.json()["priority"], 5);
    let slack = &http.on("/services/T000/B000/XXXXSECRET")[0];
    assert!(slack.json()["text"]
        .as_str()
        .unwrap()
        .starts_with("*[WARNING]"));
    let discord = &http.on("/discord")[0];
    assert_eq!(discord.json()["allowed_mentions"]["parse"], json!([]));
    if let Some(smtp) = &smtp {
        let (_, test) = controller
            .post_json("/notifications/channels/mail/test")
            .await;
        assert_eq!(test["delivered"], true, "{test}");
        let mail = &smtp.messages()[0];
        assert!(
            mail.contains("Subject: [WARNING] controller: test test"),
            "{mail}"
        );
    }
    let (status, missing) = controller
        .post_json("/notifications/channels/nope/test")
        .await;
    assert_eq!(status, 404, "{missing}");

    let identity = controller.enroll(&path(&dir, "agent")).await;
    let (agent, _inbound) = controller.raw_agent(&identity, "db-1").await;
    // The rate limit: two a minute on `slow`; the rest wait their turn, in order.
    let pools = ["zfs.pool:a", "zfs.pool:b", "zfs.pool:c"];
    for n in 0..pools.len() {
        let reports: Vec<_> = pools[..=n]
            .iter()
            .map(|p| (*p, CheckStatus::Critical, "faulted"))
            .collect();
        report(&agent, &reports).await;
        let want = n + 1;
        eventually(Duration::from_secs(10), "the next pool fires", || async {
            let (_, all) = controller.get_json("/notifications?limit=1000").await;
            let slow = all
                .as_array()?
                .iter()
                .filter(|n| n["channel"] == "slow")
                .count();
            (slow >= want).then_some(())
        })
        .await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(http.on("/slow").len(), 2, "two within the minute");
    let (_, pending) = controller.get_json("/notifications?state=pending").await;
    assert!(
        pending
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["channel"] == "slow"),
        "the rest wait: {pending}"
    );

    // A receiver that fails: retried with backoff, then a dead letter, sent again on demand.
    http.answer(503);
    let (_, test) = controller
        .post_json("/notifications/channels/hook/test")
        .await;
    assert_eq!(test["delivered"], false);
    assert!(test["error"].as_str().unwrap().contains("503"), "{test}");
    report(
        &agent,
        &[
            ("zfs.pool:a", CheckStatus::Critical, "faulted"),
            ("zfs.pool:b", CheckStatus::Critical, "faulted"),
            ("zfs.pool:c", CheckStatus::Critical, "faulted"),
            ("zfs.pool:tank", CheckStatus::Critical, "tank is FAULTED"),
        ],
    )
    .await;
    let dead = eventually(
        Duration::from_secs(30),
        "a dead letter for hook",
        || async {
            let (_, dead) = controller.get_json("/notifications?state=dead").await;
            dead.as_array()?
                .iter()
                .find(|n| n["channel"] == "hook")
                .cloned()
        },
    )
    .await;
    assert_eq!(dead["attempts"], 3, "{dead}");
    assert!(
        dead["last_error"].as_str().unwrap().contains("503"),
        "{dead}"
    );
    assert!(!dead.to_string().contains(SECRET));
    http.answer(200);
    let id = dead["id"].as_i64().unwrap();
    let (status, retried) = controller
        .post_json(&format!("/notifications/{id}/retry"))
        .await;
    assert_eq!(status, 200, "{retried}");
    assert_eq!(retried["state"], "pending");
    eventually(
        Duration::from_secs(20),
        "delivered after the retry",
        || async {
            let hook = http.on("/hook");
            hook.iter()
                .any(|r| r.body.contains("tank is FAULTED"))
                .then_some(())
        },
    )
    .await;
    let (status, _) = controller
        .post_json(&format!("/notifications/{id}/retry"))
        .await;
    assert_eq!(status, 404, "only a dead letter is sent again");

    drop(agent);
    controller.shutdown().await;
}

#[tokio::test]
async fn maintenance_mode_silences_stops_and_brings_a_device_back() {
    let Some(_docker) = engine_with_image().await else {
        return;
    };
    let tag = std::process::id();
    let (db, web, cron) = (
        format!("mnt{tag}-db"),
        format!("mnt{tag}-web"),
        format!("mnt{tag}-cron"),
    );
    for name in [&db, &web, &cron] {
        docker_cli(&["rm", "-f", name]);
        create(name, &[], &["sleep", "3600"]);
        docker_cli(&["start", name]);
    }
    let _cleanup = Containers(vec![db.clone(), web.clone(), cron.clone()]);
    let running = |name: &str| {
        let out = docker_cli(&["inspect", "-f", "{{.State.Running}}", name]);
        String::from_utf8_lossy(&out.stdout).trim() == "true"
    };
    let dir = temp_dir();
    let hook = HttpReceiver::start().await;
    let channels = json!({"ops-hook": webhook(&hook, &secret_file(dir.path()))});
    let config = config(
        dir.path(),
        &Backend::Sqlite,
        channels,
        json!({}),
        Duration::from_millis(300),
    );
    let controller = TestController::start(config).await;
    let (agent, device) = TestAgent::connected(&controller, &path(&dir, "agent")).await;
    let app = format!("shop{tag}");
    let (status, declared) = controller
        .put_body(
            &format!("/applications/{app}"),
            &json!({"members": [
                {"name": "db", "device": device, "container": db},
                {"name": "web", "device": device, "container": web,
                 "depends_on": [{"member": "db", "condition": "service_started"}]}]}),
        )
        .await;
    assert_eq!(status, 200, "{declared}");

    // Refused with the reason, nothing changed.
    let (status, refused) = controller
        .post_body(
            &format!("/devices/{device}/maintenance?wait=60"),
            &json!({"enable": true, "reason": "kernel update"}),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["detail"].as_str().unwrap().contains("duration"),
        "{refused}"
    );

    let enter = json!({"enable": true, "reason": "kernel update", "duration": "1h",
        "stop": [{"kind": "application", "name": app}, {"kind": "container", "name": cron}]});
    let (status, result) = controller
        .post_body(&format!("/devices/{device}/maintenance?wait=120"), &enter)
        .await;
    assert_eq!(status, 200, "{result}");
    assert!(result["problem"].is_null(), "{result}");
    assert_eq!(
        result["services"],
        json!([{"kind": "application", "name": app}, {"kind": "container", "name": cron}])
    );
    for name in [&db, &web, &cron] {
        assert!(!running(name), "{name} stopped");
    }
    // The flag: on the device, in the list, in the diagnosis; the silence is there.
    let (_, view) = controller.get_json(&format!("/devices/{device}")).await;
    assert_eq!(view["maintenance"]["reason"], "kernel update", "{view}");
    assert_eq!(view["maintenance"]["by"], "bootstrap-admin");
    let (_, list) = controller.get_json("/devices").await;
    let listed = list
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == device.as_str())
        .unwrap();
    assert_eq!(listed["maintenance"]["reason"], "kernel update");
    let (_, diagnosis) = controller
        .post_json(&format!("/devices/{device}/diagnose"))
        .await;
    assert_eq!(
        diagnosis["maintenance"]["reason"], "kernel update",
        "{diagnosis}"
    );
    let (_, silences) = controller.get_json("/silences").await;
    let silence_id = view["maintenance"]["silence_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(silences
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["id"] == silence_id.as_str()));
    let (status, _) = controller.delete(&format!("/silences/{silence_id}")).await;
    assert_eq!(
        status, 409,
        "a maintenance's silence ends with the maintenance"
    );
    let (status, again) = controller
        .post_body(&format!("/devices/{device}/maintenance?wait=60"), &enter)
        .await;
    assert_eq!(status, 409, "already in maintenance: {again}");

    // Back: started in reverse, diagnosed, flag cleared.
    let (status, result) = controller
        .post_body(
            &format!("/devices/{device}/maintenance?wait=120"),
            &json!({"enable": false}),
        )
        .await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(
        result["services"],
        json!([{"kind": "container", "name": cron}, {"kind": "application", "name": app}])
    );
    for name in [&db, &web, &cron] {
        assert!(running(name), "{name} started again");
    }
    assert!(result["diagnosis"]["score"].is_number(), "{result}");
    let healthy = !matches!(
        result["diagnosis"]["status"].as_str(),
        Some("critical" | "unreachable")
    );
    assert_eq!(result["alerting"], healthy, "{result}");
    assert_eq!(result["problem"].is_null(), healthy, "{result}");
    let (_, view) = controller.get_json(&format!("/devices/{device}")).await;
    assert!(view["maintenance"].is_null(), "{view}");

    // Maintenance ends on its own at the end of its duration.
    let short = json!({"enable": true, "reason": "quick reboot", "duration": "2s",
        "stop": [{"kind": "container", "name": cron}]});
    let (status, entered) = controller
        .post_body(&format!("/devices/{device}/maintenance?wait=120"), &short)
        .await;
    assert_eq!(status, 200, "{entered}");
    assert!(!running(&cron));
    eventually(
        Duration::from_secs(30),
        "maintenance over on its own",
        || async {
            let (_, view) = controller.get_json(&format!("/devices/{device}")).await;
            (view["maintenance"].is_null() && running(&cron)).then_some(())
        },
    )
    .await;
    let (_, jobs) = controller
        .get_json(&format!("/jobs?device={device}&limit=20"))
        .await;
    let by_system =
        jobs.as_array().unwrap().iter().find(|j| {
            j["operation"] == "set_maintenance_mode" && j["requested_by"] == "maintenance"
        });
    assert!(by_system.is_some(), "the end ran as a job: {jobs}");
    agent.stop().await;
    controller.shutdown().await;
}

/// A sample: series, labels, time, value.
type At<'a> = (&'a str, &'a [(&'a str, &'a str)], i64, f64);

/// One metric batch over the device's stream.
fn batch(seq: u64, samples: &[At<'_>]) -> AgentMessage {
    use infrastructor_proto::v1::{MetricBatch, Sample};
    AgentMessage {
        body: Some(agent_message::Body::Metrics(MetricBatch {
            seq,
            samples: samples
                .iter()
                .map(|(series, labels, ts, value)| Sample {
                    series: series.to_string(),
                    labels: labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    timestamp_ms: *ts,
                    value: *value,
                })
                .collect(),
            spool_dropped_batches: 0,
            spool_dropped_samples: 0,
        })),
    }
}

#[tokio::test]
async fn metric_thresholds_stale_metrics_and_failed_jobs_fire_their_rules() {
    let dir = temp_dir();
    let hook = HttpReceiver::start().await;
    let channels = json!({"ops-hook": webhook(&hook, &secret_file(dir.path()))});
    let rules = json!({
        "disk_space": {"for": "1s"},
        "metrics_stale": {"when": {"kind": "metrics_stale", "after": "10s"}},
    });
    let config = config(
        dir.path(),
        &Backend::Sqlite,
        channels,
        rules,
        Duration::from_millis(300),
    );
    let controller = TestController::start(config).await;
    let identity = controller.enroll(&path(&dir, "agent")).await;
    let device = identity.meta.device_id.clone();
    let (agent, _inbound) = controller.raw_agent(&identity, "files").await;
    let now = infrastructor_controller::services::now_ms();
    agent
        .send(batch(
            1,
            &[
                ("disk.used_percent", &[("mount", "/data")], now, 95.5),
                ("disk.used_percent", &[("mount", "/")], now, 40.0),
                ("cpu.usage_percent", &[], now - 60_000, 3.0),
            ],
        ))
        .await
        .unwrap();
    // A job that fails: maintenance on a host nothing answers for, stopping a container.
    let unreachable = controller.unreachable_device("gone").await;
    let (status, _) = controller
        .post_body(
            &format!("/devices/{unreachable}/maintenance?wait=60"),
            &json!({"enable": true, "reason": "r", "duration": "1h",
                "stop": [{"kind": "container", "name": "app"}]}),
        )
        .await;
    assert_eq!(status, 200);
    // Generous: on two busy cores a pass, its delivery and the receiver share the machine
    // with every other suite.
    eventually(Duration::from_secs(60), "all three fired", || async {
        let received = hook.on("/hook");
        let fired = |alert: &str| events(&received, alert) == ["firing"];
        (fired("disk_space") && fired("metrics_stale") && fired("job_failed")).then_some(())
    })
    .await;
    let disk = alert(&controller, &device, "disk_space").await.unwrap();
    assert_eq!(disk["subject"], "disk.used_percent{mount=/data}", "{disk}");
    assert!(
        disk["summary"].as_str().unwrap().contains("95.5, above 90"),
        "{disk}"
    );
    let (_, alerts) = controller.get_json("/alerts").await;
    let job = alerts
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["alert"] == "job_failed")
        .unwrap();
    assert_eq!(job["device"], "controller");
    assert_eq!(job["subject"], "set_maintenance_mode");
    let mounts: Vec<&Value> = alerts
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["alert"] == "disk_space")
        .collect();
    assert_eq!(mounts.len(), 1, "only the full mount: {alerts}");

    // Back under the threshold: resolved.
    let now = infrastructor_controller::services::now_ms();
    agent
        .send(batch(
            2,
            &[("disk.used_percent", &[("mount", "/data")], now, 50.0)],
        ))
        .await
        .unwrap();
    eventually(Duration::from_secs(60), "disk resolved", || async {
        (events(&hook.on("/hook"), "disk_space") == ["firing", "resolved"]).then_some(())
    })
    .await;
    drop(agent);
    controller.shutdown().await;
}

#[tokio::test]
async fn with_two_controllers_one_evaluates_and_nothing_is_sent_twice() {
    let Some(url) = infrastructor_e2e::fresh_postgres_database().await else {
        return;
    };
    let dir = temp_dir();
    let hook = HttpReceiver::start().await;
    let channels = json!({"ops-hook": webhook(&hook, &secret_file(dir.path()))});
    let backend = Backend::Postgres(url);
    let config = config(
        dir.path(),
        &backend,
        channels,
        json!({}),
        Duration::from_millis(200),
    );
    let a = TestController::start(config.clone()).await;
    let b = TestController::start(config).await;
    let identity = a.enroll(&path(&dir, "agent")).await;
    let (agent, _inbound) = b.raw_agent(&identity, "nas").await;
    report(&agent, &[("zfs.pool:tank", CheckStatus::Critical, "tank")]).await;
    eventually(Duration::from_secs(20), "firing told", || async {
        (events(&hook.on("/hook"), "degraded_pools").len() == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(events(&hook.on("/hook"), "degraded_pools"), ["firing"]);
    // The holder stops: the other takes the lease over and carries on from the store.
    a.kill();
    report(&agent, &[("zfs.pool:tank", CheckStatus::Ok, "tank")]).await;
    eventually(
        Duration::from_secs(60),
        "resolved by whoever holds it",
        || async { (events(&hook.on("/hook"), "degraded_pools").len() == 2).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        events(&hook.on("/hook"), "degraded_pools"),
        ["firing", "resolved"],
        "each change once, from one evaluator at a time"
    );
    drop(agent);
    b.shutdown().await;
}

#[tokio::test]
async fn a_disk_forecast_to_fill_within_a_week_fires_its_rule() {
    use infrastructor_controller::services::analytics::synthetic::Synthetic;
    use infrastructor_controller::store::IngestSample;
    let dir = temp_dir();
    let hook = HttpReceiver::start().await;
    let channels = json!({"ops-hook": webhook(&hook, &secret_file(dir.path()))});
    let mut config = config(
        dir.path(),
        &Backend::Sqlite,
        channels,
        json!({}),
        Duration::from_millis(300),
    );
    // Its own rollups would skip history older than raw retention, racing the test's.
    config.maintenance_interval = Duration::from_secs(86_400);
    let controller = TestController::start(config).await;
    let now = infrastructor_controller::services::now_ms();
    // A month of growth, 0.6 points a day, at 98 % now: full in about three days. Beside it a
    // flat disk at 40 %.
    let filling = Synthetic {
        noise_sd: 0.3,
        seed: 11,
        ..Synthetic::growth(now, 30, 80.0, 0.6)
    };
    let flat = Synthetic {
        noise_sd: 0.3,
        seed: 12,
        ..Synthetic::growth(now, 30, 40.0, 0.0)
    };
    for (name, series) in [("filling", filling), ("flat", flat)] {
        let device = controller.unreachable_device(name).await;
        let samples: Vec<IngestSample> = series
            .points()
            .iter()
            .map(|p| IngestSample {
                series: "disk.used_percent".into(),
                labels: r#"{"mount":"/data"}"#.into(),
                ts_ms: p.ts_ms,
                value: p.value,
            })
            .collect();
        let store = controller.services.store.clone();
        controller
            .run(async move {
                store
                    .ingest_batch(&device, 1, &samples, (0, 0), now)
                    .await
                    .unwrap();
                while store.run_rollups(0, 1000).await.unwrap() > 0 {}
            })
            .await;
    }
    // Forecasts are asked once an hour: a fresh evaluator asks at its first pass.
    let restart = controller.restart_config();
    controller.shutdown().await;
    let controller = TestController::start(restart).await;
    let received = eventually(Duration::from_secs(60), "the forecast fired", || async {
        let received = hook.on("/hook");
        (!events(&received, "disk_full_soon").is_empty()).then_some(received)
    })
    .await;
    let fired: Vec<Value> = received.iter().map(|r| r.json()).collect();
    let devices: Vec<&str> = fired
        .iter()
        .filter(|b| b["alerts"][0]["alert"] == "disk_full_soon")
        .map(|b| b["device"].as_str().unwrap())
        .collect();
    assert_eq!(devices, ["filling"], "only the disk that fills: {fired:?}");
    let summary = fired[0]["alerts"][0]["summary"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        summary.contains("disk.used_percent{mount=/data}: forecast to cross 100"),
        "{summary}"
    );
    controller.shutdown().await;
}
