//! The queue settings every exporter takes: `durability`, `disk_budget`,
//! `fsync_interval`.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::DiskSettings;
use crate::validate::Invalid;

/// When a span counts as accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Once it is in the exporter's memory queue: a crash loses the queue.
    Memory,
    /// Once the exporter's records are written to its disk queue: a crash
    /// or a restart loses nothing acknowledged (a power loss, at most the
    /// last `fsync_interval`).
    Disk,
}

/// An exporter's queue: where it lives and how much it may hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiskQueueConfig {
    /// `memory` or `disk`; unset means `disk` when `storage.enabled`.
    pub durability: Option<Durability>,
    /// Bytes the disk queue may use; beyond it the oldest records are
    /// dropped and counted (`reason="disk_budget"`).
    pub disk_budget: u64,
    /// How often the disk queue is flushed to stable storage (group
    /// commit); `0s` flushes before every acknowledgement.
    #[serde(with = "humantime_serde")]
    pub fsync_interval: Duration,
}

impl Default for DiskQueueConfig {
    fn default() -> Self {
        Self {
            durability: None,
            // About an hour of a busy node's documents.
            disk_budget: 1024 * 1024 * 1024,
            fsync_interval: Duration::from_secs(1),
        }
    }
}

/// The smallest budget: a few segments of the smallest size.
const MIN_BUDGET: u64 = 1024 * 1024;

impl DiskQueueConfig {
    /// The durability in effect: as set, else `disk` when the history
    /// store (and so the data directory) is enabled.
    pub fn durability(&self, storage_enabled: bool) -> Durability {
        self.durability.unwrap_or(match storage_enabled {
            true => Durability::Disk,
            false => Durability::Memory,
        })
    }

    /// Where and how `exporter`'s disk queue lives under `data_dir`.
    pub fn settings(&self, data_dir: &Path, queue: &str, max_age: Duration) -> DiskSettings {
        DiskSettings {
            dir: data_dir.join("queue").join(queue),
            budget: self.disk_budget,
            fsync_interval: self.fsync_interval,
            max_age,
        }
    }

    /// Appends every broken rule under `prefix`.
    pub fn check(&self, prefix: &str, invalid: &mut Vec<Invalid>) {
        if self.disk_budget < MIN_BUDGET {
            invalid.push(Invalid {
                key: format!("{prefix}.disk_budget"),
                reason: format!("must be at least {MIN_BUDGET} bytes (1 MiB)"),
            });
        }
        if self.fsync_interval > Duration::from_secs(60) {
            invalid.push(Invalid {
                key: format!("{prefix}.fsync_interval"),
                reason: "must be at most 60s".into(),
            });
        }
    }
}
