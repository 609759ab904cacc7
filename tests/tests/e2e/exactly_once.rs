//! Nothing is lost, nothing is doubled: the controller is killed mid-stream and restarted,
//! the agent is stopped with a full spool and restarted — every sample arrives exactly once.

use std::sync::atomic::Ordering;
use std::time::Duration;

use infrastructor_agent::metrics::MetricSource;
use infrastructor_e2e::{
    agent_config, assert_exactly_once, backends, controller_config, eventually, path, temp_dir,
    Backend, SequenceSource, TestAgent, TestController,
};
use infrastructor_proto::v1::Sample;

const WAIT: Duration = Duration::from_secs(60);
const INTERVAL: Duration = Duration::from_millis(20);

/// Produces nothing: used to drain the spool without adding data.
struct Silent;

impl MetricSource for Silent {
    fn collect(&mut self) -> Vec<Sample> {
        Vec::new()
    }
}

async fn wait_for_hwm(controller: &TestController, device_id: &str, at_least: i64) {
    eventually(WAIT, "high-water mark to advance", || async {
        (controller.high_water_mark(device_id).await >= at_least).then_some(())
    })
    .await;
}

async fn run_scenario(backend: Backend) {
    eprintln!("backend: {backend:?}");
    let dir = temp_dir();
    let state_dir = path(&dir, "agent");
    let controller =
        TestController::start(controller_config(&path(&dir, "controller"), &backend)).await;
    let device_id = controller.enroll(&state_dir).await.meta.device_id;

    // Phase 1: stream, then kill the controller mid-stream.
    let (source, produced_first) = SequenceSource::new(0, 20);
    let agent = TestAgent::start(agent_config(&state_dir, INTERVAL), Box::new(source));
    wait_for_hwm(&controller, &device_id, 20).await;
    let restart = controller.restart_config();
    controller.kill();
    // The agent keeps collecting into its spool while the controller is gone.
    let spooled_at_kill = produced_first.load(Ordering::SeqCst);
    eventually(
        WAIT,
        "agent to spool while the controller is down",
        || async { (produced_first.load(Ordering::SeqCst) > spooled_at_kill + 10).then_some(()) },
    )
    .await;

    // Phase 2: restart; the agent resumes from the controller's high-water mark.
    let controller = TestController::start(restart).await;
    let hwm = controller.high_water_mark(&device_id).await;
    wait_for_hwm(&controller, &device_id, hwm + 20).await;

    // Phase 3: controller down again, agent stopped with unacknowledged batches on disk.
    let restart = controller.restart_config();
    controller.kill();
    let before = produced_first.load(Ordering::SeqCst);
    eventually(WAIT, "more batches spooled", || async {
        (produced_first.load(Ordering::SeqCst) > before + 10).then_some(())
    })
    .await;
    let handle = agent.handle.clone();
    agent.stop().await;
    assert!(
        handle.spooled_batches().await > 0,
        "the stopped agent holds unacknowledged batches"
    );
    let produced_first = produced_first.load(Ordering::SeqCst);

    // Phase 4: a new agent process on the same state directory resumes from its spool.
    let controller = TestController::start(restart).await;
    let (source, produced_second) = SequenceSource::new(1_000_000, 20);
    let agent = TestAgent::start(agent_config(&state_dir, INTERVAL), Box::new(source));
    eventually(WAIT, "second agent to produce", || async {
        (produced_second.load(Ordering::SeqCst) >= 20).then_some(())
    })
    .await;
    agent.stop().await;
    let produced_second = produced_second.load(Ordering::SeqCst);

    // Drain whatever is still spooled, adding nothing.
    let drain = TestAgent::start(agent_config(&state_dir, INTERVAL), Box::new(Silent));
    let last_seq = drain.handle.spool_state().await.last_assigned_seq;
    eventually(WAIT, "spool drained and acknowledged", || async {
        let drained = drain.handle.spooled_batches().await == 0;
        (drained && controller.high_water_mark(&device_id).await == last_seq as i64).then_some(())
    })
    .await;
    drain.stop().await;

    let expected: Vec<u64> = (1..=produced_first)
        .chain(1_000_001..=1_000_000 + produced_second)
        .collect();
    let counts = controller.sample_counts(&device_id, "test.sequence").await;
    assert_exactly_once(&counts, expected.iter().copied());
    // By count too: every labelled series holds the same rounds, each once.
    let extra = controller.sample_counts(&device_id, "test.extra").await;
    let total: i64 = extra.iter().map(|(_, c)| c).sum();
    assert_eq!(total, 20 * expected.len() as i64);
    assert_eq!(
        last_seq,
        produced_first + produced_second,
        "one batch per round, sequence without gaps"
    );
    controller.shutdown().await;
}

#[tokio::test]
async fn every_sample_exactly_once_across_controller_kills_and_agent_restarts() {
    for backend in backends().await {
        run_scenario(backend).await;
    }
}
