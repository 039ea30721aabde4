//! The pipeline driven with synthetic kernel records: every sink sees each event once, with
//! one attribution; NDJSON and /metrics name a connection's remote end alike.

use std::{
    io::Write,
    net::{IpAddr, Ipv6Addr},
    sync::{Arc, Mutex},
};

use sonde_common::record::{ConnRecord, ExecRecord, conn_flags, direction};

use super::*;
use crate::{
    event::{ConnEvent, ConnPhase},
    export::{
        Context, OutputFormat,
        metrics::{Metrics, MetricsConfig, pipeline::PipelineMetrics},
        output::EventOutput,
        writer::OutputWriter,
    },
    kube::{ObjectName, RemoteIndex, services::ServiceEntry},
    node::NodeConfig,
};

/// A destination the test can read after the writer thread is done.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What a sink saw of one event: its type, direction, remote and JSON line.
struct SeenEvent(
    &'static str,
    Option<&'static str>,
    Option<crate::kube::Remote>,
    Vec<u8>,
);

/// What a sink saw.
#[derive(Default)]
struct Seen {
    events: Vec<SeenEvent>,
    batches: usize,
}

struct Recorder(Arc<Mutex<Seen>>);

impl Sink for Recorder {
    fn event(&mut self, ev: &Attributed<'_>, fmt: &mut Formatter) {
        let line = fmt.json(ev).to_vec();
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        seen.events.push(SeenEvent(
            ev.type_name(),
            ev.attr.direction,
            ev.attr.remote.as_deref().cloned(),
            line,
        ));
    }
    fn end_batch(&mut self, _end: &BatchEnd<'_>) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).batches += 1;
    }
    fn health(&mut self, _node: &NodeModel, health: &mut Health) {
        health.output_dropped = 7;
    }
}

fn pipeline(kube: KubeJoin) -> (Pipeline<'static>, health::HealthReceiver) {
    let node = NodeModel::new(&NodeConfig::default()).expect("this host's cgroup v2 hierarchy");
    let (tx, rx) = health::channel(Health::default());
    let base = HealthBase {
        probes: Vec::new(),
        missing_kernel_fields: Vec::new(),
        ring_buffer_bytes: 4096,
    };
    (
        Pipeline::new(node, kube, Formatter::new(Context::new()), base, tx),
        rx,
    )
}

