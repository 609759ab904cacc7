//! Host metrics: CPU, memory, swap, load, disks, network rates, uptime and process count.
//!
//! Series names are stable API (`cpu.usage_percent`, `disk.used_percent{mount=/}`, …); the
//! README lists them.

use std::collections::HashMap;
use std::time::Instant;

use infrastructor_proto::v1::Sample;
use sysinfo::{CpuRefreshKind, Disks, MemoryRefreshKind, Networks, RefreshKind, System};

/// Anything that can produce a round of samples. The daemon uses [`HostMetrics`]; tests and
/// the benchmark plug in deterministic sources.
pub trait MetricSource: Send {
    fn collect(&mut self) -> Vec<Sample>;
}

pub use infrastructor_hostops::{now_ms, sample};

/// Reads the host through sysinfo, keeping its refresh state between rounds so CPU usage and
/// network rates are measured over the collection interval.
pub struct HostMetrics {
    system: System,
    disks: Disks,
    networks: Networks,
    last_network_refresh: Instant,
}

impl Default for HostMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl HostMetrics {
    pub fn new() -> Self {
        let system = System::new_with_specifics(
            RefreshKind::nothing()
                .with_cpu(CpuRefreshKind::nothing().with_cpu_usage())
                .with_memory(MemoryRefreshKind::everything()),
        );
        Self {
            system,
            disks: Disks::new_with_refreshed_list(),
            networks: Networks::new_with_refreshed_list(),
            last_network_refresh: Instant::now(),
        }
    }

    fn cpu(&mut self, ts: i64, out: &mut Vec<Sample>) {
        self.system.refresh_cpu_usage();
        out.push(sample(
            "cpu.usage_percent",
            &[],
            ts,
            f64::from(self.system.global_cpu_usage()),
        ));
        for (index, cpu) in self.system.cpus().iter().enumerate() {
            let core = index.to_string();
            out.push(sample(
                "cpu.core_usage_percent",
                &[("core", &core)],
                ts,
                f64::from(cpu.cpu_usage()),
            ));
        }
    }

    fn memory(&mut self, ts: i64, out: &mut Vec<Sample>) {
        self.system.refresh_memory();
        let total = self.system.total_memory() as f64;
        let used = self.system.used_memory() as f64;
        out.push(sample("memory.total_bytes", &[], ts, total));
        out.push(sample("memory.used_bytes", &[], ts, used));
        out.push(sample("memory.used_percent", &[], ts, percent(used, total)));
        let (swap_total, swap_used) = (
            self.system.total_swap() as f64,
            self.system.used_swap() as f64,
        );
        out.push(sample("swap.total_bytes", &[], ts, swap_total));
        out.push(sample("swap.used_bytes", &[], ts, swap_used));
        // Without swap there is nothing to fill: no percentage rather than a constant 0.
        if swap_total > 0.0 {
            out.push(sample(
                "swap.used_percent",
                &[],
                ts,
                percent(swap_used, swap_total),
            ));
        }
    }

    fn load_and_uptime(ts: i64, out: &mut Vec<Sample>) {
        let load = System::load_average();
        out.push(sample("load.1m", &[], ts, load.one));
        out.push(sample("load.5m", &[], ts, load.five));
        out.push(sample("load.15m", &[], ts, load.fifteen));
        out.push(sample(
            "host.uptime_seconds",
            &[],
            ts,
            System::uptime() as f64,
        ));
        if let Some(count) = process_count() {
            out.push(sample("host.process_count", &[], ts, count as f64));
        }
    }

    fn disks(&mut self, ts: i64, out: &mut Vec<Sample>) {
        self.disks.refresh(true);
        let mut seen = std::collections::HashSet::new();
        for disk in self.disks.list() {
            let mount = disk.mount_point().to_string_lossy().into_owned();
            let fs = disk.file_system().to_string_lossy();
            // Bind mounts show the same filesystem several times; report each mount once.
            if !is_host_filesystem(&mount, &fs) || !seen.insert(mount.clone()) {
                continue;
            }
            let total = disk.total_space() as f64;
            let used = total - disk.available_space() as f64;
            let labels = [("mount", mount.as_str())];
            out.push(sample("disk.total_bytes", &labels, ts, total));
            out.push(sample("disk.used_bytes", &labels, ts, used));
            out.push(sample(
                "disk.used_percent",
                &labels,
                ts,
                percent(used, total),
            ));
        }
    }

