//! Validated path parameters and the request parts several operations share. A reference
//! that reaches a service has already matched its pattern, which the OpenAPI document and
//! the MCP input schemas state.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A string newtype that must match `$pattern` (the same text the schemas state) to decode.
macro_rules! reference {
    ($name:ident, $what:literal, $pattern:literal, $expected:literal) => {
        #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const PATTERN: &'static str = $pattern;

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = Error;

            fn try_from(value: String) -> Result<Self> {
                // A literal, compiled by the tests below.
                static PATTERN: LazyLock<Regex> =
                    LazyLock::new(|| Regex::new($pattern).expect("a valid pattern literal"));
                if PATTERN.is_match(&value) {
                    Ok(Self(value))
                } else {
                    Err(Error::invalid(format!(
                        concat!("invalid ", $what, " {:?}: expected ", $expected),
                        value
                    )))
                }
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
                json_schema!({"type": "string", "description": $what, "pattern": $pattern})
            }
        }
    };
}

reference!(
    DeviceRef,
    "device ID or name",
    "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
    "a letter or digit followed by letters, digits, '.', '_' or '-', at most 128 characters"
);
reference!(
    ChangeId,
    "change ID",
    "^[A-Za-z0-9]{1,64}$",
    "1 to 64 letters and digits"
);
reference!(
    JobId,
    "job ID",
    "^[A-Za-z0-9]{1,64}$",
    "1 to 64 letters and digits"
);
reference!(
    ApprovalId,
    "approval ID",
    "^[A-Za-z0-9-]{1,64}$",
    "1 to 64 letters, digits and '-'"
);

reference!(
    ContainerRef,
    "container name or ID",
    "^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$",
    "a letter or digit followed by letters, digits, '_', '.' or '-', at most 128 characters"
);

reference!(
    AppRef,
    "application name",
    "^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$",
    "a letter or digit followed by letters, digits, '_', '.' or '-', at most 128 characters"
);

reference!(
    BackupTargetRef,
    "backup target name",
    "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
    "a letter or digit followed by letters, digits, '_', '.' or '-', at most 64 characters"
);

reference!(
    DrPlanRef,
    "DR plan name",
    "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
    "a letter or digit followed by letters, digits, '_', '.' or '-', at most 64 characters"
);

reference!(
    SilenceId,
    "silence ID",
    "^[A-Za-z0-9-]{1,64}$",
    "1 to 64 letters, digits and '-'"
);
reference!(
    ChannelRef,
    "notification channel name",
    "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
    "a letter or digit followed by letters, digits, '_', '.' or '-', at most 64 characters"
);
reference!(
    NotificationId,
    "notification ID",
    "^[0-9]{1,18}$",
    "a number"
);

/// `{device}` in the path.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DevicePath {
    pub device: DeviceRef,
}

/// `{device}` and `{container}` in the path.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContainerPath {
    pub device: DeviceRef,
    pub container: ContainerRef,
}

/// `{app}` in the path.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AppPath {
    pub app: AppRef,
}

/// `{target}` in the path.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupTargetPath {
    pub target: BackupTargetRef,
}

/// `{plan}` in the path.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DrPlanPath {
    pub plan: DrPlanRef,
}

/// `{change}` in the path.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePath {
    pub change: ChangeId,
}

/// `{job}` in the path.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobPath {
    pub job: JobId,
}

/// `{approval}` in the path.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalPath {
    pub approval: ApprovalId,
}

/// `{silence}` in the path.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SilencePath {
    pub silence: SilenceId,
}

/// `{channel}` in the path.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelPath {
    pub channel: ChannelRef,
}

/// `{notification}` in the path.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotificationPath {
    pub notification: NotificationId,
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
        assert!(ChangeId::try_from("a-b".to_string()).is_err());
        assert!(ApprovalId::try_from("0f8e5c2a-1b3c".to_string()).is_ok());
    }
}
