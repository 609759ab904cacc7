//! Infrastructor controller: the central service agents stream to and operators query.
//!
//! # Layout
//! - [`config`]: layered, validated configuration.
//! - [`server`]: lifecycle — opens resources in order, serves, shuts down in reverse.
//! - [`quickstart`]: `up`, the one-machine setup with an in-process agent.
//! - Surfaces (thin adapters): [`gateway`] (gRPC for agents), [`rest`] (axum), [`mcp`]
//!   (MCP tools over streamable HTTP, nested in the same router).
//! - [`operations`]: every operation as a type, one registry, one execution pipeline.
//! - [`services`]: all behaviour; knows nothing of HTTP or gRPC.
//! - Resources: [`store`] (SQLite/PostgreSQL), [`pki`] (internal CA), [`fleet`] (live agent
//!   streams), [`telemetry`] (the controller's own metrics), [`notify`] (what notification
//!   channels receive).
//! - Shared resources besides the store: [`cache`] (Redis or in process), [`ratelimit`]
//!   (per-principal token buckets), [`performance`] (operation timings), [`connections`]
//!   (connection caps, timeouts, failed-authentication budgets per peer).
//! - Cross-cutting: [`auth`] (tokens, scopes, principals), [`ctx`] (per-request context),
//!   [`error`] (one error type with a kind), [`domain`] (domain enums), [`clock`] (the
//!   injected wall clock), [`recovery`] (which failures to retry, how),
//!   [`upkeep`] (rollups and retention).

pub mod auth;
pub mod cache;
pub mod clock;
pub mod config;
pub mod connections;
pub mod ctx;
pub mod domain;
pub mod error;
pub mod fleet;
pub mod gateway;
pub mod jobs;
pub mod mcp;
pub mod notify;
pub mod operations;
pub mod performance;
pub mod pki;
pub mod quickstart;
pub mod ratelimit;
pub mod recovery;
pub mod rest;
pub mod server;
pub mod services;
pub mod store;
pub mod telemetry;
pub mod upkeep;

pub use config::{ConfigArgs, ControllerConfig};
pub use server::Controller;
