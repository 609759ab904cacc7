//! Every end-to-end suite, one module each, in one test binary: the whole product is linked
//! once rather than once per suite, which keeps the build small on disk and fast on two cores.
//! Run one suite with `cargo test -p infrastructor-e2e --test e2e <suite>::`.

mod alerts;
mod analytics;
mod applications;
mod backups;
mod config_changes;
mod conformance;
mod containers;
mod correlation;
mod diagnostics;
mod docker_checks;
mod dr_plans;
mod enrollment_and_streaming;
mod every_operation;
mod exactly_once;
mod fabric;
mod host_checks;
mod jobs;
mod mcp;
mod mtls_refusals;
mod quickstart;
mod replicas;
mod rest_api;
mod security;
mod ssh_driver;
mod storage_contract;
mod waste;
