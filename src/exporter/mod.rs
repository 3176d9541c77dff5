//! Exporters of traces and derived metrics.
//!
//! Every exporter reports through the same `tracemap_exporter_*` families,
//! told apart by the `exporter` label, so one dashboard panel covers them all.

pub(crate) mod aws;
pub mod backoff;
pub mod cloudwatch;
pub mod disk;
pub mod forward;
pub mod prometheus;
pub mod queue;
pub mod xray;

use std::collections::BTreeSet;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::task::JoinHandle;
use tokio::time::Instant;

use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ExporterLabels {
    pub(crate) exporter: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabels {
    pub(crate) exporter: &'static str,
    pub(crate) reason: &'static str,
}

/// Queue series: one per exporter, or per gateway for the forwarder.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub(crate) struct QueueLabels {
    pub(crate) exporter: &'static str,
    pub(crate) gateway: Option<String>,
}

// By hand: a derived set would print `gateway=""` for exporters that
// have one queue.
impl EncodeLabelSet for QueueLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        ("exporter", self.exporter).encode(encoder.encode_label())?;
        if let Some(gateway) = &self.gateway {
            ("gateway", gateway.as_str()).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

/// What an exporter did over its life, reported at shutdown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// Items the destination accepted.
    pub sent: u64,
    /// Items refused or given up after the last retry.
    pub failed: u64,
    /// Items still queued or in flight at the deadline, now lost.
    pub lost_at_shutdown: u64,
}

impl ExportReport {
    /// Logs the report: a warning when anything was lost.
    pub fn log(&self, exporter: &str) {
        if self.lost_at_shutdown > 0 {
            tracing::warn!(
                exporter,
                sent = self.sent,
                failed = self.failed,
                lost = self.lost_at_shutdown,
                "exporter could not send everything before the deadline"
            );
        } else {
            tracing::info!(
                exporter,
                sent = self.sent,
                failed = self.failed,
                lost = 0,
                "exporter flushed"
            );
        }
    }
}

/// Drop reasons shared by exporters, as `reason` label values.
pub mod reason {
    /// The exporter's queue was full; the oldest item made room.
    pub const QUEUE_FULL: &str = "queue_full";
    /// Still queued or in flight when the shutdown deadline passed.
    pub const SHUTDOWN: &str = "shutdown";
    /// The destination refused them for good.
    pub const REJECTED: &str = "rejected";
    /// The last retry failed too.
    pub const RETRIES_EXHAUSTED: &str = "retries_exhausted";
}

/// The `tracemap_exporter_*` families, registered once for all exporters.
#[derive(Debug, Default)]
pub struct ExporterMetrics {
    pub(crate) sent: Family<ExporterLabels, Counter>,
    pub(crate) failed: Family<ReasonLabels, Counter>,
    pub(crate) dropped: Family<ReasonLabels, Counter>,
    pub(crate) retries: Family<ExporterLabels, Counter>,
    pub(crate) queue_depth: Family<QueueLabels, Gauge>,
    pub(crate) queue_bytes: Family<TierLabels, Gauge>,
    pub(crate) queue_records: Family<TierLabels, Gauge>,
    pub(crate) queue_oldest_age: Family<ExporterLabels, Gauge<f64, AtomicU64>>,
    pub(crate) replayed: Family<ExporterLabels, Counter>,
    pub(crate) replay_duplicates: Family<ExporterLabels, Counter>,
    pub(crate) disk_errors: Family<ReasonLabels, Counter>,
    pub(crate) disk_written: Family<ExporterLabels, Counter>,
    /// Exporters whose disk-tier series exist (a `Family` cannot be listed).
    disk_exporters: Mutex<BTreeSet<&'static str>>,
    /// X-Ray tail sampling's totals, once it is on.
    sampling: std::sync::OnceLock<SamplingTotals>,
}

