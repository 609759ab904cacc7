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

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({"type": "string", "description": concat!($kind, ": ", $rule)})
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                Self::new(&text).map_err(serde::de::Error::custom)
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

validated_name!(
    /// A user or group name (for file ownership).
    AccountName, "account name", 32,
    |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'),
    "letters, digits, '_', '-', '.'; starting with a letter or digit"
);

impl AccountName {
    /// A name written in this crate's source, known to match (tests check each).
    pub(crate) fn literal(value: &'static str) -> Self {
        Self(value.to_string())
    }
}

validated_name!(
    /// A Docker volume name.
    VolumeName, "volume name", 128,
    |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'),
    "letters, digits, '_', '-', '.'; starting with a letter or digit"
);

validated_name!(
    /// A PostgreSQL database name (a plain identifier: no quoting is ever needed).
    DatabaseName, "database name", 63,
    |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'),
    "letters, digits, '_', '-'; starting with a letter or digit"
);

validated_name!(
    /// A configuration transaction's ID: the controller's change ID, or `local-…` for changes
    /// made on the host itself. It names a journal directory, so it is strict.
    TxnId, "transaction ID", 64,
    |c: char| c.is_ascii_alphanumeric() || c == '-',
    "1-64 letters, digits or '-', starting with a letter or digit"
);

/// An absolute file path that may reach an argv: no `..`, `.` or empty components, no control
/// characters, no trailing slash. Whether it may be *changed* is the change policy's call.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct ManagedPath(String);

impl ManagedPath {
    pub fn new(value: &str) -> Result<Self, InvalidName> {
        let invalid = |rule| InvalidName {
            kind: "path",
            value: value.to_string(),
            rule,
        };
        if !value.starts_with('/') || value.len() < 2 || value.len() > 4096 {
            return Err(invalid("an absolute path such as /etc/nginx/nginx.conf"));
        }
        if value.chars().any(char::is_control) {
            return Err(invalid("no control characters"));
        }
        let clean = value[1..]
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..");
        if !clean {
            return Err(invalid("no '..', '.' or empty components"));
        }
        Ok(Self(value.to_string()))
    }

    /// A path written in this crate's source, known to be valid (tests check each).
    pub(crate) fn literal(value: &'static str) -> Self {
        Self(value.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn as_path(&self) -> &std::path::Path {
        std::path::Path::new(&self.0)
    }

    /// The containing directory (the root for a top-level file).
    pub fn parent(&self) -> ManagedPath {
        match self.0.rfind('/') {
            Some(0) | None => Self("/".to_string()),
            Some(index) => Self(self.0[..index].to_string()),
        }
    }

    /// The parent directory, or `None` for `/` itself.
    pub fn parent_if_any(&self) -> Option<ManagedPath> {
        (self.0 != "/").then(|| self.parent())
    }

    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or_default()
    }

    /// `self/name`; `name` must be one clean component.
    pub fn join(&self, name: &str) -> Result<ManagedPath, InvalidName> {
        if name.contains('/') {
            return Err(InvalidName {
                kind: "path component",
                value: name.to_string(),
                rule: "no '/'",
            });
        }
        let base = self.0.trim_end_matches('/');
        Self::new(&format!("{base}/{name}"))
    }

    /// Whether `self` is `root` or lies below it (component-wise, not by string prefix).
    pub fn is_within(&self, root: &ManagedPath) -> bool {
        self.as_path().starts_with(root.as_path())
    }
}

impl<'de> serde::Deserialize<'de> for ManagedPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::new(&text).map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for ManagedPath {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ManagedPath".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "description": "absolute path without '..', '.' or empty components"})
    }
}

impl fmt::Display for ManagedPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

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
            assert!(TxnId::new(bad).is_err(), "transaction {bad:?}");
        }
    }

    #[test]
    fn paths_are_absolute_and_clean() {
        for bad in [
            "etc/x",
            "/etc/../shadow",
            "/etc/./x",
            "//etc",
            "/etc/",
            "/etc/x\n",
            "",
            "/",
        ] {
            assert!(ManagedPath::new(bad).is_err(), "{bad:?}");
        }
        let path = ManagedPath::new("/etc/nginx/nginx.conf").unwrap();
        assert_eq!(path.parent().as_str(), "/etc/nginx");
        assert_eq!(path.file_name(), "nginx.conf");
        assert!(path.is_within(&ManagedPath::new("/etc/nginx").unwrap()));
        assert!(!path.is_within(&ManagedPath::new("/etc/ngin").unwrap()));
        assert_eq!(ManagedPath::new("/x").unwrap().parent().as_str(), "/");
        assert!(path.parent().join("../x").is_err());
    }

    #[test]
    fn real_names_pass() {
        PoolName::new("tank").unwrap();
        PoolName::new("rpool").unwrap();
        UnitName::new("nginx.service").unwrap();
        UnitName::new("backup@nightly.timer").unwrap();
        UnitName::new("postgresql@15-main.service").unwrap();
        ContainerName::new("web_1").unwrap();
        TxnId::new("local-00ff00ff00ff00ff").unwrap();
        TxnId::new("a1b2c3").unwrap();
        assert!(
            TxnId::new(&"a".repeat(65)).is_err(),
            "at most 64 characters"
        );
        assert!(
            TxnId::new("a_b").is_err(),
            "journal directories: letters, digits, '-'"
        );
        let error = UnitName::new("-x").unwrap_err();
        assert!(error.to_string().contains("invalid unit name"), "{error}");
    }
}
