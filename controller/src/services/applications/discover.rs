//! Applications found on the hosts from the labels Compose writes: a project is an
//! application, each of its containers a member, and `depends_on` its edges. A service with
//! several containers (replicas) is one member per container, and a dependency on that
//! service waits for every one of them. Label text is the host's: a project, service or
//! container whose name would not be accepted in a declaration is left out.

use std::collections::BTreeMap;

use infrastructor_hostops::docker::ContainerInfo;

use super::graph::{DependencySpec, MemberSpec};
use super::valid_member_name;

/// The containers one device reported.
pub struct DeviceContainers<'a> {
    pub device: &'a str,
    pub containers: &'a [ContainerInfo],
}

/// Every Compose project found, by name, with its members.
pub fn discover(devices: &[DeviceContainers<'_>]) -> BTreeMap<String, Vec<MemberSpec>> {
    // project → (service, member name, device, container, dependencies)
    let mut found: BTreeMap<String, Vec<(String, MemberSpec)>> = BTreeMap::new();
    for device in devices {
        for container in device.containers {
            let Some(compose) = &container.compose else {
                continue;
            };
            let names_ok = valid_member_name(&compose.project)
                && valid_member_name(&compose.service)
                && valid_member_name(&container.name);
            if !names_ok {
                continue;
            }
            let depends_on = compose
                .depends_on
                .iter()
                .filter(|d| valid_member_name(&d.service))
                .map(|d| DependencySpec {
                    member: d.service.clone(),
                    condition: d.condition,
                    required: true,
                })
                .collect();
            found.entry(compose.project.clone()).or_default().push((
                compose.service.clone(),
                MemberSpec {
                    name: compose.service.clone(),
                    device: device.device.to_string(),
                    container: container.name.clone(),
                    depends_on,
                },
            ));
        }
    }
    found
        .into_iter()
        .map(|(project, members)| (project, resolve(members)))
        .collect()
}

/// Names members (the service, or the container when a service has several) and turns
/// dependencies on services into dependencies on their members.
fn resolve(members: Vec<(String, MemberSpec)>) -> Vec<MemberSpec> {
    let mut by_service: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (service, _) in &members {
        *counts.entry(service.as_str()).or_default() += 1;
    }
    let named: Vec<MemberSpec> = members
        .iter()
        .map(|(service, member)| {
            let mut member = member.clone();
            if counts[service.as_str()] > 1 {
                member.name = member.container.clone();
            }
            by_service
                .entry(service.clone())
                .or_default()
                .push(member.name.clone());
            member
        })
        .collect();
    named
        .into_iter()
        .map(|mut member| {
            member.depends_on = member
                .depends_on
                .iter()
                .flat_map(|dep| {
                    // A dependency on a service that is not running here is Compose's to
                    // create, not ours to wait for.
                    by_service
                        .get(&dep.member)
                        .into_iter()
                        .flatten()
                        .map(move |name| DependencySpec {
                            member: name.clone(),
                            ..dep.clone()
                        })
                })
                .collect();
            member
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use infrastructor_hostops::compose::{ComposeService, Condition, Dependency};

    fn container(
        name: &str,
        project: &str,
        service: &str,
        deps: &[(&str, Condition)],
    ) -> ContainerInfo {
        ContainerInfo {
            id: format!("id-{name}"),
            name: name.into(),
            image: "busybox".into(),
            state: "running".into(),
            health: None,
            restart_count: 0,
            exit_code: None,
            oom_killed: false,
            uptime_seconds: Some(10),
            stopped_seconds: None,
            started_at_ms: Some(1),
            finished_at_ms: None,
            compose: Some(ComposeService {
                project: project.into(),
                service: service.into(),
                depends_on: deps
                    .iter()
                    .map(|(s, c)| Dependency {
                        service: s.to_string(),
                        condition: *c,
                        restart: false,
                    })
                    .collect(),
            }),
        }
    }

    #[test]
    fn projects_become_applications_and_replicas_members() {
        use Condition::*;
        let mut plain = container("loner", "x", "y", &[]);
        plain.compose = None;
        let containers = vec![
            container("shop-db-1", "shop", "db", &[]),
            container("shop-web-1", "shop", "web", &[("db", ServiceHealthy)]),
            container("shop-web-2", "shop", "web", &[("db", ServiceHealthy)]),
            container(
                "shop-proxy-1",
                "shop",
                "proxy",
                &[("web", ServiceStarted), ("gone", ServiceStarted)],
            ),
            container("blog-app-1", "blog", "app", &[]),
            container("bad-1", "bad;project", "app", &[]),
            plain,
        ];
        let found = discover(&[DeviceContainers {
            device: "nas",
            containers: &containers,
        }]);
        assert_eq!(found.keys().collect::<Vec<_>>(), ["blog", "shop"]);
        let shop = &found["shop"];
        let names: Vec<&str> = shop.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["db", "shop-web-1", "shop-web-2", "proxy"]);
        let proxy = shop.iter().find(|m| m.name == "proxy").unwrap();
        let deps: Vec<&str> = proxy.depends_on.iter().map(|d| d.member.as_str()).collect();
        assert_eq!(
            deps,
            ["shop-web-1", "shop-web-2"],
            "every replica; unknown services dropped"
        );
        assert_eq!(shop[1].depends_on[0].condition, ServiceHealthy);
        assert!(super::super::graph::Graph::new(shop.clone()).is_ok());
    }
}
