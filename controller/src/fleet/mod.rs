//! Reaching hosts: the live agent session registry, the agent driver, the SSH driver for
//! agentless hosts, and configuration changes over SSH.

pub mod agent_driver;
pub mod sessions;
pub mod ssh_changes;
pub mod ssh_driver;

pub use agent_driver::AgentDriver;
pub use sessions::{SessionInfo, SessionRegistry};
pub use ssh_driver::{SshDriver, SshTarget};
