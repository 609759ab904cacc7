//! Graceful shutdown on SIGINT or SIGTERM, shared by both binaries.

use tokio_util::sync::CancellationToken;

/// Cancels `shutdown` on the first SIGINT (Ctrl-C) or SIGTERM (systemd stop).
pub async fn cancel_on_signal(shutdown: CancellationToken) {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    shutdown.cancel();
}
