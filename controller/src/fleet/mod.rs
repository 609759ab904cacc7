//! What the controller knows about connected agents right now.

pub mod sessions;

pub use sessions::{SessionInfo, SessionRegistry};
