//! Strict patterns for names that reach an argv. Anything that fails is rejected before a
//! process is spawned: no `;`, `$()`, backticks, whitespace, newlines, `..`, or leading `-`.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {rule}")]
pub struct InvalidName {
    pub kind: &'static str,
    pub value: String,
    pub rule: &'static str,
}

fn check(
    kind: &'static str,
    value: &str,
    max: usize,
    allowed: impl Fn(char) -> bool,
    rule: &'static str,
) -> Result<(), InvalidName> {
    let invalid = || InvalidName {
        kind,
        value: value.to_string(),
        rule,
    };
    let first_ok = value
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    if !first_ok || value.len() > max || !value.chars().all(allowed) || value.contains("..") {
        return Err(invalid());
    }
    Ok(())
}

macro_rules! validated_name {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:expr, $allowed:expr, $rule:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl $name {
            pub fn new(value: &str) -> Result<Self, InvalidName> {
                check($kind, value, $max, $allowed, $rule)?;
                Ok(Self(value.to_string()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

validated_name!(
    /// A ZFS pool name.
    PoolName, "pool name", 255,
    |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'),
    "letters, digits, '_', '-', '.', ':'; starting with a letter or digit"
);

validated_name!(
    /// A systemd unit name such as `nginx.service` or `backup@nightly.timer`.
    UnitName, "unit name", 255,
    |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@' | ':' | '\\'),
    "letters, digits, '_', '-', '.', '@', ':', '\\'; starting with a letter or digit"
);

validated_name!(
    /// A Docker container name or ID.
    ContainerName, "container name", 128,
    |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'),
    "letters, digits, '_', '-', '.'; starting with a letter or digit"
);

#[cfg(test)]
mod tests {
    use super::*;

    pub const INJECTIONS: &[&str] = &[
        "a;reboot",
        "$(reboot)",
        "`id`",
        "a\nb",
        "../etc/passwd",
        "-rf",
        "--help",
        "a b",
        "",
        "a|b",
        "a&b",
        "a>b",
        "tank/../x",
    ];

    #[test]
    fn injection_strings_are_rejected_for_every_kind() {
        for bad in INJECTIONS {
            assert!(PoolName::new(bad).is_err(), "pool {bad:?}");
            assert!(UnitName::new(bad).is_err(), "unit {bad:?}");
            assert!(ContainerName::new(bad).is_err(), "container {bad:?}");
        }
    }

    #[test]
    fn real_names_pass() {
        PoolName::new("tank").unwrap();
        PoolName::new("rpool").unwrap();
        UnitName::new("nginx.service").unwrap();
        UnitName::new("backup@nightly.timer").unwrap();
        UnitName::new("postgresql@15-main.service").unwrap();
        ContainerName::new("web_1").unwrap();
        let error = UnitName::new("-x").unwrap_err();
        assert!(error.to_string().contains("invalid unit name"), "{error}");
    }
}
