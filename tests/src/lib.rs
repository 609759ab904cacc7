//! Test harness: real controllers and agents in one process, talking real gRPC over TLS on
//! loopback, storing into real SQLite files or real PostgreSQL databases.
//!
//! Each [`TestController`] runs on its own tokio runtime, so [`TestController::kill`] can
//! drop every task and connection at once — a crash, not a graceful stop.

pub mod docker;
pub mod mcp;
pub mod receivers;
pub mod rest_repo;
pub mod sim;
pub mod sshd;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use infrastructor_agent::enroll::{enroll, EnrollOptions};
use infrastructor_agent::identity::Identity;
use infrastructor_agent::metrics::{now_ms, sample, MetricSource};
use infrastructor_agent::{Agent, AgentConfig, AgentHandle};
use infrastructor_controller::services::tokens::NewApiToken;
use infrastructor_controller::services::Services;
use infrastructor_controller::{Controller, ControllerConfig};
use infrastructor_proto::v1::Sample;
use tokio_util::sync::CancellationToken;

pub use infrastructor_controller;

/// True when CI demands that PostgreSQL, Redis, Docker and sshd are present.
pub fn services_required() -> bool {
    std::env::var("INFRASTRUCTOR_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// The test Redis (`INFRASTRUCTOR_TEST_REDIS_URL`, required in CI) and a key prefix unique
/// to this call, so tests sharing the server never see each other's keys; `None` skips.
pub fn test_redis() -> Option<(String, String)> {
    match std::env::var("INFRASTRUCTOR_TEST_REDIS_URL") {
        Ok(url) => Some((url, format!("test-{}", uuid_like()))),
        Err(_) if services_required() => {
            panic!("INFRASTRUCTOR_TEST_REDIS_URL is required when services are required")
        }
        Err(_) => {
            eprintln!("skipping the Redis variant: INFRASTRUCTOR_TEST_REDIS_URL is not set");
            None
        }
    }
}

fn uuid_like() -> String {
    use rand::Rng;
    format!("{:016x}", rand::thread_rng().gen::<u64>())
}

/// Admin URL of the test PostgreSQL server (a role allowed to create databases).
pub fn postgres_admin_url() -> String {
    std::env::var("INFRASTRUCTOR_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        "postgres://infrastructor:infrastructor@127.0.0.1:5432/postgres".to_string()
    })
}

/// A fresh, empty PostgreSQL database for one test, or `None` (test skipped) when no server is
/// reachable — unless services are required, in which case that is a failure.
/// A well-formed host key no host answers with.
const UNREACHABLE_HOST_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

pub async fn fresh_postgres_database() -> Option<String> {
    use sqlx::Connection;
    let admin_url = postgres_admin_url();
    let mut admin = match sqlx::PgConnection::connect(&admin_url).await {
        Ok(connection) => connection,
        Err(error) => {
            assert!(
                !services_required(),
                "INFRASTRUCTOR_REQUIRE_SERVICES=1 but PostgreSQL is unreachable at {admin_url}: {error}"
            );
            eprintln!("skipping PostgreSQL part: {error} (set INFRASTRUCTOR_TEST_POSTGRES_URL)");
            return None;
        }
    };
    let name = format!("infra_test_{}", uuid_simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create test database");
    let (base, _) = admin_url.rsplit_once('/').expect("database URL has a path");
    Some(format!("{base}/{name}"))
}

fn uuid_simple() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..16)
        .map(|_| format!("{:x}", rng.gen_range(0..16)))
        .collect()
}

/// Which database a test runs against.
#[derive(Clone, Debug)]
pub enum Backend {
    Sqlite,
    Postgres(String),
}

/// Both backends: SQLite always, PostgreSQL when reachable (required in CI).
pub async fn backends() -> Vec<Backend> {
    let mut backends = vec![Backend::Sqlite];
    if let Some(url) = fresh_postgres_database().await {
        backends.push(Backend::Postgres(url));
    }
    backends
}

