//! The driver for agentless hosts: the same `HostCommand`s the agent runs, executed over SSH
//! (russh) with key authentication and a pinned host key — an unknown or changed key is
//! refused, never accepted. Connections are pooled per host (bounded), kept alive, and
//! pruned when dead.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use infrastructor_hostops::command::{CommandOutput, HostCommand};
use russh::client::{self, Handle};
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKey};
use russh::ChannelMsg;

/// Where the Docker engine listens on a host.
const DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// Output kept per stream, as for local commands.
const MAX_OUTPUT_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error(
        "host key of {host} does not match the pinned key: refusing \
        to connect (possible man-in-the-middle, or the host was \
        reinstalled)"
    )]
    HostKeyMismatch { host: String },
    #[error("cannot connect to {host}: {message}")]
    Connect { host: String, message: String },
    #[error("{user}@{host} refused the key")]
    AuthenticationFailed { host: String, user: String },
    #[error("invalid pinned host key: {0}")]
    BadHostKey(String),
    #[error("invalid SSH private key: {0}")]
    BadPrivateKey(String),
    #[error("command cannot be sent: {0}")]
    BadCommand(String),
    #[error("{host}: {program} did not finish within {timeout:?}")]
    Timeout {
        host: String,
        program: String,
        timeout: Duration,
    },
    #[error("{host}: {message}")]
    Channel { host: String, message: String },
}

/// Where and as whom to connect, and the only host key accepted.
#[derive(Clone, Debug)]
pub struct SshTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub host_key: PublicKey,
}

impl SshTarget {
    /// `host_key` is an OpenSSH public key line, e.g. `ssh-ed25519 AAAA… comment`.
    pub fn new(host: &str, port: u16, user: &str, host_key: &str) -> Result<Self, SshError> {
        let host_key = PublicKey::from_openssh(host_key.trim())
            .map_err(|e| SshError::BadHostKey(e.to_string()))?;
        Ok(Self {
            host: host.to_string(),
            port,
            user: user.to_string(),
            host_key,
        })
    }

    /// Pool key: a pooled connection was verified against one host key, so it may only be
    /// reused for a target that pins that same key.
    /// The key recorded for `host:port` in an OpenSSH known_hosts file, if any.
    pub fn host_key_from_known_hosts(
        host: &str,
        port: u16,
        known_hosts: &std::path::Path,
    ) -> Result<Option<String>, SshError> {
        let keys = russh::keys::known_hosts::known_host_keys_path(host, port, known_hosts)
            .map_err(|e| SshError::BadHostKey(format!("{}: {e}", known_hosts.display())))?;
        keys.into_iter()
            .next()
            .map(|(_, key)| {
                key.to_openssh()
                    .map_err(|e| SshError::BadHostKey(e.to_string()))
            })
            .transpose()
    }

    fn key(&self) -> String {
        let pinned = self.host_key.fingerprint(russh::keys::HashAlg::Sha256);
        format!("{}@{}:{} {pinned}", self.user, self.host, self.port)
    }
}

/// Accepts exactly the pinned key and remembers a mismatch, so the error can say so.
struct PinnedHostKey {
    expected: PublicKey,
    mismatch: Arc<AtomicBool>,
}

impl client::Handler for PinnedHostKey {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let matches = match server_key {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => {
                key.key_data() == self.expected.key_data()
            }
            // Host certificates are not trusted implicitly: only the pinned key is.
            russh::keys::PublicKeyOrCertificate::Certificate(_) => false,
        };
        if !matches {
            self.mismatch.store(true, Ordering::SeqCst);
        }
        Ok(matches)
    }
}

/// Pool statistics for health reporting.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PoolStats {
    pub hosts: usize,
    pub idle_connections: usize,
    /// Connections opened since start (reuse keeps this low).
    pub connections_opened: u64,
}

