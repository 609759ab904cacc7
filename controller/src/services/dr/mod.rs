//! Disaster-recovery plans as code. So far, `plan`: reading a YAML plan into checked steps
//! (every mistake with its line and column) and resolving the references between steps'
//! outputs and arguments.

pub mod plan;
