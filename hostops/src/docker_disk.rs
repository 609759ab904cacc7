//! What Docker keeps on disk (`docker system df`, through the engine API) and what of it
//! nothing uses: images no container refers to, volumes no container mounts, build cache not
//! in use, the writable layers of containers that are not running. The `docker.disk` check
//! carries the reclaimable items as evidence for the waste report, and the totals are metric
//! series.

use bollard::models::SystemDataUsageResponse;
use bollard::query_parameters::DataUsageOptions;
use bollard::Docker;
use infrastructor_proto::v1::Sample;
use serde::{Deserialize, Serialize};

use super::docker::DockerError;
use super::{CheckReport, CheckStatus};
use crate::sample;

/// Items listed in the evidence, biggest first; the totals count them all.
const LISTED: usize = 50;
/// Reclaimable bytes from which the check warns.
pub const RECLAIMABLE_WARNING_BYTES: u64 = 10 << 30;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DiskUsage {
    pub images_bytes: u64,
    pub volumes_bytes: u64,
    pub build_cache_bytes: u64,
    /// The writable layers of every container.
    pub containers_bytes: u64,
    pub reclaimable: Reclaimable,
    /// Images no container uses (dangling ones included), biggest first.
    pub unused_images: Vec<UnusedImage>,
    /// Volumes no container mounts, biggest first.
    pub unused_volumes: Vec<UnusedVolume>,
    /// Containers that are not running, biggest writable layer first.
    pub stopped_containers: Vec<StoppedContainer>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Reclaimable {
    pub images_bytes: u64,
    pub volumes_bytes: u64,
    pub build_cache_bytes: u64,
    /// Writable layers of stopped containers (`docker container prune`).
    #[serde(default)]
    pub containers_bytes: u64,
}

impl Reclaimable {
    pub fn total(&self) -> u64 {
        self.images_bytes + self.volumes_bytes + self.build_cache_bytes + self.containers_bytes
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoppedContainer {
    pub name: String,
    pub image: String,
    /// created, exited or dead.
    pub state: String,
    /// Its writable layer: what removing it frees (its image and volumes aside).
    pub writable_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UnusedImage {
    /// The short ID (12 hex digits).
    pub id: String,
    /// Empty for a dangling image.
    pub tags: Vec<String>,
    /// Bytes removing it frees: its size less what it shares with other images.
    pub unique_bytes: u64,
    /// Unix seconds.
    pub created: i64,
    pub dangling: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UnusedVolume {
    pub name: String,
    pub bytes: u64,
}

pub async fn disk_usage(docker: &Docker) -> Result<DiskUsage, DockerError> {
    Ok(summarize(&docker.df(None::<DataUsageOptions>).await?))
}

fn bytes(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// The engine's answer, summed and sorted.
pub fn summarize(df: &SystemDataUsageResponse) -> DiskUsage {
    let mut usage = DiskUsage::default();
    for image in df.images.iter().flatten() {
        usage.images_bytes += bytes(image.size);
        if image.containers != 0 {
            continue;
        }
        let tags: Vec<String> = image
            .repo_tags
            .iter()
            .filter(|t| t.as_str() != "<none>:<none>")
            .cloned()
            .collect();
        let unique = bytes(image.size - image.shared_size.max(0));
        usage.reclaimable.images_bytes += unique;
        usage.unused_images.push(UnusedImage {
            id: image
                .id
                .trim_start_matches("sha256:")
                .chars()
                .take(12)
                .collect(),
            dangling: tags.is_empty(),
            tags,
            unique_bytes: unique,
            created: image.created,
        });
    }
    for volume in df.volumes.iter().flatten() {
        let Some(data) = &volume.usage_data else {
            continue;
        };
        usage.volumes_bytes += bytes(data.size);
        if data.ref_count == 0 {
            usage.reclaimable.volumes_bytes += bytes(data.size);
            usage.unused_volumes.push(UnusedVolume {
                name: volume.name.clone(),
                bytes: bytes(data.size),
            });
        }
    }
    for container in df.containers.iter().flatten() {
        let size = bytes(container.size_rw.unwrap_or(0));
        usage.containers_bytes += size;
        let state = container.state.map(|s| s.to_string()).unwrap_or_default();
        if !matches!(state.as_str(), "created" | "exited" | "dead") {
            continue;
        }
        usage.reclaimable.containers_bytes += size;
        usage.stopped_containers.push(StoppedContainer {
            name: container
                .names
                .iter()
                .flatten()
                .next()
                .map(|n| n.trim_start_matches('/').to_string())
                .unwrap_or_default(),
            image: container.image.clone().unwrap_or_default(),
            state,
            writable_bytes: size,
        });
    }
    for cache in df.build_cache.iter().flatten() {
        let size = bytes(cache.size.unwrap_or(0));
        usage.build_cache_bytes += size;
        if !cache.in_use.unwrap_or(false) && !cache.shared.unwrap_or(false) {
            usage.reclaimable.build_cache_bytes += size;
        }
    }
    usage
        .unused_images
        .sort_by(|a, b| b.unique_bytes.cmp(&a.unique_bytes).then(a.id.cmp(&b.id)));
    usage
        .unused_volumes
        .sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.name.cmp(&b.name)));
    usage.stopped_containers.sort_by(|a, b| {
        b.writable_bytes
            .cmp(&a.writable_bytes)
            .then(a.name.cmp(&b.name))
    });
    usage.unused_images.truncate(LISTED);
    usage.unused_volumes.truncate(LISTED);
    usage.stopped_containers.truncate(LISTED);
    usage
}

/// `docker.disk`: ok, or a warning from [`RECLAIMABLE_WARNING_BYTES`] reclaimable.
pub fn check(usage: &DiskUsage) -> CheckReport {
    let reclaimable = usage.reclaimable.total();
    let status = if reclaimable >= RECLAIMABLE_WARNING_BYTES {
        CheckStatus::Warning
    } else {
        CheckStatus::Ok
    };
    CheckReport {
        check: "docker.disk".into(),
        status,
        message: format!(
            "images {}, volumes {}, build cache {}, containers {}; {} reclaimable ({} unused \
             images, {} unused volumes, {} stopped containers)",
            mib(usage.images_bytes),
            mib(usage.volumes_bytes),
            mib(usage.build_cache_bytes),
            mib(usage.containers_bytes),
            mib(reclaimable),
            usage.unused_images.len(),
            usage.unused_volumes.len(),
            usage.stopped_containers.len()
        ),
        evidence: serde_json::to_value(usage).unwrap_or_default(),
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// `docker.disk_bytes` and `docker.reclaimable_bytes`, labelled `kind` (images, volumes,
/// build_cache, containers).
pub fn metrics(usage: &DiskUsage, ts: i64) -> Vec<Sample> {
    let kinds = [
        ("images", usage.images_bytes, usage.reclaimable.images_bytes),
        (
            "volumes",
            usage.volumes_bytes,
            usage.reclaimable.volumes_bytes,
        ),
        (
            "build_cache",
            usage.build_cache_bytes,
            usage.reclaimable.build_cache_bytes,
        ),
        (
            "containers",
            usage.containers_bytes,
            usage.reclaimable.containers_bytes,
        ),
    ];
    kinds
        .iter()
        .flat_map(|(kind, used, free)| {
            let labels = [("kind", *kind)];
            [
                sample("docker.disk_bytes", &labels, ts, *used as f64),
                sample("docker.reclaimable_bytes", &labels, ts, *free as f64),
            ]
        })
        .collect()
}
