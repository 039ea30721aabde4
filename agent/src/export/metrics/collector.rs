//! Encodes every family at scrape time (prometheus-client's custom [`Collector`]): the workload
//! series with labels resolved now by the [`LabelSource`], and the agent's health.

use std::{
    fmt::{self, Write as _},
    sync::Arc,
};

use prometheus_client::{
    collector::Collector,
    encoding::{
        DescriptorEncoder, EncodeLabel, EncodeLabelKey, EncodeLabelSet, EncodeMetric,
        LabelKeyEncoder, LabelSetEncoder, MetricEncoder, NoLabelSet,
    },
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
};

use super::{
    health::Health,
    labels::{LabelSource, WORKLOAD_LABEL_NAMES},
    registry::{ConnKey, WorkloadRegistry, WorkloadSeries},
    series::{CONNECT_BUCKETS, ConnCounts, Histogram, RTT_BUCKETS},
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

/// A label set whose leading pairs were rendered once per scrape (`a="1",b="2"`), followed by
/// one `key="value"` pair. Each sample then costs one label encode instead of ten: the rendered
/// part goes through prometheus-client's label-key writer verbatim (it is already escaped), the
/// last value through its value escaping.
pub(super) struct Labels<'a> {
    pub(super) rendered: &'a str,
    /// More rendered pairs after `rendered` (may be empty).
    pub(super) more: &'a str,
    pub(super) key: &'a str,
    pub(super) value: &'a str,
}

/// The rendered parts and the last key, written as is.
struct Verbatim<'a>([&'a str; 3]);

impl EncodeLabelKey for Verbatim<'_> {
    fn encode(&self, encoder: &mut LabelKeyEncoder) -> fmt::Result {
        let [rendered, more, key] = self.0;
        for part in [rendered, more] {
            if !part.is_empty() {
                encoder.write_str(part)?;
                encoder.write_str(",")?;
            }
        }
        encoder.write_str(key)
    }
}

impl EncodeLabelSet for Labels<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> fmt::Result {
        if self.key.is_empty() {
            return Ok(());
        }
        (Verbatim([self.rendered, self.more, self.key]), self.value).encode(encoder.encode_label())
    }
}

impl<'a> Labels<'a> {
    pub(super) const NONE: Labels<'static> = Labels {
        rendered: "",
        more: "",
        key: "",
        value: "",
    };

    pub(super) fn one(key: &'a str, value: &'a str) -> Self {
        Labels {
            rendered: "",
            more: "",
            key,
            value,
        }
    }
}

/// Appends `key="value"` (value escaped as the text format wants) to `out`.
pub(super) fn render(out: &mut String, key: &str, value: &str) {
    if !out.is_empty() {
        out.push(',');
    }
    out.push_str(key);
    out.push_str("=\"");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
}

pub(super) fn counter(m: &mut MetricEncoder, labels: &Labels, v: u64) -> fmt::Result {
    ConstCounter::new(v).encode(m.encode_family(labels)?)
}

pub(super) fn gauge<V: prometheus_client::encoding::EncodeGaugeValue + Default + fmt::Debug>(
    m: &mut MetricEncoder,
    labels: &Labels,
    v: V,
) -> fmt::Result
where
    ConstGauge<V>: EncodeMetric,
{
    ConstGauge::new(v).encode(m.encode_family(labels)?)
}

fn histogram<const N: usize>(
    m: &mut MetricEncoder,
    labels: &Labels,
    h: &Histogram<N>,
    bounds: &[f64; N],
) -> fmt::Result {
    m.encode_family(labels)?.encode_histogram::<NoLabelSet>(
        h.sum,
        h.count,
        &h.encoder_buckets(bounds),
        None,
    )
}

/// A workload with its labels rendered for this scrape.
struct Resolved<'a> {
    /// All eight workload labels, rendered; the first seven end at `head`.
    all: String,
    head: usize,
    /// The eighth (`systemd_unit`) value.
    unit: Arc<str>,
    series: &'a WorkloadSeries,
}

impl Resolved<'_> {
    fn labels(&self) -> Labels<'_> {
        Labels {
            rendered: &self.all[..self.head],
            more: "",
            key: WORKLOAD_LABEL_NAMES[7],
            value: &self.unit,
        }
    }

    fn conn_labels<'a>(&'a self, key: &'a ConnKey) -> Labels<'a> {
        Labels {
            rendered: &self.all,
            more: key.direction.rendered_label(),
            key: "remote",
            value: &key.remote,
        }
    }
}

/// One connection-level counter family: name, help, value.
type ConnValue = fn(&ConnCounts) -> u64;
/// A workload-level counter family: name, help, value.
type ProcFamily = (&'static str, &'static str, fn(&WorkloadSeries) -> u64);

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
        let resolved: Vec<Resolved> = guard
            .workloads()
            .iter()
            .map(|(id, series)| {
                let labels = self.labels.labels(id);
                let pairs = labels.pairs();
                let mut all = String::with_capacity(200);
                for (k, v) in &pairs[..7] {
                    render(&mut all, k, v);
                }
                let head = all.len();
                render(&mut all, pairs[7].0, pairs[7].1);
                Resolved {
                    all,
                    head,
                    unit: labels.systemd_unit.unwrap_or_else(|| Arc::from("")),
                    series,
                }
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
                counter(&mut m, &r.labels(), value(r.series))?;
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
                let labels = Labels {
                    rendered: &r.all,
                    more: "",
                    key: "exit_class",
                    value: class,
                };
                counter(&mut m, &labels, v)?;
            }
        }

        let conns: Vec<(&Resolved, &ConnKey, &ConnCounts)> = resolved
            .iter()
            .flat_map(|r| r.series.conns.iter().map(move |(k, c)| (r, k, c)))
            .collect();
        for (name, help, value) in CONN_COUNTERS {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (r, k, c) in &conns {
                counter(&mut m, &r.conn_labels(k), value(c))?;
            }
        }
        let mut m = encoder.encode_descriptor(
            "sonde_tcp_connections_failed",
            "TCP connections that never established, by reason (refused, timeout, reset, \
             host_unreachable, network_unreachable, aborted, errno_<n>)",
            None,
            MetricType::Counter,
        )?;
        let mut more = String::new();
        for (r, k, c) in &conns {
            for (reason, n) in &c.failed {
                more.clear();
                more.push_str(k.direction.rendered_label());
                render(&mut more, "remote", &k.remote);
                let labels = Labels {
                    rendered: &r.all,
                    more: &more,
                    key: "reason",
                    value: reason,
                };
                counter(&mut m, &labels, *n)?;
            }
        }
        let mut m = encoder.encode_descriptor(
            "sonde_tcp_connect_duration_seconds",
            "Handshake time: SYN to established (outbound), first SYN received to established \
             (inbound)",
            None,
            MetricType::Histogram,
        )?;
        for (r, k, c) in &conns {
            histogram(&mut m, &r.conn_labels(k), &c.connect, &CONNECT_BUCKETS)?;
        }
        let mut m = encoder.encode_descriptor(
            "sonde_tcp_rtt_seconds",
            "Smoothed round-trip time of each connection when it closed",
            None,
            MetricType::Histogram,
        )?;
        for (r, k, c) in &conns {
            histogram(&mut m, &r.conn_labels(k), &c.rtt, &RTT_BUCKETS)?;
        }
        Ok(())
    }
}

impl Collector for SondeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        self.encode_workloads(&mut encoder)?;
        super::health::encode(&self.health.model(), &self.registry, &mut encoder)
    }
}
