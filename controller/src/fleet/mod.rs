//! Connected agents: the live session registry and the driver that sends them commands.

pub mod agent_driver;
pub mod sessions;

pub use agent_driver::AgentDriver;
pub use sessions::{SessionInfo, SessionRegistry};