pub fn controller_config(data_dir: &Path, backend: &Backend) -> ControllerConfig {
    ControllerConfig {
        data_dir: data_dir.to_path_buf(),
        database_url: match backend {
            Backend::Sqlite => None,
            Backend::Postgres(url) => Some(url.clone()),
        },
        http_listen: "127.0.0.1:0".parse().expect("addr"),
        grpc_listen: "127.0.0.1:0".parse().expect("addr"),
        maintenance_interval: Duration::from_secs(1),
        // Alerts evaluate (and notifications go out) every second, not every 15.
        alerts: infrastructor_controller::services::alerts::rules::AlertsConfig {
            interval: Duration::from_secs(1),
            ..Default::default()
        },
        // Suites probe routes and scopes with many unauthenticated requests from one address;
        // the failed-authentication budget has its own test with its own figures.
        connections: infrastructor_controller::connections::ConnectionLimits {
            auth_failures_burst: 10_000,
            ..Default::default()
        },
        ..ControllerConfig::default()
    }
}

pub struct TestController {
    runtime: Option<tokio::runtime::Runtime>,
    controller: Option<Controller>,
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub services: Services,
    pub admin_token: String,
    pub config: ControllerConfig,
}

impl TestController {
    pub async fn start(config: ControllerConfig) -> Self {
        if std::env::var_os("INFRASTRUCTOR_TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_env(
                    "INFRASTRUCTOR_TEST_LOG",
                ))
                .with_test_writer()
                .try_init();
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("controller runtime");
        let started = {
            let config = config.clone();
            runtime.spawn(async move {
                // The previous instance's port may take a moment to be released after a kill.
                let mut attempts = 0;
                loop {
                    match Controller::start(config.clone()).await {
                        Ok(controller) => break controller,
                        Err(error)
                            if attempts < 50 && error.to_string().contains("cannot listen") =>
                        {
                            attempts += 1;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(error) => panic!("controller failed to start: {error}"),
                    }
                }
            })
        };
        let controller = started.await.expect("controller start task");
        let services = controller.services.clone();
        let admin_token = match &controller.bootstrap_admin_token {
            Some(created) => created.token.clone(),
            None => {
                let services = services.clone();
                runtime
                    .spawn(async move {
                        services
                            .create_api_token(
                                &infrastructor_controller::ctx::Ctx::system("test"),
                                NewApiToken::new(
                                    "test-admin",
                                    infrastructor_controller::auth::Scope::Admin,
                                ),
                            )
                            .await
                            .expect("admin token")
                            .token
                    })
                    .await
                    .expect("token task")
            }
        };
        Self {
            http_addr: controller.http_addr,
            grpc_addr: controller.grpc_addr,
            services,
            admin_token,
            config,
            controller: Some(controller),
            runtime: Some(runtime),
        }
    }

    /// A controller on SQLite in a fresh temporary directory (kept alive by the returned
    /// guard, which tests also use for agent state directories).
    pub async fn start_sqlite() -> (tempfile::TempDir, Self) {
        let dir = temp_dir();
        let controller = Self::start(controller_config(
            &path(&dir, "controller"),
            &Backend::Sqlite,
        ))
        .await;
        (dir, controller)
    }