pub struct SshDriver {
    key: Arc<PrivateKey>,
    config: Arc<client::Config>,
    /// At most this many connections per host, idle and in use together.
    max_per_host: usize,
    idle: Mutex<HashMap<String, Vec<Handle<PinnedHostKey>>>>,
    /// One semaphore per host bounds its connections; a caller waits for a free one.
    slots: Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
    opened: std::sync::atomic::AtomicU64,
}

impl SshDriver {
    /// `private_key_openssh` is the controller's OpenSSH private key (unencrypted).
    /// `max_per_host` bounds the connections to one host (idle and in use).
    pub fn new(private_key_openssh: &str, max_per_host: usize) -> Result<Self, SshError> {
        let key = PrivateKey::from_openssh(private_key_openssh)
            .map_err(|e| SshError::BadPrivateKey(e.to_string()))?;
        let config = client::Config {
            inactivity_timeout: Some(Duration::from_secs(300)),
            keepalive_interval: Some(Duration::from_secs(15)),
            keepalive_max: 3,
            // Each command is a few small request/answer round trips; with Nagle's algorithm
            // every one waits out the peer's delayed ACK (~40 ms), as OpenSSH's own client
            // avoids by setting TCP_NODELAY too.
            nodelay: true,
            ..Default::default()
        };
        Ok(Self {
            key: Arc::new(key),
            config: Arc::new(config),
            max_per_host: max_per_host.max(1),
            idle: Mutex::new(HashMap::new()),
            slots: Mutex::new(HashMap::new()),
            opened: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Handle<PinnedHostKey>>>> {
        match self.idle.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    async fn connect(&self, target: &SshTarget) -> Result<Handle<PinnedHostKey>, SshError> {
        let mismatch = Arc::new(AtomicBool::new(false));
        let handler = PinnedHostKey {
            expected: target.host_key.clone(),
            mismatch: mismatch.clone(),
        };
        let connected = tokio::time::timeout(
            Duration::from_secs(10),
            client::connect(
                self.config.clone(),
                (target.host.as_str(), target.port),
                handler,
            ),
        )
        .await;
        let mut handle = match connected {
            Ok(Ok(handle)) => handle,
            _ if mismatch.load(Ordering::SeqCst) => {
                return Err(SshError::HostKeyMismatch {
                    host: target.host.clone(),
                })
            }
            Ok(Err(error)) => {
                return Err(SshError::Connect {
                    host: target.host.clone(),
                    message: error.to_string(),
                })
            }
            Err(_) => {
                return Err(SshError::Connect {
                    host: target.host.clone(),
                    message: "timed out".into(),
                })
            }
        };
        let hash = handle
            .best_supported_rsa_hash()
            .await
            .ok()
            .flatten()
            .flatten();
        let auth = handle
            .authenticate_publickey(
                target.user.clone(),
                PrivateKeyWithHashAlg::new(self.key.clone(), hash),
            )
            .await
            .map_err(|e| SshError::Connect {
                host: target.host.clone(),
                message: e.to_string(),
            })?;
        if !auth.success() {
            return Err(SshError::AuthenticationFailed {
                host: target.host.clone(),
                user: target.user.clone(),
            });
        }
        self.opened.fetch_add(1, Ordering::Relaxed);
        Ok(handle)
    }

    /// A pooled live connection, or a new one.
    fn slot(&self, target: &SshTarget) -> Arc<tokio::sync::Semaphore> {
        let mut slots = match self.slots.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        slots
            .entry(target.key())
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(self.max_per_host)))
            .clone()
    }

    async fn checkout(&self, target: &SshTarget) -> Result<Handle<PinnedHostKey>, SshError> {
        let pooled = {
            let mut idle = self.idle();
            let connections = idle.entry(target.key()).or_default();
            connections.retain(|h| !h.is_closed());
            connections.pop()
        };
        match pooled {
            Some(handle) => Ok(handle),
            None => self.connect(target).await,
        }
    }

    fn checkin(&self, target: &SshTarget, handle: Handle<PinnedHostKey>) {
        let mut idle = self.idle();
        let connections = idle.entry(target.key()).or_default();
        if connections.len() < self.max_per_host && !handle.is_closed() {
            connections.push(handle);
        }
    }

    /// Runs `command` on the target. SSH carries one command string, so every argv element
    /// is shell-quoted; names were validated before the command was built.
    pub async fn run(
        &self,
        target: &SshTarget,
        command: &HostCommand,
        timeout: Duration,
    ) -> Result<CommandOutput, SshError> {
        let line = remote_command_line(command)?;
        let slot = self.slot(target);
        let _permit = slot.acquire_owned().await.map_err(|_| SshError::Channel {
            host: target.host.clone(),
            message: "driver closed".into(),
        })?;
        let handle = self.checkout(target).await?;
        let host = target.host.clone();
        let execution = async {
            let mut channel =
                handle
                    .channel_open_session()
                    .await
                    .map_err(|e| SshError::Channel {
                        host: host.clone(),
                        message: e.to_string(),
                    })?;
            channel
                .exec(true, line.as_bytes())
                .await
                .map_err(|e| SshError::Channel {
                    host: host.clone(),
                    message: e.to_string(),
                })?;
            if let Some(input) = command.stdin() {
                let sent = async {
                    channel.data(input).await?;
                    channel.eof().await
                };
                sent.await.map_err(|e| SshError::Channel {
                    host: host.clone(),
                    message: format!("sending input: {e}"),
                })?;
            }
            let (mut stdout, mut stderr, mut code, mut truncated) =
                (Vec::new(), Vec::new(), None, false);
            while let Some(message) = channel.wait().await {
                match message {
                    ChannelMsg::Data { data } => truncated |= append_bounded(&mut stdout, &data),
                    ChannelMsg::ExtendedData { data, ext: 1 } => {
                        truncated |= append_bounded(&mut stderr, &data)
                    }
                    ChannelMsg::ExitStatus { exit_status } => code = Some(exit_status as i32),
                    _ => {}
                }
            }
            Ok(CommandOutput {
                code,
                stdout: String::from_utf8_lossy(&stdout).into_owned(),
                stderr: String::from_utf8_lossy(&stderr).into_owned(),
                truncated,
            })
        };
        let output = tokio::time::timeout(timeout, execution)
            .await
            .map_err(|_| SshError::Timeout {
                host: target.host.clone(),
                program: command.program().to_string(),
                timeout,
            })??;
        self.checkin(target, handle);
        Ok(output)
    }

    /// A Docker engine client whose every request travels over SSH to the host's
    /// `/var/run/docker.sock` (a `direct-streamlocal` channel), so agentless hosts get the same
    /// Docker checks, through the same code, as hosts with an agent.
    pub async fn docker(&self, target: &SshTarget) -> Result<bollard::Docker, SshError> {
        let handle = Arc::new(self.connect(target).await?);
        let transport = move |mut request: bollard::BollardRequest| {
            let handle = handle.clone();
            // A bare HTTP/1 connection adds no Host header; the engine requires one.
            request.headers_mut().insert(
                hyper::header::HOST,
                hyper::header::HeaderValue::from_static("docker"),
            );
            async move {
                let channel = handle
                    .channel_open_direct_streamlocal(DOCKER_SOCKET)
                    .await
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                let io = hyper_util::rt::TokioIo::new(channel.into_stream());
                let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                Ok(sender.send_request(request).await?)
            }
        };
        bollard::Docker::connect_with_custom_transport(
            transport,
            Some("http://docker"),
            120,
            bollard::API_DEFAULT_VERSION,
        )
        .map_err(|e| SshError::Channel {
            host: target.host.clone(),
            message: e.to_string(),
        })
    }

    /// A TCP connection opened by the host itself to `host:port` (a `direct-tcpip` channel):
    /// health probes of agentless hosts reach the host's loopback, not the controller's.
    pub async fn tcp_stream(
        &self,
        target: &SshTarget,
        host: &str,
        port: u16,
    ) -> Result<TunnelledStream, SshError> {
        let handle = self.connect(target).await?;
        let channel = handle
            .channel_open_direct_tcpip(host, u32::from(port), "127.0.0.1", 0)
            .await
            .map_err(|e| SshError::Channel {
                host: target.host.clone(),
                message: format!("tunnel to {host}:{port}: {e}"),
            })?;
        Ok(TunnelledStream {
            stream: channel.into_stream(),
            _connection: handle,
        })
    }

    /// Closes every idle connection (at shutdown); returns how many there were.
    pub fn close_idle(&self) -> usize {
        let mut idle = self.idle();
        let count = idle.values().map(Vec::len).sum();
        idle.clear();
        count
    }

    /// Drops pooled connections that have died (the health monitor calls this).
    pub fn prune(&self) -> PoolStats {
        let mut idle = self.idle();
        idle.retain(|_, connections| {
            connections.retain(|h| !h.is_closed());
            !connections.is_empty()
        });
        PoolStats {
            hosts: idle.len(),
            idle_connections: idle.values().map(Vec::len).sum(),
            connections_opened: self.opened.load(Ordering::Relaxed),
        }
    }
}

fn append_bounded(buffer: &mut Vec<u8>, data: &[u8]) -> bool {
    let room = MAX_OUTPUT_BYTES.saturating_sub(buffer.len());
    buffer.extend_from_slice(&data[..data.len().min(room)]);
    data.len() > room
}

/// Loads the controller's SSH identity from `dir/id_ed25519`, creating it (mode 0600) on
/// first start. Returns the private key (OpenSSH format) and the public key line.
pub fn load_or_create_identity(dir: &std::path::Path) -> Result<(String, String), SshError> {
    use rand::RngCore;
    use russh::keys::ssh_key::private::Ed25519Keypair;
    use russh::keys::ssh_key::LineEnding;
    let io = |e: std::io::Error| SshError::BadPrivateKey(format!("{}: {e}", dir.display()));
    infrastructor_hostops::fsutil::create_private_dir(dir).map_err(io)?;
    let path = dir.join("id_ed25519");
    if !path.exists() {
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
        let text = key
            .to_openssh(LineEnding::LF)
            .map_err(|e| SshError::BadPrivateKey(e.to_string()))?;
        infrastructor_hostops::fsutil::write_atomic(&path, text.as_bytes(), 0o600).map_err(io)?;
    }
    let private = std::fs::read_to_string(&path).map_err(io)?;
    let key =
        PrivateKey::from_openssh(&private).map_err(|e| SshError::BadPrivateKey(e.to_string()))?;
    let public = key
        .public_key()
        .to_openssh()
        .map_err(|e| SshError::BadPrivateKey(e.to_string()))?;
    Ok((private, format!("{public} infrastructor-controller")))
}

/// Runs the agent's command-based checks on a target over SSH.
pub struct SshRunner<'a> {
    pub driver: &'a SshDriver,
    pub target: &'a SshTarget,
}

impl infrastructor_hostops::checks::CommandRunner for SshRunner<'_> {
    async fn run(&self, command: &HostCommand, timeout: Duration) -> Result<CommandOutput, String> {
        self.driver
            .run(self.target, command, timeout)
            .await
            .map_err(|e| e.to_string())
    }
}

/// The argv as one shell-quoted line for SSH `exec`.
pub fn remote_command_line(command: &HostCommand) -> Result<String, SshError> {
    shlex::try_join(command.argv()).map_err(|e| SshError::BadCommand(e.to_string()))
}

/// A TCP connection carried over an SSH channel; it keeps its SSH connection open.
pub struct TunnelledStream {
    stream: russh::ChannelStream<russh::client::Msg>,
    _connection: Handle<PinnedHostKey>,
}

impl tokio::io::AsyncRead for TunnelledStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TunnelledStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
