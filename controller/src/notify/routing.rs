//! Which channels a notification goes to: each route names channels, a lowest severity, and
//! matchers on the alert's labels (`device`, `alert`, and any the rule adds), all of which
//! must hold. Routes are tried in order; one with `stop` ends the search when it matches, so
//! a specific route can take what a catch-all after it would otherwise also get. A channel
//! named by several matching routes gets the notification once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::payload::Severity;

/// One label matcher: equal to `value`, or (with `not`) anything but it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Matcher {
    pub label: String,
    pub value: String,
    #[serde(default)]
    pub not: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub channels: Vec<String>,
    /// Notifications below this severity do not take this route (default: warning, so all).
    #[serde(default = "warning")]
    pub min_severity: Severity,
    #[serde(default)]
    pub matchers: Vec<Matcher>,
    #[serde(default)]
    pub stop: bool,
}

fn warning() -> Severity {
    Severity::Warning
}

fn rank(severity: Severity) -> u8 {
    match severity {
        Severity::Warning => 1,
        Severity::Critical => 2,
    }
}

impl Matcher {
    pub fn holds(&self, labels: &BTreeMap<String, String>) -> bool {
        let equal = labels.get(&self.label).is_some_and(|v| *v == self.value);
        equal != self.not
    }
}

/// The channels, in the order routes name them, each once.
pub fn channels_for<'a>(
    routes: &'a [Route],
    severity: Severity,
    labels: &BTreeMap<String, String>,
) -> Vec<&'a str> {
    let mut chosen: Vec<&str> = Vec::new();
    for route in routes {
        let matches = rank(severity) >= rank(route.min_severity)
            && route.matchers.iter().all(|m| m.holds(labels));
        if !matches {
            continue;
        }
        for channel in &route.channels {
            if !chosen.contains(&channel.as_str()) {
                chosen.push(channel);
            }
        }
        if route.stop {
            break;
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn route(
        channels: &[&str],
        min: Severity,
        matchers: &[(&str, &str, bool)],
        stop: bool,
    ) -> Route {
        Route {
            channels: channels.iter().map(|c| c.to_string()).collect(),
            min_severity: min,
            matchers: matchers
                .iter()
                .map(|(label, value, not)| Matcher {
                    label: label.to_string(),
                    value: value.to_string(),
                    not: *not,
                })
                .collect(),
            stop,
        }
    }

    #[test]
    fn routes_pick_channels_by_severity_and_labels_in_order() {
        use Severity::*;
        let routes = vec![
            route(&["pager"], Critical, &[("device", "nas", false)], true),
            route(&["email", "ntfy"], Critical, &[], false),
            route(
                &["ntfy", "chat"],
                Warning,
                &[("alert", "docker.disk", true)],
                false,
            ),
        ];
        let nas = labels(&[("device", "nas"), ("alert", "zfs.pool:tank")]);
        assert_eq!(
            channels_for(&routes, Critical, &nas),
            ["pager"],
            "stop ends the search"
        );
        assert_eq!(channels_for(&routes, Warning, &nas), ["ntfy", "chat"]);
        let web = labels(&[("device", "web-1"), ("alert", "docker.disk")]);
        assert_eq!(
            channels_for(&routes, Critical, &web),
            ["email", "ntfy"],
            "ntfy once; the chat route excludes docker.disk"
        );
        assert!(channels_for(&routes, Warning, &web).is_empty());
        let route: Route = serde_json::from_str(r#"{"channels": ["x"]}"#).unwrap();
        assert_eq!(route.min_severity, Warning);
        assert!(serde_json::from_str::<Route>(r#"{"channels": [], "bogus": 1}"#).is_err());
    }
}
