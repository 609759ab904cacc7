//! An application's members and dependencies as a graph, checked once: every edge names a
//! member, no member depends on itself, and there is no cycle (refused with its path,
//! `db -> api -> db`). From it come the orders each action takes: a start runs each member as
//! soon as its own dependencies meet their conditions (not in waves), a stop runs each
//! member once everything that depends on it has stopped. `levels` are the groups that may
//! run at once, for people to read.

use std::collections::BTreeMap;

use infrastructor_hostops::compose::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One member: a container on a device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberSpec {
    pub name: String,
    /// Device ID or name.
    pub device: String,
    /// The container's name on that device.
    pub container: String,
    /// What must come first, and in which state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<DependencySpec>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DependencySpec {
    pub member: String,
    #[serde(default = "started")]
    pub condition: Condition,
    /// When false, the dependant starts even if this dependency fails to meet its condition
    /// (Compose's `required: false`).
    #[serde(default = "yes")]
    pub required: bool,
}

fn started() -> Condition {
    Condition::ServiceStarted
}

fn yes() -> bool {
    true
}

/// An edge: `member` waits for `on` to meet `condition`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edge {
    pub on: usize,
    pub condition: Condition,
    pub required: bool,
}

/// The checked graph; members are indexed in name order.
#[derive(Clone, Debug)]
pub struct Graph {
    pub members: Vec<MemberSpec>,
    /// Per member, what it depends on.
    pub deps: Vec<Vec<Edge>>,
    /// Per member, what depends on it.
    pub dependants: Vec<Vec<usize>>,
}

impl Graph {
    pub fn new(mut members: Vec<MemberSpec>) -> Result<Self> {
        if members.is_empty() {
            return Err(Error::invalid("an application needs at least one member"));
        }
        members.sort_by(|a, b| a.name.cmp(&b.name));
        let index: BTreeMap<&str, usize> = members
            .iter()
            .enumerate()
            .map(|(i, m)| (m.name.as_str(), i))
            .collect();
        if index.len() != members.len() {
            let twice = members
                .windows(2)
                .find(|w| w[0].name == w[1].name)
                .map(|w| w[0].name.clone())
                .unwrap_or_default();
            return Err(Error::invalid(format!("member {twice:?} is listed twice")));
        }
        let mut deps = vec![Vec::new(); members.len()];
        let mut dependants = vec![Vec::new(); members.len()];
        for (i, member) in members.iter().enumerate() {
            for dep in &member.depends_on {
                let Some(&on) = index.get(dep.member.as_str()) else {
                    return Err(Error::invalid(format!(
                        "member {:?} depends on {:?}, which is not a member",
                        member.name, dep.member
                    )));
                };
                if on == i {
                    return Err(Error::invalid(format!(
                        "member {:?} depends on itself",
                        member.name
                    )));
                }
                deps[i].push(Edge {
                    on,
                    condition: dep.condition,
                    required: dep.required,
                });
                dependants[on].push(i);
            }
        }
        let graph = Self {
            members,
            deps,
            dependants,
        };
        if let Some(cycle) = graph.cycle() {
            return Err(Error::invalid(format!(
                "the dependencies form a cycle: {cycle}"
            )));
        }
        Ok(graph)
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn name(&self, i: usize) -> &str {
        &self.members[i].name
    }

    /// A cycle's path, first member repeated at the end (`db -> api -> db`).
    fn cycle(&self) -> Option<String> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            OnPath,
            Done,
        }
        fn visit(graph: &Graph, i: usize, marks: &mut [Mark], path: &mut Vec<usize>) -> bool {
            marks[i] = Mark::OnPath;
            path.push(i);
            for edge in &graph.deps[i] {
                let mark = marks[edge.on];
                match mark {
                    Mark::OnPath => {
                        path.push(edge.on);
                        return true;
                    }
                    Mark::New if visit(graph, edge.on, marks, path) => return true,
                    _ => {}
                }
            }
            path.pop();
            marks[i] = Mark::Done;
            false
        }
        let mut marks = vec![Mark::New; self.len()];
        for start in 0..self.len() {
            let mut path = Vec::new();
            if marks[start] == Mark::New && visit(self, start, &mut marks, &mut path) {
                let Some(&back) = path.last() else { continue };
                let from = path.iter().position(|i| *i == back).unwrap_or(0);
                // Written in the direction things start: a dependency before its dependant.
                let names: Vec<&str> = path[from..].iter().rev().map(|i| self.name(*i)).collect();
                return Some(names.join(" -> "));
            }
        }
        None
    }

    /// The groups a start may run at once: each member one level after its deepest
    /// dependency. A stop runs them in reverse.
    pub fn levels(&self) -> Vec<Vec<usize>> {
        let mut depth: Vec<Option<usize>> = vec![None; self.len()];
        fn depth_of(graph: &Graph, i: usize, depth: &mut [Option<usize>]) -> usize {
            if let Some(d) = depth[i] {
                return d;
            }
            let d = graph.deps[i]
                .iter()
                .map(|e| depth_of(graph, e.on, depth) + 1)
                .max()
                .unwrap_or(0);
            depth[i] = Some(d);
            d
        }
        let mut levels: Vec<Vec<usize>> = Vec::new();
        for i in 0..self.len() {
            let d = depth_of(self, i, &mut depth);
            if levels.len() <= d {
                levels.resize(d + 1, Vec::new());
            }
            levels[d].push(i);
        }
        levels
    }

    /// Every member in an order a start may take one by one (dependencies first).
    pub fn start_order(&self) -> Vec<usize> {
        self.levels().into_iter().flatten().collect()
    }
}

