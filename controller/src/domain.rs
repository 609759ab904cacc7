//! Domain enums shared by the store and the services, in place of strings: what can be named
//! is spelled once, and a typo is a compile error rather than a branch never taken.

use serde::{Deserialize, Serialize};

/// How the controller reaches a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    /// An enrolled agent streams to the controller.
    Agent,
    /// The controller reaches it over SSH.
    Agentless,
}

impl DeviceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Agentless => "agentless",
        }
    }
}

impl TryFrom<String> for DeviceKind {
    type Error = String;

    /// As stored: the store reads the `kind` column through this.
    fn try_from(stored: String) -> Result<Self, Self::Error> {
        match stored.as_str() {
            "agent" => Ok(Self::Agent),
            "agentless" => Ok(Self::Agentless),
            other => Err(format!("unknown device kind {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_stored_names() {
        for kind in [DeviceKind::Agent, DeviceKind::Agentless] {
            assert_eq!(DeviceKind::try_from(kind.as_str().to_string()), Ok(kind));
        }
        assert!(DeviceKind::try_from("router".to_string()).is_err());
    }
}
