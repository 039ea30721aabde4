//! Encodes every family at scrape time (prometheus-client's custom [`Collector`]): the workload
//! series with labels resolved now by the [`LabelSource`], and the agent's health.

use std::{fmt, sync::Arc};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
};

use super::{
    health::{EVENT_TYPES, Health, SelfUsage},
    labels::{LabelSource, WorkloadLabels},
    registry::{ConnKey, WorkloadRegistry, WorkloadSeries},
    series::{ConnCounts, Histogram},
};

pub struct SondeCollector {
    pub(super) registry: Arc<WorkloadRegistry>,
    pub(super) health: Arc<Health>,
    pub(super) labels: Arc<dyn LabelSource>,
}

impl fmt::Debug for SondeCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SondeCollector")
            .field("series", &self.registry.series())
            .finish()
    }
}

type Pairs<'a> = [(&'static str, &'a str)];

/// A label set of borrowed pairs: the workload's labels, then the series' own.
struct Labels<'a>(&'a Pairs<'a>, &'a Pairs<'a>);

impl EncodeLabelSet for Labels<'_> {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelSetEncoder,
    ) -> Result<(), fmt::Error> {
        self.0.encode(encoder)?;
        self.1.encode(encoder)
    }
}

fn counter(m: &mut MetricEncoder, labels: &Labels, v: u64) -> fmt::Result {
    ConstCounter::new(v).encode(m.encode_family(labels)?)
}

fn gauge<V: prometheus_client::encoding::EncodeGaugeValue + Default + fmt::Debug>(
    m: &mut MetricEncoder,
    labels: &Labels,
    v: V,
) -> fmt::Result
where
    ConstGauge<V>: EncodeMetric,
{
    ConstGauge::new(v).encode(m.encode_family(labels)?)
}

fn histogram(m: &mut MetricEncoder, labels: &Labels, h: &Histogram) -> fmt::Result {
    m.encode_family(labels)?.encode_histogram::<NoLabelSet>(
        h.sum,
        h.count,
        &h.encoder_buckets(),
        None,
    )
}

/// A workload with its labels resolved for this scrape.
struct Resolved<'a> {
    labels: [(&'static str, &'a str); 8],
    series: &'a WorkloadSeries,
}

/// One connection-level counter family: name, help, value.
type ConnValue = fn(&ConnCounts) -> u64;
/// A workload-level counter family: name, help, value.
type ProcFamily = (&'static str, &'static str, fn(&WorkloadSeries) -> u64);
/// A connection-level histogram family: name, help, histogram.
type HistogramFamily = (&'static str, &'static str, fn(&ConnCounts) -> &Histogram);

const CONN_COUNTERS: [(&str, &str, ConnValue); 5] = [
    (
        "sonde_tcp_connections_opened",
        "TCP connections established (outbound: connect() completed; inbound: accepted)",
        |c| c.opened,
    ),
    (
        "sonde_tcp_connections_closed",
        "TCP connections closed after being established",
        |c| c.closed,
    ),
    (
        "sonde_tcp_sent_bytes",
        "Payload bytes sent on closed connections, each byte once (retransmissions excluded)",
        |c| c.sent_bytes,
    ),
    (
        "sonde_tcp_received_bytes",
        "Payload bytes received on closed connections",
        |c| c.received_bytes,
    ),
    (
        "sonde_tcp_retransmits",
        "TCP segments retransmitted on closed connections",
        |c| c.retransmits,
    ),
];

