//! The waste rules as plain functions: each reads one host's, container's or tier's evidence
//! and returns a finding with its figures, its saving and a confidence, or nothing. No rule
//! reads the store or the clock, so each is tested on figures alone.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::super::stats::quantile;
use super::super::Confidence;
use crate::store::Resolution;

const GIB: f64 = (1u64 << 30) as f64;
const HOURS_PER_MONTH: f64 = 730.0;
/// Interfaces that carry a host's own container, bridge and tunnel plumbing: traffic on them
/// is counted again on the interface it leaves by, so the idle rule ignores them.
const VIRTUAL_INTERFACES: [&str; 10] = [
    "lo", "veth", "docker", "br-", "virbr", "cni", "flannel", "cali", "vnet", "kube",
];

/// The thresholds and prices of the waste report (`[waste]` in the configuration).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WasteConfig {
    /// A host is quiet in a 5-minute bucket whose mean CPU is below this (the cloud
    /// advisors' ~5%).
    pub idle_cpu_percent: f64,
    /// … and whose busiest direction of traffic, summed over its physical interfaces, is
    /// below this share of `link_mbit` (the advisors' ~2–3%).
    pub idle_network_percent: f64,
    pub link_mbit: f64,
    /// Quiet for at least this share of the buckets with data: idle (the advisors' 95%).
    pub idle_share: f64,
    /// Right-sizing keeps this much above the p95 of the 5-minute peaks.
    pub headroom_percent: f64,
    /// A running container is quiet in a bucket whose mean CPU is below this share of one
    /// core; idle when quiet for `idle_share` of the window.
    pub idle_container_cpu_percent: f64,
    /// A container not running for this long is long-stopped.
    #[serde(with = "humantime_serde")]
    pub stopped_container_age: Duration,
    /// A shorter retention is a finding from this many bytes saved (always in the store
    /// section).
    pub retention_finding_bytes: u64,
    pub prices: Prices,
}

impl Default for WasteConfig {
    fn default() -> Self {
        Self {
            idle_cpu_percent: 5.0,
            idle_network_percent: 2.0,
            link_mbit: 1000.0,
            idle_share: 0.95,
            headroom_percent: 30.0,
            idle_container_cpu_percent: 1.0,
            stopped_container_age: Duration::from_secs(7 * 86_400),
            retention_finding_bytes: 256 << 20,
            prices: Prices::default(),
        }
    }
}

/// What resources cost, for savings in money; each unset price leaves its part out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Prices {
    pub currency: String,
    pub core_hour: Option<f64>,
    pub memory_gib_month: Option<f64>,
    pub storage_gib_month: Option<f64>,
    pub kwh: Option<f64>,
    /// What one host draws, for the energy an idle host wastes.
    pub host_watts: f64,
}

impl Default for Prices {
    fn default() -> Self {
        Self {
            currency: "USD".into(),
            core_hour: None,
            memory_gib_month: None,
            storage_gib_month: None,
            kwh: None,
            host_watts: 40.0,
        }
    }
}

impl WasteConfig {
    pub fn validate(&self) -> Result<(), String> {
        let percent = [
            ("idle_cpu_percent", self.idle_cpu_percent),
            ("idle_network_percent", self.idle_network_percent),
            (
                "idle_container_cpu_percent",
                self.idle_container_cpu_percent,
            ),
        ];
        for (name, value) in percent {
            if !(value > 0.0 && value <= 100.0) {
                return Err(format!("waste.{name} must be more than 0 and at most 100"));
            }
        }
        if !(self.idle_share > 0.5 && self.idle_share <= 1.0) {
            return Err("waste.idle_share must be more than 0.5 and at most 1".into());
        }
        if !(self.link_mbit > 0.0 && self.link_mbit.is_finite()) {
            return Err("waste.link_mbit must be more than 0".into());
        }
        if !(0.0..=400.0).contains(&self.headroom_percent) {
            return Err("waste.headroom_percent must be 0..=400".into());
        }
        let prices = &self.prices;
        let all = [
            prices.core_hour,
            prices.memory_gib_month,
            prices.storage_gib_month,
            prices.kwh,
        ];
        if all.iter().flatten().any(|p| !(p.is_finite() && *p >= 0.0))
            || !(prices.host_watts.is_finite() && prices.host_watts >= 0.0)
        {
            return Err("waste.prices must be finite and not negative".into());
        }
        Ok(())
    }