    fn networks(&mut self, ts: i64, out: &mut Vec<Sample>) {
        self.networks.refresh(true);
        let elapsed = self.last_network_refresh.elapsed().as_secs_f64().max(0.001);
        self.last_network_refresh = Instant::now();
        let mut rates: HashMap<&str, (u64, u64)> = HashMap::new();
        for (name, data) in self.networks.list() {
            if is_container_link(name) {
                continue;
            }
            rates.insert(name.as_str(), (data.received(), data.transmitted()));
        }
        for (name, (received, transmitted)) in rates {
            let labels = [("interface", name)];
            out.push(sample(
                "net.rx_bytes_per_second",
                &labels,
                ts,
                received as f64 / elapsed,
            ));
            out.push(sample(
                "net.tx_bytes_per_second",
                &labels,
                ts,
                transmitted as f64 / elapsed,
            ));
        }
    }
}

impl MetricSource for HostMetrics {
    fn collect(&mut self) -> Vec<Sample> {
        let ts = now_ms();
        let mut out = Vec::with_capacity(64);
        self.cpu(ts, &mut out);
        self.memory(ts, &mut out);
        Self::load_and_uptime(ts, &mut out);
        self.disks(ts, &mut out);
        self.networks(ts, &mut out);
        out
    }
}

fn percent(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        part / whole * 100.0
    } else {
        0.0
    }
}

/// Counts numeric entries in /proc. sysinfo can list processes too, but that keeps a record
/// of every process in memory; a count is all we need.
fn process_count() -> Option<usize> {
    let entries = std::fs::read_dir("/proc").ok()?;
    Some(
        entries
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .bytes()
                    .all(|b| b.is_ascii_digit())
            })
            .count(),
    )
}

/// Container runtimes' state directories: what is mounted under them is a container's own
/// filesystem, which comes and goes with the container.
const RUNTIME_DIRS: [&str; 6] = [
    "/var/lib/docker/",
    "/var/lib/containers/",
    "/var/lib/kubelet/",
    "/run/containerd/",
    "/run/docker/",
    "/run/k3s/",
];

/// Whether a mount is one of the host's own filesystems. Containers' root filesystems
/// (overlays under a runtime's directory) would add a series per container that lives for
/// minutes, and read-only images (squashfs: snaps) are always full — a capacity alarm that
/// means nothing.
pub fn is_host_filesystem(mount: &str, fs: &str) -> bool {
    let layered = matches!(fs, "overlay" | "fuse.fuse-overlayfs" | "aufs" | "squashfs");
    let in_runtime = RUNTIME_DIRS.iter().any(|dir| mount.starts_with(dir));
    !layered && !in_runtime
}

/// The host end of a container's virtual link (`veth…`): one per container, gone with it.
/// Its traffic is counted again on the bridge and where it leaves the host.
pub fn is_container_link(interface: &str) -> bool {
    interface.starts_with("veth")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_links_are_not_series() {
        assert!(is_container_link("veth0cf0532"));
        assert!(!is_container_link("eth0"));
        assert!(!is_container_link("docker0"));
        assert!(!is_container_link("br-3f2a"));
    }

    #[test]
    fn containers_and_images_are_not_host_filesystems() {
        assert!(is_host_filesystem("/", "ext4"));
        assert!(
            is_host_filesystem("/var/lib/docker", "ext4"),
            "the runtime's own disk"
        );
        assert!(is_host_filesystem("/srv/tank", "zfs"));
        let overlay = "/var/lib/docker/fuse-overlayfs/0c3065/merged";
        assert!(!is_host_filesystem(overlay, "fuse.fuse-overlayfs"));
        assert!(!is_host_filesystem(
            "/var/lib/docker/overlay2/ab12/merged",
            "overlay"
        ));
        assert!(!is_host_filesystem(
            "/run/containerd/io.containerd/rootfs",
            "ext4"
        ));
        assert!(!is_host_filesystem("/snap/core22/1380", "squashfs"));
    }

    #[test]
    fn collects_the_documented_series_from_this_host() {
        let mut metrics = HostMetrics::new();
        let samples = metrics.collect();
        let names: std::collections::HashSet<_> =
            samples.iter().map(|s| s.series.as_str()).collect();
        for expected in [
            "cpu.usage_percent",
            "cpu.core_usage_percent",
            "memory.used_percent",
            "memory.total_bytes",
            "swap.total_bytes",
            "load.1m",
            "host.uptime_seconds",
            "host.process_count",
        ] {
            assert!(names.contains(expected), "missing {expected}");
        }
        let memory = samples
            .iter()
            .find(|s| s.series == "memory.total_bytes")
            .unwrap();
        assert!(memory.value > 0.0);
        assert!(samples.iter().all(|s| s.value.is_finite()));
    }
}
