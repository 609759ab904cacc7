//! Reaching hosts: one [`Host`] interface over the agent driver (typed commands on the live
//! agent sessions) and the SSH driver for agentless hosts (with their change engines).

pub mod agent_driver;
pub mod host;
pub mod journals;
pub mod routing;
pub mod sessions;
pub mod ssh_changes;
pub mod ssh_driver;

pub use agent_driver::AgentDriver;
pub use host::{AgentHost, ChangeStep, CheckRun, Host, Link, SshHost};
pub use sessions::{SessionInfo, SessionRegistry};
pub use ssh_driver::{SshDriver, SshTarget};
