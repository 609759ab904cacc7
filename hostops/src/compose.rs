//! What Docker Compose writes on the containers it creates: the project and service a
//! container belongs to, and its service's dependencies with their conditions
//! (`com.docker.compose.depends_on`: `db:service_healthy:false,cache:service_started:true`,
//! each entry `service:condition:restart`). Label values are the host's: untrusted, and
//! checked again wherever they name something.

use std::collections::HashMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const PROJECT_LABEL: &str = "com.docker.compose.project";
pub const SERVICE_LABEL: &str = "com.docker.compose.service";
pub const DEPENDS_ON_LABEL: &str = "com.docker.compose.depends_on";

/// What a dependency must reach before its dependant starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// Running (the default).
    ServiceStarted,
    /// Running and reported healthy by its health check.
    ServiceHealthy,
    /// Ran to completion with exit code 0 (a migration, a seed job).
    ServiceCompletedSuccessfully,
}

impl Condition {
    /// Compose's name for it. An unknown name is ordering only (`service_started`): the
    /// dependency still comes first, and nothing waits on a state nobody defined.
    pub fn parse(name: &str) -> Self {
        match name {
            "service_healthy" => Self::ServiceHealthy,
            "service_completed_successfully" => Self::ServiceCompletedSuccessfully,
            _ => Self::ServiceStarted,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ServiceStarted => "service_started",
            Self::ServiceHealthy => "service_healthy",
            Self::ServiceCompletedSuccessfully => "service_completed_successfully",
        }
    }
}

/// One entry of a service's `depends_on`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Dependency {
    pub service: String,
    pub condition: Condition,
    /// Compose restarts the dependant when this dependency is restarted.
    pub restart: bool,
}

/// A container's place in a Compose project.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ComposeService {
    pub project: String,
    pub service: String,
    #[serde(default)]
    pub depends_on: Vec<Dependency>,
}

impl ComposeService {
    /// From a container's labels; `None` when Compose did not create it.
    pub fn from_labels(labels: &HashMap<String, String>) -> Option<Self> {
        let project = labels.get(PROJECT_LABEL)?.trim();
        let service = labels.get(SERVICE_LABEL)?.trim();
        if project.is_empty() || service.is_empty() {
            return None;
        }
        Some(Self {
            project: project.to_string(),
            service: service.to_string(),
            depends_on: labels
                .get(DEPENDS_ON_LABEL)
                .map(|value| parse_depends_on(value))
                .unwrap_or_default(),
        })
    }
}

/// `db:service_healthy:false,cache` → the entries; empty entries are skipped, a missing
/// condition is `service_started`.
pub fn parse_depends_on(value: &str) -> Vec<Dependency> {
    value
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .filter_map(|entry| {
            let mut parts = entry.split(':');
            let service = parts.next()?.trim();
            if service.is_empty() {
                return None;
            }
            let condition = parts
                .next()
                .map_or(Condition::ServiceStarted, |c| Condition::parse(c.trim()));
            let restart = parts.next().is_some_and(|r| r.trim() == "true");
            Some(Dependency {
                service: service.to_string(),
                condition,
                restart,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compose_labels_give_the_project_the_service_and_its_dependencies() {
        // As Compose v2 writes them (captured from `docker inspect` of a compose project).
        let labels: HashMap<String, String> = [
            ("com.docker.compose.config-hash", "c3367a20a4c7"),
            ("com.docker.compose.container-number", "1"),
            (
                DEPENDS_ON_LABEL,
                "db:service_healthy:false,cache:service_started:true,\
                 migrate:service_completed_successfully:false",
            ),
            ("com.docker.compose.oneoff", "False"),
            (PROJECT_LABEL, "shop"),
            (SERVICE_LABEL, "api"),
            ("com.docker.compose.version", "2.24.7"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let service = ComposeService::from_labels(&labels).unwrap();
        assert_eq!(
            (service.project.as_str(), service.service.as_str()),
            ("shop", "api")
        );
        let deps: Vec<(&str, Condition, bool)> = service
            .depends_on
            .iter()
            .map(|d| (d.service.as_str(), d.condition, d.restart))
            .collect();
        assert_eq!(
            deps,
            [
                ("db", Condition::ServiceHealthy, false),
                ("cache", Condition::ServiceStarted, true),
                ("migrate", Condition::ServiceCompletedSuccessfully, false),
            ]
        );
    }

    #[test]
    fn odd_values_are_read_leniently_and_foreign_containers_are_not_compose() {
        assert!(parse_depends_on("").is_empty());
        let deps = parse_depends_on(" db , ,:x, cache:someday:false");
        assert_eq!(deps.len(), 2);
        assert_eq!(deps[0].condition, Condition::ServiceStarted);
        assert_eq!(deps[1].condition, Condition::ServiceStarted);
        let mut labels = HashMap::new();
        labels.insert(PROJECT_LABEL.to_string(), "shop".to_string());
        assert_eq!(ComposeService::from_labels(&labels), None);
    }
}
