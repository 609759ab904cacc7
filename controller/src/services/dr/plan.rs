//! A disaster-recovery plan as code: a YAML document naming steps, each a call of one
//! operation of the registry (or `wait_until`) with its arguments, whether it is critical,
//! how long it may take and what a failure does. Arguments may use the outputs of earlier
//! steps: `${{ steps.<id>.output.<field>… }}` — the whole string becomes that value, or, inside
//! longer text, its text.
//!
//! Reading a plan checks everything that can be checked without running it, and every mistake
//! names its line and column: YAML that does not parse, a field of the wrong type or unknown,
//! a duplicate or malformed step ID, an unknown operation, a timeout that is not a duration, a
//! reference to a step that does not come earlier.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_saphyr::{Location, Spanned};

/// The operation that waits for a condition, offered to plans beside the registry's.
pub const WAIT_UNTIL: &str = "wait_until";
/// A step may take at most this long.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);
/// Plans are small: this many steps at most.
const MAX_STEPS: usize = 200;

/// What a failing step does to the plan.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Stop here; the run can be resumed from this step.
    #[default]
    Halt,
    /// Note the failure and go on (only for steps that are not critical).
    Continue,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    name: Spanned<String>,
    #[serde(default)]
    description: String,
    steps: Spanned<Vec<RawStep>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    id: Spanned<String>,
    operation: Spanned<String>,
    #[serde(default)]
    arguments: Option<Spanned<BTreeMap<String, Value>>>,
    #[serde(default = "critical")]
    critical: Spanned<bool>,
    #[serde(default)]
    timeout: Option<Spanned<String>>,
    #[serde(default)]
    on_failure: Option<Spanned<OnFailure>>,
}

fn critical() -> Spanned<bool> {
    Spanned::new(true, Location::UNKNOWN, Location::UNKNOWN)
}

/// A plan, checked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub name: String,
    pub description: String,
    pub steps: Vec<Step>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub id: String,
    pub operation: String,
    pub arguments: serde_json::Map<String, Value>,
    pub critical: bool,
    pub timeout_ms: u64,
    pub on_failure: OnFailure,
    /// The steps whose outputs its arguments use.
    pub uses: Vec<String>,
    /// Where the step begins in the document.
    pub line: u64,
}

/// One mistake in a plan, and where it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanError {
    pub line: u64,
    pub column: u64,
    pub message: String,
}

impl std::fmt::Display for PlanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {}, column {}: {}",
            self.line, self.column, self.message
        )
    }
}

fn at(location: Location, message: impl Into<String>) -> PlanError {
    PlanError {
        line: location.line(),
        column: location.column(),
        message: message.into(),
    }
}

