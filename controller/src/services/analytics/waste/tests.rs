//! The waste rules on figures with a known answer.

use std::time::Duration;

use super::rules::*;
use crate::services::analytics::Confidence;
use crate::store::Resolution;

const GIB_BYTES: f64 = (1u64 << 30) as f64;
const FIVE_MINUTES: i64 = 300_000;

/// Two weeks of 5-minute buckets: CPU at `cpu(i)`, memory used at `memory(i)` bytes.
fn host(
    cores: u32,
    memory_gib: f64,
    cpu: impl Fn(usize) -> f64,
    memory: impl Fn(usize) -> f64,
) -> HostUsage {
    let n = 14 * 288;
    let buckets = |f: &dyn Fn(usize) -> f64, peak: f64| -> Vec<Usage> {
        (0..n)
            .map(|i| Usage {
                ts_ms: i as i64 * FIVE_MINUTES,
                avg: f(i),
                max: f(i) * peak,
            })
            .collect()
    };
    HostUsage {
        cpu: buckets(&cpu, 1.5),
        network: Some((0..n).map(|i| (i as i64 * FIVE_MINUTES, 2_000.0)).collect()),
        memory_used: buckets(&memory, 1.0),
        cores: Some(cores),
        memory_total_bytes: Some(memory_gib * GIB_BYTES),
        expected_buckets: n,
    }
}

#[test]
fn a_host_quiet_in_97_percent_of_the_window_is_idle_with_its_saving_priced() {
    // 2% CPU, with a busy bucket every 33rd (3%): quiet in 97% of them.
    let usage = host(
        4,
        8.0,
        |i| if i % 33 == 0 { 40.0 } else { 2.0 },
        |_| GIB_BYTES,
    );
    let config = WasteConfig {
        prices: Prices {
            core_hour: Some(0.01),
            memory_gib_month: Some(2.0),
            kwh: Some(0.30),
            ..Prices::default()
        },
        ..WasteConfig::default()
    };
    let verdict = idle_host(&usage, &config).expect("idle");
    assert_eq!(verdict.kind, FindingKind::IdleHost);
    assert_eq!(verdict.confidence, Confidence::High);
    assert!((verdict.evidence["quiet_share"] - 0.9697).abs() < 1e-3);
    assert_eq!(verdict.saving.cores, Some(4.0));
    assert_eq!(verdict.saving.memory_gib, Some(8.0));
    assert_eq!(verdict.saving.kwh_per_month, Some(29.2));
    let money: f64 = 4.0 * 0.01 * 730.0 + 8.0 * 2.0 + 29.2 * 0.30;
    assert_eq!(
        verdict.saving.money_per_month,
        Some((money * 100.0).round() / 100.0)
    );
    // No price configured: no money.
    let unpriced = idle_host(&usage, &WasteConfig::default()).unwrap();
    assert_eq!(unpriced.saving.money_per_month, None);
}

#[test]
fn busy_buckets_beyond_the_share_or_steady_traffic_keep_a_host_off_the_idle_list() {
    let config = WasteConfig::default();
    // Busy every 10th bucket: quiet in 90%.
    let busy = host(
        4,
        8.0,
        |i| if i % 10 == 0 { 40.0 } else { 2.0 },
        |_| GIB_BYTES,
    );
    assert_eq!(idle_host(&busy, &config), None);
    // A quiet CPU serving 5 MB/s (over 2% of 1 Gbit/s) is not idle.
    let mut serving = host(4, 8.0, |_| 2.0, |_| GIB_BYTES);
    for rate in serving.network.as_mut().unwrap().values_mut() {
        *rate = 5e6;
    }
    assert_eq!(idle_host(&serving, &config), None);
    // Without traffic figures the CPU alone decides, at medium confidence at most.
    serving.network = None;
    let verdict = idle_host(&serving, &config).unwrap();
    assert_eq!(verdict.confidence, Confidence::Medium);
    assert!(verdict.summary.contains("judged on CPU alone"));
}

#[test]
fn an_oversized_host_is_sized_from_the_p95_of_its_peaks_with_headroom() {
    // 16 cores, CPU 4-8% (peaks 6-12%); 64 GiB, 8-10 GiB used.
    let usage = host(
        16,
        64.0,
        |i| 4.0 + (i % 5) as f64,
        |i| (8.0 + (i % 3) as f64) * GIB_BYTES,
    );
    let config = WasteConfig::default();
    assert_eq!(idle_host(&usage, &config), None);
    let verdict = oversized_host(&usage, &config).expect("oversized");
    // p95 of the peaks is 12%: 16 × 0.12 × 1.3 = 2.5 → 3 cores; 10 GiB × 1.3 → 13 GiB.
    assert_eq!(verdict.evidence["cores_needed"], 3.0);
    assert_eq!(verdict.evidence["memory_gib_needed"], 13.0);
    assert_eq!(verdict.saving.cores, Some(13.0));
    assert_eq!(verdict.saving.memory_gib, Some(51.0));
    assert_eq!(verdict.confidence, Confidence::High);
    // Half the window: medium.
    let mut half = usage.clone();
    half.expected_buckets *= 2;
    assert_eq!(
        oversized_host(&half, &config).unwrap().confidence,
        Confidence::Medium
    );
}