/// An outbound connection from cgroup 1 (the root) to `daddr:443`.
fn conn_record(family: u16, daddr: IpAddr) -> ConnRecord {
    // SAFETY: all-zero is a valid value of this plain-data record.
    let mut c: ConnRecord = unsafe { std::mem::zeroed() };
    c.family = family;
    c.direction = direction::OUTBOUND;
    c.flags = conn_flags::OWNER_KNOWN;
    c.owner.cgroup_id = 1;
    c.owner.pid = 4242;
    match daddr {
        IpAddr::V4(v4) => c.daddr[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => c.daddr.copy_from_slice(&v6.octets()),
    }
    c.dport = 443;
    c.sport = 40000;
    c.opened_ns = 1_000_000;
    c.established_ns = 1_200_000;
    c.bytes_sent = 10;
    c.bytes_received = 20;
    c
}

#[test]
fn every_sink_sees_each_event_once_with_one_attribution() {
    let (mut p, health_rx) = pipeline(KubeJoin::default());
    let seen: [Arc<Mutex<Seen>>; 2] = Default::default();
    p.sink(Recorder(Arc::clone(&seen[0])));
    p.sink(Recorder(Arc::clone(&seen[1])));
    // SAFETY: all-zero is a valid value of this plain-data record.
    let mut exec: ExecRecord = unsafe { std::mem::zeroed() };
    exec.task.pid = 99;
    p.event(&Event::Exec(&exec));
    let c = conn_record(sonde_common::AF_INET, "192.0.2.7".parse().expect("ip"));
    for phase in [ConnPhase::Open, ConnPhase::Close] {
        p.event(&Event::Conn(ConnEvent { phase, record: &c }));
    }
    RecordSink::end_batch(&mut p, 3);
    for s in &seen {
        let s = s.lock().unwrap_or_else(|e| e.into_inner());
        let types: Vec<_> = s.events.iter().map(|e| e.0).collect();
        assert_eq!(types, ["process_exec", "tcp_open", "tcp_close"]);
        assert_eq!(s.events[1].1, Some("outbound"));
        assert_eq!(s.batches, 1);
    }
    // One formatting shared: both sinks got the same bytes, one line per event.
    let (a, b) = (seen[0].lock().expect("lock"), seen[1].lock().expect("lock"));
    for (x, y) in a.events.iter().zip(&b.events) {
        assert_eq!(x.3, y.3);
        assert_eq!(x.3.iter().filter(|&&b| b == b'\n').count(), 1);
    }
    assert_ne!(a.events[1].3, a.events[2].3, "each event is formatted anew");
    // The health model counts what the pipeline delivered and takes each sink's part.
    let h = health_rx.borrow().clone();
    assert_eq!(h.events.get("tcp_open"), Some(&1));
    assert_eq!(h.events.get("process_exec"), Some(&1));
    assert_eq!(h.output_dropped, 7);
    assert_eq!(h.losses().total(), 7);
    assert_eq!(h.ring_buffer_bytes, 4096);
}

/// The same connection, over IPv4 and over a dual-stack socket (IPv4-mapped IPv6), to a
/// Service's ClusterIP: the NDJSON event and the metric series name the same Service.
#[test]
fn ndjson_and_metrics_name_the_same_remote_for_ipv4_and_ipv4_mapped_peers() {
    let remote = Arc::new(RemoteIndex::new());
    remote.upsert_service(
        ObjectName::new("shop", "web"),
        ServiceEntry {
            cluster_ips: vec!["10.96.0.10".parse().expect("ip")],
            ports: vec![443],
        },
    );
    let kube = KubeJoin {
        remote: Some(Arc::clone(&remote)),
        ..KubeJoin::default()
    };
    let (mut p, _health) = pipeline(kube);
    let out = Shared::default();
    let writer = OutputWriter::spawn(Box::new(out.clone()), 4, 1 << 16).expect("writer thread");
    p.sink(EventOutput::new(OutputFormat::Json, writer));
    let metrics = Metrics::new(&MetricsConfig::default());
    p.sink(PipelineMetrics::new(&metrics));
    let v4 = conn_record(sonde_common::AF_INET, "10.96.0.10".parse().expect("ip"));
    let mapped = conn_record(
        sonde_common::AF_INET6,
        IpAddr::V6(
            "10.96.0.10"
                .parse::<std::net::Ipv4Addr>()
                .expect("ip")
                .to_ipv6_mapped(),
        ),
    );
    let outside = conn_record(
        sonde_common::AF_INET6,
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
    );
    for c in [&v4, &mapped, &outside] {
        for phase in [ConnPhase::Open, ConnPhase::Close] {
            p.event(&Event::Conn(ConnEvent { phase, record: c }));
        }
    }
    RecordSink::end_batch(&mut p, 6);
    let (_, finished) = p.finish();
    finished.expect("output flushed");

    let text = String::from_utf8(out.0.lock().expect("lock").clone()).expect("utf-8");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("NDJSON"))
        .collect();
    assert_eq!(lines.len(), 6, "{text}");
    for l in &lines[..4] {
        assert_eq!(l["remote_kind"], "service", "{l}");
        assert_eq!(l["remote_namespace"], "shop");
        assert_eq!(l["remote_name"], "web");
    }
    for l in &lines[4..] {
        assert_eq!(l["remote_kind"], "external", "{l}");
    }
    let exposition = metrics.encode().expect("encodes");
    let opened = |remote: &str| {
        exposition
            .lines()
            .find(|l| {
                l.starts_with("sonde_tcp_connections_opened_total{")
                    && l.contains(&format!("remote=\"{remote}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    // Both families of the same peer add up in one series named like the events.
    assert_eq!(opened("service:shop/web"), Some(2.0), "{exposition}");
    assert_eq!(opened("external"), Some(1.0), "{exposition}");
    assert_eq!(opened("unknown"), None, "{exposition}");
}

#[test]
fn before_any_service_is_known_no_remote_is_called_external() {
    let kube = KubeJoin {
        remote: Some(Arc::new(RemoteIndex::new())),
        ..KubeJoin::default()
    };
    let (mut p, _health) = pipeline(kube);
    let seen = Arc::new(Mutex::new(Seen::default()));
    p.sink(Recorder(Arc::clone(&seen)));
    let c = conn_record(sonde_common::AF_INET, "10.96.0.10".parse().expect("ip"));
    p.event(&Event::Conn(ConnEvent {
        phase: ConnPhase::Open,
        record: &c,
    }));
    let seen = seen.lock().expect("lock");
    assert_eq!(seen.events[0].2, None);
    let line: serde_json::Value = serde_json::from_slice(&seen.events[0].3).expect("json");
    assert!(line["remote_kind"].is_null(), "{line}");
}