/// What X-Ray sampling reports beside the backlogs (CloudWatch shows kept
/// traces against the budget).
#[derive(Debug, Clone)]
pub struct SamplingTotals {
    /// Traces kept so far, by every policy.
    pub kept: Counter,
    /// `max_traces_per_second`; 0 for no budget.
    pub budget_per_second: u32,
}

/// One exporter's disk backlog, as its `tracemap_exporter_queue_*` series
/// (`tier="disk"`) show it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backlog {
    /// The `exporter` label.
    pub exporter: &'static str,
    /// Bytes the disk queue holds.
    pub bytes: i64,
    /// Records waiting in it.
    pub records: i64,
    /// Age of the oldest waiting record, in seconds.
    pub oldest_age_seconds: f64,
}

/// The `tier` label of disk-queue series.
const DISK_TIER: &str = "disk";

/// Queue size series: the memory and the disk tier apart.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TierLabels {
    pub(crate) exporter: &'static str,
    pub(crate) tier: &'static str,
}

impl ExporterMetrics {
    /// Creates the families and registers them.
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let metrics = Arc::new(Self::default());
        registry.register(
            "tracemap_exporter_sent",
            "Items the destination accepted",
            metrics.sent.clone(),
        );
        registry.register(
            "tracemap_exporter_failed",
            "Items (x-ray: spans; forward: requests, each try) refused or given up, by reason",
            metrics.failed.clone(),
        );
        registry.register(
            "tracemap_exporter_dropped",
            "Items never delivered, by reason: untranslatable, queue full, refused, lost at shutdown",
            metrics.dropped.clone(),
        );
        registry.register(
            "tracemap_exporter_retries",
            "Items sent again after a throttle, server error, timeout or partial acceptance",
            metrics.retries.clone(),
        );
        registry.register(
            "tracemap_exporter_queue_depth",
            "Items waiting in the exporter's queue (forward: per gateway)",
            metrics.queue_depth.clone(),
        );
        registry.register(
            "tracemap_exporter_queue_bytes",
            "Bytes the exporter's queue holds, by tier (memory, disk)",
            metrics.queue_bytes.clone(),
        );
        registry.register(
            "tracemap_exporter_queue_records",
            "Records waiting in the exporter's queue, by tier (memory, disk)",
            metrics.queue_records.clone(),
        );
        registry.register(
            "tracemap_exporter_queue_oldest_age_seconds",
            "Age of the oldest record waiting in the exporter's disk queue",
            metrics.queue_oldest_age.clone(),
        );
        registry.register(
            "tracemap_exporter_replayed",
            "Items read again from the disk queue after a restart",
            metrics.replayed.clone(),
        );
        registry.register(
            "tracemap_exporter_replay_duplicates",
            "Replayed items that had been handed to the sender before the restart, so may arrive twice",
            metrics.replay_duplicates.clone(),
        );
        registry.register(
            "tracemap_exporter_disk_errors",
            "Disk queue storage errors, by reason; new records then wait in memory",
            metrics.disk_errors.clone(),
        );
        registry.register(
            "tracemap_exporter_disk_written_bytes",
            "Bytes appended to the exporter's disk queue (records and their headers)",
            metrics.disk_written.clone(),
        );
        metrics
    }

    /// Reports X-Ray sampling's totals from now on (once per process).
    pub(crate) fn report_sampling(&self, totals: SamplingTotals) {
        let _ = self.sampling.set(totals);
    }

    /// X-Ray sampling's totals, when sampling is on.
    pub fn sampling(&self) -> Option<&SamplingTotals> {
        self.sampling.get()
    }

    /// The disk backlog of every exporter with a disk queue, by name;
    /// reads the series, creates none.
    pub fn backlogs(&self) -> Vec<Backlog> {
        let exporters = self
            .disk_exporters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        exporters
            .into_iter()
            .map(|exporter| {
                let tier = TierLabels {
                    exporter,
                    tier: DISK_TIER,
                };
                Backlog {
                    exporter,
                    bytes: self.queue_bytes.get(&tier).map_or(0, |g| g.get()),
                    records: self.queue_records.get(&tier).map_or(0, |g| g.get()),
                    oldest_age_seconds: self
                        .queue_oldest_age
                        .get(&ExporterLabels { exporter })
                        .map_or(0.0, |g| g.get()),
                }
            })
            .collect()
    }

    /// Handles on one exporter's series; they exist (at zero) from now on.
    pub fn exporter(self: &Arc<Self>, exporter: &'static str) -> ExporterCounters {
        // `_owned`: a borrowed handle holds the family's read lock until the
        // end of the statement, and a second new series would wait on it.
        let labels = ExporterLabels { exporter };
        let because = |reason| ReasonLabels { exporter, reason };
        ExporterCounters {
            exporter,
            sent: self.sent.get_or_create_owned(&labels),
            retries: self.retries.get_or_create_owned(&labels),
            queue_depth: self.queue_depth.get_or_create_owned(&QueueLabels {
                exporter,
                gateway: None,
            }),
            failed_rejected: self.failed.get_or_create_owned(&because(reason::REJECTED)),
            failed_retries_exhausted: self
                .failed
                .get_or_create_owned(&because(reason::RETRIES_EXHAUSTED)),
            queue_full: self
                .dropped
                .get_or_create_owned(&because(reason::QUEUE_FULL)),
            families: self.clone(),
        }
    }
}

