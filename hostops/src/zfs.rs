//! ZFS: parsers for `zpool status` and `zpool list -Hp`, and the pool check built on them.

use serde::Serialize;
use time::macros::format_description;
use time::PrimitiveDateTime;

use super::{CheckReport, CheckStatus, Finding};

/// One pool as `zpool status` describes it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PoolStatus {
    pub name: String,
    pub state: String,
    pub status: Option<String>,
    pub action: Option<String>,
    pub scan: Scan,
    pub vdevs: Vec<Vdev>,
    /// The `errors:` line, e.g. "No known data errors".
    pub errors: String,
    /// Permanent data errors reported on the `errors:` line.
    pub data_errors: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Scan {
    #[default]
    None,
    ScrubFinished {
        repaired: String,
        errors: u64,
        finished_at: Option<String>,
    },
    ScrubInProgress {
        percent_done: Option<f64>,
        since: String,
    },
    ScrubCanceled,
    ResilverInProgress {
        percent_done: Option<f64>,
        since: String,
    },
    ResilverFinished {
        resilvered: String,
        errors: u64,
        finished_at: Option<String>,
    },
    Other {
        text: String,
    },
}

/// A row of the config tree: the pool itself, a mirror/raidz group, or a disk.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Vdev {
    pub name: String,
    /// 0 for the pool row, 1 for top-level vdevs, 2 for their children, …
    pub depth: usize,
    pub state: String,
    pub read_errors: u64,
    pub write_errors: u64,
    pub checksum_errors: u64,
    pub note: Option<String>,
}

/// One line of `zpool list -Hp -o name,size,alloc,free,frag,cap,health`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PoolUsage {
    pub name: String,
    pub size_bytes: u64,
    pub allocated_bytes: u64,
    pub free_bytes: u64,
    pub fragmentation_percent: Option<f64>,
    pub capacity_percent: f64,
    pub health: String,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot parse zpool output line {line}: {reason}")]
pub struct ParseError {
    pub line: usize,
    pub reason: String,
}

/// Parses the output of `zpool status` (one or many pools).
pub fn parse_zpool_status(text: &str) -> Vec<PoolStatus> {
    let mut pools = Vec::new();
    let mut current: Option<PoolStatus> = None;
    let mut section: Option<&'static str> = None;
    let mut scan_text = String::new();
    let finish = |pool: &mut PoolStatus, scan_text: &str| pool.scan = parse_scan(scan_text);
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(name) = trimmed
            .strip_prefix("pool:")
            .filter(|_| !line.starts_with('\t'))
        {
            if let Some(mut pool) = current.take() {
                finish(&mut pool, &scan_text);
                pools.push(pool);
            }
            scan_text.clear();
            current = Some(PoolStatus {
                name: name.trim().to_string(),
                ..PoolStatus::default()
            });
            section = None;
            continue;
        }
        let Some(pool) = current.as_mut() else {
            continue;
        };
        if !line.starts_with('\t') {
            if let Some((key, value)) = trimmed.split_once(':') {
                let value = value.trim().to_string();
                section = match key {
                    "state" => {
                        pool.state = value;
                        None
                    }
                    "status" => {
                        pool.status = Some(value);
                        Some("status")
                    }
                    "action" => {
                        pool.action = Some(value);
                        Some("action")
                    }
                    "scan" => {
                        scan_text = value;
                        Some("scan")
                    }
                    "config" => Some("config"),
                    "errors" => {
                        pool.data_errors = value
                            .split_whitespace()
                            .next()
                            .and_then(|n| n.parse().ok())
                            .unwrap_or(0);
                        pool.errors = value;
                        None
                    }
                    _ => None,
                };
            }
            continue;
        }
        // Tab-indented: a continuation of the current key, or a row of the config tree.
        match section {
            Some("status") => append(&mut pool.status, trimmed),
            Some("action") => append(&mut pool.action, trimmed),
            Some("scan") => {
                scan_text.push(' ');
                scan_text.push_str(trimmed);
            }
            Some("config") => {
                if let Some(vdev) = parse_vdev(line) {
                    pool.vdevs.push(vdev);
                }
            }
            _ => {}
        }
    }
    if let Some(mut pool) = current.take() {
        finish(&mut pool, &scan_text);
        pools.push(pool);
    }
    pools
}