fn is_id(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// Reads and checks a plan; `known` says whether an operation may be a step. All mistakes
/// found are returned, in document order.
pub fn parse(text: &str, known: impl Fn(&str) -> bool) -> Result<Plan, Vec<PlanError>> {
    let raw: RawPlan = serde_saphyr::from_str(text).map_err(|e| vec![syntax(&e)])?;
    let mut errors = Vec::new();
    if !is_id(&raw.name.value) {
        errors.push(at(
            raw.name.referenced,
            "a plan's name is 1-64 characters of a-z, 0-9, '_' and '-'",
        ));
    }
    if raw.steps.value.is_empty() || raw.steps.value.len() > MAX_STEPS {
        errors.push(at(raw.steps.referenced, "a plan has 1 to 200 steps"));
    }
    let mut seen: HashSet<String> = HashSet::new();
    let mut steps = Vec::new();
    for step in raw.steps.value {
        let id = step.id.value.clone();
        if let Some(step) = check_step(step, &seen, &known, &mut errors) {
            steps.push(step);
        }
        // Known from here on even when the step has mistakes, so a duplicate is still found.
        seen.insert(id);
    }
    if errors.is_empty() {
        Ok(Plan {
            name: raw.name.value,
            description: raw.description,
            steps,
        })
    } else {
        errors.sort_by_key(|e| (e.line, e.column));
        Err(errors)
    }
}

fn syntax(error: &serde_saphyr::Error) -> PlanError {
    let location = error.location().unwrap_or(Location::UNKNOWN);
    // The first line of the rendered error is the message; the rest is a snippet.
    let rendered = error.to_string();
    let message = rendered.lines().next().unwrap_or("invalid YAML").trim();
    at(location, message.to_string())
}

fn check_step(
    step: RawStep,
    earlier: &HashSet<String>,
    known: &impl Fn(&str) -> bool,
    errors: &mut Vec<PlanError>,
) -> Option<Step> {
    let before = errors.len();
    let id = step.id.value.clone();
    if !is_id(&id) {
        errors.push(at(
            step.id.referenced,
            format!("step ID {id:?}: 1-64 characters of a-z, 0-9, '_' and '-'"),
        ));
    } else if earlier.contains(&id) {
        errors.push(at(
            step.id.referenced,
            format!("step ID {id:?} is used twice"),
        ));
    }
    let operation = step.operation.value.clone();
    if operation == "execute_dr_plan" {
        errors.push(at(step.operation.referenced, "a plan does not run plans"));
    } else if operation != WAIT_UNTIL && !known(&operation) {
        errors.push(at(
            step.operation.referenced,
            format!("no operation {operation:?} (a registry operation such as manage_backups, or wait_until)"),
        ));
    }
    let timeout_ms = match &step.timeout {
        None => DEFAULT_TIMEOUT.as_millis() as u64,
        Some(text) => match humantime::parse_duration(&text.value) {
            Ok(d) if !d.is_zero() && d <= MAX_TIMEOUT => d.as_millis() as u64,
            _ => {
                errors.push(at(
                    text.referenced,
                    format!(
                        "timeout {:?}: a duration such as 10m, at most 24h",
                        text.value
                    ),
                ));
                0
            }
        },
    };
    let on_failure = step
        .on_failure
        .as_ref()
        .map(|s| s.value)
        .unwrap_or_default();
    if step.critical.value && on_failure == OnFailure::Continue {
        let location = step
            .on_failure
            .as_ref()
            .map_or(Location::UNKNOWN, |s| s.referenced);
        errors.push(at(
            location,
            "a critical step halts the plan when it fails: on_failure: continue needs critical: false",
        ));
    }
    let (arguments, location) = match step.arguments {
        Some(spanned) => (spanned.value, spanned.referenced),
        None => (BTreeMap::new(), step.id.referenced),
    };
    let mut uses = Vec::new();
    for value in arguments.values() {
        for reference in references(value) {
            match reference {
                Ok(step_id) if earlier.contains(&step_id) => uses.push(step_id),
                Ok(step_id) => errors.push(at(
                    location,
                    format!(
                        "step {id:?} uses the output of {step_id:?}, which does not come before it"
                    ),
                )),
                Err(message) => errors.push(at(location, format!("step {id:?}: {message}"))),
            }
        }
    }
    uses.sort();
    uses.dedup();
    (errors.len() == before).then(|| Step {
        id,
        operation,
        arguments: arguments.into_iter().collect(),
        critical: step.critical.value,
        timeout_ms,
        on_failure: if step.critical.value {
            OnFailure::Halt
        } else {
            step.on_failure
                .map(|s| s.value)
                .unwrap_or(OnFailure::Continue)
        },
        uses,
        line: step.id.referenced.line(),
    })
}

/// The `${{ … }}` expressions in a value: the step each names, or what is wrong with it.
fn references(value: &Value) -> Vec<Result<String, String>> {
    match value {
        Value::String(text) => expressions(text)
            .into_iter()
            .map(|e| e.map(|(step, _)| step))
            .collect(),
        Value::Array(items) => items.iter().flat_map(references).collect(),
        Value::Object(fields) => fields.values().flat_map(references).collect(),
        _ => Vec::new(),
    }
}

/// `steps.<id>.output[.<field>…]` → the step and the path below its output.
fn expression(inner: &str) -> Result<(String, Vec<String>), String> {
    let parts: Vec<&str> = inner.trim().split('.').collect();
    match parts.as_slice() {
        ["steps", id, "output", path @ ..] if is_id(id) => {
            let valid = path
                .iter()
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
            if valid {
                Ok((id.to_string(), path.iter().map(|p| p.to_string()).collect()))
            } else {
                Err(format!(
                    "${{{{ {inner} }}}}: fields are letters, digits and '_'"
                ))
            }
        }
        _ => Err(format!(
            "${{{{ {} }}}} is not a reference; write ${{{{ steps.<id>.output.<field> }}}}",
            inner.trim()
        )),
    }
}

type Expressions = Vec<Result<(String, Vec<String>), String>>;

fn expressions(text: &str) -> Expressions {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        let after = &rest[start + 3..];
        match after.find("}}") {
            Some(end) => {
                found.push(expression(&after[..end]));
                rest = &after[end + 2..];
            }
            None => {
                found.push(Err("an unclosed ${{".to_string()));
                break;
            }
        }
    }
    found
}

