//! The gateway's TLS listener: accepts TCP up to a cap of open connections, completes the
//! TLS 1.3 handshake off the accept loop (a slow or hostile client cannot stall others, and
//! must finish within 10 s), and hands finished connections to tonic, which exposes the
//! verified client certificate through `peer_certs()`. Each connection holds its slot of the
//! cap until it closes.

use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};

use crate::connections::Permitted;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections that completed the TLS handshake, ready for `serve_with_incoming`.
pub fn tls_incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    max_connections: usize,
    shutdown: CancellationToken,
) -> ReceiverStream<Result<Permitted<TlsStream<TcpStream>>, std::io::Error>> {
    let (ready, incoming) = mpsc::channel(128);
    let acceptor = TlsAcceptor::from(config);
    let slots = Arc::new(Semaphore::new(max_connections));
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = crate::connections::accept(&listener) => accepted,
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                tracing::warn!(%peer, limit = max_connections, "gateway connection refused: too many open");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let ready = ready.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = ready.send(Ok(Permitted::new(stream, permit))).await;
                    }
                    Ok(Err(error)) => tracing::info!(%peer, %error, "TLS handshake refused"),
                    Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(incoming)
}
