//! `sonde run`: capture → decode → format → output, until a signal or `--duration`.

use std::{
    collections::BTreeMap,
    io::Write,
    path::PathBuf,
    time::{Duration, Instant},
};

use serde::Serialize;
use tokio::sync::watch;

use crate::{
    capture::{
        Capture, CaptureError, CaptureOptions, CounterValues, KernelCounters, ProbeStatus,
        RecordSink, decode::decode,
    },
    enrich,
    export::{
        Context, OutputFormat,
        metrics::{
            self, HealthSnapshot, Metrics, MetricsError, MetricsOptions, pipeline::PipelineMetrics,
        },
        summary::Summary,
        writer::OutputWriter,
    },
    node::{self, Bootstrap, NodeModel, NodeOptions, cgroup::CgroupError},
};

/// Batches are handed to the output thread at the end of each drain, or at this size: one
/// hand-off per wake-up in the common case.
const BATCH_BYTES: usize = 512 << 10;
/// Batches waiting for the output thread before new ones are dropped.
const OUTPUT_QUEUE: usize = 8;
/// How often kernel drop counters are checked for a warning.
const LOSS_CHECK: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct RunOptions {
    pub capture: CaptureOptions,
    pub node: NodeOptions,
    pub output: OutputFormat,
    /// Show the per-workload table instead of the event stream; `true` redraws in place.
    pub summary: Option<bool>,
    pub duration: Option<Duration>,
    pub stats_file: Option<PathBuf>,
    /// Serve Prometheus metrics (`None`: no endpoint, no aggregation).
    pub metrics: Option<MetricsOptions>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    Node(#[from] CgroupError),
    #[error("event output failed: {0}")]
    Output(std::io::Error),
    #[error("cannot write statistics to {path}: {source}")]
    Stats {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("ring buffer reader failed: {0}")]
    Reader(std::io::Error),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}

impl RunError {
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Capture(e) => e.exit_code(),
            RunError::Node(_) => 69,
            RunError::Stats { .. } => 73,
            RunError::Metrics(_) => 78,
            _ => 1,
        }
    }
}

/// What a run did, written by `--stats-file` and logged at the end.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RunStats {
    /// Events delivered, by type.
    pub events: BTreeMap<&'static str, u64>,
    /// Records that could not be decoded (counted as lost).
    pub decode_errors: u64,
    /// Events formatted but dropped because the output could not keep up.
    pub output_dropped: u64,
    /// Non-zero kernel counters by name (losses and degraded records).
    pub kernel_counters: BTreeMap<&'static str, u64>,
    /// Everything lost on the way: kernel ring buffer + decode errors + output drops.
    pub lost: u64,
    pub probes: Vec<ProbeStatus>,
    pub missing_kernel_fields: Vec<String>,
    /// The start-up scan: how long it took and what it found.
    pub bootstrap: Option<BootstrapStats>,
    /// Cgroups and processes known at the end, and what their bounded tables evicted.
    pub cgroups_known: usize,
    pub cgroups_evicted: u64,
    pub processes_known: usize,
    pub processes_evicted: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct BootstrapStats {
    pub duration_ms: f64,
    pub processes_found: usize,
    pub connections_found: usize,
    pub unreadable_processes: usize,
    pub socket_namespaces_failed: usize,
}

/// The start-up scan, from running to merged.
enum BootstrapState {
    Running(tokio::sync::oneshot::Receiver<Bootstrap>),
    /// Finished; merged after the next complete drain, so every record the kernel produced
    /// before the scan ended has been applied first and the merge never doubles a process.
    Finished(Box<Bootstrap>),
    Merged,
}

struct Pipeline<'a> {
    ctx: Context,
    node: NodeModel,
    bootstrap: BootstrapState,
    bootstrap_stats: Option<BootstrapStats>,
    summary: Option<(Summary, bool)>,
    format: OutputFormat,
    batch: Vec<u8>,
    batch_events: u64,
    writer: OutputWriter,
    counters: &'a KernelCounters,
    events: BTreeMap<&'static str, u64>,
    decode_errors: u64,
    last_check: Instant,
    last_lost: u64,
    metrics: Option<PipelineMetrics>,
    /// Ring buffer bytes (records with their 8-byte headers, 8-aligned) drained in this
    /// wake-up, and the most in one wake-up so far: the buffer's occupancy when drained.
    drain_bytes: u64,
    peak_drain_bytes: u64,
}

impl Pipeline<'_> {
    fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::replace(&mut self.batch, self.writer.buffer());
        self.writer.send(batch, self.batch_events);
        self.batch_events = 0;
    }

    fn check_losses(&mut self) {
        if self.last_check.elapsed() < LOSS_CHECK {
            return;
        }
        self.last_check = Instant::now();
        let lost = self.counters.read().lost() + self.decode_errors + self.writer.dropped_events;
        if lost > self.last_lost {
            tracing::warn!(
                lost_since_last_check = lost - self.last_lost,
                lost_total = lost,
                "events lost: the ring buffer or the output cannot keep up (see --ring-buffer-size)"
            );
            self.last_lost = lost;
        }
    }
}

