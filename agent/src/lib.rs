//! Infrastructor agent: the daemon that runs on each managed host, collects metrics and check
//! results, answers the controller's commands with the host operations of
//! `infrastructor-hostops`, and streams everything over one mutual-TLS link.
//!
//! # Layout
//! - [`config`]: the agent's typed configuration.
//! - [`identity`]: key, client certificate, pinned CA and controller URL on disk.
//! - [`tls`]: TLS 1.3 client configs (CA pinned by fingerprint, then mutual TLS) and channels.
//! - [`enroll`]: trading a join token for a certificate; renewing it.
//! - [`metrics`]: host metric collection (sysinfo) behind the [`metrics::MetricSource`] trait.
//! - [`spool`]: the bounded on-disk spool of unacknowledged metric batches.
//! - [`link`]: the one gRPC stream to the controller, with resume, acks and backoff.
//! - `containers`: the controller's container commands, run on the local engine.
//! - `backups`: the controller's backup commands (restic, drills), run under `[backups]`.
//! - [`daemon`]: ties collector, link and renewal together ([`Agent`]).

mod backups;
pub mod config;
mod containers;
pub mod daemon;
pub mod enroll;
pub mod error;
pub mod identity;
pub mod link;
pub mod metrics;
pub mod spool;
pub mod tls;

pub use config::AgentConfig;
pub use daemon::{Agent, AgentHandle};
pub use error::{AgentError, Result};

/// Version reported to the controller in every hello.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
