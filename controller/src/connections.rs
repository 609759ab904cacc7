//! Bounded connections: how many connections each listener holds, for how long a silent
//! client may keep one, and how often a peer may fail to authenticate before it is refused
//! without costing a database lookup.
//!
//! - [`serve_http`]: the HTTP accept loop (hyper, HTTP/1.1): a global and a per-peer cap on
//!   open connections, a deadline for each request's headers that also ends idle keep-alive
//!   connections, graceful draining at shutdown; each request carries its peer address.
//! - [`Permitted`]: a connection holding its slot of a listener's cap until it closes (the
//!   gateway wraps its TLS streams in it).
//! - [`AuthFailures`]: a token bucket per peer address, charged by every failed
//!   authentication and consulted before the next one is looked up.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::connect_info::ConnectInfo;
use governor::{DefaultKeyedRateLimiter, Quota};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// The figures, `[connections]` in the configuration file.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionLimits {
    /// Open HTTP connections (REST and MCP) at once; further ones are closed on accept.
    pub http_max: usize,
    /// Open HTTP connections from one IP address.
    pub http_per_peer: usize,
    /// A client must send each request's headers within this (and an idle keep-alive
    /// connection is closed after it).
    pub header_timeout_seconds: u64,
    /// Open agent gateway connections (TLS handshakes in progress included).
    pub grpc_max: usize,
    /// Concurrent gRPC streams per agent connection (an agent uses one, plus renewals).
    pub grpc_streams_per_connection: u32,
    /// Failed authentications per second allowed from one IP address (sustained)…
    pub auth_failures_per_second: f64,
    /// …and at once; beyond, requests from that address get 429 before any lookup.
    pub auth_failures_burst: u32,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            http_max: 1024,
            http_per_peer: 128,
            header_timeout_seconds: 10,
            grpc_max: 4096,
            grpc_streams_per_connection: 8,
            auth_failures_per_second: 1.0,
            auth_failures_burst: 20,
        }
    }
}

impl ConnectionLimits {
    pub fn validate(&self) -> Result<(), String> {
        if self.http_max == 0 || self.http_per_peer == 0 || self.grpc_max == 0 {
            return Err(
                "connections: http_max, http_per_peer and grpc_max must be at least 1".into(),
            );
        }
        if !(1..=300).contains(&self.header_timeout_seconds) {
            return Err("connections.header_timeout_seconds must be 1..=300".into());
        }
        if self.grpc_streams_per_connection == 0 {
            return Err("connections.grpc_streams_per_connection must be at least 1".into());
        }
        let rate = self.auth_failures_per_second;
        if !(rate.is_finite() && rate > 0.0 && rate <= 10_000.0) || self.auth_failures_burst == 0 {
            return Err(
                "connections.auth_failures_per_second must be in (0, 10000] and auth_failures_burst at least 1"
                    .into(),
            );
        }
        Ok(())
    }

    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.header_timeout_seconds)
    }
}

// === impl Permitted ===

/// A stream that holds a slot of its listener's connection cap until it is dropped.
pub struct Permitted<S> {
    inner: S,
    _permit: OwnedSemaphorePermit,
}

impl<S> Permitted<S> {
    pub fn new(inner: S, permit: OwnedSemaphorePermit) -> Self {
        Self {
            inner,
            _permit: permit,
        }
    }
}

/// The gateway reads the client certificate through this.
impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected for Permitted<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Permitted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Permitted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

// === impl PeerSlots ===

/// Open connections per peer address.
#[derive(Clone, Default)]
struct PeerSlots {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One connection's place in [`PeerSlots`], given back on drop.
struct PeerSlot {
    slots: PeerSlots,
    peer: IpAddr,
}

impl PeerSlots {
    fn take(&self, peer: IpAddr, limit: usize) -> Option<PeerSlot> {
        let mut open = lock(&self.open);
        let count = open.entry(peer).or_default();
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(PeerSlot {
            slots: self.clone(),
            peer,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = lock(&self.slots.open);
        if let Some(count) = open.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.peer);
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// The next connection on `listener`. Accept errors (out of file descriptors and the like) are
/// logged and followed by a short pause instead of a spin.
pub async fn accept(listener: &TcpListener) -> (tokio::net::TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(pair) => return pair,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

// === serve_http ===

/// Longest a shutdown waits for in-flight requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `app` on `listener` until `shutdown`, within `limits`; then stops accepting and
/// lets in-flight requests finish (up to 30 s).
pub async fn serve_http(
    listener: TcpListener,
    app: axum::Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) {
    let connections = Arc::new(Semaphore::new(limits.http_max));
    let peers = PeerSlots::default();
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout())
        .max_buf_size(64 * 1024);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = accept(&listener) => accepted,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(%peer, limit = limits.http_max, "HTTP connection refused: too many open");
            continue;
        };
        let Some(slot) = peers.take(peer.ip(), limits.http_per_peer) else {
            tracing::warn!(%peer, limit = limits.http_per_peer, "HTTP connection refused: too many from this peer");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<_>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(request.map(axum::body::Body::new))
        });
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(tcp), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "HTTP connection ended with an error");
            }
            drop((permit, slot));
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections still open after {DRAIN_TIMEOUT:?}; closing them");
    }
}

