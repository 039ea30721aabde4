//! Sources → one join → sinks.
//!
//! The [`Pipeline`] owns the node model and the Kubernetes side of the join. Every record the
//! kernel delivers, and every process and connection the start-up scan finds, is applied to the
//! node model and attributed once ([`crate::enrich`]); the attributed event goes to every
//! [`Sink`] in turn. At the end of each drain the sinks flush; about once a second the pipeline
//! builds the [`health::Health`] model, which each sink adds its part to, and publishes it.

pub mod health;
pub mod readiness;
pub mod sink;

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use tokio::sync::{oneshot, watch};

use crate::{
    capture::{CounterValues, KernelCounters, ProbeStatus, RecordSink, decode::decode},
    cluster::{
        controlplane::{ComponentHealth, ControlPlaneHealth},
        events::{EventFeed, collect::KubeEventsState},
    },
    enrich::{self, Attribution, KubeJoin},
    event::Event,
    http::ServerStats,
    kube::ApiserverSyncState,
    node::{Bootstrap, NodeModel},
};
use health::{BootstrapStats, Health, HealthSender, TableStats};
pub use sink::{Attributed, BatchEnd, Formatter, Sink, SinkError, Subject};

/// How often a growing loss count is logged.
const LOSS_CHECK: Duration = Duration::from_secs(10);

/// The start-up scan, from running to merged.
enum BootstrapState {
    Running(oneshot::Receiver<Bootstrap>),
    /// Finished; merged after the next complete drain, so every record the kernel produced
    /// before the scan ended has been applied first and the merge never doubles a process.
    Finished(Box<Bootstrap>),
    Merged,
}

/// What stays the same in every health model of a run.
pub struct HealthBase {
    pub probes: Vec<ProbeStatus>,
    pub missing_kernel_fields: Vec<String>,
    pub ring_buffer_bytes: u64,
}

pub struct Pipeline<'a> {
    node: NodeModel,
    kube: KubeJoin,
    sinks: Vec<Box<dyn Sink + 'a>>,
    fmt: Formatter,
    bootstrap: BootstrapState,
    bootstrap_stats: Option<BootstrapStats>,
    /// The kernel's drop counters (`None` in unit tests: all zero).
    counters: Option<&'a KernelCounters>,
    apiserver: Option<watch::Receiver<ApiserverSyncState>>,
    leader: Option<watch::Receiver<crate::cluster::leader::ElectionState>>,
    /// The Kubernetes events the leader's collector hands over, and its state.
    feed: Option<EventFeed>,
    kube_events: Option<watch::Receiver<KubeEventsState>>,
    kube_event_counts: BTreeMap<health::KubeEventKey, u64>,
    /// The control plane's health: the leader's reading of the apiserver, this node's
    /// components.
    apiserver_health: Option<watch::Receiver<crate::cluster::ApiserverHealth>>,
    node_components: Option<watch::Receiver<Vec<ComponentHealth>>>,
    /// The HTTP servers whose connection counters the health model shows.
    servers: Vec<(&'static str, Arc<ServerStats>)>,
    events: BTreeMap<&'static str, u64>,
    decode_errors: u64,
    /// Ring buffer bytes (records with their 8-byte headers, 8-aligned) drained in this
    /// wake-up, and the most in one wake-up so far: the buffer's occupancy when drained.
    drain_bytes: u64,
    peak_drain_bytes: u64,
    health: Health,
    health_tx: HealthSender,
    last_health: Option<Instant>,
    started: Instant,
    last_loss_check: Instant,
    last_lost: u64,
}

impl<'a> Pipeline<'a> {
    pub fn new(
        node: NodeModel,
        kube: KubeJoin,
        fmt: Formatter,
        base: HealthBase,
        health_tx: HealthSender,
    ) -> Self {
        let health = Health {
            probes: base.probes,
            missing_kernel_fields: base.missing_kernel_fields,
            ring_buffer_bytes: base.ring_buffer_bytes,
            ..Health::default()
        };
        Self {
            node,
            kube,
            sinks: Vec::new(),
            fmt,
            bootstrap: BootstrapState::Merged,
            bootstrap_stats: None,
            counters: None,
            apiserver: None,
            leader: None,
            feed: None,
            kube_events: None,
            kube_event_counts: BTreeMap::new(),
            apiserver_health: None,
            node_components: None,
            servers: Vec::new(),
            events: BTreeMap::new(),
            decode_errors: 0,
            drain_bytes: 0,
            peak_drain_bytes: 0,
            health,
            health_tx,
            last_health: None,
            started: Instant::now(),
            last_loss_check: Instant::now(),
            last_lost: 0,
        }
    }

    /// Adds a sink; events reach sinks in the order they were added.
    pub fn sink(&mut self, sink: impl Sink + 'a) -> &mut Self {
        self.sinks.push(Box::new(sink));
        self
    }

    /// Reads the kernel's drop counters into the health model.
    pub fn kernel_counters(&mut self, counters: &'a KernelCounters) -> &mut Self {
        self.counters = Some(counters);
        self
    }

