//! What both binaries do at start and exit: logging from `INFRASTRUCTOR_LOG`, graceful
//! shutdown on SIGINT/SIGTERM, a one-line error and a non-zero exit code on failure.

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

/// Logs to stderr, filtered by `INFRASTRUCTOR_LOG` (default `info`).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("INFRASTRUCTOR_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// The process exit code for a command's outcome; an error is printed as one line.
pub fn exit_code(outcome: anyhow::Result<()>) -> std::process::ExitCode {
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