fn append(field: &mut Option<String>, text: &str) {
    if let Some(value) = field {
        value.push(' ');
        value.push_str(text);
    }
}

fn parse_vdev(line: &str) -> Option<Vdev> {
    let body = line.strip_prefix('\t')?;
    let indent = body.len() - body.trim_start_matches(' ').len();
    let mut fields = body.split_whitespace();
    let name = fields.next()?;
    if name == "NAME" {
        return None;
    }
    let state = fields.next().unwrap_or_default().to_string();
    let mut counts = [0u64; 3];
    let rest: Vec<&str> = fields.collect();
    let mut consumed = 0;
    for (slot, text) in counts.iter_mut().zip(rest.iter()) {
        match parse_count(text) {
            Some(count) => {
                *slot = count;
                consumed += 1;
            }
            None => break,
        }
    }
    let note = rest[consumed..].join(" ");
    Some(Vdev {
        name: name.to_string(),
        depth: indent / 2,
        state,
        read_errors: counts[0],
        write_errors: counts[1],
        checksum_errors: counts[2],
        note: (!note.is_empty()).then_some(note),
    })
}

/// Error counters are plain integers, or abbreviated like `1.2K` without `-p`.
fn parse_count(text: &str) -> Option<u64> {
    if let Ok(count) = text.parse() {
        return Some(count);
    }
    let (number, unit) = text.split_at(text.len().checked_sub(1)?);
    let factor = match unit {
        "K" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        _ => return None,
    };
    number.parse::<f64>().ok().map(|n| (n * factor) as u64)
}

fn percent_done(text: &str) -> Option<f64> {
    let before = text.split("% done").next()?;
    before.rsplit([' ', ',']).next()?.parse().ok()
}

