//! The one redaction mechanism for everything the controller shows back or keeps: audit
//! records, approvals (arguments, plans, results), change views — and job outputs once jobs
//! exist. Every view passes through [`redact`] (or [`redact_as`] for typed views) with the
//! viewer's [`Clearance`], so no view can show more than its clearance allows.
//!
//! Two kinds of data are withheld:
//! - **secrets** — values under secret-looking keys, and any string holding an API or join
//!   token — are never shown to anyone after the response that created them, and never kept
//!   in a readable form;
//! - **file contents** — `content`, `diff` and validator `output` values — are shown to
//!   `operate` and `admin` callers only; everyone else sees their size and SHA-256, which
//!   still proves what was deployed.

use std::sync::LazyLock;

use regex::Regex;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::auth::{Scope, API_TOKEN_PREFIX, JOIN_TOKEN_PREFIX};
use crate::error::{Error, Result};

/// Keys whose values are secrets (matched case-insensitively, as substrings).
const SECRET_KEYS: &[&str] = &[
    "token",
    "secret",
    "password",
    "passphrase",
    "private_key",
    "credential",
    "authorization",
];

/// Keys whose values are file contents or could echo them (a validator's output shows lines
/// of the file it rejected, or of any file the configuration includes).
const CONTENT_KEYS: &[&str] = &["content", "diff", "output"];

/// What the replacement of a secret reads.
pub const REDACTED: &str = "[redacted]";

/// A token embedded in any text (a command line, a message): prefix + base64url.
static EMBEDDED_TOKEN: LazyLock<Regex> = LazyLock::new(|| {
    let prefixes = [API_TOKEN_PREFIX, JOIN_TOKEN_PREFIX]
        .map(regex::escape)
        .join("|");
    #[allow(clippy::expect_used)] // a constant pattern, covered by the tests below
    Regex::new(&format!("({prefixes})[A-Za-z0-9_-]{{16,}}")).expect("token pattern")
});

/// What a viewer may see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clearance {
    /// Secrets and file contents withheld: `read` callers, and records at rest (audit).
    Summary,
    /// Secrets withheld, file contents shown: `operate` and `admin` callers.
    Contents,
}

impl Clearance {
    pub fn of(scope: Scope) -> Self {
        if scope >= Scope::Operate {
            Self::Contents
        } else {
            Self::Summary
        }
    }
}

/// `value` as a viewer with `clearance` may see it.
pub fn redact(value: &Value, clearance: Clearance) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, value)| (key.clone(), redact_entry(key, value, clearance)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|v| redact(v, clearance)).collect()),
        Value::String(text) => Value::String(scrub_tokens(text)),
        other => other.clone(),
    }
}

/// A typed view (e.g. a change) as a viewer with `clearance` may see it. Redacted values are
/// strings, so the view keeps its shape.
pub fn redact_as<T: Serialize + DeserializeOwned>(view: &T, clearance: Clearance) -> Result<T> {
    let value = serde_json::to_value(view)
        .map_err(|e| Error::Internal(format!("redaction: serializing a view: {e}")))?;
    serde_json::from_value(redact(&value, clearance))
        .map_err(|e| Error::Internal(format!("redaction: a redacted view lost its shape: {e}")))
}

fn redact_entry(key: &str, value: &Value, clearance: Clearance) -> Value {
    let lower = key.to_ascii_lowercase();
    if SECRET_KEYS.iter().any(|secret| lower.contains(secret)) {
        return Value::from(REDACTED);
    }
    if clearance == Clearance::Summary && CONTENT_KEYS.contains(&lower.as_str()) {
        return match value {
            Value::String(text) => Value::String(digest_of(text)),
            Value::Null => Value::Null,
            _ => Value::from(REDACTED),
        };
    }
    redact(value, clearance)
}

/// What stands in for withheld file contents: enough to tell versions apart, nothing more.
pub fn digest_of(text: &str) -> String {
    format!(
        "[redacted: {} bytes, sha256 {}]",
        text.len(),
        hex::encode(Sha256::digest(text.as_bytes()))
    )
}

fn scrub_tokens(text: &str) -> String {
    EMBEDDED_TOKEN
        .replace_all(text, |captures: &regex::Captures<'_>| {
            format!("{}{REDACTED}", &captures[1])
        })
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        json!({
            "devices": ["web-1"],
            "change": {"files": [{"path": "/etc/app.conf", "content": "password=hunter2"}]},
            "targets": [{"files": [{"diff": "-old\n+password=hunter2\n"}],
                         "validators": [{"name": "nginx", "output": "root:$6$salt:..."}]}],
            "ssh_private_key": "-----BEGIN",
            "api_token": "ifr_x",
            "enroll_command": "infrastructor-agent enroll --token ifj_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        })
    }

    #[test]
    fn summary_withholds_secrets_and_contents() {
        let redacted = redact(&sample(), Clearance::Summary);
        let text = redacted.to_string();
        for leaked in ["hunter2", "BEGIN", "ifr_x", "AAAAAAAAAAAAAAAA", "$6$"] {
            assert!(!text.contains(leaked), "{leaked} in {text}");
        }
        assert_eq!(redacted["devices"][0], "web-1");
        assert_eq!(redacted["change"]["files"][0]["path"], "/etc/app.conf");
        assert_eq!(
            redacted["change"]["files"][0]["content"],
            digest_of("password=hunter2")
        );
        assert!(digest_of("password=hunter2").starts_with("[redacted: 16 bytes, sha256 "));
        assert_eq!(
            redacted["enroll_command"],
            "infrastructor-agent enroll --token ifj_[redacted]"
        );
    }

    #[test]
    fn contents_clearance_shows_files_but_never_secrets() {
        let redacted = redact(&sample(), Clearance::Contents);
        let text = redacted.to_string();
        assert!(text.contains("hunter2") && text.contains("$6$"), "{text}");
        for leaked in ["BEGIN", "ifr_x", "AAAAAAAAAAAAAAAA"] {
            assert!(!text.contains(leaked), "{leaked} in {text}");
        }
    }

    #[test]
    fn scopes_map_to_clearances() {
        assert_eq!(Clearance::of(Scope::Read), Clearance::Summary);
        assert_eq!(Clearance::of(Scope::Operate), Clearance::Contents);
        assert_eq!(Clearance::of(Scope::Admin), Clearance::Contents);
    }

    #[test]
    fn typed_views_keep_their_shape() {
        #[derive(Serialize, serde::Deserialize, PartialEq, Debug)]
        struct View {
            path: String,
            diff: String,
        }
        let view = View {
            path: "/etc/a".into(),
            diff: "+secret line".into(),
        };
        let shown = redact_as(&view, Clearance::Summary).unwrap();
        assert_eq!(shown.path, "/etc/a");
        assert_eq!(shown.diff, digest_of("+secret line"));
    }
}