/// A member on device `nas` with its container named after it, for the tests here and in
/// `plan`.
#[cfg(test)]
pub(super) fn member(name: &str, deps: &[(&str, Condition)]) -> MemberSpec {
    MemberSpec {
        name: name.into(),
        device: "nas".into(),
        container: name.into(),
        depends_on: deps
            .iter()
            .map(|(m, c)| DependencySpec {
                member: m.to_string(),
                condition: *c,
                required: true,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shop() -> Vec<MemberSpec> {
        use Condition::*;
        vec![
            member("web", &[("api", ServiceHealthy)]),
            member("api", &[("db", ServiceHealthy), ("cache", ServiceStarted)]),
            member("worker", &[("db", ServiceHealthy)]),
            member("db", &[]),
            member("cache", &[]),
        ]
    }

    fn names(graph: &Graph, order: &[usize]) -> Vec<String> {
        order.iter().map(|i| graph.name(*i).to_string()).collect()
    }

    #[test]
    fn levels_put_independent_members_together_and_dependencies_first() {
        let graph = Graph::new(shop()).unwrap();
        let levels: Vec<Vec<String>> = graph.levels().iter().map(|l| names(&graph, l)).collect();
        assert_eq!(
            levels,
            [vec!["cache", "db"], vec!["api", "worker"], vec!["web"]]
        );
        let order = names(&graph, &graph.start_order());
        assert_eq!(order, ["cache", "db", "api", "worker", "web"]);
        let db = graph.members.iter().position(|m| m.name == "db").unwrap();
        assert_eq!(names(&graph, &graph.dependants[db]), ["api", "worker"]);
    }

    #[test]
    fn a_cycle_is_refused_with_its_path() {
        use Condition::*;
        let looped = vec![
            member("db", &[("api", ServiceStarted)]),
            member("api", &[("db", ServiceHealthy)]),
            member("web", &[("api", ServiceStarted)]),
        ];
        let error = Graph::new(looped).unwrap_err().to_string();
        assert!(
            error.contains("api -> db -> api") || error.contains("db -> api -> db"),
            "{error}"
        );
        let longer = vec![
            member("a", &[("c", ServiceStarted)]),
            member("b", &[("a", ServiceStarted)]),
            member("c", &[("b", ServiceStarted)]),
        ];
        let error = Graph::new(longer).unwrap_err().to_string();
        assert!(error.contains("a -> b -> c -> a"), "{error}");
    }

    #[test]
    fn broken_graphs_are_refused_with_what_is_wrong() {
        let missing = vec![member("api", &[("db", Condition::ServiceStarted)])];
        assert!(Graph::new(missing)
            .unwrap_err()
            .to_string()
            .contains("\"db\", which is not a member"));
        let selfish = vec![member("api", &[("api", Condition::ServiceStarted)])];
        assert!(Graph::new(selfish)
            .unwrap_err()
            .to_string()
            .contains("depends on itself"));
        let twice = vec![member("api", &[]), member("api", &[])];
        assert!(Graph::new(twice).unwrap_err().to_string().contains("twice"));
        assert!(Graph::new(Vec::new()).is_err());
    }
}
