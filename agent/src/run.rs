//! `sonde run`: builds the sources (capture, start-up scan, Kubernetes metadata) and the sinks
//! (event output, event hub, metrics, workload table) and wires them into the
//! [`Pipeline`]; runs until a signal, `--duration`, or the output going away.

use std::{collections::BTreeMap, io::Write, path::PathBuf, sync::Arc, time::Duration};

use serde::Serialize;
use tokio::sync::watch;

use crate::{
    api::{self, ApiConfig, ApiState},
    capture::{Capture, CaptureConfig, CaptureError, ProbeStatus},
    config::Config,
    enrich::KubeJoin,
    export::{
        Context, OutputFormat,
        fanout::{EventsConfig, HubSink, StreamHub},
        metrics::{
            self, Metrics, MetricsConfig, labels::PodStoreLabels, pipeline::PipelineMetrics,
        },
        output::{BATCH_BYTES, Batcher, EventOutput, OUTPUT_QUEUE},
        rotate::{RotateError, RotateOptions, RotatingFile},
        workloads::{SummaryOutput, WorkloadTable},
        writer::OutputWriter,
    },
    kube::{
        ApiserverHandle, ApiserverSyncState, KubeletConfig, KubeletSyncState, KubernetesConfig,
        PodStore, RemoteIndex, detect, resolve_node_name, spawn_apiserver_source,
        spawn_kubelet_source, workload::Workloads,
    },
    node::{self, NodeConfig, NodeModel, cgroup::CgroupError},
    pipeline::{
        Formatter, HealthBase, Pipeline, SinkError,
        health::{self, BootstrapStats, Health},
    },
};

#[derive(Clone, Debug)]
pub struct RunOptions {
    pub capture: CaptureConfig,
    pub node: NodeConfig,
    pub output: OutputFormat,
    /// Show the per-workload table instead of the event stream; `true` redraws in place.
    pub summary: Option<bool>,
    pub duration: Option<Duration>,
    pub stats_file: Option<PathBuf>,
    /// The kubelet pod source; `None` runs without Kubernetes metadata.
    pub kubelet: Option<KubeletConfig>,
    /// Serve Prometheus metrics (`None`: no endpoint, no aggregation).
    pub metrics: Option<MetricsConfig>,
    /// NDJSON to a rotated file instead of the destination given to [`run`].
    pub output_file: Option<RotateOptions>,
    /// The HTTP API (`/v1/events`, `/v1/status`); `None` turns it off.
    pub api: Option<ApiConfig>,
    /// The event stream's fan-out to API readers.
    pub events: EventsConfig,
    /// This node's name (`node_name`), when configured.
    pub node_name: Option<String>,
    /// The apiserver source's configuration (`kubernetes.*`).
    pub kubernetes: KubernetesConfig,
    /// Contend for the cluster's leader Lease (`leader_election.*`).
    pub leader_election: crate::cluster::leader::LeaderElectionConfig,
    /// The leader's collection of the cluster's events (`kube_events.*`).
    pub kube_events: crate::cluster::events::KubeEventsConfig,
    /// Control-plane health (`controlplane.*`).
    pub controlplane: crate::cluster::controlplane::ControlPlaneConfig,
}

impl RunOptions {
    /// The `sonde run` options this configuration describes. `duration`, `summary` and
    /// `stats_file` are per-run flags, not configuration: the caller sets them.
    pub fn from_config(config: &Config, stdout_is_terminal: bool) -> Self {
        Self {
            capture: config.capture.clone(),
            node: config.node.clone(),
            output: config.output.format.resolve(stdout_is_terminal),
            summary: None,
            duration: None,
            stats_file: None,
            node_name: config.node_name.clone(),
            kubelet: kubelet_options(config),
            kubernetes: config.kubernetes.clone(),
            leader_election: config.leader_election.clone(),
            kube_events: config.kube_events.clone(),
            controlplane: config.controlplane.clone(),
            metrics: config.metrics.enabled.then(|| config.metrics.clone()),
            output_file: config.output.file.clone().map(|path| RotateOptions {
                path,
                max_bytes: config.output.rotate_size,
                keep: u32::try_from(config.output.rotate_keep).unwrap_or(u32::MAX),
            }),
            api: config.api.enabled.then(|| config.api.clone()),
            events: config.events.clone(),
        }
    }
}

/// How often the pipeline takes the leader's events while the leadership is handed over.
const HANDOVER_DRAIN: Duration = Duration::from_millis(10);