impl SondeCollector {
    fn encode_workloads(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let guard = self.registry.lock();
        let labels: Vec<WorkloadLabels> = guard
            .workloads()
            .keys()
            .map(|id| self.labels.labels(id))
            .collect();
        let resolved: Vec<Resolved> = guard
            .workloads()
            .values()
            .zip(labels.iter())
            .map(|(series, l)| Resolved {
                labels: l.pairs(),
                series,
            })
            .collect();

        let procs: [ProcFamily; 2] = [
            (
                "sonde_process_starts",
                "Programs started (execve) in the workload",
                |w| w.procs.execs,
            ),
            (
                "sonde_process_forks",
                "Processes created (fork/clone of a new process, not a thread)",
                |w| w.procs.forks,
            ),
        ];
        for (name, help, value) in procs {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for r in &resolved {
                counter(&mut m, &Labels(&r.labels, &[]), value(r.series))?;
            }
        }
        let mut m = encoder.encode_descriptor(
            "sonde_process_exits",
            "Processes ended, by how: ok (exit code 0), error (non-zero code), signal (killed)",
            None,
            MetricType::Counter,
        )?;
        for r in &resolved {
            let p = &r.series.procs;
            for (class, v) in [
                ("ok", p.exits_ok),
                ("error", p.exits_error),
                ("signal", p.exits_signal),
            ] {
                counter(&mut m, &Labels(&r.labels, &[("exit_class", class)]), v)?;
            }
        }

        let conns: Vec<(&Resolved, &ConnKey, &ConnCounts)> = resolved
            .iter()
            .flat_map(|r| r.series.conns.iter().map(move |(k, c)| (r, k, c)))
            .collect();
        for (name, help, value) in CONN_COUNTERS {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (r, k, c) in &conns {
                let extra = [("direction", k.direction.as_str()), ("remote", &*k.remote)];
                counter(&mut m, &Labels(&r.labels, &extra), value(c))?;
            }
        }
        let mut m = encoder.encode_descriptor(
            "sonde_tcp_connections_failed",
            "TCP connections that never established, by reason (refused, timeout, reset, \
             host_unreachable, network_unreachable, aborted, errno_<n>)",
            None,
            MetricType::Counter,
        )?;
        for (r, k, c) in &conns {
            for (reason, n) in &c.failed {
                let extra = [
                    ("direction", k.direction.as_str()),
                    ("remote", &*k.remote),
                    ("reason", reason.as_ref()),
                ];
                counter(&mut m, &Labels(&r.labels, &extra), *n)?;
            }
        }
        let histograms: [HistogramFamily; 2] = [
            (
                "sonde_tcp_connect_duration_seconds",
                "Handshake time: SYN to established (outbound), first SYN received to \
                 established (inbound)",
                |c| &c.connect,
            ),
            (
                "sonde_tcp_rtt_seconds",
                "Smoothed round-trip time of each connection when it closed",
                |c| &c.rtt,
            ),
        ];
        for (name, help, value) in histograms {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
            for (r, k, c) in &conns {
                let extra = [("direction", k.direction.as_str()), ("remote", &*k.remote)];
                histogram(&mut m, &Labels(&r.labels, &extra), value(c))?;
            }
        }
        Ok(())
    }

