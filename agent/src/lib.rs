//! Infrastructor agent: the library of host operations and the daemon that streams them.
//!
//! # Layout
//! - [`change`]: two-phase configuration changes (stage, validate, swap, health-check,
//!   confirm or roll back), crash-safe through an on-disk journal.
//! - [`checks`]: capability detection and the scheduled host checks.
//! - [`config`]: the agent's typed configuration.
//! - [`identity`]: key, client certificate, pinned CA and controller URL on disk.
//! - [`tls`]: TLS 1.3 client configs (CA pinned by fingerprint, then mutual TLS) and channels.
//! - [`enroll`]: trading a join token for a certificate; renewing it.
//! - [`metrics`]: host metric collection (sysinfo) behind the [`metrics::MetricSource`] trait.
//! - [`process`]: what the binaries do at start and exit (logging, signals, exit code).
//! - [`spool`]: the bounded on-disk spool of unacknowledged metric batches.
//! - [`link`]: the one gRPC stream to the controller, with resume, acks and backoff.
//! - [`daemon`]: ties collector, link and renewal together ([`Agent`]).
//! - [`fsutil`]: crash-safe file writes.
//! - [`hostops`]: host operations shared with the controller: names, argv builders, parsers.

pub mod change;
pub mod checks;
pub mod config;
pub mod daemon;
pub mod enroll;
pub mod error;
pub mod fsutil;
pub mod hostops;
pub mod identity;
pub mod link;
pub mod metrics;
pub mod process;
pub mod spool;
pub mod tls;

pub use config::AgentConfig;
pub use daemon::{Agent, AgentHandle};
pub use error::{AgentError, Result};

/// Version reported to the controller in every hello.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
