//! Validated path parameters and the request parts several operations share. A reference
//! that reaches a service has already matched its pattern, which the OpenAPI document and
//! the MCP input schemas state.

use std::borrow::Cow;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Device IDs (UUIDs) and names alike.
const REFERENCE_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$";

fn check_reference(what: &str, value: &str) -> Result<()> {
    let mut chars = value.chars();
    let first = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if first && rest && value.len() <= 128 {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid {what} {value:?}: expected a letter or digit followed by letters, digits, \
             '.', '_' or '-', at most 128 characters"
        )))
    }
}

/// A string newtype checked against [`REFERENCE_PATTERN`] when decoded.
macro_rules! reference {
    ($name:ident, $what:literal) => {
        #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = Error;

            fn try_from(value: String) -> Result<Self> {
                check_reference($what, &value)?;
                Ok(Self(value))
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }

            fn inline_schema() -> bool {
                true
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({
                    "type": "string",
                    "description": $what,
                    "pattern": REFERENCE_PATTERN,
                })
            }
        }
    };
}

reference!(DeviceRef, "device ID or name");
reference!(ChangeId, "change ID");
reference!(ApprovalId, "approval ID");

/// `{device}` in the path.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DevicePath {
    pub device: DeviceRef,
}

/// `{change}` in the path.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePath {
    pub change: ChangeId,
}

/// `{approval}` in the path.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalPath {
    pub approval: ApprovalId,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_refuse_what_could_reach_a_path_or_argv() {
        for bad in ["", "-rf", "a/b", "../x", "a b", "a\nb", &"x".repeat(129)] {
            assert!(DeviceRef::try_from(bad.to_string()).is_err(), "{bad:?}");
        }
        for good in ["web-01", "nas.home", "0f8e5c2a-1b3c-4d5e-8f90-123456789abc"] {
            assert!(DeviceRef::try_from(good.to_string()).is_ok(), "{good:?}");
        }
    }
}