#[test]
fn a_host_that_uses_what_it_has_is_not_oversized() {
    // 4 cores at 50-60%, 16 GiB with 12 used.
    let usage = host(4, 16.0, |i| 50.0 + (i % 10) as f64, |_| 12.0 * GIB_BYTES);
    assert_eq!(oversized_host(&usage, &WasteConfig::default()), None);
}

#[test]
fn containers_idle_or_long_stopped_are_found_and_their_confidence_says_how_sure() {
    let config = WasteConfig::default();
    let idle = ContainerUsage {
        buckets: 4000,
        quiet: 3990,
        cpu_mean_percent: 0.1,
        cpu_peak_percent: 3.0,
        memory_mean_bytes: Some(0.5 * GIB_BYTES),
        expected_buckets: 4032,
    };
    let verdict = idle_container(&idle, &config).unwrap();
    // Never high: a quiet service may still be needed.
    assert_eq!(verdict.confidence, Confidence::Medium);
    assert_eq!(verdict.saving.memory_gib, Some(0.5));
    let working = ContainerUsage {
        quiet: 1000,
        ..idle
    };
    assert_eq!(idle_container(&working, &config), None);

    let day = 86_400;
    assert_eq!(stopped_container(6 * day, Some(1 << 20), &config), None);
    let week = stopped_container(8 * day, Some(1 << 20), &config).unwrap();
    assert_eq!(week.confidence, Confidence::Medium);
    assert_eq!(week.saving.bytes, Some(1 << 20));
    assert_eq!(
        stopped_container(40 * day, None, &config)
            .unwrap()
            .confidence,
        Confidence::High
    );
}

#[test]
fn reclaimable_space_is_as_sure_as_it_is_safe_to_delete() {
    let config = WasteConfig::default();
    let confidence = |kind| reclaimable(kind, 2, 5 << 20, &config).unwrap().confidence;
    assert_eq!(confidence(FindingKind::DanglingImages), Confidence::High);
    assert_eq!(confidence(FindingKind::UnusedImages), Confidence::Medium);
    assert_eq!(confidence(FindingKind::UnusedVolumes), Confidence::Low);
    assert_eq!(confidence(FindingKind::BuildCache), Confidence::High);
    assert_eq!(reclaimable(FindingKind::UnusedImages, 0, 0, &config), None);
}

#[test]
fn a_tier_reports_its_growth_and_what_a_shorter_retention_frees() {
    let day_ms = 86_400_000;
    let now = 100 * day_ms;
    // Raw: 7 days kept, all 7 held, 700 MiB → 100 MiB a day; 3 days frees 400 MiB.
    let raw = tier_report(
        Resolution::Raw,
        "samples",
        700 << 20,
        Some(now - 7 * day_ms),
        Duration::from_secs(7 * 86_400),
        now,
    );
    assert_eq!(raw.bytes_per_day, 100 << 20);
    assert_eq!(raw.shorter_retention_days, 3.0);
    assert_eq!(raw.shorter_retention_saves_bytes, 400 << 20);
    let finding = retention_finding(&raw, &WasteConfig::default()).unwrap();
    assert_eq!(finding.saving.bytes, Some(400 << 20));
    assert!(finding.summary.contains("retention.raw"));
    // A young 5-minute tier (10 of 90 days held) frees nothing yet at 30 days, but will.
    let young = tier_report(
        Resolution::FiveMinutes,
        "rollups_5m",
        10 << 20,
        Some(now - 10 * day_ms),
        Duration::from_secs(90 * 86_400),
        now,
    );
    assert_eq!(young.shorter_retention_days, 30.0);
    assert_eq!(young.shorter_retention_saves_bytes, 0);
    assert_eq!(young.at_full_retention_saves_bytes, 60 << 20);
    assert_eq!(retention_finding(&young, &WasteConfig::default()), None);
}

#[test]
fn interfaces_of_container_plumbing_do_not_count_as_traffic() {
    for plumbing in ["lo", "docker0", "veth1a2b", "br-5e1f", "virbr0", "cni0"] {
        assert!(!physical_interface(plumbing), "{plumbing}");
    }
    for physical in ["eth0", "enp3s0", "wlan0", "bond0", "wg0"] {
        assert!(physical_interface(physical), "{physical}");
    }
}

#[test]
fn thresholds_out_of_range_are_refused() {
    assert!(WasteConfig::default().validate().is_ok());
    let bad = [
        WasteConfig {
            idle_cpu_percent: 0.0,
            ..WasteConfig::default()
        },
        WasteConfig {
            idle_share: 0.3,
            ..WasteConfig::default()
        },
        WasteConfig {
            prices: Prices {
                kwh: Some(-1.0),
                ..Prices::default()
            },
            ..WasteConfig::default()
        },
    ];
    for config in bad {
        assert!(config.validate().is_err(), "{config:?}");
    }
}
