//! The exact plan an action takes, from the graph: each member's step, what it waits for
//! first, the gate it must pass for its dependants (healthy, or completed), and the groups
//! that may run at once. A dry run answers this; the MCP tool's first call shows it.

use infrastructor_hostops::compose::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::graph::Graph;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AppAction {
    /// Each member as soon as its own dependencies meet their conditions.
    Start,
    /// Each member once everything that depends on it has stopped.
    Stop,
    /// The ordered stop, then the ordered start.
    Restart,
    /// Every member's state, changing nothing.
    Status,
}

impl AppAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Restart => "restart",
            Self::Status => "status",
        }
    }
}

/// What one step does to its member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    Start,
    Stop,
}

/// What a step waits for before it acts: a dependency's condition (start), or a dependant
/// having stopped (stop).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Gate {
    pub member: String,
    /// `service_started`, `service_healthy`, `service_completed_successfully`, or `stopped`.
    pub waits_for: String,
    /// When false, the step goes ahead even if the gate is never met.
    pub required: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PlanStep {
    pub member: String,
    pub device: String,
    pub container: String,
    pub does: StepKind,
    pub after: Vec<Gate>,
    /// After starting, the member must become healthy (or complete with code 0) for a
    /// dependant; within `timeout_seconds`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub then_waits_for: Option<Condition>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Plan {
    pub action: AppAction,
    /// The steps, in an order they may be taken one by one.
    pub steps: Vec<PlanStep>,
    /// Members that may be acted on at once, phase by phase (a start's groups are its
    /// dependency levels). Execution does not wait for a whole group: each member goes as
    /// soon as its own gates are met.
    pub groups: Vec<Vec<String>>,
    pub timeout_seconds: u64,
    pub settle_delay_ms: u64,
}

/// The strongest condition any dependant asks of member `i` beyond being started.
pub fn gate_for_dependants(graph: &Graph, i: usize) -> Option<Condition> {
    let asked = graph.dependants[i].iter().flat_map(|d| {
        graph.deps[*d]
            .iter()
            .filter(move |e| e.on == i)
            .map(|e| e.condition)
    });
    let mut gate = None;
    for condition in asked {
        gate = match (gate, condition) {
            (_, Condition::ServiceStarted) => gate,
            (Some(Condition::ServiceCompletedSuccessfully), _) => gate,
            (_, c) => Some(c),
        };
    }
    gate
}

pub fn plan(graph: &Graph, action: AppAction, timeout_seconds: u64, settle_delay_ms: u64) -> Plan {
    let levels = graph.levels();
    let names = |level: &Vec<usize>| -> Vec<String> {
        level.iter().map(|i| graph.name(*i).to_string()).collect()
    };
    let start_steps = || -> Vec<PlanStep> {
        graph
            .start_order()
            .into_iter()
            .map(|i| step(graph, i, StepKind::Start))
            .collect()
    };
    let stop_steps = || -> Vec<PlanStep> {
        graph
            .start_order()
            .into_iter()
            .rev()
            .map(|i| step(graph, i, StepKind::Stop))
            .collect()
    };
    let (steps, groups) = match action {
        AppAction::Start => (start_steps(), levels.iter().map(names).collect()),
        AppAction::Stop => (stop_steps(), levels.iter().rev().map(names).collect()),
        AppAction::Restart => {
            let mut steps = stop_steps();
            steps.extend(start_steps());
            let mut groups: Vec<Vec<String>> = levels.iter().rev().map(names).collect();
            groups.extend(levels.iter().map(names));
            (steps, groups)
        }
        AppAction::Status => (Vec::new(), Vec::new()),
    };
    Plan {
        action,
        steps,
        groups,
        timeout_seconds,
        settle_delay_ms,
    }
}

fn step(graph: &Graph, i: usize, does: StepKind) -> PlanStep {
    let member = &graph.members[i];
    let after = match does {
        StepKind::Start => graph.deps[i]
            .iter()
            .map(|e| Gate {
                member: graph.name(e.on).to_string(),
                waits_for: e.condition.as_str().to_string(),
                required: e.required,
            })
            .collect(),
        StepKind::Stop => graph.dependants[i]
            .iter()
            .map(|d| Gate {
                member: graph.name(*d).to_string(),
                waits_for: "stopped".to_string(),
                required: true,
            })
            .collect(),
    };
    PlanStep {
        member: member.name.clone(),
        device: member.device.clone(),
        container: member.container.clone(),
        does,
        after,
        then_waits_for: match does {
            StepKind::Start => gate_for_dependants(graph, i),
            StepKind::Stop => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::super::graph::member;
    use super::*;

    #[test]
    fn the_plan_names_every_wait_and_gate_in_order() {
        use Condition::*;
        let graph = Graph::new(vec![
            member("web", &[("api", ServiceHealthy)]),
            member("api", &[("db", ServiceHealthy), ("cache", ServiceStarted)]),
            member("db", &[]),
            member("cache", &[]),
            member("migrate", &[("db", ServiceHealthy)]),
            member("worker", &[("migrate", ServiceCompletedSuccessfully)]),
        ])
        .unwrap();
        let start = plan(&graph, AppAction::Start, 60, 0);
        let order: Vec<&str> = start.steps.iter().map(|s| s.member.as_str()).collect();
        assert_eq!(order, ["cache", "db", "api", "migrate", "web", "worker"]);
        let db = &start.steps[1];
        assert_eq!(db.then_waits_for, Some(ServiceHealthy));
        assert_eq!(
            start.steps[0].then_waits_for, None,
            "cache: started is enough"
        );
        let api = &start.steps[2];
        let waits: Vec<(&str, &str)> = api
            .after
            .iter()
            .map(|g| (g.member.as_str(), g.waits_for.as_str()))
            .collect();
        assert_eq!(
            waits,
            [("db", "service_healthy"), ("cache", "service_started")]
        );
        assert_eq!(
            start.steps[3].then_waits_for,
            Some(ServiceCompletedSuccessfully)
        );
        assert_eq!(start.groups[0], ["cache", "db"]);

        let stop = plan(&graph, AppAction::Stop, 60, 0);
        let order: Vec<&str> = stop.steps.iter().map(|s| s.member.as_str()).collect();
        assert_eq!(order, ["worker", "web", "migrate", "api", "db", "cache"]);
        let db_stop = stop.steps.iter().find(|s| s.member == "db").unwrap();
        let after: Vec<&str> = db_stop.after.iter().map(|g| g.member.as_str()).collect();
        assert_eq!(after, ["api", "migrate"]);

        let restart = plan(&graph, AppAction::Restart, 60, 0);
        assert_eq!(restart.steps.len(), 12);
        assert_eq!(restart.steps[0].does, StepKind::Stop);
        assert_eq!(restart.steps[6].does, StepKind::Start);
        assert!(plan(&graph, AppAction::Status, 60, 0).steps.is_empty());
    }
}
