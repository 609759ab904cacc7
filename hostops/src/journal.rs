//! Logs: `journalctl --output=json` lines (or plain log-file lines) scanned with configurable
//! error patterns → a count per pattern and a few sample lines.

use std::collections::BTreeMap;

use regex::Regex;
use serde::Serialize;
use serde_json::Value;

use super::{CheckReport, CheckStatus};

/// Sample lines kept per pattern.
const SAMPLES_PER_PATTERN: usize = 3;
/// Longest message kept in a sample.
const MAX_SAMPLE_CHARS: usize = 300;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JournalEntry {
    pub timestamp_us: Option<u64>,
    /// syslog priority 0 (emerg) … 7 (debug).
    pub priority: Option<u8>,
    pub unit: Option<String>,
    pub message: String,
}

/// Parses one JSON line; non-JSON lines return `None` (and are counted by the caller).
pub fn parse_journal_line(line: &str) -> Option<JournalEntry> {
    let value: Value = serde_json::from_str(line).ok()?;
    let field = |name: &str| value.get(name).and_then(Value::as_str);
    let message = match value.get("MESSAGE") {
        Some(Value::String(text)) => text.clone(),
        // journald sends non-UTF-8 messages as an array of bytes.
        Some(Value::Array(bytes)) => {
            let bytes: Vec<u8> = bytes
                .iter()
                .filter_map(|b| b.as_u64().map(|b| b as u8))
                .collect();
            String::from_utf8_lossy(&bytes).into_owned()
        }
        _ => String::new(),
    };
    Some(JournalEntry {
        timestamp_us: field("__REALTIME_TIMESTAMP").and_then(|t| t.parse().ok()),
        priority: field("PRIORITY").and_then(|p| p.parse().ok()),
        unit: field("_SYSTEMD_UNIT")
            .or_else(|| field("SYSLOG_IDENTIFIER"))
            .map(String::from),
        message,
    })
}

/// A named error pattern, e.g. `("oom", "Out of memory|oom-kill")`.
#[derive(Clone, Debug)]
pub struct Pattern {
    pub name: String,
    pub regex: Regex,
}

impl Pattern {
    pub fn new(name: &str, regex: &str) -> Result<Self, regex::Error> {
        Ok(Self {
            name: name.to_string(),
            regex: regex::RegexBuilder::new(regex)
                .size_limit(1 << 20)
                .build()?,
        })
    }
}

/// The default patterns, used when the agent's config names none.
pub fn default_patterns() -> Vec<Pattern> {
    [
        ("error", r"(?i)\b(error|failed|failure)\b"),
        ("critical", r"(?i)\b(crit|critical|fatal|panic)\b"),
        ("oom", r"(?i)out of memory|oom-kill"),
        ("segfault", r"(?i)segfault|core dumped"),
    ]
    .into_iter()
    .filter_map(|(name, regex)| Pattern::new(name, regex).ok())
    .collect()
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PatternHits {
    pub count: u64,
    pub samples: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LogScan {
    pub lines: u64,
    pub unparsable_lines: u64,
    pub hits: BTreeMap<String, PatternHits>,
}

/// Scans journal JSON lines (`json = true`) or plain log lines.
pub fn scan(text: &str, json: bool, patterns: &[Pattern]) -> LogScan {
    let mut result = LogScan::default();
    for pattern in patterns {
        result
            .hits
            .insert(pattern.name.clone(), PatternHits::default());
    }
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        result.lines += 1;
        let message = if json {
            match parse_journal_line(line) {
                Some(entry) => entry.message,
                None => {
                    result.unparsable_lines += 1;
                    continue;
                }
            }
        } else {
            line.to_string()
        };
        for pattern in patterns.iter().filter(|p| p.regex.is_match(&message)) {
            let hits = result.hits.entry(pattern.name.clone()).or_default();
            hits.count += 1;
            if hits.samples.len() < SAMPLES_PER_PATTERN {
                hits.samples
                    .push(message.chars().take(MAX_SAMPLE_CHARS).collect());
            }
        }
    }
    result
}

/// Any hit is a warning; hits of `critical` or `oom` are critical.
pub fn check_logs(source: &str, scan: &LogScan) -> CheckReport {
    let hit = |name: &str| scan.hits.get(name).map_or(0, |h| h.count);
    let total: u64 = scan.hits.values().map(|h| h.count).sum();
    let status = if hit("critical") + hit("oom") > 0 {
        CheckStatus::Critical
    } else if total > 0 {
        CheckStatus::Warning
    } else {
        CheckStatus::Ok
    };
    let counts: Vec<String> = scan
        .hits
        .iter()
        .filter(|(_, h)| h.count > 0)
        .map(|(name, h)| format!("{name}: {}", h.count))
        .collect();
    let message = if counts.is_empty() {
        format!("{}: no matches in {} lines", source, scan.lines)
    } else {
        format!("{}: {} in {} lines", source, counts.join(", "), scan.lines)
    };
    CheckReport {
        check: format!("logs:{source}"),
        status,
        message,
        evidence: serde_json::to_value(scan).unwrap_or_default(),
    }
}
