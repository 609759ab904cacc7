//! Strict patterns for every name that enters the system. Anything reported by an agent or
//! sent by a client is untrusted; a name that could ever reach an argv, a path or a log line
//! is checked here first.

use crate::error::{Error, Result};

fn check(
    what: &str,
    value: &str,
    max_len: usize,
    first: impl Fn(char) -> bool,
    rest: impl Fn(char) -> bool,
    expected: &str,
) -> Result<()> {
    let mut chars = value.chars();
    let ok = value.len() <= max_len && chars.next().is_some_and(&first) && chars.all(&rest);
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid {what} {value:?}: expected {expected}, at most {max_len} characters"
        )))
    }
}

/// Device names: `web-01`, `nas.home`.
pub fn device_name(value: &str) -> Result<()> {
    check(
        "device name",
        value,
        63,
        |c| c.is_ascii_alphanumeric(),
        |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'),
        "a letter or digit followed by letters, digits, '.', '_' or '-'",
    )
}

/// Metric series names: `cpu.usage_percent`.
pub fn series_name(value: &str) -> Result<()> {
    check(
        "series name",
        value,
        128,
        |c| c.is_ascii_lowercase(),
        |c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_'),
        "a lowercase letter followed by lowercase letters, digits, '.' or '_'",
    )
}

pub fn label_key(value: &str) -> Result<()> {
    check(
        "label key",
        value,
        64,
        |c| c.is_ascii_lowercase() || c == '_',
        |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_',
        "lowercase letters, digits and '_'",
    )
}

pub fn label_value(value: &str) -> Result<()> {
    if value.len() <= 256 && !value.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid label value {value:?}: at most 256 characters, no control characters"
        )))
    }
}

/// SSH login names.
pub fn ssh_user(value: &str) -> Result<()> {
    check(
        "SSH user",
        value,
        32,
        |c| c.is_ascii_lowercase() || c == '_',
        |c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'),
        "a POSIX login name",
    )
}

/// `host`, `host:port`, `10.0.0.5:22` or `[2001:db8::1]:22`.
pub fn ssh_address(value: &str) -> Result<()> {
    let bad = || {
        Error::invalid(format!(
            "invalid SSH address {value:?}: expected host, host:port or [ipv6]:port"
        ))
    };
    if value.parse::<std::net::SocketAddr>().is_ok() || value.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let (host, port) = match value.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (value, None),
    };
    if let Some(port) = port {
        port.parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(bad)?;
    }
    let valid_host = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if valid_host {
        Ok(())
    } else {
        Err(bad())
    }
}

/// Hostnames reported by agents become default device names; anything odd is replaced.
pub fn device_name_from_hostname(hostname: &str) -> String {
    let cleaned: String = hostname
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(50)
        .collect();
    let trimmed = cleaned.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
    if trimmed.is_empty() {
        "host".to_string()
    } else {
        trimmed.to_string()
    }
}

/// A listing's `limit`: 50 unless given, 1 to 1000.
pub fn list_limit(limit: Option<i64>) -> Result<i64> {
    let limit = limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(Error::invalid("limit must be 1..=1000"));
    }
    Ok(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INJECTIONS: &[&str] = &[
        "a;rm -rf /",
        "$(reboot)",
        "`id`",
        "a\nb",
        "../etc",
        "-rf",
        "a b",
        "",
        "a|b",
        "a&&b",
    ];

    #[test]
    fn injection_strings_are_rejected_everywhere() {
        for bad in INJECTIONS {
            assert!(device_name(bad).is_err(), "device name {bad:?}");
            assert!(series_name(bad).is_err(), "series {bad:?}");
            assert!(label_key(bad).is_err(), "label key {bad:?}");
            assert!(ssh_user(bad).is_err(), "ssh user {bad:?}");
            assert!(ssh_address(bad).is_err(), "ssh address {bad:?}");
        }
    }

    #[test]
    fn ordinary_names_pass() {
        device_name("web-01.home").unwrap();
        series_name("disk.used_percent").unwrap();
        label_key("mount").unwrap();
        label_value("/var/lib").unwrap();
        ssh_user("deploy").unwrap();
        for address in [
            "nas",
            "nas.home:2222",
            "10.0.0.5",
            "10.0.0.5:22",
            "[::1]:22",
        ] {
            ssh_address(address).unwrap();
        }
        assert!(ssh_address("nas:0").is_err());
        assert!(label_value("a\u{0}b").is_err());
    }

    #[test]
    fn hostnames_become_safe_device_names() {
        assert_eq!(device_name_from_hostname("web 01;"), "web-01-");
        assert_eq!(device_name_from_hostname("-x"), "x");
        assert_eq!(device_name_from_hostname("$()"), "host");
        device_name(&device_name_from_hostname("--weird host$(x)")).unwrap();
    }
}