    /// The network threshold in bytes per second.
    pub fn idle_network_bytes_per_second(&self) -> f64 {
        self.link_mbit * 1e6 / 8.0 * self.idle_network_percent / 100.0
    }
}

/// Whether an interface carries traffic of its own (not loopback, bridges, veths, tunnels of
/// container networks).
pub fn physical_interface(name: &str) -> bool {
    !VIRTUAL_INTERFACES.iter().any(|v| name.starts_with(v))
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    IdleHost,
    OversizedHost,
    IdleContainer,
    StoppedContainer,
    DanglingImages,
    UnusedImages,
    UnusedVolumes,
    BuildCache,
    MetricRetention,
}

/// What acting on a finding frees, per month where it is a rate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Saving {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_gib: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kwh_per_month: Option<f64>,
    /// From the configured prices; absent when none applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub money_per_month: Option<f64>,
}

impl Saving {
    /// The money this saving is worth at `prices`: the sum of the parts that have a price.
    pub fn priced(mut self, prices: &Prices) -> Self {
        let parts = [
            self.cores
                .zip(prices.core_hour)
                .map(|(c, p)| c * p * HOURS_PER_MONTH),
            self.memory_gib
                .zip(prices.memory_gib_month)
                .map(|(g, p)| g * p),
            self.bytes
                .zip(prices.storage_gib_month)
                .map(|(b, p)| b as f64 / GIB * p),
            self.kwh_per_month.zip(prices.kwh).map(|(k, p)| k * p),
        ];
        let priced: Vec<f64> = parts.into_iter().flatten().collect();
        self.money_per_month = (!priced.is_empty()).then(|| round(priced.iter().sum::<f64>(), 2));
        self
    }

    pub fn add(&mut self, other: &Saving) {
        fn sum<T: std::ops::Add<Output = T>>(a: Option<T>, b: Option<T>) -> Option<T> {
            match (a, b) {
                (Some(a), Some(b)) => Some(a + b),
                (a, b) => a.or(b),
            }
        }
        self.cores = sum(self.cores, other.cores);
        self.memory_gib = sum(self.memory_gib, other.memory_gib);
        self.bytes = sum(self.bytes, other.bytes);
        self.kwh_per_month = sum(self.kwh_per_month, other.kwh_per_month);
        self.money_per_month = sum(self.money_per_month, other.money_per_month);
    }
}

/// A rule's verdict before the report names its device.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub kind: FindingKind,
    /// Why, in words; host-reported names stay out of it (they are in the finding's subject).
    pub summary: String,
    pub evidence: BTreeMap<String, f64>,
    pub saving: Saving,
    pub confidence: Confidence,
}

/// One 5-minute bucket of a series: its mean and its peak.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Usage {
    pub ts_ms: i64,
    pub avg: f64,
    pub max: f64,
}

/// What the store holds about one host over the window.
#[derive(Clone, Debug, Default)]
pub struct HostUsage {
    /// `cpu.usage_percent`
    pub cpu: Vec<Usage>,
    /// Bytes per second of the busier direction, summed over the physical interfaces, per
    /// bucket; `None` when the host reports no traffic at all.
    pub network: Option<BTreeMap<i64, f64>>,
    /// `memory.used_bytes`
    pub memory_used: Vec<Usage>,
    /// The `cpu.core_usage_percent` series.
    pub cores: Option<u32>,
    pub memory_total_bytes: Option<f64>,
    /// 5-minute buckets the window holds.
    pub expected_buckets: usize,
}

/// Less than this share of the window with data: not assessed.
pub const MIN_COVERAGE: f64 = 0.25;

impl HostUsage {
    /// The share of the window's buckets with a CPU figure.
    pub fn coverage(&self) -> f64 {
        match self.expected_buckets {
            0 => 0.0,
            n => (self.cpu.len() as f64 / n as f64).min(1.0),
        }
    }
}

fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

fn by_coverage(coverage: f64) -> Confidence {
    match coverage {
        c if c >= 0.9 => Confidence::High,
        c if c >= 0.5 => Confidence::Medium,
        _ => Confidence::Low,
    }
}