    /// Follows the apiserver source's state for the health model.
    pub fn apiserver(&mut self, state: watch::Receiver<ApiserverSyncState>) -> &mut Self {
        self.apiserver = Some(state);
        self
    }

    /// Follows the leader election for the health model.
    pub fn leader(
        &mut self,
        state: watch::Receiver<crate::cluster::leader::ElectionState>,
    ) -> &mut Self {
        self.leader = Some(state);
        self
    }

    /// Takes the Kubernetes events of the leader's collector (a source: each drain hands what
    /// waits to the sinks) and shows its state in the health model.
    pub fn kube_events(
        &mut self,
        feed: Option<EventFeed>,
        state: Option<watch::Receiver<KubeEventsState>>,
    ) -> &mut Self {
        self.feed = feed;
        self.kube_events = state;
        self
    }

    /// Follows the control plane's health for the health model.
    pub fn controlplane(
        &mut self,
        apiserver: Option<watch::Receiver<crate::cluster::ApiserverHealth>>,
        components: Option<watch::Receiver<Vec<ComponentHealth>>>,
    ) -> &mut Self {
        self.apiserver_health = apiserver;
        self.node_components = components;
        self
    }

    /// Hands the Kubernetes events waiting in the feed to every sink, flushes the sinks and
    /// acknowledges them to the collector: what the run does while it hands over the
    /// leadership (each drain of the capture loop does the same).
    pub fn drain_feed(&mut self) {
        if self.dispatch_feed() {
            self.end_sink_batches();
        }
        self.acknowledge_feed();
    }

    /// Every sink ends its batch (flush, publish).
    fn end_sink_batches(&mut self) {
        let end = BatchEnd {
            node: &self.node,
            now: SystemTime::now(),
        };
        for sink in &mut self.sinks {
            sink.end_batch(&end);
        }
    }

    /// Dispatches what waits in the feed; whether there was any event.
    fn dispatch_feed(&mut self) -> bool {
        let Some(mut feed) = self.feed.take() else {
            return false;
        };
        let mut events = Vec::new();
        feed.drain(&mut events);
        self.feed = Some(feed);
        let attr = Attribution::default();
        for e in &events {
            health::count_kube_event(&mut self.kube_event_counts, e);
            self.dispatch(Subject::KubeEvent(e), &attr);
        }
        !events.is_empty()
    }

    /// The events dispatched have been flushed by every sink: tell the collector.
    fn acknowledge_feed(&mut self) {
        if let Some(feed) = &mut self.feed {
            feed.acknowledge();
        }
    }

    /// Shows an HTTP server's connection counters in the health model.
    pub fn server(&mut self, name: &'static str, stats: Arc<ServerStats>) -> &mut Self {
        self.servers.push((name, stats));
        self
    }

    /// The start-up scan runs; its result is merged once it arrives.
    pub fn bootstrap(&mut self, scan: oneshot::Receiver<Bootstrap>) -> &mut Self {
        self.bootstrap = BootstrapState::Running(scan);
        self
    }

    /// Applies one event to the node model, attributes it, and hands it to every sink.
    pub fn event(&mut self, ev: &Event<'_>) {
        let attr = enrich::attribute(&mut self.node, &mut self.kube, ev);
        if matches!(ev, Event::Cgroup { .. }) {
            return;
        }
        self.dispatch(Subject::Kernel(ev), &attr);
    }

    fn dispatch(&mut self, subject: Subject<'_>, attr: &Attribution) {
        let ev = Attributed { subject, attr };
        *self.events.entry(ev.type_name()).or_default() += 1;
        self.fmt.next();
        for sink in &mut self.sinks {
            sink.event(&ev, &mut self.fmt);
        }
    }

    /// Merges the start-up scan once it is done, and reports what it found.
    fn merge_bootstrap(&mut self) {
        let scan = match std::mem::replace(&mut self.bootstrap, BootstrapState::Merged) {
            BootstrapState::Merged => return,
            BootstrapState::Running(mut rx) => {
                match rx.try_recv() {
                    Ok(scan) => self.bootstrap = BootstrapState::Finished(Box::new(scan)),
                    Err(oneshot::error::TryRecvError::Empty) => {
                        self.bootstrap = BootstrapState::Running(rx)
                    }
                    Err(oneshot::error::TryRecvError::Closed) => {
                        tracing::warn!(
                            "the start-up scan failed; pre-existing processes are unknown"
                        );
                    }
                }
                return;
            }
            BootstrapState::Finished(scan) => *scan,
        };
        let ctx = &self.fmt.ctx;
        let report = self.node.merge(scan, |inode| ctx.found_conn_id(inode));
        tracing::info!(
            processes = report.processes.len(),
            connections = report.conns.len(),
            duration_ms = report.duration.as_secs_f64() * 1e3,
            "start-up scan merged"
        );
        for p in &report.processes {
            let attr = self.kube.attribute_cgroup(&mut self.node, p.cgroup_id);
            self.dispatch(Subject::ProcessFound(p), &attr);
        }
        for c in &report.conns {
            let attr = self.kube.attribute_found(&mut self.node, c);
            self.dispatch(Subject::ConnFound(c), &attr);
        }
        self.bootstrap_stats = Some(BootstrapStats {
            duration_ms: report.duration.as_secs_f64() * 1e3,
            processes_found: report.processes.len(),
            connections_found: report.conns.len(),
            unreadable_processes: report.unreadable_processes,
            socket_namespaces_failed: report.socket_namespaces_failed,
        });
        if let Err(err) =
            sd_notify::notify(false, &[sd_notify::NotifyState::Custom("BOOTSTRAPPED=1")])
        {
            tracing::debug!(%err, "sd_notify BOOTSTRAPPED failed");
        }
    }

