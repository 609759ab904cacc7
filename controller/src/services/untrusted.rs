//! Text that hosts report — hostnames, check messages and evidence (log lines), diffs,
//! validator output, health details, reasons — is untrusted data. Everything a host sends
//! passes through here before it is stored: control characters and the invisible or
//! bidirectional-override characters that make text read differently than it is are removed,
//! and every string is bounded. It stays in named fields (`message`, `evidence`, `diff`,
//! `output`, …) and is never presented to a model as instructions: every MCP tool description
//! says so.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};

/// Longest single-line value (a message, a hostname, a log line in evidence).
pub const MAX_LINE_CHARS: usize = 1000;
/// Longest validator output kept (it may echo the files it read).
pub const MAX_OUTPUT_CHARS: usize = 4096;
/// Longest diff kept.
pub const MAX_DIFF_CHARS: usize = 256 * 1024;

/// What a truncated value ends with.
const TRUNCATED: &str = " [truncated]";

/// Whether line breaks and tabs are part of the value (diffs, command output) or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lines {
    Single,
    Multi,
}

/// Characters that change how text is displayed without being visible: bidirectional
/// embeddings, overrides and isolates, zero-width characters, the byte-order mark.
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// `input` without control or invisible characters (line breaks and tabs kept for
/// [`Lines::Multi`]), at most `max_chars` characters — a truncated value ends with
/// ` [truncated]` within that bound.
pub fn clean(input: &str, max_chars: usize, lines: Lines) -> String {
    let keep = |c: char| {
        if c == '\n' || c == '\t' {
            return lines == Lines::Multi;
        }
        !c.is_control() && !invisible(c)
    };
    let kept: Vec<char> = input.chars().filter(|c| keep(*c)).collect();
    if kept.len() <= max_chars {
        return kept.into_iter().collect();
    }
    let room = max_chars.saturating_sub(TRUNCATED.chars().count());
    let mut out: String = kept[..room].iter().collect();
    out.push_str(TRUNCATED);
    out
}

/// Every string in `value` cleaned: multi-line and longer for the keys that hold file
/// contents or command output, single-line elsewhere.
pub fn clean_value(value: &Value) -> Value {
    clean_under(None, value)
}

fn clean_under(key: Option<&str>, value: &Value) -> Value {
    match value {
        Value::String(text) => {
            let (max, lines) = match key {
                Some("diff" | "content") => (MAX_DIFF_CHARS, Lines::Multi),
                Some("output") => (MAX_OUTPUT_CHARS, Lines::Multi),
                _ => (MAX_LINE_CHARS, Lines::Single),
            };
            Value::String(clean(text, max, lines))
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| clean_under(key, v)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    (
                        clean(k, MAX_LINE_CHARS, Lines::Single),
                        clean_under(Some(k), v),
                    )
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// A typed report from a host with every string cleaned; it keeps its shape.
pub fn clean_as<T: Serialize + DeserializeOwned>(report: T) -> Result<T> {
    let value = serde_json::to_value(&report)
        .map_err(|e| Error::Internal(format!("cleaning a host report: {e}")))?;
    serde_json::from_value(clean_value(&value))
        .map_err(|e| Error::Internal(format!("a cleaned host report lost its shape: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn control_and_bidi_characters_are_removed_and_length_bounded() {
        let hostile = "ok\u{202E}txt.exe\u{200B}\x1b[31m\u{7}\nnext";
        assert_eq!(clean(hostile, 100, Lines::Single), "oktxt.exe[31mnext");
        assert_eq!(clean(hostile, 100, Lines::Multi), "oktxt.exe[31m\nnext");
        let long = "a".repeat(50);
        let bounded = clean(&long, 20, Lines::Single);
        assert_eq!(bounded, format!("{} [truncated]", "a".repeat(8)));
        assert_eq!(bounded.chars().count(), 20);
        assert_eq!(clean("abc", 3, Lines::Single), "abc");
    }

    #[test]
    fn values_keep_their_shape_and_diffs_their_lines() {
        let report = json!({
            "message": "a\nb\u{2066}",
            "files": [{"diff": "-x\n+y\u{202D}\n"}],
            "validators": [{"output": "o".repeat(MAX_OUTPUT_CHARS + 10)}],
            "count": 3,
        });
        let cleaned = clean_value(&report);
        assert_eq!(cleaned["message"], "ab");
        assert_eq!(cleaned["files"][0]["diff"], "-x\n+y\n");
        assert!(cleaned["validators"][0]["output"]
            .as_str()
            .unwrap()
            .ends_with(TRUNCATED));
        assert_eq!(cleaned["count"], 3);
    }
}