/// Quiet (CPU and traffic below the thresholds) for `idle_share` of the buckets with data.
pub fn idle_host(usage: &HostUsage, config: &WasteConfig) -> Option<Verdict> {
    let network_limit = config.idle_network_bytes_per_second();
    let quiet = usage
        .cpu
        .iter()
        .filter(|b| b.avg < config.idle_cpu_percent)
        .filter(|b| match &usage.network {
            Some(network) => network.get(&b.ts_ms).is_none_or(|n| *n < network_limit),
            None => true,
        })
        .count();
    let buckets = usage.cpu.len();
    if buckets == 0 {
        return None;
    }
    let share = quiet as f64 / buckets as f64;
    if share < config.idle_share {
        return None;
    }
    let coverage = usage.coverage();
    let cpu_p95 = quantile(usage.cpu.iter().map(|b| b.avg), 0.95)?;
    let network_p95 = usage
        .network
        .as_ref()
        .and_then(|n| quantile(n.values().copied(), 0.95));
    let confidence = match network_p95 {
        Some(_) => by_coverage(coverage),
        // Judged on CPU alone: a quiet CPU can still serve traffic.
        None => by_coverage(coverage).at_most(Confidence::Medium),
    };
    let mut evidence = BTreeMap::from([
        ("quiet_share".to_string(), round(share, 4)),
        ("coverage".to_string(), round(coverage, 4)),
        ("cpu_p95_percent".to_string(), round(cpu_p95, 2)),
    ]);
    if let Some(p95) = network_p95 {
        evidence.insert("network_p95_bytes_per_second".into(), round(p95, 0));
    }
    let memory_gib = usage.memory_total_bytes.map(|b| round(b / GIB, 2));
    if let Some(gib) = memory_gib {
        evidence.insert("memory_gib".into(), gib);
    }
    if let Some(cores) = usage.cores {
        evidence.insert("cores".into(), f64::from(cores));
    }
    let network = match network_p95 {
        Some(_) => format!(" and traffic below {:.0} KB/s", network_limit / 1000.0),
        None => " (no traffic figures: judged on CPU alone)".to_string(),
    };
    Some(Verdict {
        kind: FindingKind::IdleHost,
        summary: format!(
            "CPU below {}%{network} in {:.1}% of the window's 5-minute buckets (p95 CPU \
             {cpu_p95:.1}%); consolidate its work elsewhere and retire it",
            config.idle_cpu_percent,
            share * 100.0
        ),
        evidence,
        saving: Saving {
            cores: usage.cores.map(f64::from),
            memory_gib,
            kwh_per_month: Some(round(
                config.prices.host_watts * HOURS_PER_MONTH / 1000.0,
                1,
            )),
            ..Saving::default()
        }
        .priced(&config.prices),
        confidence,
    })
}

/// More cores or memory than the p95 of the 5-minute peaks needs with the headroom: the size
/// it needs, and what the rest would save.
pub fn oversized_host(usage: &HostUsage, config: &WasteConfig) -> Option<Verdict> {
    let headroom = 1.0 + config.headroom_percent / 100.0;
    let mut evidence = BTreeMap::new();
    let mut saving = Saving::default();
    let mut parts = Vec::new();
    if let (Some(cores), Some(p95)) = (usage.cores, quantile(usage.cpu.iter().map(|b| b.max), 0.95))
    {
        let needed = (p95 / 100.0 * f64::from(cores) * headroom).ceil().max(1.0);
        evidence.insert("cores".into(), f64::from(cores));
        evidence.insert("cpu_p95_peak_percent".into(), round(p95, 2));
        evidence.insert("cores_needed".into(), needed);
        if needed < f64::from(cores) {
            saving.cores = Some(f64::from(cores) - needed);
            parts.push(format!(
                "{needed:.0} of {cores} cores (p95 of 5-minute CPU peaks {p95:.1}%)"
            ));
        }
    }
    if let (Some(total), Some(p95)) = (
        usage.memory_total_bytes,
        quantile(usage.memory_used.iter().map(|b| b.max), 0.95),
    ) {
        let total_gib = total / GIB;
        let needed = (p95 * headroom / GIB).ceil().max(1.0);
        evidence.insert("memory_gib".into(), round(total_gib, 2));
        evidence.insert("memory_p95_peak_gib".into(), round(p95 / GIB, 2));
        evidence.insert("memory_gib_needed".into(), needed);
        // A whole GiB and a quarter of the memory: less is not worth a resize.
        if total_gib - needed >= 1.0 && needed <= total_gib * 0.75 {
            saving.memory_gib = Some(round(total_gib - needed, 2));
            parts.push(format!(
                "{needed:.0} of {total_gib:.1} GiB memory (p95 of 5-minute peaks {:.1} GiB)",
                p95 / GIB
            ));
        }
    }
    if parts.is_empty() {
        return None;
    }
    evidence.insert("coverage".into(), round(usage.coverage(), 4));
    Some(Verdict {
        kind: FindingKind::OversizedHost,
        summary: format!(
            "needs {} with {}% headroom",
            parts.join(" and "),
            config.headroom_percent
        ),
        evidence,
        saving: saving.priced(&config.prices),
        confidence: by_coverage(usage.coverage()),
    })
}