/// A step's arguments with every reference replaced by the earlier step's output.
pub fn resolve(
    arguments: &serde_json::Map<String, Value>,
    outputs: &BTreeMap<String, Value>,
) -> Result<serde_json::Map<String, Value>, String> {
    arguments
        .iter()
        .map(|(k, v)| Ok((k.clone(), resolve_value(v, outputs)?)))
        .collect()
}

fn resolve_value(value: &Value, outputs: &BTreeMap<String, Value>) -> Result<Value, String> {
    match value {
        Value::String(text) => resolve_text(text, outputs),
        Value::Array(items) => items
            .iter()
            .map(|v| resolve_value(v, outputs))
            .collect::<Result<_, _>>()
            .map(Value::Array),
        Value::Object(fields) => fields
            .iter()
            .map(|(k, v)| Ok((k.clone(), resolve_value(v, outputs)?)))
            .collect::<Result<_, String>>()
            .map(Value::Object),
        other => Ok(other.clone()),
    }
}

fn lookup(outputs: &BTreeMap<String, Value>, step: &str, path: &[String]) -> Result<Value, String> {
    let mut value = outputs
        .get(step)
        .ok_or_else(|| format!("step {step:?} has no output (it did not run)"))?;
    for field in path {
        value = match value {
            Value::Object(fields) => fields.get(field),
            Value::Array(items) => field.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        }
        .ok_or_else(|| format!("the output of {step:?} has no {}", path.join(".")))?;
    }
    Ok(value.clone())
}