    /// Runs `future` on the controller's runtime (its database pools live there).
    pub async fn run<F, T>(&self, future: F) -> T
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        self.runtime
            .as_ref()
            .expect("running")
            .spawn(future)
            .await
            .expect("task on controller runtime")
    }

    pub fn gateway_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.grpc_addr.port())
    }

    pub fn api_url(&self, path: &str) -> String {
        format!("http://{}/api/v1{path}", self.http_addr)
    }

    /// The same controller again on the same ports and data (after kill or shutdown).
    pub fn restart_config(&self) -> ControllerConfig {
        let mut config = self.config.clone();
        config.http_listen = self.http_addr;
        config.grpc_listen = self.grpc_addr;
        config
    }

    /// Crash: every task and connection of this controller is dropped mid-flight.
    pub fn kill(mut self) {
        drop(self.controller.take());
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }

    /// Graceful stop.
    pub async fn shutdown(mut self) {
        if let Some(controller) = self.controller.take() {
            self.run(controller.shutdown()).await;
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }

    /// A fresh API token named (and owned by) `name`, with `scope`.
    pub async fn api_token(
        &self,
        name: &str,
        scope: infrastructor_controller::auth::Scope,
    ) -> String {
        self.api_token_for(NewApiToken::new(name, scope)).await
    }

    /// A fresh API token as `request` describes it.
    pub async fn api_token_for(&self, request: NewApiToken) -> String {
        let services = self.services.clone();
        self.run(async move {
            services
                .create_api_token(&infrastructor_controller::ctx::Ctx::system("test"), request)
                .await
                .expect("API token")
                .token
        })
        .await
    }

    /// A fresh join token and the CA fingerprint, via the REST API.
    pub async fn join_token(&self) -> (String, String) {
        let body: serde_json::Value = self
            .http()
            .post(self.api_url("/enrollment-tokens"))
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .expect("POST /enrollment-tokens")
            .json()
            .await
            .expect("json");
        (
            body["token"].as_str().expect("token").to_string(),
            body["ca_fingerprint"]
                .as_str()
                .expect("fingerprint")
                .to_string(),
        )
    }

    /// `POST /api/v1{path}` as admin, without a body.
    pub async fn post_json(&self, path: &str) -> (u16, serde_json::Value) {
        let request = self
            .http()
            .post(self.api_url(path))
            .bearer_auth(&self.admin_token);
        status_and_json(request).await
    }

    /// POSTs a JSON body with the admin token; the status and the JSON answer.
    pub async fn post_body(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let request = self
            .http()
            .post(self.api_url(path))
            .bearer_auth(&self.admin_token)
            .json(body);
        status_and_json(request).await
    }

    pub async fn put_body(&self, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let request = self
            .http()
            .put(self.api_url(path))
            .bearer_auth(&self.admin_token)
            .json(body);
        status_and_json(request).await
    }

    pub async fn delete(&self, path: &str) -> (u16, serde_json::Value) {
        let request = self
            .http()
            .delete(self.api_url(path))
            .bearer_auth(&self.admin_token);
        status_and_json(request).await
    }

    /// Registers an agentless device that is never reached (its history is stored directly),
    /// and returns its ID.
    pub async fn unreachable_device(&self, name: &str) -> String {
        let (status, device) = self
            .post_body(
                "/devices",
                &serde_json::json!({"name": name, "ssh_address": "127.0.0.1:1",
                    "ssh_user": "monitor", "ssh_host_key": UNREACHABLE_HOST_KEY}),
            )
            .await;
        assert_eq!(status, 201, "{device}");
        device["id"].as_str().expect("device id").to_string()
    }

    /// The controller's own metrics (`GET /metrics`), as text.
    pub async fn metrics_text(&self) -> String {
        self.http()
            .get(format!("http://{}/metrics", self.http_addr))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// A hand-driven agent for `identity`: TLS and hello done, then it sends only what the
    /// test sends and the test reads what the controller sends it.
    pub async fn raw_agent(
        &self,
        identity: &Identity,
        hostname: &str,
    ) -> (
        tokio::sync::mpsc::Sender<infrastructor_proto::v1::AgentMessage>,
        tonic::Streaming<infrastructor_proto::v1::ControllerMessage>,
    ) {
        use infrastructor_agent::tls;
        use infrastructor_proto::v1::agent_gateway_client::AgentGatewayClient;
        let config = tls::mutual_tls_config(identity).expect("mTLS config");
        let channel = tls::connect(&self.gateway_url(), config)
            .await
            .expect("TLS to the gateway");
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        sender
            .send(hello(&identity.meta.device_id, hostname))
            .await
            .expect("hello queued");
        let inbound = AgentGatewayClient::new(channel)
            .connect(tokio_stream::wrappers::ReceiverStream::new(receiver))
            .await
            .expect("stream opened")
            .into_inner();
        (sender, inbound)
    }

    pub fn http(&self) -> reqwest::Client {
        reqwest::Client::new()
    }

    /// `GET /api/v1{path}` as admin; the status and the JSON answer.
    pub async fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let request = self
            .http()
            .get(self.api_url(path))
            .bearer_auth(&self.admin_token);
        status_and_json(request).await
    }

    /// Enrolls an agent state directory with this controller.
    pub async fn enroll(&self, state_dir: &Path) -> Identity {
        self.enroll_via(state_dir, &self.gateway_url()).await
    }

    /// Enrolls an agent that will dial `controller_url` (e.g. a [`Forwarder`] in front of
    /// several controllers).
    pub async fn enroll_via(&self, state_dir: &Path, controller_url: &str) -> Identity {
        let (token, fingerprint) = self.join_token().await;
        enroll(EnrollOptions {
            state_dir,
            controller_url,
            join_token: &token,
            ca_fingerprint: &fingerprint,
            hostname: "test-host",
            force: false,
        })
        .await
        .expect("enroll")
    }

    /// `(value, count)` of every raw sample of `series` on the device.
    pub async fn sample_counts(&self, device_id: &str, series: &str) -> Vec<(f64, i64)> {
        let store = self.services.store.clone();
        let device_id = device_id.to_string();
        let series = series.to_string();
        self.run(async move {
            store
                .count_samples(&device_id, &series)
                .await
                .expect("count")
        })
        .await
    }

    pub async fn high_water_mark(&self, device_id: &str) -> i64 {
        let store = self.services.store.clone();
        let device_id = device_id.to_string();
        self.run(async move {
            store
                .device_by_id(&device_id)
                .await
                .expect("device")
                .map(|d| d.high_water_mark)
                .unwrap_or(-1)
        })
        .await
    }
}

