//! Generated gRPC types for the agent ↔ controller protocol (`infrastructor.v1`).
//!
//! The schema lives in `proto/infrastructor/v1/gateway.proto`; `build.rs` compiles it with
//! protox, so no `protoc` binary is needed.

#![allow(clippy::all, clippy::pedantic)]

pub mod v1 {
    tonic::include_proto!("infrastructor.v1");
}

/// Largest gRPC message either side accepts (4 MiB); bounded so a peer cannot exhaust memory.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Largest metric batch (in samples) the controller accepts.
pub const MAX_BATCH_SAMPLES: u32 = 10_000;