fn resolve_text(text: &str, outputs: &BTreeMap<String, Value>) -> Result<Value, String> {
    let trimmed = text.trim();
    // The whole string one reference: the value itself, of whatever type.
    if trimmed.starts_with("${{") && trimmed.ends_with("}}") && trimmed.matches("${{").count() == 1
    {
        let (step, path) = expression(&trimmed[3..trimmed.len() - 2])?;
        return lookup(outputs, &step, &path);
    }
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        out += &rest[..start];
        let after = &rest[start + 3..];
        let end = after.find("}}").ok_or("an unclosed ${{")?;
        let (step, path) = expression(&after[..end])?;
        match lookup(outputs, &step, &path)? {
            Value::String(s) => out += &s,
            other => out += &other.to_string(),
        }
        rest = &after[end + 2..];
    }
    out += rest;
    Ok(Value::String(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAN: &str = "\
name: nas-recovery
description: bring the NAS back from its backups
steps:
  - id: maintenance
    operation: set_maintenance_mode
    arguments:
      device: nas
      enable: true
      reason: DR drill
      duration: 2h
  - id: restore
    operation: manage_backups
    timeout: 30m
    arguments:
      action: restore
      target: nas-etc
      device: ${{ steps.maintenance.output.device_id }}
  - id: app
    operation: manage_application
    critical: false
    arguments: {app: media, action: restart, note: \"after ${{ steps.restore.output.snapshot }}\"}
  - id: healthy
    operation: wait_until
    arguments: {device: nas, healthy: true, timeout: 5m}
";

    fn known(op: &str) -> bool {
        [
            "set_maintenance_mode",
            "manage_backups",
            "manage_application",
            "diagnose_device",
        ]
        .contains(&op)
    }

    #[test]
    fn a_plan_is_read_with_its_steps_references_and_defaults() {
        let plan = parse(PLAN, known).unwrap();
        assert_eq!(plan.name, "nas-recovery");
        assert_eq!(plan.steps.len(), 4);
        let restore = &plan.steps[1];
        assert_eq!(restore.uses, ["maintenance"]);
        assert_eq!(restore.timeout_ms, 30 * 60_000);
        assert_eq!(restore.line, 11);
        assert!(plan.steps[0].critical && plan.steps[0].on_failure == OnFailure::Halt);
        assert!(!plan.steps[2].critical && plan.steps[2].on_failure == OnFailure::Continue);
        let outputs = BTreeMap::from([
            (
                "maintenance".to_string(),
                serde_json::json!({"device_id": "d-1"}),
            ),
            (
                "restore".to_string(),
                serde_json::json!({"snapshot": "0619cf5a"}),
            ),
        ]);
        let resolved = resolve(&plan.steps[1].arguments, &outputs).unwrap();
        assert_eq!(resolved["device"], "d-1");
        let resolved = resolve(&plan.steps[2].arguments, &outputs).unwrap();
        assert_eq!(resolved["note"], "after 0619cf5a");
        let missing = resolve(&plan.steps[2].arguments, &BTreeMap::new()).unwrap_err();
        assert!(missing.contains("did not run"), "{missing}");
    }

    #[test]
    fn every_mistake_names_its_line_and_column() {
        let errors = |text: &str| parse(text, known).unwrap_err();
        // Not YAML.
        let broken = errors("name: x\nsteps:\n  - id: a\n    operation: [unclosed\n");
        assert_eq!(broken.len(), 1);
        assert!(broken[0].line >= 4, "{broken:?}");
        // An unknown field, with its place.
        let unknown =
            errors("name: x\nsteps:\n  - id: a\n    operation: diagnose_device\n    retries: 3\n");
        assert_eq!(unknown[0].line, 5, "{unknown:?}");
        assert!(unknown[0].message.contains("retries"), "{unknown:?}");
        // Meaning: several at once, in order.
        let text = "\
name: x
steps:
  - id: a
    operation: reboot_everything
  - id: b
    operation: diagnose_device
    arguments: {device: \"${{ steps.c.output.id }}\"}
  - id: b
    operation: diagnose_device
    timeout: soon
  - id: c
    operation: diagnose_device
    on_failure: continue
";
        let found = errors(text);
        let lines: Vec<u64> = found.iter().map(|e| e.line).collect();
        assert_eq!(lines, [4, 7, 8, 10, 13], "{found:?}");
        assert!(found[0]
            .message
            .contains("no operation \"reboot_everything\""));
        assert!(found[1].message.contains("does not come before it"));
        assert!(found[2].message.contains("used twice"));
        assert!(found[3].message.contains("timeout \"soon\""));
        assert!(found[4].message.contains("critical: false"));
        assert_eq!(
            found[0].to_string(),
            format!("line 4, column {}: {}", found[0].column, found[0].message)
        );
        let bad_ref = errors(
            "name: x\nsteps:\n  - id: a\n    operation: diagnose_device\n    \
             arguments: {device: \"${{ env.HOME }}\"}\n",
        );
        assert!(
            bad_ref[0].message.contains("is not a reference"),
            "{bad_ref:?}"
        );
    }
}