/// A running container's CPU over the window (from `container.cpu_percent`) and its memory.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ContainerUsage {
    pub buckets: i64,
    pub quiet: i64,
    pub cpu_mean_percent: f64,
    pub cpu_peak_percent: f64,
    pub memory_mean_bytes: Option<f64>,
    pub expected_buckets: usize,
}

/// Quiet (CPU below a share of one core) for `idle_share` of the window. Never more than
/// medium confidence: a quiet service may still be needed (a DNS resolver, a standby).
pub fn idle_container(usage: &ContainerUsage, config: &WasteConfig) -> Option<Verdict> {
    if usage.buckets == 0 {
        return None;
    }
    let share = usage.quiet as f64 / usage.buckets as f64;
    let coverage = (usage.buckets as f64 / usage.expected_buckets.max(1) as f64).min(1.0);
    if share < config.idle_share || coverage < MIN_COVERAGE {
        return None;
    }
    let memory_gib = usage.memory_mean_bytes.map(|b| round(b / GIB, 3));
    let mut evidence = BTreeMap::from([
        ("quiet_share".to_string(), round(share, 4)),
        ("coverage".to_string(), round(coverage, 4)),
        (
            "cpu_mean_percent".to_string(),
            round(usage.cpu_mean_percent, 3),
        ),
        (
            "cpu_peak_percent".to_string(),
            round(usage.cpu_peak_percent, 2),
        ),
    ]);
    if let Some(gib) = memory_gib {
        evidence.insert("memory_mean_gib".into(), gib);
    }
    Some(Verdict {
        kind: FindingKind::IdleContainer,
        summary: format!(
            "running but below {}% of a core in {:.1}% of the window (mean {:.2}%); stop it \
             if nothing depends on it",
            config.idle_container_cpu_percent,
            share * 100.0,
            usage.cpu_mean_percent
        ),
        evidence,
        saving: Saving {
            memory_gib,
            ..Saving::default()
        }
        .priced(&config.prices),
        confidence: by_coverage(coverage).at_most(Confidence::Medium),
    })
}

/// Not running for at least `stopped_container_age`: its writable layer, and the image only
/// it holds, come back when it is removed.
pub fn stopped_container(
    stopped_seconds: u64,
    writable_bytes: Option<u64>,
    config: &WasteConfig,
) -> Option<Verdict> {
    let age = config.stopped_container_age.as_secs().max(1);
    if stopped_seconds < age {
        return None;
    }
    let days = stopped_seconds as f64 / 86_400.0;
    let stopped_for = match days {
        d if d >= 2.0 => format!("{d:.0} days"),
        _ => format!("{:.0} hours", stopped_seconds as f64 / 3600.0),
    };
    let mut evidence = BTreeMap::from([("stopped_days".to_string(), round(days, 1))]);
    if let Some(bytes) = writable_bytes {
        evidence.insert("writable_bytes".into(), bytes as f64);
    }
    Some(Verdict {
        kind: FindingKind::StoppedContainer,
        summary: format!(
            "stopped for {stopped_for}; remove it (docker rm) if it is not a one-off job, \
             which also frees its image when nothing else uses it"
        ),
        evidence,
        saving: Saving {
            bytes: writable_bytes,
            ..Saving::default()
        }
        .priced(&config.prices),
        confidence: if stopped_seconds >= 4 * age {
            Confidence::High
        } else {
            Confidence::Medium
        },
    })
}

