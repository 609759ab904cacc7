//! One correlation ID follows an operation from the client through the controller to the
//! agent's log and back: every log line of this process is captured (controller and a real
//! in-process agent share it) and searched for the ID the client sent.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use infrastructor_e2e::{agent_config, path, SequenceSource, TestAgent, TestController};

/// Log output of the whole test process.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines_with(&self, needle: &str) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.0.lock().unwrap()).to_string();
        text.lines()
            .filter(|line| line.contains(needle))
            .map(str::to_string)
            .collect()
    }
}

#[tokio::test]
async fn the_request_id_reaches_the_agent_log_and_comes_back() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_ansi(false)
        .with_target(true)
        .with_writer(move || writer.clone())
        .init();

    let (dir, controller) = TestController::start_sqlite().await;
    let identity = controller.enroll(&path(&dir, "agent")).await;
    let device_id = identity.meta.device_id.clone();
    let mut config = agent_config(&path(&dir, "agent"), Duration::from_secs(60));
    config.checks.interval = Duration::from_secs(3600);
    let (source, _) = SequenceSource::new(0, 0);
    let agent = TestAgent::start(config, Box::new(source));
    infrastructor_e2e::eventually(Duration::from_secs(10), "agent connected", || async {
        (controller.services.sessions.count() == 1).then_some(())
    })
    .await;

    let response = controller
        .http()
        .post(controller.api_url(&format!("/devices/{device_id}/checks/run")))
        .bearer_auth(&controller.admin_token)
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "trace-me-42");

    let lines = captured.lines_with("trace-me-42");
    let agent_lines: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("infrastructor_agent::link") && l.contains("command received"))
        .collect();
    assert_eq!(agent_lines.len(), 1, "agent log: {lines:#?}");
    assert!(agent_lines[0].contains("run_checks"));
    assert!(
        lines
            .iter()
            .any(|l| l.contains("infrastructor_controller") && l.contains("request")),
        "controller log: {lines:#?}"
    );
    agent.stop().await;
    controller.shutdown().await;
}