    /// Rebuilds the health model (every sink adds its part) and publishes it.
    pub fn publish_health(&mut self) -> std::sync::Arc<Health> {
        let h = &mut self.health;
        let now = SystemTime::now();
        h.generated_at = now;
        h.started_at = now - self.started.elapsed();
        h.uptime = self.started.elapsed();
        h.events.clone_from(&self.events);
        h.kernel = self.counters.map(|c| c.read()).unwrap_or_default();
        h.decode_errors = self.decode_errors;
        h.bootstrap.clone_from(&self.bootstrap_stats);
        h.ring_buffer_peak_used_bytes = self.peak_drain_bytes;
        let (cgroups, processes) = (self.node.cgroups.stats(), self.node.processes.stats());
        h.cgroups = TableStats {
            entries: cgroups.entries,
            evicted: cgroups.evicted,
        };
        h.processes = TableStats {
            entries: processes.entries,
            evicted: processes.evicted,
        };
        h.kubelet = self.kube.kubelet.as_ref().map(|k| k.state());
        h.apiserver = self.apiserver.as_ref().map(|a| a.borrow().clone());
        h.leader = self.leader.as_ref().map(|l| l.borrow().clone());
        h.kube_events = self.kube_events.as_ref().map(|k| k.borrow().clone());
        h.kube_event_counts.clone_from(&self.kube_event_counts);
        h.controlplane =
            (self.apiserver_health.is_some() || self.node_components.is_some()).then(|| {
                let (apiserver, componentstatuses) = self
                    .apiserver_health
                    .as_ref()
                    .map(|a| a.borrow().clone())
                    .unwrap_or_default();
                ControlPlaneHealth {
                    apiserver,
                    componentstatuses,
                    components: self
                        .node_components
                        .as_ref()
                        .map(|c| c.borrow().clone())
                        .unwrap_or_default(),
                }
            });
        for (name, stats) in &self.servers {
            h.servers.insert(name, stats.snapshot());
        }
        for sink in &mut self.sinks {
            sink.health(&self.node, h);
        }
        let published = std::sync::Arc::new(h.clone());
        self.health_tx
            .send_replace(std::sync::Arc::clone(&published));
        self.check_losses(&published);
        published
    }

    /// Logs a warning when losses grew since the last check (at most every [`LOSS_CHECK`]).
    fn check_losses(&mut self, h: &Health) {
        if self.last_loss_check.elapsed() < LOSS_CHECK {
            return;
        }
        self.last_loss_check = Instant::now();
        let lost = h.losses().total();
        if lost > self.last_lost {
            tracing::warn!(
                lost_since_last_check = lost - self.last_lost,
                lost_total = lost,
                "events lost: the ring buffer or the output cannot keep up (see --ring-buffer-size)"
            );
            self.last_lost = lost;
        }
    }

    /// Ends the run: the last health model (after a final flush), then every sink finishes.
    pub fn finish(mut self) -> (std::sync::Arc<Health>, Result<(), SinkError>) {
        self.end_sink_batches();
        let health = self.publish_health();
        let mut result = Ok(());
        for sink in self.sinks {
            if let Err(err) = sink.finish()
                && result.is_ok()
            {
                result = Err(err);
            }
        }
        (health, result)
    }

    /// The kernel counters as last read (zero without a kernel).
    pub fn kernel(&self) -> CounterValues {
        self.counters.map(|c| c.read()).unwrap_or_default()
    }
}

impl RecordSink for Pipeline<'_> {
    fn record(&mut self, data: &[u8]) {
        self.drain_bytes += (data.len() as u64 + 8 + 7) & !7;
        match decode(data) {
            Ok(ev) => self.event(&ev),
            Err(err) => {
                if self.decode_errors == 0 {
                    tracing::warn!(%err, "undecodable record from the kernel (first occurrence)");
                }
                self.decode_errors += 1;
            }
        }
    }

    fn end_batch(&mut self, _records: usize) {
        self.peak_drain_bytes = self.peak_drain_bytes.max(self.drain_bytes);
        self.drain_bytes = 0;
        self.merge_bootstrap();
        self.dispatch_feed();
        self.end_sink_batches();
        self.acknowledge_feed();
        if self
            .last_health
            .is_none_or(|t| t.elapsed() >= health::HEALTH_INTERVAL)
        {
            self.last_health = Some(Instant::now());
            self.publish_health();
        }
    }
}

#[cfg(test)]
mod tests;