// === impl AuthFailures ===

/// Failed authentications per peer address. A peer over its budget is refused before its
/// token is looked up, until the bucket refills — unless it presents a token that
/// authenticated recently, so a flood of bad tokens from an address (loopback, a NAT) does not
/// lock out the operators behind it.
pub struct AuthFailures {
    buckets: DefaultKeyedRateLimiter<IpAddr>,
    blocked: Mutex<HashMap<IpAddr, Instant>>,
    /// Hashes of tokens that authenticated recently.
    known_good: moka::sync::Cache<String, ()>,
}

impl AuthFailures {
    pub fn new(limits: &ConnectionLimits) -> Self {
        let burst = NonZeroU32::new(limits.auth_failures_burst).unwrap_or(NonZeroU32::MIN);
        let period = Duration::from_secs_f64(1.0 / limits.auth_failures_per_second);
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        Self {
            buckets: DefaultKeyedRateLimiter::keyed(quota),
            blocked: Mutex::default(),
            known_good: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(600))
                .build(),
        }
    }

    /// `Some(wait)` when `peer` must wait before trying `token_hash` (or no token).
    pub fn refused(&self, peer: IpAddr, token_hash: Option<&str>) -> Option<Duration> {
        if token_hash.is_some_and(|hash| self.known_good.contains_key(hash)) {
            return None;
        }
        self.blocked_for(peer)
    }

    /// Remembers a token that authenticated.
    pub fn succeeded(&self, token_hash: String) {
        self.known_good.insert(token_hash, ());
    }

    fn blocked_for(&self, peer: IpAddr) -> Option<Duration> {
        let mut blocked = lock(&self.blocked);
        let until = *blocked.get(&peer)?;
        let now = Instant::now();
        if until > now {
            Some(until - now)
        } else {
            blocked.remove(&peer);
            None
        }
    }

    /// Charges one failure to `peer`; once its bucket is empty it is refused for a while.
    pub fn record(&self, peer: IpAddr) {
        use governor::clock::{Clock, DefaultClock};
        if let Err(not_until) = self.buckets.check_key(&peer) {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            lock(&self.blocked).insert(peer, Instant::now() + wait.max(Duration::from_secs(1)));
        }
    }

    /// Forgets peers whose buckets are full again.
    pub fn prune(&self) {
        self.buckets.retain_recent();
        let now = Instant::now();
        lock(&self.blocked).retain(|_, until| *until > now);
    }
}

/// The peer address of an HTTP request, set by [`serve_http`].
pub fn peer_of(extensions: &axum::http::Extensions) -> Option<SocketAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_beyond_the_burst_block_the_peer() {
        let limits = ConnectionLimits {
            auth_failures_burst: 3,
            ..ConnectionLimits::default()
        };
        let failures = AuthFailures::new(&limits);
        let peer: IpAddr = [127, 0, 0, 9].into();
        let other: IpAddr = [127, 0, 0, 10].into();
        failures.succeeded("good".into());
        for _ in 0..3 {
            assert!(failures.refused(peer, None).is_none());
            failures.record(peer);
        }
        failures.record(peer);
        assert!(failures.refused(peer, Some("bad")).is_some());
        assert!(failures.refused(peer, None).is_some());
        assert!(
            failures.refused(peer, Some("good")).is_none(),
            "known tokens pass"
        );
        assert!(failures.refused(other, None).is_none(), "per peer");
    }

    #[test]
    fn peer_slots_are_bounded_and_given_back() {
        let slots = PeerSlots::default();
        let peer: IpAddr = [127, 0, 0, 1].into();
        let first = slots.take(peer, 2).unwrap();
        let _second = slots.take(peer, 2).unwrap();
        assert!(slots.take(peer, 2).is_none());
        drop(first);
        assert!(slots.take(peer, 2).is_some());
    }

    #[test]
    fn bad_limits_are_refused() {
        let zero = ConnectionLimits {
            http_max: 0,
            ..ConnectionLimits::default()
        };
        assert!(zero.validate().is_err());
        assert!(ConnectionLimits::default().validate().is_ok());
    }
}