/// One exporter's series; the counters are shared handles, cheap to bump.
#[derive(Debug, Clone)]
pub struct ExporterCounters {
    exporter: &'static str,
    /// Items the destination accepted.
    pub sent: Counter,
    /// Items the destination refused for good.
    pub failed_rejected: Counter,
    /// Items given up after the last retry.
    pub failed_retries_exhausted: Counter,
    /// Items re-sent.
    pub retries: Counter,
    /// Items queued.
    pub queue_depth: Gauge,
    /// Items dropped because the queue was full.
    pub queue_full: Counter,
    families: Arc<ExporterMetrics>,
}

impl ExporterCounters {
    /// Counts `count` items dropped for `reason` (a bounded set of labels).
    pub fn dropped(&self, reason: &'static str, count: u64) {
        self.families
            .dropped
            .get_or_create(&ReasonLabels {
                exporter: self.exporter,
                reason,
            })
            .inc_by(count);
    }

    /// Handles on this exporter's disk-queue series.
    pub fn disk(&self) -> disk::DiskCounters {
        let families = &self.families;
        let exporter = self.exporter;
        let labels = ExporterLabels { exporter };
        let tier = TierLabels {
            exporter,
            tier: DISK_TIER,
        };
        families
            .disk_exporters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(exporter);
        let dropped = |reason| {
            families
                .dropped
                .get_or_create_owned(&ReasonLabels { exporter, reason })
        };
        disk::DiskCounters {
            bytes: families.queue_bytes.get_or_create_owned(&tier),
            records: families.queue_records.get_or_create_owned(&tier),
            replayed: families.replayed.get_or_create_owned(&labels),
            duplicates: families.replay_duplicates.get_or_create_owned(&labels),
            oldest_age: families.queue_oldest_age.get_or_create_owned(&labels),
            dropped_budget: dropped(disk::reason::DISK_BUDGET),
            dropped_expired: dropped(disk::reason::EXPIRED),
            dropped_corrupt: dropped(disk::reason::CORRUPT),
            errors: families.disk_errors.clone(),
            written: families.disk_written.get_or_create_owned(&labels),
            exporter,
        }
    }

    /// Items failed for any reason.
    pub fn failed_total(&self) -> u64 {
        self.failed_rejected.get() + self.failed_retries_exhausted.get()
    }
}

/// Waits for an exporter's task until `deadline`, then aborts it (with the
/// calls it runs) and waits for that.
pub(crate) async fn join_by(deadline: Instant, mut task: JoinHandle<()>) {
    if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
        task.abort();
        let _ = task.await;
    }
}