impl Pipeline<'_> {
    /// Merges the start-up scan once it is done, and reports what it found.
    fn merge_bootstrap(&mut self) {
        let scan = match std::mem::replace(&mut self.bootstrap, BootstrapState::Merged) {
            BootstrapState::Merged => return,
            BootstrapState::Running(mut rx) => {
                match rx.try_recv() {
                    Ok(scan) => self.bootstrap = BootstrapState::Finished(Box::new(scan)),
                    Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {
                        self.bootstrap = BootstrapState::Running(rx)
                    }
                    Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                        tracing::warn!(
                            "the start-up scan failed; pre-existing processes are unknown"
                        );
                    }
                }
                return;
            }
            BootstrapState::Finished(scan) => *scan,
        };
        let ctx = &self.ctx;
        let report = self.node.merge(scan, |inode| ctx.found_conn_id(inode));
        tracing::info!(
            processes = report.processes.len(),
            connections = report.conns.len(),
            duration_ms = report.duration.as_secs_f64() * 1e3,
            "start-up scan merged"
        );
        for p in &report.processes {
            let cgroup = self.node.cgroup(p.cgroup_id);
            *self.events.entry("process_found").or_default() += 1;
            if self.summary.is_none() {
                self.ctx
                    .write_process_found(self.format, &mut self.batch, p, cgroup.as_deref());
                self.batch_events += 1;
            }
        }
        for c in &report.conns {
            let cgroup = self.node.cgroup(c.cgroup_id);
            *self.events.entry("tcp_open").or_default() += 1;
            if let Some(m) = &mut self.metrics {
                m.acc
                    .found_conn(cgroup.as_ref(), c.direction, c.remote.ip());
            }
            match &mut self.summary {
                Some((summary, _)) => summary.found_conn(cgroup.as_deref()),
                None => {
                    self.ctx
                        .write_conn_found(self.format, &mut self.batch, c, cgroup.as_deref());
                    self.batch_events += 1;
                }
            }
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
}

impl Pipeline<'_> {
    /// The batch's counts every drain; the agent's health about once a second.
    fn publish_metrics(&mut self) {
        let Some(m) = &mut self.metrics else {
            return;
        };
        let (events, decode_errors) = (&self.events, self.decode_errors);
        let peak_drain_bytes = self.peak_drain_bytes;
        let (counters, writer, node) = (self.counters, &self.writer, &self.node);
        m.end_batch(|h| {
            h.events.clone_from(events);
            h.decode_errors = decode_errors;
            h.ring_buffer_peak_used_bytes = peak_drain_bytes;
            h.output_dropped = writer.dropped_events;
            h.set_kernel(&counters.read());
            let (cgroups, processes) = (node.cgroups.stats(), node.processes.stats());
            h.cgroups_known = cgroups.entries;
            h.cgroups_evicted = cgroups.evicted;
            h.processes_known = processes.entries;
            h.processes_evicted = processes.evicted;
        });
    }
}

impl RecordSink for Pipeline<'_> {
    fn record(&mut self, data: &[u8]) {
        self.drain_bytes += (data.len() as u64 + 8 + 7) & !7;
        match decode(data) {
            Ok(ev) => {
                let attr = enrich::attribute(&mut self.node, &ev);
                if matches!(ev, crate::event::Event::Cgroup { .. }) {
                    return;
                }
                *self.events.entry(ev.type_name()).or_default() += 1;
                if let Some(m) = &mut self.metrics {
                    m.acc.record(&ev, &attr);
                }
                match &mut self.summary {
                    Some((summary, _)) => summary.record(&ev, &attr),
                    None => {
                        self.ctx.write(self.format, &mut self.batch, &ev, &attr);
                        self.batch_events += 1;
                        if self.batch.len() >= BATCH_BYTES {
                            self.flush();
                        }
                    }
                }
            }
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
        if let Some((summary, clear)) = &mut self.summary {
            summary.render_due(&self.node, &mut self.batch, *clear);
        }
        self.flush();
        self.check_losses();
        self.publish_metrics();
    }
}