    fn encode_health(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let none = Labels(&[], &[]);
        let h = self.health.snapshot().clone();
        let mut m = encoder.encode_descriptor(
            "sonde_events",
            "Events delivered by the kernel and decoded, by type (process_found: found running \
             at start-up)",
            None,
            MetricType::Counter,
        )?;
        let mut types: Vec<&str> = EVENT_TYPES.to_vec();
        types.extend(h.events.keys().filter(|t| !EVENT_TYPES.contains(t)));
        for t in types {
            let v = h.events.get(t).copied().unwrap_or(0);
            counter(&mut m, &Labels(&[("type", t)], &[]), v)?;
        }

        let mut m = encoder.encode_descriptor(
            "sonde_events_lost",
            "Events lost, by reason: ringbuf_full_<kind> (kernel ring buffer full), \
             decode_error, output_dropped (the event stream could not keep up)",
            None,
            MetricType::Counter,
        )?;
        for k in h.kernel.iter().filter(|k| k.loss) {
            counter(&mut m, &Labels(&[("reason", k.name)], &[]), k.value)?;
        }
        counter(
            &mut m,
            &Labels(&[("reason", "decode_error")], &[]),
            h.decode_errors,
        )?;
        counter(
            &mut m,
            &Labels(&[("reason", "output_dropped")], &[]),
            h.output_dropped,
        )?;

        let mut m = encoder.encode_descriptor(
            "sonde_events_degraded",
            "Events delivered with less detail, by kernel counter: conn_map_full, \
             conn_no_state, accept_no_state, read_failed",
            None,
            MetricType::Counter,
        )?;
        for k in h.kernel.iter().filter(|k| !k.loss) {
            counter(&mut m, &Labels(&[("reason", k.name)], &[]), k.value)?;
        }

        let mut m = encoder.encode_descriptor(
            "sonde_probes",
            "Hooks of each eBPF program, by state (attached, disabled, unavailable, failed)",
            None,
            MetricType::Gauge,
        )?;
        for (program, state, n) in &h.probes {
            gauge(
                &mut m,
                &Labels(&[("program", program), ("state", state)], &[]),
                i64::from(*n),
            )?;
        }

        let gauges: [(&str, &str, i64); 4] = [
            (
                "sonde_ring_buffer_size_bytes",
                "Size of the kernel-to-agent ring buffer",
                h.ring_buffer_bytes as i64,
            ),
            (
                "sonde_process_table_entries",
                "Processes in the agent's process table",
                h.processes_known as i64,
            ),
            (
                "sonde_cgroups_known",
                "Cgroups in the agent's cgroup index",
                h.cgroups_known as i64,
            ),
            (
                "sonde_metrics_series",
                "Label sets held by the metrics registry (workloads, connection keys, failure \
                 reasons)",
                self.registry.series() as i64,
            ),
        ];
        for (name, help, v) in gauges {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            gauge(&mut m, &none, v)?;
        }
        let mut m = encoder.encode_descriptor(
            "sonde_metrics_series_limit",
            "The configured max_series",
            None,
            MetricType::Gauge,
        )?;
        gauge(&mut m, &none, self.registry.max_series() as i64)?;

        let counters: [(&str, &str, u64); 5] = [
            (
                "sonde_process_table_evicted",
                "Processes evicted from the full process table",
                h.processes_evicted,
            ),
            (
                "sonde_cgroups_evicted",
                "Cgroups dropped from the index (removed past their grace period, or evicted)",
                h.cgroups_evicted,
            ),
            (
                "sonde_metrics_series_refused",
                "New label sets refused because max_series was reached (their counts are lost)",
                self.registry.refused(),
            ),
            (
                "sonde_metrics_series_evicted",
                "Label sets of idle workloads dropped to make room under max_series",
                self.registry.evicted(),
            ),
            (
                "sonde_metrics_publish_deferred",
                "Times the pipeline postponed publishing counts because a scrape was encoding",
                h.publish_deferred,
            ),
        ];
        for (name, help, v) in counters {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            counter(&mut m, &none, v)?;
        }

        if let Some(k) = self.health.kubelet() {
            let unix = |t: Option<std::time::SystemTime>| {
                t.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0.0, |d| d.as_secs_f64())
            };
            let mut m = encoder.encode_descriptor(
                "sonde_kubelet_sync_last_success_timestamp_seconds",
                "When the kubelet pod list was last fetched successfully (Unix time; 0: never)",
                None,
                MetricType::Gauge,
            )?;
            gauge(&mut m, &none, unix(k.last_success))?;
            let mut m = encoder.encode_descriptor(
                "sonde_kubelet_sync_consecutive_failures",
                "Failed kubelet fetches since the last success (0: healthy)",
                None,
                MetricType::Gauge,
            )?;
            gauge(&mut m, &none, i64::from(k.consecutive_failures))?;
            let mut m = encoder.encode_descriptor(
                "sonde_kubelet_syncs",
                "Kubelet pod list fetches, by result",
                None,
                MetricType::Counter,
            )?;
            counter(&mut m, &Labels(&[("result", "success")], &[]), k.successes)?;
            counter(&mut m, &Labels(&[("result", "failure")], &[]), k.failures)?;
        }

        if let Some(usage) = SelfUsage::read() {
            let mut m = encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(usage.cpu_seconds).encode(m.encode_family(&none)?)?;
            let mut m = encoder.encode_descriptor(
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                None,
                MetricType::Gauge,
            )?;
            gauge(&mut m, &none, usage.resident_bytes as i64)?;
        }
        Ok(())
    }
}

impl Collector for SondeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        self.encode_workloads(&mut encoder)?;
        self.encode_health(&mut encoder)
    }
}
