//! `sonde run`: capture → decode → format → output, until a signal or `--duration`.

use std::{
    collections::BTreeMap,
    io::Write,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use serde::Serialize;
use tokio::sync::watch;

use crate::{
    api::{self, ApiError, ApiOptions, ApiState},
    capture::{
        Capture, CaptureError, CaptureOptions, CounterValues, KernelCounters, ProbeStatus,
        RecordSink, decode::decode,
    },
    config::KubernetesConfig,
    enrich::{self, KubeJoin},
    export::{
        Context, OutputFormat,
        fanout::StreamHub,
        filter::FilterKeys,
        metrics::{
            self, HealthSnapshot, Metrics, MetricsError, MetricsOptions,
            labels::{PodStoreLabels, RemoteResolver},
            pipeline::PipelineMetrics,
        },
        rotate::{RotateError, RotateOptions, RotatingFile},
        status::{self, STATUS_INTERVAL, Status},
        summary::Summary,
        writer::OutputWriter,
    },
    kube::{
        ApiserverHandle, ApiserverSyncState, KubeletConfig, KubeletSyncState, PodStore, Remote,
        RemoteIndex, resolve_node_name, spawn_apiserver_source, spawn_kubelet_source,
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
    /// The kubelet pod source; `None` runs without Kubernetes metadata.
    pub kubelet: Option<KubeletConfig>,
    /// Serve Prometheus metrics (`None`: no endpoint, no aggregation).
    pub metrics: Option<MetricsOptions>,
    /// NDJSON to a rotated file instead of the destination given to [`run`].
    pub output_file: Option<RotateOptions>,
    /// The HTTP API (`/v1/events`, `/v1/status`); `None` turns it off.
    pub api: Option<ApiOptions>,
    /// This node's name (`node_name`), when configured.
    pub node_name: Option<String>,
    /// The apiserver source's configuration (`kubernetes.*`).
    pub kubernetes: KubernetesConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    Node(#[from] CgroupError),
    #[error("event output failed: {0}")]
    Output(std::io::Error),
    #[error(transparent)]
    OutputFile(#[from] RotateError),
    #[error(transparent)]
    Api(#[from] ApiError),
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
            RunError::Stats { .. } | RunError::OutputFile(_) => 73,
            RunError::Api(_) => 75,
            RunError::Metrics(_) => 75,
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
    /// Event stream subscribers dropped for falling behind (their events are not in `lost`).
    pub events_subscribers_dropped: u64,
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
    /// The kubelet source's state at the end, when it ran.
    pub kubelet: Option<KubeletSyncState>,
    /// The apiserver source's state at the end, when it ran.
    pub apiserver: Option<ApiserverSyncState>,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
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
    kube: KubeJoin,
    /// The apiserver source's state, for the status API.
    apiserver: Option<watch::Receiver<ApiserverSyncState>>,
    bootstrap: BootstrapState,
    bootstrap_stats: Option<BootstrapStats>,
    /// Per-workload counters: for `--summary` and the status API.
    workloads: Option<Summary>,
    /// `--summary`: draw the table instead of the event stream (`true`: redraw in place).
    summary_clear: Option<bool>,
    /// Event stream subscribers (the API's `/v1/events`).
    hub: Option<StreamHub>,
    status: Option<StatusPublisher>,
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

/// Publishes the status snapshot for `/v1/status` about once a second.
struct StatusPublisher {
    tx: watch::Sender<Arc<Status>>,
    last: Option<Instant>,
    started_at: SystemTime,
    started: Instant,
    max_subscribers: usize,
    probes: Vec<ProbeStatus>,
    missing_fields: Vec<String>,
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
        let stdout = self.summary_clear.is_none();
        for p in &report.processes {
            let attr = self.kube.attribute_cgroup(&mut self.node, p.cgroup_id);
            *self.events.entry("process_found").or_default() += 1;
            if stdout {
                self.ctx
                    .write_process_found(self.format, &mut self.batch, p, &attr);
                self.batch_events += 1;
            }
            if let Some(hub) = &mut self.hub
                && hub.wanted()
            {
                let out = hub.line_buffer();
                self.ctx
                    .write_process_found(OutputFormat::Json, out, p, &attr);
                hub.commit_line("process_found", keys(&attr));
            }
        }
        for c in &report.conns {
            let attr = self.kube.attribute_cgroup(&mut self.node, c.cgroup_id);
            *self.events.entry("tcp_open").or_default() += 1;
            if let Some(m) = &mut self.metrics {
                m.acc
                    .found_conn(attr.cgroup.as_ref(), c.direction, c.remote.ip());
            }
            if let Some(w) = &mut self.workloads {
                w.found_conn(attr.cgroup.as_ref());
            }
            if stdout {
                self.ctx
                    .write_conn_found(self.format, &mut self.batch, c, &attr);
                self.batch_events += 1;
            }
            if let Some(hub) = &mut self.hub
                && hub.wanted()
            {
                let out = hub.line_buffer();
                self.ctx.write_conn_found(OutputFormat::Json, out, c, &attr);
                hub.commit_line("tcp_open", keys(&attr));
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
                let attr = enrich::attribute(&mut self.node, &self.kube, &ev);
                if matches!(ev, crate::event::Event::Cgroup { .. }) {
                    return;
                }
                let ty = ev.type_name();
                *self.events.entry(ty).or_default() += 1;
                if let Some(m) = &mut self.metrics {
                    m.acc.record(&ev, &attr);
                }
                if let Some(w) = &mut self.workloads {
                    w.record(&ev, &attr);
                }
                let start = self.batch.len();
                let stdout = self.summary_clear.is_none();
                if stdout {
                    self.ctx.write(self.format, &mut self.batch, &ev, &attr);
                    self.batch_events += 1;
                }
                if let Some(hub) = &mut self.hub
                    && hub.wanted()
                {
                    if stdout && self.format == OutputFormat::Json {
                        // The same line: copy it rather than format it twice.
                        hub.push_line(ty, &self.batch[start..], keys(&attr));
                    } else {
                        let out = hub.line_buffer();
                        self.ctx.write(OutputFormat::Json, out, &ev, &attr);
                        hub.commit_line(ty, keys(&attr));
                    }
                }
                if self.batch.len() >= BATCH_BYTES {
                    self.flush();
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
        if let Some(w) = &mut self.workloads {
            w.set_now(SystemTime::now());
            if let Some(clear) = self.summary_clear {
                w.render_due(&self.node, &mut self.batch, clear);
            }
        }
        self.flush();
        if let Some(hub) = &mut self.hub {
            hub.publish();
        }
        self.publish_status();
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

/// The stream filter keys of an attributed event.
fn keys(attr: &enrich::Attribution) -> FilterKeys {
    FilterKeys {
        cgroup: attr.cgroup.clone(),
        kube: attr.pod.clone(),
    }
}

impl Pipeline<'_> {
    /// Publishes a status snapshot if one is due (every [`STATUS_INTERVAL`]).
    fn publish_status(&mut self) {
        let Some(publisher) = &self.status else {
            return;
        };
        if publisher
            .last
            .is_some_and(|t| t.elapsed() < STATUS_INTERVAL)
        {
            return;
        }
        let snapshot = self.status_snapshot();
        if let Some(publisher) = &mut self.status {
            publisher.last = Some(Instant::now());
            publisher.tx.send_replace(Arc::new(snapshot));
        }
    }

    fn status_snapshot(&mut self) -> Status {
        if let Some(w) = &mut self.workloads {
            w.expire(&self.node);
        }
        let Some(publisher) = &self.status else {
            return Status::default();
        };
        let kernel = self.counters.read();
        let stream = self.hub.as_ref().map(|h| h.stats()).unwrap_or_default();
        let output_dropped = self.writer.dropped_events;
        let cgroups = self.node.cgroups.stats();
        let processes = self.node.processes.stats();
        let workloads = self
            .workloads
            .as_ref()
            .map(|w| w.workloads(&self.node))
            .unwrap_or_default();
        let now = SystemTime::now();
        Status {
            agent: status::Health {
                version: env!("CARGO_PKG_VERSION").to_string(),
                started_at: status::rfc3339(publisher.started_at),
                generated_at: status::rfc3339(now),
                uptime_seconds: publisher.started.elapsed().as_secs_f64(),
                probes: status::Probes::from_list(&publisher.probes),
                missing_kernel_fields: publisher.missing_fields.clone(),
                events: self
                    .events
                    .iter()
                    .map(|(k, v)| (k.to_string(), *v))
                    .collect(),
                lost: status::Lost {
                    total: kernel.lost() + self.decode_errors + output_dropped,
                    kernel: kernel.lost(),
                    decode_errors: self.decode_errors,
                    output_dropped,
                    events_subscribers_dropped: stream.subscribers_dropped,
                },
                kernel_counters: kernel.named().map(|(k, v)| (k.to_string(), v)).collect(),
                stream: status::StreamStatus {
                    subscribers: stream.subscribers,
                    max_subscribers: publisher.max_subscribers,
                    events_subscribers_dropped: stream.subscribers_dropped,
                    events_published: stream.events_published,
                },
                bootstrap: self
                    .bootstrap_stats
                    .as_ref()
                    .map(|b| status::BootstrapStatus {
                        duration_ms: b.duration_ms,
                        processes_found: b.processes_found,
                        connections_found: b.connections_found,
                        unreadable_processes: b.unreadable_processes,
                        socket_namespaces_failed: b.socket_namespaces_failed,
                    }),
                tables: status::Tables {
                    processes: status::TableSize {
                        entries: processes.entries,
                        evicted: processes.evicted,
                    },
                    cgroups: status::TableSize {
                        entries: cgroups.entries,
                        evicted: cgroups.evicted,
                    },
                    workloads: status::TableSize {
                        entries: self.workloads.as_ref().map_or(0, |w| w.len()),
                        evicted: self.workloads.as_ref().map_or(0, |w| w.evicted),
                    },
                },
                metadata: status::Metadata {
                    kubelet: self
                        .kube
                        .kubelet
                        .as_ref()
                        .map(|k| status::SourceState::from_kubelet(&k.state())),
                    apiserver: self
                        .apiserver
                        .as_ref()
                        .map(|a| status::SourceState::from_apiserver(&a.borrow())),
                },
            },
            workloads: workloads.iter().map(status::WorkloadStatus::from).collect(),
        }
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

/// The `remote` metric label from the apiserver's Services and endpoints: `service:<ns>/<name>`
/// (a pod that backs a Service counts as that Service), `pod:<ns>/<name>`, or `external` once
/// Services are known (`None` before: the label stays `unknown`).
fn remote_resolver(remote: Arc<RemoteIndex>) -> Arc<dyn RemoteResolver> {
    Arc::new(move |ip| match remote.lookup(ip, 0) {
        Remote::Service { namespace, name }
        | Remote::Pod {
            namespace,
            service: Some(name),
            ..
        } => Some(Arc::from(format!("service:{namespace}/{name}"))),
        Remote::Pod {
            namespace, name, ..
        } => Some(Arc::from(format!("pod:{namespace}/{name}"))),
        Remote::External => (remote.counts().services > 0).then(|| Arc::from("external")),
    })
}

/// Starts the apiserver watches when configured (`kubernetes.enabled` and a kubeconfig, or
/// running in a pod); a failure to start is logged and the agent runs on without them.
fn start_apiserver(
    opts: &RunOptions,
    pods: &Arc<PodStore>,
    remote: &Arc<RemoteIndex>,
) -> Option<ApiserverHandle> {
    let config = &opts.kubernetes;
    if !config.enabled {
        return None;
    }
    if config.kubeconfig.is_none() && std::env::var_os("KUBERNETES_SERVICE_HOST").is_none() {
        tracing::info!("apiserver metadata off: no kubernetes.kubeconfig and not running in a pod");
        return None;
    }
    let node = match &opts.node_name {
        Some(name) => name.clone(),
        None => match resolve_node_name(None) {
            Ok(n) => n.name,
            Err(err) => {
                tracing::warn!(%err, "apiserver metadata off: this node's name is unknown (set node_name)");
                return None;
            }
        },
    };
    match spawn_apiserver_source(config.clone(), &node, Arc::clone(pods), Arc::clone(remote)) {
        Ok(handle) => Some(handle),
        Err(err) => {
            tracing::warn!(%err, "apiserver metadata off");
            None
        }
    }
}

/// Runs the agent until stopped; `dest` receives the event stream.
pub async fn run(
    mut opts: RunOptions,
    mut dest: Box<dyn Write + Send>,
) -> Result<RunStats, RunError> {
    // Privileges first (the first thing to fix), then files and addresses: a bad path or a
    // taken port fails before anything is loaded into the kernel.
    crate::capture::preflight::check_privileges().map_err(CaptureError::from)?;
    if let Some(file) = opts.output_file.clone() {
        // Opened before anything is attached: a bad path fails fast.
        dest = Box::new(RotatingFile::open(file)?);
        opts.output = OutputFormat::Json;
    }
    let api_listener = match &opts.api {
        Some(api) => Some(api::bind(api).await?),
        None => None,
    };
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
    let pods = std::sync::Arc::new(PodStore::new());
    let kubelet = opts.kubelet.clone().map(|config| {
        std::sync::Arc::new(spawn_kubelet_source(config, std::sync::Arc::clone(&pods)))
    });
    let writer = OutputWriter::spawn(dest, OUTPUT_QUEUE, BATCH_BYTES).map_err(RunError::Output)?;
    let remote = Arc::new(RemoteIndex::new());
    let apiserver = start_apiserver(&opts, &pods, &remote);
    let (pipeline_metrics, metrics_server) = match listener {
        Some((listener, metrics)) => {
            // Pod names are resolved at scrape time: series counted before the kubelet knew a
            // container are labelled as soon as it does (rule 6).
            let metrics = metrics.with_label_source(std::sync::Arc::new(PodStoreLabels(
                std::sync::Arc::clone(&pods),
            )));
            if let Some(k) = &kubelet {
                metrics.health.set_kubelet(k.subscribe());
            }
            let metrics = match &apiserver {
                Some(_) => metrics.with_remote_resolver(remote_resolver(Arc::clone(&remote))),
                None => metrics,
            };
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
    let kube = KubeJoin {
        pods: Arc::clone(&pods),
        kubelet: kubelet.clone(),
        remote: apiserver.as_ref().map(|_| Arc::clone(&remote)),
    };
    let probes = capture.probes.clone();
    let missing_fields = capture.missing_fields.clone();
    let Capture {
        reader, counters, ..
    } = &mut capture;
    let mut server = None;
    let (hub, status) = match (&opts.api, api_listener) {
        (Some(api), Some(listener)) => {
            let (hub, handle) = StreamHub::new(api.subscriber_queue, api.max_subscribers);
            let (tx, rx) = watch::channel(Arc::new(Status::default()));
            server = Some(api::serve(
                listener,
                ApiState {
                    stream: handle,
                    status: rx,
                },
            ));
            let publisher = StatusPublisher {
                tx,
                last: None,
                started_at: SystemTime::now(),
                started: Instant::now(),
                max_subscribers: api.max_subscribers,
                probes,
                missing_fields,
            };
            (Some(hub), Some(publisher))
        }
        _ => (None, None),
    };
    let mut ctx = Context::new();
    ctx.pod_labels.clone_from(&opts.kubernetes.pod_labels);
    let mut pipeline = Pipeline {
        ctx,
        node,
        kube,
        apiserver: apiserver.as_ref().map(|a| a.subscribe()),
        bootstrap: BootstrapState::Running(bootstrap_rx),
        bootstrap_stats: None,
        workloads: (opts.summary.is_some() || status.is_some())
            .then(|| Summary::with_pods(Arc::clone(&pods))),
        summary_clear: opts.summary,
        hub,
        status,
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
    pipeline.publish_status();

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
    if let Some(server) = metrics_server {
        server.abort();
    }
    read.map_err(RunError::Reader)?;
    let events_subscribers_dropped = pipeline
        .hub
        .as_ref()
        .map_or(0, |h| h.stats().subscribers_dropped);

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
        events_subscribers_dropped,
        kernel_counters: kernel.named().collect(),
        lost: kernel.lost() + decode_errors + output_dropped,
        probes: capture.probes.clone(),
        missing_kernel_fields: capture.missing_fields.clone(),
        bootstrap: bootstrap_stats,
        cgroups_known: cgroup_stats.entries,
        cgroups_evicted: cgroup_stats.evicted,
        processes_known: process_stats.entries,
        processes_evicted: process_stats.evicted,
        kubelet: kubelet.map(|k| k.state()),
        apiserver: apiserver.as_ref().map(|a| a.state()),
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