/// The kubelet source's configuration, or `None` when it is off: `kubelet.enabled`, else on
/// when `kubelet.url` is set or the host looks like a Kubernetes node.
pub(crate) fn kubelet_options(config: &Config) -> Option<KubeletConfig> {
    let kubelet = &config.kubelet;
    let enabled = match kubelet.enabled {
        Some(on) => on,
        None if kubelet.url.is_some() => true,
        None => {
            let host = config.node.host();
            match detect::kubernetes_node(&host, kubelet.token_file.as_deref()) {
                Some(reason) => {
                    tracing::info!(%reason, "Kubernetes node detected: kubelet metadata on");
                    true
                }
                None => {
                    tracing::info!(
                        "no Kubernetes detected: running without pod metadata \
                         (kubelet.enabled)"
                    );
                    false
                }
            }
        }
    };
    enabled.then(|| crate::kube::kubelet::host::with_host_defaults(kubelet.clone()))
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
    Sink(#[from] SinkError),
    #[error(transparent)]
    OutputFile(#[from] RotateError),
    /// The metrics endpoint or the API cannot listen (each message names its own flag).
    #[error(transparent)]
    Listen(#[from] crate::http::BindError),
    #[error("cannot write statistics to {path}: {source}")]
    Stats {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("ring buffer reader failed: {0}")]
    Reader(std::io::Error),
    #[error(transparent)]
    Token(#[from] api::auth::TokenError),
    #[error(transparent)]
    Tls(#[from] crate::tls::server::ServerTlsError),
}

impl RunError {
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Capture(e) => e.exit_code(),
            RunError::Node(_) => 69,
            RunError::Stats { .. } | RunError::OutputFile(_) => 73,
            RunError::Listen(_) => 75,
            RunError::Token(_) | RunError::Tls(_) => 78,
            _ => 1,
        }
    }
}

/// What a run did, written by `--stats-file` and logged at the end: a serialisation of the
/// final health model.
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

impl From<&Health> for RunStats {
    fn from(h: &Health) -> Self {
        let lost = h.losses();
        Self {
            events: h.events.clone(),
            decode_errors: lost.decode_errors,
            output_dropped: lost.output_dropped,
            events_subscribers_dropped: lost.events_subscribers_dropped,
            kernel_counters: h.kernel.named().collect(),
            lost: lost.total(),
            probes: h.probes.clone(),
            missing_kernel_fields: h.missing_kernel_fields.clone(),
            bootstrap: h.bootstrap.clone(),
            cgroups_known: h.cgroups.entries,
            cgroups_evicted: h.cgroups.evicted,
            processes_known: h.processes.entries,
            processes_evicted: h.processes.evicted,
            kubelet: h.kubelet.clone(),
            apiserver: h.apiserver.clone(),
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

/// Resolves when `signal` fires; never, if its handler could not be installed.
async fn received(signal: Option<&mut tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
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
    if !config.has_credentials() {
        tracing::info!(
            "apiserver metadata off: no kubernetes.kubeconfig, not running in a pod, and no \
             kubelet kubeconfig on this host"
        );
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
        dest = Box::new(RotatingFile::open(file)?);
        opts.output = OutputFormat::Json;
    }
    // A token file that cannot be read stops the run before anything is loaded.
    let api_token = match opts.api.as_ref().and_then(|a| a.token_file.as_deref()) {
        Some(path) => Some(Arc::new(api::auth::BearerToken::load(path)?)),
        None => None,
    };
    let api_tls = match opts.api.as_ref().and_then(ApiConfig::tls_files) {
        Some(files) => Some(crate::tls::server::ServerTls::load(files)?),
        None => None,
    };
    let api_listener = match &opts.api {
        Some(api) => Some(api::bind(api).await?),
        None => None,
    };
    let metrics_listener = match &opts.metrics {
        Some(m) => Some((
            metrics::http::bind(m.listen).await?,
            Metrics::new(m),
            m.header_timeout,
        )),
        None => None,
    };
    let mut capture = Capture::start(&opts.capture)?;
    // Probes are attached: now look at what already exists (rule 5). The cgroup index is quick
    // and needed to attribute the first records; processes and sockets are scanned off the
    // capture path and merged when ready.
    let node = NodeModel::new(&opts.node)?;
    let (bootstrap_tx, bootstrap_rx) = tokio::sync::oneshot::channel();
    let host = opts.node.host();
    tokio::task::spawn_blocking(move || {
        let _ = bootstrap_tx.send(node::scan(&host));
    });

    // Metadata sources.
    let pods = Arc::new(PodStore::new());
    let kubelet = opts
        .kubelet
        .clone()
        .map(|config| Arc::new(spawn_kubelet_source(config, Arc::clone(&pods))));
    let remote = Arc::new(RemoteIndex::new());
    let apiserver = start_apiserver(&opts, &pods, &remote);
    let workloads = apiserver
        .as_ref()
        .map_or_else(Workloads::by_name_only, |a| {
            Workloads::with_owners(a.owners())
        });
    let kube = KubeJoin {
        pods: Arc::clone(&pods),
        kubelet: kubelet.clone(),
        remote: apiserver.as_ref().map(|_| Arc::clone(&remote)),
        workloads: workloads.clone(),
        labels: apiserver
            .as_ref()
            .map(|a| a.labels())
            .filter(|l| l.wants_node() || l.wants_namespaces()),
        memo: Default::default(),
    };

    let (health_tx, health_rx) = health::channel(Health::default());
    let mut ctx = Context::new();
    ctx.pod_labels.clone_from(&opts.kubernetes.pod_labels);
    let base = HealthBase {
        probes: capture.probes.clone(),
        missing_kernel_fields: capture.missing_fields.clone(),
        ring_buffer_bytes: opts.capture.ring_buffer_size,
    };
    let Capture {
        reader, counters, ..
    } = &mut capture;
    let mut pipeline = Pipeline::new(node, kube, Formatter::new(ctx), base, health_tx);
    pipeline.kernel_counters(counters).bootstrap(bootstrap_rx);
    if let Some(a) = &apiserver {
        pipeline.apiserver(a.subscribe());
    }
    let cluster = crate::cluster::start(
        &opts.leader_election,
        &opts.kubernetes,
        &opts.kube_events,
        &opts.controlplane,
    )
    .await
    .map(|(cluster, feed)| {
        pipeline.leader(cluster.election());
        pipeline.kube_events(feed, cluster.events());
        cluster
    });
    let node_components = crate::cluster::controlplane::components::spawn(
        &opts.controlplane,
        opts.node.host().root(),
    );
    pipeline.controlplane(
        cluster.as_ref().and_then(|c| c.apiserver_health()),
        node_components.as_ref().map(|(_, rx)| rx.clone()),
    );

    // Sinks: the event stream (or the --summary table), the event hub, metrics, workloads.
    let writer = OutputWriter::spawn(dest, OUTPUT_QUEUE, BATCH_BYTES).map_err(RunError::Output)?;
    let output_closed = writer.closed_flag();
    match opts.summary {
        Some(clear) => pipeline.sink(WorkloadTable::new(
            Arc::clone(&pods),
            Some(SummaryOutput {
                out: Batcher::new(writer),
                clear,
            }),
        )),
        None => pipeline.sink(EventOutput::new(opts.output, writer)),
    };
    let mut servers = Vec::new();
    if let Some((listener, metrics, metrics_header_timeout)) = metrics_listener {
        // Pod names are resolved at scrape time: series counted before the kubelet knew a
        // container are labelled as soon as it does (rule 6).
        let metrics =
            metrics.with_label_source(Arc::new(PodStoreLabels(Arc::clone(&pods), workloads)));
        metrics.health.follow(health_rx.clone());
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "serving Prometheus metrics at http://{addr}/metrics");
        }
        let (server, stats) = metrics::http::spawn(
            listener,
            metrics::http::server_options(metrics_header_timeout),
            Arc::new(metrics.prometheus_registry()),
            Arc::clone(&metrics.health),
        );
        servers.push(server);
        pipeline.server("metrics", stats);
        pipeline.sink(PipelineMetrics::new(&metrics));
    }
    if let (Some(api), Some(listener)) = (&opts.api, api_listener) {
        let events = &opts.events;
        let (hub, handle) = StreamHub::new(events.subscriber_buffer, events.max_subscribers);
        let (server, stats) = api::serve(
            listener,
            api,
            events,
            ApiState {
                tls: api_tls,
                stream: handle,
                token: api_token,
                status: health_rx.clone(),
            },
        );
        servers.push(server);
        pipeline.server("api", stats);
        pipeline.sink(HubSink {
            hub,
            max_subscribers: events.max_subscribers,
        });
        if opts.summary.is_none() {
            pipeline.sink(WorkloadTable::new(Arc::clone(&pods), None));
        }
    }
    pipeline.publish_health();

    let (stop_tx, stop_rx) = watch::channel(false);
    spawn_stopper(opts.duration, stop_tx.clone());
    let stopped = stop_tx.clone();
    let release = cluster.map(|c| c.release_on_stop(stop_rx.clone()));
    // The output going away (`sonde run | head`) also ends the run.
    tokio::spawn(async move {
        while !output_closed.load(std::sync::atomic::Ordering::Acquire) {
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
    // However the run ended, the leadership is handed over before the agent exits; meanwhile
    // the pipeline keeps taking the leader's last Kubernetes events, so the token it writes
    // covers them.
    let _ = stopped.send(true);
    if let Some(release) = release {
        let mut release = std::pin::pin!(release);
        let mut tick = tokio::time::interval(HANDOVER_DRAIN);
        loop {
            tokio::select! {
                _ = &mut release => break,
                _ = tick.tick() => pipeline.drain_feed(),
            }
        }
    }
    for server in servers {
        server.abort();
    }
    if let Some((task, _)) = node_components {
        task.abort();
    }
    read.map_err(RunError::Reader)?;
    let (health, finished) = pipeline.finish();
    finished?;
    let stats = RunStats::from(health.as_ref());
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