/// Resolves when `signal` fires; never, if its handler could not be installed.
async fn received(signal: Option<&mut tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// Waits for SIGINT, SIGTERM, or the end of `duration`, then tells the reader to stop.
/// The handlers are installed before this returns (so before READY=1): a signal sent right
/// after readiness stops the agent cleanly instead of killing it.
fn spawn_stopper(duration: Option<Duration>, stop: watch::Sender<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigterm = signal(SignalKind::terminate()).ok();
    let mut sigint = signal(SignalKind::interrupt()).ok();
    tokio::spawn(async move {
        let sleep = async {
            match duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = sleep => tracing::info!("duration reached, stopping"),
            _ = received(sigint.as_mut()) => tracing::info!("interrupted, stopping"),
            _ = received(sigterm.as_mut()) => tracing::info!("terminated, stopping"),
        }
        let _ = stop.send(true);
    });
}

/// Runs the agent until stopped; `dest` receives the event stream.
pub async fn run(opts: RunOptions, dest: Box<dyn Write + Send>) -> Result<RunStats, RunError> {
    // Privileges first (the first thing to fix), then the metrics address: a bad address fails
    // before anything is loaded into the kernel.
    crate::capture::preflight::check_privileges().map_err(CaptureError::from)?;
    let listener = match &opts.metrics {
        Some(m) => Some((metrics::http::bind(m.listen).await?, Metrics::new(m))),
        None => None,
    };
    let mut capture = Capture::start(&opts.capture)?;
    // Probes are attached: now look at what already exists (rule 5). The cgroup index is quick
    // and needed to attribute the first records; processes and sockets are scanned off the
    // capture path and merged when ready.
    let node = NodeModel::new(&opts.node)?;
    let (bootstrap_tx, bootstrap_rx) = tokio::sync::oneshot::channel();
    let host = opts.node.host.clone();
    tokio::task::spawn_blocking(move || {
        let _ = bootstrap_tx.send(node::scan(&host));
    });
    let writer = OutputWriter::spawn(dest, OUTPUT_QUEUE, BATCH_BYTES).map_err(RunError::Output)?;
    // Kubernetes names join here: `.with_label_source(Arc::new(PodStoreLabels(store)))`, a remote
    // resolver, and `metrics.health.set_kubelet(handle.subscribe())`.
    let (pipeline_metrics, server) = match listener {
        Some((listener, metrics)) => {
            let mut base = HealthSnapshot {
                ring_buffer_bytes: u64::from(opts.capture.ring_buffer_bytes),
                ..HealthSnapshot::default()
            };
            base.set_probes(&capture.probes);
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, "serving Prometheus metrics at http://{addr}/metrics");
            }
            let server =
                metrics::http::spawn(listener, std::sync::Arc::new(metrics.prometheus_registry()));
            (Some(PipelineMetrics::new(&metrics, base)), Some(server))
        }
        None => (None, None),
    };
    let Capture {
        reader, counters, ..
    } = &mut capture;
    let mut pipeline = Pipeline {
        ctx: Context::new(),
        node,
        bootstrap: BootstrapState::Running(bootstrap_rx),
        bootstrap_stats: None,
        summary: opts.summary.map(|clear| (Summary::default(), clear)),
        format: opts.output,
        batch: writer.buffer(),
        batch_events: 0,
        writer,
        counters,
        events: BTreeMap::new(),
        decode_errors: 0,
        last_check: Instant::now(),
        last_lost: 0,
        metrics: pipeline_metrics,
        drain_bytes: 0,
        peak_drain_bytes: 0,
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    spawn_stopper(opts.duration, stop_tx.clone());
    // The output going away (`sonde run | head`) also ends the run.
    let closed = pipeline.writer.closed_flag();
    tokio::spawn(async move {
        while !closed.load(std::sync::atomic::Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::info!("output closed, stopping");
        let _ = stop_tx.send(true);
    });

    if let Err(err) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        tracing::debug!(%err, "sd_notify READY failed");
    }
    tracing::info!("capture running");

    let read = reader.run(&mut pipeline, stop_rx).await;
    if let Some(server) = server {
        server.abort();
    }
    read.map_err(RunError::Reader)?;

    let Pipeline {
        writer,
        events,
        decode_errors,
        counters,
        node,
        bootstrap_stats,
        ..
    } = pipeline;
    let cgroup_stats = node.cgroups.stats();
    let process_stats = node.processes.stats();
    let output_dropped = writer.dropped_events;
    let output_result = writer.finish();
    let kernel: CounterValues = counters.read();
    let stats = RunStats {
        events,
        decode_errors,
        output_dropped,
        kernel_counters: kernel.named().collect(),
        lost: kernel.lost() + decode_errors + output_dropped,
        probes: capture.probes.clone(),
        missing_kernel_fields: capture.missing_fields.clone(),
        bootstrap: bootstrap_stats,
        cgroups_known: cgroup_stats.entries,
        cgroups_evicted: cgroup_stats.evicted,
        processes_known: process_stats.entries,
        processes_evicted: process_stats.evicted,
    };
    if let Err(err) = output_result
        && err.kind() != std::io::ErrorKind::BrokenPipe
    {
        return Err(RunError::Output(err));
    }
    if let Some(path) = &opts.stats_file {
        let json = serde_json::to_vec_pretty(&stats).map_err(std::io::Error::other);
        json.and_then(|j| std::fs::write(path, j))
            .map_err(|source| RunError::Stats {
                path: path.clone(),
                source,
            })?;
    }
    Ok(stats)
}