/// Space Docker holds that nothing uses, per kind (from `docker system df`).
pub fn reclaimable(
    kind: FindingKind,
    count: usize,
    bytes: u64,
    config: &WasteConfig,
) -> Option<Verdict> {
    if count == 0 && bytes == 0 {
        return None;
    }
    let (what, action, confidence) = match kind {
        FindingKind::DanglingImages => (
            "untagged images no container uses",
            "docker image prune",
            Confidence::High,
        ),
        FindingKind::UnusedImages => (
            "tagged images no container uses",
            "docker image prune -a, after checking none is a rollback target",
            Confidence::Medium,
        ),
        FindingKind::UnusedVolumes => (
            "volumes no container mounts",
            "back up what matters, then docker volume rm: volumes hold data",
            Confidence::Low,
        ),
        FindingKind::BuildCache => (
            "build cache not in use",
            "docker builder prune",
            Confidence::High,
        ),
        _ => return None,
    };
    let mib = bytes as f64 / (1 << 20) as f64;
    Some(Verdict {
        kind,
        summary: format!("{count} {what} hold {mib:.1} MiB; {action}"),
        evidence: BTreeMap::from([
            ("count".to_string(), count as f64),
            ("bytes".to_string(), bytes as f64),
        ]),
        saving: Saving {
            bytes: Some(bytes),
            ..Saving::default()
        }
        .priced(&config.prices),
        confidence,
    })
}

/// One tier of the metric store with what a shorter retention would save.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TierReport {
    /// `raw`, `5m` or `1h`.
    pub tier: String,
    pub table: String,
    pub bytes: u64,
    pub retention_days: f64,
    /// How far back it reaches now (less than the retention on a young store).
    pub held_days: f64,
    pub bytes_per_day: u64,
    /// The shorter retention weighed, what it would free today, and what once the store is
    /// as old as the current retention (at today's rate).
    pub shorter_retention_days: f64,
    pub shorter_retention_saves_bytes: u64,
    pub at_full_retention_saves_bytes: u64,
}

/// A tier's size, growth and the shorter retention worth weighing: half of raw's (the 5-minute
/// tier covers that history), 30 days of 5-minute rollups (the hourly tier covers the rest), a
/// year of hourly ones.
pub fn tier_report(
    resolution: Resolution,
    table: &str,
    bytes: u64,
    oldest_ms: Option<i64>,
    retention: Duration,
    now_ms: i64,
) -> TierReport {
    let day = 86_400_000.0;
    let retention_days = retention.as_secs_f64() / 86_400.0;
    let held_days = oldest_ms.map_or(0.0, |o| {
        ((now_ms - o) as f64 / day).clamp(0.0, retention_days)
    });
    let shorter = match resolution {
        Resolution::Raw => (retention_days / 2.0).floor().max(1.0),
        Resolution::FiveMinutes => 30f64.min((retention_days / 2.0).floor()),
        Resolution::OneHour => 365f64.min((retention_days / 2.0).floor()),
    }
    .max(1.0);
    let per_day = if held_days > 0.0 {
        bytes as f64 / held_days
    } else {
        0.0
    };
    let saves_now = per_day * (held_days - shorter).max(0.0);
    let saves_at_full = per_day * (retention_days - shorter).max(0.0);
    TierReport {
        tier: match resolution {
            Resolution::Raw => "raw",
            Resolution::FiveMinutes => "5m",
            Resolution::OneHour => "1h",
        }
        .into(),
        table: table.into(),
        bytes,
        retention_days: round(retention_days, 2),
        held_days: round(held_days, 2),
        bytes_per_day: per_day as u64,
        shorter_retention_days: shorter,
        shorter_retention_saves_bytes: saves_now as u64,
        at_full_retention_saves_bytes: saves_at_full as u64,
    }
}

/// A finding for a tier whose shorter retention saves at least `retention_finding_bytes`.
pub fn retention_finding(tier: &TierReport, config: &WasteConfig) -> Option<Verdict> {
    let saves = tier.shorter_retention_saves_bytes;
    if saves < config.retention_finding_bytes || saves == 0 {
        return None;
    }
    Some(Verdict {
        kind: FindingKind::MetricRetention,
        summary: format!(
            "the {} tier grows {:.1} MiB a day; keeping {} days instead of {} frees {:.1} MiB \
             (retention.{} in the configuration)",
            tier.tier,
            tier.bytes_per_day as f64 / (1 << 20) as f64,
            tier.shorter_retention_days,
            tier.retention_days,
            saves as f64 / (1 << 20) as f64,
            match tier.tier.as_str() {
                "raw" => "raw",
                "5m" => "rollup_5m",
                _ => "rollup_1h",
            }
        ),
        evidence: BTreeMap::from([
            ("bytes".to_string(), tier.bytes as f64),
            ("bytes_per_day".to_string(), tier.bytes_per_day as f64),
            ("held_days".to_string(), tier.held_days),
        ]),
        saving: Saving {
            bytes: Some(saves),
            ..Saving::default()
        }
        .priced(&config.prices),
        confidence: Confidence::Medium,
    })
}