impl Drop for TestController {
    fn drop(&mut self) {
        drop(self.controller.take());
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A deterministic metric source: each round emits `test.sequence` with value
/// `offset + round` (1, 2, 3, …), so exactly-once can be checked sample by sample.
pub struct SequenceSource {
    offset: u64,
    produced: Arc<AtomicU64>,
    extra_series: usize,
}

impl SequenceSource {
    pub fn new(offset: u64, extra_series: usize) -> (Self, Arc<AtomicU64>) {
        let produced = Arc::new(AtomicU64::new(0));
        (
            Self {
                offset,
                produced: produced.clone(),
                extra_series,
            },
            produced,
        )
    }
}

/// A fixed instant (first use in this process), an hour back so offsets stay in the past.
fn sequence_epoch_ms() -> i64 {
    static EPOCH: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(|| now_ms() - 3_600_000)
}

impl MetricSource for SequenceSource {
    fn collect(&mut self) -> Vec<Sample> {
        let round = self.produced.fetch_add(1, Ordering::SeqCst) + 1;
        let value = self.offset + round;
        // One timestamp per value, shared by every source in this process: a series holds
        // one value per millisecond, so two sources must never stamp the same instant.
        let ts = sequence_epoch_ms() + value as i64;
        let value = value as f64;
        let mut samples = vec![sample("test.sequence", &[], ts, value)];
        for index in 0..self.extra_series {
            let label = index.to_string();
            samples.push(sample("test.extra", &[("index", &label)], ts, value));
        }
        samples
    }
}

pub struct TestAgent {
    pub handle: AgentHandle,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<infrastructor_agent::Result<()>>,
}

pub fn agent_config(state_dir: &Path, interval: Duration) -> AgentConfig {
    let mut config = AgentConfig::new(state_dir.to_path_buf());
    config.interval = interval;
    config.backoff_initial = Duration::from_millis(50);
    config.backoff_max = Duration::from_millis(500);
    config.heartbeat_interval = Duration::from_secs(1);
    // Host checks add batches of their own; tests that want them turn them on.
    config.checks.interval = Duration::ZERO;
    config
}

/// A change policy allowing writes under `root` with the given validators.
pub fn change_policy(
    root: &Path,
    validators: &[(&str, &[&str])],
) -> infrastructor_hostops::change::ChangePolicy {
    infrastructor_hostops::change::ChangePolicy {
        roots: vec![infrastructor_hostops::names::ManagedPath::new(
            root.to_str().expect("UTF-8 root"),
        )
        .expect("managed root")],
        validators: validators
            .iter()
            .map(|(name, argv)| {
                (
                    name.to_string(),
                    argv.iter().map(|a| a.to_string()).collect(),
                )
            })
            .collect(),
        ..Default::default()
    }
}

impl TestAgent {
    /// An agent daemon enrolled at `controller`, with `policy` for changes, once connected;
    /// and its device ID.
    pub async fn connected_with_changes(
        controller: &TestController,
        state: &Path,
        policy: infrastructor_hostops::change::ChangePolicy,
    ) -> (Self, String) {
        Self::connected_with(controller, state, |config| config.changes = policy).await
    }

    /// An agent enrolled and connected whose checks run when asked (and once at start).
    pub async fn connected(controller: &TestController, state: &Path) -> (Self, String) {
        let hourly = |config: &mut AgentConfig| config.checks.interval = Duration::from_secs(3600);
        Self::connected_with(controller, state, hourly).await
    }

    pub async fn connected_with(
        controller: &TestController,
        state: &Path,
        adjust: impl FnOnce(&mut AgentConfig),
    ) -> (Self, String) {
        let identity = controller.enroll(state).await;
        let mut config = agent_config(state, Duration::from_secs(1));
        adjust(&mut config);
        let agent = Self::start(config, Box::new(SequenceSource::new(0, 0).0));
        let handle = agent.handle.clone();
        eventually(Duration::from_secs(10), "agent connected", || {
            let connected = handle.is_connected();
            async move { connected.then_some(()) }
        })
        .await;
        (agent, identity.meta.device_id)
    }

    pub fn start(config: AgentConfig, source: Box<dyn MetricSource>) -> Self {
        let agent = Agent::new(config).expect("agent");
        let handle = agent.handle();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(agent.run(source, shutdown.clone()));
        Self {
            handle,
            shutdown,
            task,
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("agent task").expect("agent run");
    }
}

/// Sends `request`; its status and JSON answer (`null` when the body is not JSON).
async fn status_and_json(request: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
    let response = request.send().await.expect("HTTP request");
    let status = response.status().as_u16();
    (
        status,
        response.json().await.unwrap_or(serde_json::Value::Null),
    )
}

/// A TCP forwarder on loopback, standing for the load balancer in front of several
/// controllers: each new connection goes to the current target.
pub struct Forwarder {
    pub port: u16,
    target: Arc<std::sync::Mutex<SocketAddr>>,
}

impl Forwarder {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("forwarder");
        let port = listener.local_addr().expect("addr").port();
        let target = Arc::new(std::sync::Mutex::new(target));
        let current = target.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let to = *current.lock().expect("target");
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self { port, target }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// New connections go to `target` from now on.
    pub fn point_to(&self, target: SocketAddr) {
        *self.target.lock().expect("target") = target;
    }
}

/// Polls `check` until it returns `Some`, or panics after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks that `counts` holds every value of `expected` exactly once and nothing else.
pub fn assert_exactly_once(counts: &[(f64, i64)], expected: impl IntoIterator<Item = u64>) {
    let seen: HashMap<u64, i64> = counts.iter().map(|(v, c)| (*v as u64, *c)).collect();
    let expected: Vec<u64> = expected.into_iter().collect();
    let duplicated: Vec<_> = seen.iter().filter(|(_, c)| **c != 1).collect();
    assert!(
        duplicated.is_empty(),
        "values stored more than once: {duplicated:?}"
    );
    let missing: Vec<_> = expected.iter().filter(|v| !seen.contains_key(v)).collect();
    assert!(missing.is_empty(), "values lost: {missing:?}");
    assert_eq!(seen.len(), expected.len(), "unexpected extra values");
}

/// The first message of a stream, as a raw test agent sends it.
pub fn hello(device_id: &str, hostname: &str) -> infrastructor_proto::v1::AgentMessage {
    use infrastructor_proto::v1::{agent_message, AgentMessage, Hello};
    AgentMessage {
        body: Some(agent_message::Body::Hello(Hello {
            device_id: device_id.to_string(),
            agent_version: "test".into(),
            hostname: hostname.into(),
            capabilities: vec![],
            last_assigned_seq: 0,
        })),
    }
}

pub fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

pub fn path(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}
