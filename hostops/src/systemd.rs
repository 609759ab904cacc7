//! systemd: parsers for `systemctl list-units --state=failed --plain --no-legend` and
//! `systemctl show`, and the unit check.

use serde::Serialize;

use super::{CheckReport, CheckStatus, Finding};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FailedUnit {
    pub unit: String,
    pub load: String,
    pub active: String,
    pub sub: String,
    pub description: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct UnitState {
    pub id: String,
    pub load_state: String,
    pub active_state: String,
    pub sub_state: String,
    pub result: String,
}

/// One failed unit per non-empty line: `UNIT LOAD ACTIVE SUB DESCRIPTION…`.
pub fn parse_failed_units(text: &str) -> Vec<FailedUnit> {
    text.lines()
        .filter_map(|line| {
            // Older systemctl prefixes failed units with a bullet even with --plain.
            let line = line.trim().trim_start_matches(['●', '*']).trim();
            let mut fields = line.split_whitespace();
            let unit = fields.next()?.to_string();
            let load = fields.next()?.to_string();
            let active = fields.next()?.to_string();
            let sub = fields.next()?.to_string();
            Some(FailedUnit {
                unit,
                load,
                active,
                sub,
                description: fields.collect::<Vec<_>>().join(" "),
            })
        })
        .collect()
}

/// `key=value` blocks separated by blank lines, one per unit.
pub fn parse_show(text: &str) -> Vec<UnitState> {
    let mut units = Vec::new();
    let mut current = UnitState::default();
    let mut seen = false;
    for line in text.lines().chain(std::iter::once("")) {
        if line.trim().is_empty() {
            if seen {
                units.push(std::mem::take(&mut current));
                seen = false;
            }
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        seen = true;
        let value = value.to_string();
        match key {
            "Id" => current.id = value,
            "LoadState" => current.load_state = value,
            "ActiveState" => current.active_state = value,
            "SubState" => current.sub_state = value,
            "Result" => current.result = value,
            _ => {}
        }
    }
    units
}

/// Failed units are critical; watched units that are missing or not active are critical too.
pub fn check_units(failed: &[FailedUnit], watched: &[UnitState]) -> CheckReport {
    let mut problems: Vec<String> = failed
        .iter()
        .map(|u| format!("{} failed", u.unit))
        .collect();
    for unit in watched {
        if unit.load_state == "not-found" {
            problems.push(format!("{} does not exist", unit.id));
        } else if unit.active_state != "active" && !failed.iter().any(|f| f.unit == unit.id) {
            problems.push(format!(
                "{} is {} ({})",
                unit.id, unit.active_state, unit.sub_state
            ));
        }
    }
    let findings: Vec<Finding> = problems
        .into_iter()
        .map(|p| (CheckStatus::Critical, p))
        .collect();
    CheckReport::from_findings(
        "systemd.units".into(),
        &findings,
        format!("no failed units; {} watched units active", watched.len()),
        None,
        serde_json::json!({ "failed": failed, "watched": watched }),
    )
}
