//! Connected agents: the live session registry and the driver that sends them commands.

pub mod agent_driver;
pub mod sessions;
pub mod ssh_driver;

pub use agent_driver::AgentDriver;
pub use sessions::{SessionInfo, SessionRegistry};
pub use ssh_driver::{SshDriver, SshTarget};
