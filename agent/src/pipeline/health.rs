//! The agent's health: one model, built by the pipeline about once a second (and once at the
//! end of the run). `GET /v1/status` ([`crate::export::status`]), `/metrics`
//! ([`crate::export::metrics`]) and the `--stats-file` document ([`crate::run::RunStats`]) are
//! serialisations of it; none counts anything of its own.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, SystemTime},
};

use serde::Serialize;
use tokio::sync::watch;

use crate::{
    capture::{CounterValues, ProbeStatus},
    export::summary::Workload,
    http::ServerCounts,
    kube::{ApiserverSyncState, KubeletSyncState},
};

/// How often the pipeline rebuilds the model.
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(1);

/// Entries and evictions of one bounded table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TableStats {
    pub entries: usize,
    pub evicted: u64,
}

/// The start-up scan: how long it took and what it found.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct BootstrapStats {
    pub duration_ms: f64,
    pub processes_found: usize,
    pub connections_found: usize,
    pub unreadable_processes: usize,
    pub socket_namespaces_failed: usize,
}

/// The event stream's subscribers (`GET /v1/events`), when the API runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamHealth {
    pub subscribers: usize,
    pub max_subscribers: usize,
    pub subscribers_dropped: u64,
    pub events_published: u64,
}

/// What was lost, by reason, computed once for every serialisation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Losses {
    /// Kernel loss counters (ring buffer full), added up.
    pub kernel: u64,
    pub decode_errors: u64,
    /// Events in output batches dropped because stdout / the output file could not keep up.
    pub output_dropped: u64,
    /// Subscribers disconnected for falling behind: their events are lost to them only, so
    /// they are not in [`Losses::total`].
    pub events_subscribers_dropped: u64,
}

impl Losses {
    /// What the pipeline lost: kernel + decode + output.
    pub fn total(&self) -> u64 {
        self.kernel + self.decode_errors + self.output_dropped
    }
}

/// `(event_type, reason, involved_kind)` of a Kubernetes event.
pub type KubeEventKey = (String, String, String);

/// Distinct [`KubeEventKey`]s counted at most (reasons come from controllers: a few dozen in a
/// cluster; a misbehaving one cannot grow the metrics without bound).
pub const MAX_KUBE_EVENT_SERIES: usize = 500;

/// Counts a delivered Kubernetes event under its key (or `other` past the cap).
pub fn count_kube_event(
    counts: &mut BTreeMap<KubeEventKey, u64>,
    e: &crate::cluster::events::KubeEvent,
) {
    let key = (
        e.event_type.clone(),
        e.reason.clone(),
        e.involved_kind.clone(),
    );
    if let Some(n) = counts.get_mut(&key) {
        *n += 1;
        return;
    }
    let key = if counts.len() < MAX_KUBE_EVENT_SERIES {
        key
    } else {
        (key.0, "other".into(), "other".into())
    };
    *counts.entry(key).or_default() += 1;
}

/// The agent's health at one moment.
#[derive(Clone, Debug)]
pub struct Health {
    pub started_at: SystemTime,
    pub generated_at: SystemTime,
    pub uptime: Duration,
    pub probes: Vec<ProbeStatus>,
    /// Kernel struct members or tracepoint fields not found (their features are off).
    pub missing_kernel_fields: Vec<String>,
    /// Events delivered, by type.
    pub events: BTreeMap<&'static str, u64>,
    /// Every kernel counter (losses and degraded records).
    pub kernel: CounterValues,
    pub decode_errors: u64,
    pub output_dropped: u64,
    pub stream: Option<StreamHealth>,
    /// `None` until the start-up scan is merged.
    pub bootstrap: Option<BootstrapStats>,
    pub ring_buffer_bytes: u64,
    /// The most ring buffer bytes drained in one wake-up: its peak occupancy at a drain.
    pub ring_buffer_peak_used_bytes: u64,
    pub processes: TableStats,
    pub cgroups: TableStats,
    /// The workload table, when one runs (status API or `--summary`).
    pub workload_table: Option<TableStats>,
    /// Its rows, by workload.
    pub workloads: Vec<Workload>,
    /// Metric publishes postponed because a scrape held the registry (metrics on).
    pub metrics_publish_deferred: Option<u64>,
    pub kubelet: Option<KubeletSyncState>,
    pub apiserver: Option<ApiserverSyncState>,
    /// The leader election, when this agent contends.
    pub leader: Option<crate::cluster::leader::ElectionState>,
    /// The Kubernetes events collector, when this agent may lead.
    pub kube_events: Option<crate::cluster::events::collect::KubeEventsState>,
    /// Kubernetes events delivered, by (type, reason, involved kind); at most
    /// [`MAX_KUBE_EVENT_SERIES`] keys, the rest under reason and kind `other`.
    pub kube_event_counts: BTreeMap<KubeEventKey, u64>,
    /// The control plane's health, when checked (leader or control-plane node).
    pub controlplane: Option<crate::cluster::controlplane::ControlPlaneHealth>,
    /// The HTTP servers' connection counters, by server (`metrics`, `api`).
    pub servers: BTreeMap<&'static str, ServerCounts>,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            started_at: SystemTime::now(),
            generated_at: SystemTime::now(),
            uptime: Duration::ZERO,
            probes: Vec::new(),
            missing_kernel_fields: Vec::new(),
            events: BTreeMap::new(),
            kernel: CounterValues::default(),
            decode_errors: 0,
            output_dropped: 0,
            stream: None,
            bootstrap: None,
            ring_buffer_bytes: 0,
            ring_buffer_peak_used_bytes: 0,
            processes: TableStats::default(),
            cgroups: TableStats::default(),
            workload_table: None,
            workloads: Vec::new(),
            metrics_publish_deferred: None,
            kubelet: None,
            apiserver: None,
            leader: None,
            kube_events: None,
            kube_event_counts: BTreeMap::new(),
            controlplane: None,
            servers: BTreeMap::new(),
        }
    }
}

impl Health {
    pub fn losses(&self) -> Losses {
        Losses {
            kernel: self.kernel.lost(),
            decode_errors: self.decode_errors,
            output_dropped: self.output_dropped,
            events_subscribers_dropped: self.stream.map_or(0, |s| s.subscribers_dropped),
        }
    }
}

/// Where the pipeline publishes the model; every reader takes the latest (no lock per event).
pub type HealthSender = watch::Sender<Arc<Health>>;
pub type HealthReceiver = watch::Receiver<Arc<Health>>;

/// A channel holding `initial` until the pipeline publishes.
pub fn channel(initial: Health) -> (HealthSender, HealthReceiver) {
    watch::channel(Arc::new(initial))
}