fn since(text: &str) -> String {
    text.split(" since ")
        .nth(1)
        .map(|rest| {
            rest.split_whitespace()
                .take(5)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

fn finished_at(text: &str) -> Option<String> {
    text.rsplit_once(" on ")
        .map(|(_, date)| date.split_whitespace().collect::<Vec<_>>().join(" "))
}

fn errors_in(text: &str) -> u64 {
    text.split(" with ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn word_after(text: &str, marker: &str) -> String {
    text.split(marker)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_default()
        .to_string()
}

fn parse_scan(text: &str) -> Scan {
    let text = text.trim();
    if text.is_empty() || text.starts_with("none requested") {
        Scan::None
    } else if text.starts_with("scrub in progress") {
        Scan::ScrubInProgress {
            percent_done: percent_done(text),
            since: since(text),
        }
    } else if text.starts_with("resilver in progress") {
        Scan::ResilverInProgress {
            percent_done: percent_done(text),
            since: since(text),
        }
    } else if text.starts_with("scrub repaired") {
        Scan::ScrubFinished {
            repaired: word_after(text, "scrub repaired "),
            errors: errors_in(text),
            finished_at: finished_at(text),
        }
    } else if text.starts_with("resilvered") {
        Scan::ResilverFinished {
            resilvered: word_after(text, "resilvered "),
            errors: errors_in(text),
            finished_at: finished_at(text),
        }
    } else if text.starts_with("scrub canceled") {
        Scan::ScrubCanceled
    } else {
        Scan::Other {
            text: text.to_string(),
        }
    }
}

/// Parses `zpool list -Hp -o name,size,alloc,free,frag,cap,health`.
pub fn parse_zpool_list(text: &str) -> Result<Vec<PoolUsage>, ParseError> {
    let mut pools = Vec::new();
    for (index, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let bad = |reason: &str| ParseError {
            line: index + 1,
            reason: reason.to_string(),
        };
        let fields: Vec<&str> = line.split('\t').collect();
        let [name, size, alloc, free, frag, cap, health] = fields[..] else {
            return Err(bad("expected 7 tab-separated columns"));
        };
        let bytes = |text: &str| {
            text.parse::<u64>()
                .map_err(|_| bad("size is not a byte count"))
        };
        pools.push(PoolUsage {
            name: name.to_string(),
            size_bytes: bytes(size)?,
            allocated_bytes: bytes(alloc)?,
            free_bytes: bytes(free)?,
            fragmentation_percent: frag.trim_end_matches('%').parse().ok(),
            capacity_percent: cap
                .trim_end_matches('%')
                .parse()
                .map_err(|_| bad("capacity is not a number"))?,
            health: health.to_string(),
        });
    }
    Ok(pools)
}

/// Days since the last finished scrub, if its date can be read.
pub fn scrub_age_days(scan: &Scan, now: PrimitiveDateTime) -> Option<i64> {
    let Scan::ScrubFinished {
        finished_at: Some(date),
        ..
    } = scan
    else {
        return None;
    };
    let format = format_description!(
        "[weekday repr:short] [month repr:short] [day padding:none] \
        [hour]:[minute]:[second] [year]"
    );
    let finished = PrimitiveDateTime::parse(date, format).ok()?;
    Some((now - finished).whole_days())
}

/// Scrubs older than this are a warning.
pub const MAX_SCRUB_AGE_DAYS: i64 = 35;

/// The verdict for one pool, with every reason in the message and the details as evidence.
pub fn check_pool(
    status: &PoolStatus,
    usage: Option<&PoolUsage>,
    now: PrimitiveDateTime,
) -> CheckReport {
    let mut findings: Vec<Finding> = Vec::new();
    match status.state.as_str() {
        "ONLINE" => {}
        "DEGRADED" => findings.push((
            CheckStatus::Critical,
            "pool is DEGRADED (redundancy lost)".into(),
        )),
        other => findings.push((CheckStatus::Critical, format!("pool is {other}"))),
    }
    for vdev in status.vdevs.iter().skip(1) {
        if !matches!(vdev.state.as_str(), "ONLINE" | "AVAIL" | "INUSE" | "") {
            findings.push((
                CheckStatus::Critical,
                format!("{} is {}", vdev.name, vdev.state),
            ));
        }
        let errors = vdev.read_errors + vdev.write_errors + vdev.checksum_errors;
        if errors > 0 {
            findings.push((
                CheckStatus::Warning,
                format!(
                    "{} has errors (read {}, write {}, checksum {})",
                    vdev.name, vdev.read_errors, vdev.write_errors, vdev.checksum_errors
                ),
            ));
        }
    }
    if status.data_errors > 0 {
        findings.push((
            CheckStatus::Critical,
            format!("{} permanent data errors", status.data_errors),
        ));
    }
    match &status.scan {
        Scan::ResilverInProgress { percent_done, .. } => findings.push((
            CheckStatus::Warning,
            format!(
                "resilver in progress ({}% done)",
                percent_done.map_or("?".into(), |p| p.to_string())
            ),
        )),
        Scan::ScrubInProgress { .. } => {}
        Scan::None => findings.push((CheckStatus::Warning, "never scrubbed".into())),
        scan => {
            if let Some(age) = scrub_age_days(scan, now).filter(|age| *age > MAX_SCRUB_AGE_DAYS) {
                findings.push((CheckStatus::Warning, format!("last scrub {age} days ago")));
            }
        }
    }
    if let Some(usage) = usage {
        if usage.capacity_percent >= 90.0 {
            findings.push((
                CheckStatus::Critical,
                format!("{}% full", usage.capacity_percent),
            ));
        } else if usage.capacity_percent >= 80.0 {
            findings.push((
                CheckStatus::Warning,
                format!("{}% full", usage.capacity_percent),
            ));
        }
    }
    CheckReport::from_findings(
        format!("zfs.pool:{}", status.name),
        &findings,
        format!("pool {} is ONLINE and healthy", status.name),
        Some(&format!("pool {}", status.name)),
        serde_json::json!({ "status": status, "usage": usage }),
    )
}
