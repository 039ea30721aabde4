//! The agent's own health for /metrics: a serialisation of the pipeline's health model
//! ([`crate::pipeline::health::Health`], rebuilt about once a second), plus the process's CPU
//! time and memory read from /proc/self at scrape time.

use std::{
    collections::BTreeMap,
    fmt,
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use prometheus_client::{
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter},
};
use sonde_common::counter as kernel_counter;

use super::{
    collector::{Labels, counter, gauge},
    registry::WorkloadRegistry,
};
use crate::{
    http::ServerCounts,
    kube::{ApiserverSyncState, KindSyncState},
    pipeline::health::{self, HealthReceiver},
};

/// Event types always exposed (at 0 until seen), so every documented series exists.
pub const EVENT_TYPES: [&str; 7] = [
    "process_exec",
    "process_fork",
    "process_exit",
    "tcp_open",
    "tcp_close",
    "tcp_fail",
    "process_found",
];

/// The health model as the scrape sees it: the latest the pipeline published.
#[derive(Debug, Default)]
pub struct Health {
    model: Mutex<Option<HealthReceiver>>,
}

impl Health {
    /// Follows the pipeline's health model; until then, scrapes show an empty model.
    pub fn follow(&self, rx: HealthReceiver) {
        *self.model.lock().unwrap_or_else(|e| e.into_inner()) = Some(rx);
    }

    /// The latest model (an empty one before the pipeline published).
    pub fn model(&self) -> Arc<health::Health> {
        self.model
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map_or_else(
                || Arc::new(health::Health::default()),
                |rx| Arc::clone(&rx.borrow()),
            )
    }
}

/// This process's CPU time and resident memory, from /proc/self.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SelfUsage {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
}

impl SelfUsage {
    /// `None` (and the families absent) if /proc/self cannot be read.
    pub fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        // SAFETY: sysconf has no preconditions.
        let (hz, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        parse_self(&stat, &statm, hz, page)
    }
}

fn parse_self(stat: &str, statm: &str, hz: i64, page: i64) -> Option<SelfUsage> {
    // Fields after the command name (which may contain spaces and parentheses): state is
    // field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let rss_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    if hz <= 0 || page <= 0 {
        return None;
    }
    Some(SelfUsage {
        cpu_seconds: (utime + stime) as f64 / hz as f64,
        resident_bytes: rss_pages * page as u64,
    })
}

/// Encodes the health families (names and help texts in docs/metrics.md).
pub(super) fn encode(
    h: &health::Health,
    registry: &WorkloadRegistry,
    encoder: &mut DescriptorEncoder,
) -> fmt::Result {
    let none = Labels::NONE;
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
        counter(&mut m, &Labels::one("type", t), v)?;
    }

    let kernel = || {
        kernel_counter::NAMES
            .iter()
            .enumerate()
            .filter(|(_, name)| !name.is_empty())
            .map(|(i, name)| (*name, kernel_counter::is_loss(i as u32), h.kernel.0[i]))
    };
    let lost = h.losses();
    let mut m = encoder.encode_descriptor(
        "sonde_events_lost",
        "Events lost, by reason: ringbuf_full_<kind> (kernel ring buffer full), \
         decode_error, output_dropped (the event stream could not keep up)",
        None,
        MetricType::Counter,
    )?;
    for (name, _, value) in kernel().filter(|(_, loss, _)| *loss) {
        counter(&mut m, &Labels::one("reason", name), value)?;
    }
    counter(
        &mut m,
        &Labels::one("reason", "decode_error"),
        lost.decode_errors,
    )?;
    counter(
        &mut m,
        &Labels::one("reason", "output_dropped"),
        lost.output_dropped,
    )?;

    let mut m = encoder.encode_descriptor(
        "sonde_events_degraded",
        "Events delivered with less detail, by kernel counter: conn_map_full, \
         conn_no_state, accept_no_state, read_failed",
        None,
        MetricType::Counter,
    )?;
    for (name, _, value) in kernel().filter(|(_, loss, _)| !*loss) {
        counter(&mut m, &Labels::one("reason", name), value)?;
    }

    let mut m = encoder.encode_descriptor(
        "sonde_probes",
        "Hooks of each eBPF program, by state (attached, disabled, unavailable, failed)",
        None,
        MetricType::Gauge,
    )?;
    let mut probes: Vec<(&str, &str, i64)> = Vec::new();
    for p in &h.probes {
        let state = p.state.name();
        match probes
            .iter_mut()
            .find(|(prog, st, _)| *prog == p.program && *st == state)
        {
            Some((_, _, n)) => *n += 1,
            None => probes.push((p.program, state, 1)),
        }
    }
    for (program, state, n) in probes {
        gauge(
            &mut m,
            &Labels {
                rendered: &format!("program=\"{program}\""),
                more: "",
                key: "state",
                value: state,
            },
            n,
        )?;
    }

    let gauges: [(&str, &str, i64); 5] = [
        (
            "sonde_ring_buffer_size_bytes",
            "Size of the kernel-to-agent ring buffer",
            h.ring_buffer_bytes as i64,
        ),
        (
            "sonde_ring_buffer_peak_used_bytes",
            "Most ring buffer bytes (records and headers) drained in one wake-up since start: \
             the buffer's peak occupancy when drained",
            h.ring_buffer_peak_used_bytes as i64,
        ),
        (
            "sonde_process_table_entries",
            "Processes in the agent's process table",
            h.processes.entries as i64,
        ),
        (
            "sonde_cgroups_known",
            "Cgroups in the agent's cgroup index",
            h.cgroups.entries as i64,
        ),
        (
            "sonde_metrics_series",
            "Label sets held by the metrics registry (workloads, connection keys, failure \
             reasons)",
            registry.series() as i64,
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
    gauge(&mut m, &none, registry.max_series() as i64)?;

    let counters: [(&str, &str, u64); 5] = [
        (
            "sonde_process_table_evicted",
            "Processes evicted from the full process table",
            h.processes.evicted,
        ),
        (
            "sonde_cgroups_evicted",
            "Cgroups dropped from the index (removed past their grace period, or evicted)",
            h.cgroups.evicted,
        ),
        (
            "sonde_metrics_series_refused",
            "New label sets refused because max_series was reached (their counts are lost)",
            registry.refused(),
        ),
        (
            "sonde_metrics_series_evicted",
            "Label sets of idle workloads dropped to make room under max_series",
            registry.evicted(),
        ),
        (
            "sonde_metrics_publish_deferred",
            "Times the pipeline postponed publishing counts because a scrape was encoding",
            h.metrics_publish_deferred.unwrap_or(0),
        ),
    ];
    for (name, help, v) in counters {
        let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        counter(&mut m, &none, v)?;
    }

    if let Some(k) = &h.kubelet {
        let mut m = encoder.encode_descriptor(
            "sonde_kubelet_sync_last_success_timestamp_seconds",
            "When the kubelet pod list was last fetched successfully (Unix time; 0: never)",
            None,
            MetricType::Gauge,
        )?;
        gauge(&mut m, &none, unix(k.sync.last_success))?;
        let mut m = encoder.encode_descriptor(
            "sonde_kubelet_sync_consecutive_failures",
            "Failed kubelet fetches since the last success (0: healthy)",
            None,
            MetricType::Gauge,
        )?;
        gauge(&mut m, &none, i64::from(k.sync.consecutive_failures))?;
        let mut m = encoder.encode_descriptor(
            "sonde_kubelet_syncs",
            "Kubelet pod list fetches, by result",
            None,
            MetricType::Counter,
        )?;
        counter(&mut m, &Labels::one("result", "success"), k.successes)?;
        counter(&mut m, &Labels::one("result", "failure"), k.sync.failures)?;
    }
    if let Some(a) = &h.apiserver {
        encode_apiserver(a, encoder)?;
    }
    if let Some(l) = &h.leader {
        let mut m = encoder.encode_descriptor(
            "sonde_leader",
            "1 on the agent that holds the cluster's leader Lease (it runs the cluster's duties), 0 on the stand-bys",
            None,
            MetricType::Gauge,
        )?;
        gauge(&mut m, &none, i64::from(l.leader))?;
        let mut m = encoder.encode_descriptor(
            "sonde_leader_terms",
            "Times this agent became the leader",
            None,
            MetricType::Counter,
        )?;
        counter(&mut m, &none, l.terms)?;
        let mut m = encoder.encode_descriptor(
            "sonde_leader_transitions",
            "The Lease's leaseTransitions as last seen: changes of leader in the cluster",
            None,
            MetricType::Gauge,
        )?;
        gauge(&mut m, &none, i64::from(l.transitions))?;
    }
    if let Some(k) = &h.kube_events {
        encode_kube_events(k, &h.kube_event_counts, encoder)?;
    }
    if let Some(c) = &h.controlplane {
        encode_controlplane(c, encoder)?;
    }
    encode_servers(&h.servers, encoder)?;

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

/// Unix seconds, 0 for never.
fn unix(t: Option<SystemTime>) -> f64 {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A per-server family: name, help, and the value of a server's counters.
type ServerFamily = (&'static str, &'static str, fn(&ServerCounts) -> u64);

/// The HTTP servers' connection counters, one series per server (label `server`).
fn encode_servers(
    servers: &BTreeMap<&'static str, ServerCounts>,
    encoder: &mut DescriptorEncoder,
) -> fmt::Result {
    if servers.is_empty() {
        return Ok(());
    }
    let counters: [ServerFamily; 4] = [
        (
            "sonde_http_connections",
            "Connections accepted by the agent's HTTP server",
            |c| c.accepted,
        ),
        (
            "sonde_http_connections_waited",
            "Connections that waited for a slot because the server's connection cap was reached",
            |c| c.waited_at_cap,
        ),
        (
            "sonde_http_header_timeouts",
            "Connections closed because no request head came within the header timeout",
            |c| c.header_timeouts,
        ),
        (
            "sonde_http_tls_handshake_failures",
            "TLS handshakes that failed on the agent's HTTPS server (plain HTTP sent to it, a client distrusting its certificate)",
            |c| c.tls_handshake_failures,
        ),
    ];
    for (name, help, value) in counters {
        let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (server, c) in servers {
            counter(&mut m, &Labels::one("server", server), value(c))?;
        }
    }
    let mut m = encoder.encode_descriptor(
        "sonde_http_connections_open",
        "Connections open now on the agent's HTTP server",
        None,
        MetricType::Gauge,
    )?;
    for (server, c) in servers {
        gauge(&mut m, &Labels::one("server", server), c.active as i64)?;
    }
    Ok(())
}

/// A per-kind family: name, help, and the value of a kind's state.
type KindFamily<T> = (&'static str, &'static str, fn(&KindSyncState) -> T);

/// The apiserver source's sync state, one series per watched kind (label `kind`: the resource).
fn encode_apiserver(a: &ApiserverSyncState, encoder: &mut DescriptorEncoder) -> fmt::Result {
    let kinds = || {
        a.kinds
            .iter()
            .map(|(kind, k)| (Labels::one("kind", kind.resource()), k))
    };
    let gauges: [KindFamily<f64>; 4] = [
        (
            "sonde_apiserver_synced",
            "1 once the kind's full list has loaded (its view is complete), else 0",
            |k| f64::from(u8::from(k.synced)),
        ),
        (
            "sonde_apiserver_sync_last_success_timestamp_seconds",
            "When the kind's last list or watch event was received (Unix time; 0: never)",
            |k| unix(k.sync.last_success),
        ),
        (
            "sonde_apiserver_sync_consecutive_failures",
            "Failed list or watch requests of the kind since its last success (0: healthy)",
            |k| f64::from(k.sync.consecutive_failures),
        ),
        (
            "sonde_apiserver_objects",
            "Objects of the kind held now (stripped to what the join reads)",
            |k| k.objects as f64,
        ),
    ];
    for (name, help, value) in gauges {
        let mut m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (labels, k) in kinds() {
            gauge(&mut m, &labels, value(k))?;
        }
    }
    let counters: [KindFamily<u64>; 5] = [
        (
            "sonde_apiserver_lists",
            "Full lists of the kind loaded (the first, and each re-list)",
            |k| k.lists,
        ),
        (
            "sonde_apiserver_watch_events",
            "Watch events of the kind applied (added, modified, deleted)",
            |k| k.events,
        ),
        (
            "sonde_apiserver_sync_failures",
            "Failed list or watch requests of the kind",
            |k| k.sync.failures,
        ),
        (
            "sonde_apiserver_watch_expired",
            "410 Gone answers (the resume version was compacted; the kind was re-listed)",
            |k| k.expired,
        ),
        (
            "sonde_apiserver_watch_stream_errors",
            "Errors inside the kind's watch stream (the watch went on or resumed)",
            |k| k.stream_errors,
        ),
    ];
    for (name, help, value) in counters {
        let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (labels, k) in kinds() {
            counter(&mut m, &labels, value(k))?;
        }
    }
    Ok(())
}

/// The control plane's health: the apiserver's sub-checks (on the leader) and the components.
fn encode_controlplane(
    c: &crate::cluster::controlplane::ControlPlaneHealth,
    encoder: &mut DescriptorEncoder,
) -> fmt::Result {
    let mut rendered = String::new();
    let mut m = encoder.encode_descriptor(
        "sonde_controlplane_endpoint_up",
        "1 when the apiserver's health endpoint (readyz, livez) answered 200, else 0 (leader only)",
        None,
        MetricType::Gauge,
    )?;
    for e in &c.apiserver {
        gauge(
            &mut m,
            &Labels::one("endpoint", &e.endpoint),
            i64::from(e.up),
        )?;
    }
    let mut m = encoder.encode_descriptor(
        "sonde_controlplane_check_up",
        "1 when the sub-check of the apiserver's readyz or livez passed, else 0 (leader only)",
        None,
        MetricType::Gauge,
    )?;
    for e in &c.apiserver {
        for check in &e.checks {
            rendered.clear();
            super::collector::render(&mut rendered, "endpoint", &e.endpoint);
            let labels = Labels {
                rendered: &rendered,
                more: "",
                key: "check",
                value: &check.name,
            };
            gauge(&mut m, &labels, i64::from(check.up))?;
        }
    }
    let components = || c.componentstatuses.iter().chain(&c.components);
    let mut m = encoder.encode_descriptor(
        "sonde_controlplane_component_up",
        "1 when the control-plane component answered healthy, else 0 (this node's scheduler, \
         controller-manager and etcd; componentstatuses on the leader when enabled)",
        None,
        MetricType::Gauge,
    )?;
    for comp in components() {
        gauge(
            &mut m,
            &Labels::one("component", &comp.component),
            i64::from(comp.up),
        )?;
    }
    let mut m = encoder.encode_descriptor(
        "sonde_controlplane_component_latency_seconds",
        "How long the component's last health check took",
        None,
        MetricType::Gauge,
    )?;
    for comp in components() {
        gauge(
            &mut m,
            &Labels::one("component", &comp.component),
            comp.latency_ms / 1e3,
        )?;
    }
    Ok(())
}

/// The leader's Kubernetes events: delivered by type, reason and kind, and the collector's
/// state.
fn encode_kube_events(
    k: &crate::cluster::events::collect::KubeEventsState,
    counts: &std::collections::BTreeMap<health::KubeEventKey, u64>,
    encoder: &mut DescriptorEncoder,
) -> fmt::Result {
    let none = Labels::NONE;
    let mut m = encoder.encode_descriptor(
        "sonde_kube_events",
        "Kubernetes events delivered to the stream by this agent while it led, by event_type, \
         reason and involved_kind (a repeat with a risen count counts again)",
        None,
        MetricType::Counter,
    )?;
    let mut rendered = String::new();
    for ((event_type, reason, kind), n) in counts {
        rendered.clear();
        super::collector::render(&mut rendered, "event_type", event_type);
        super::collector::render(&mut rendered, "reason", reason);
        let labels = Labels {
            rendered: &rendered,
            more: "",
            key: "involved_kind",
            value: kind,
        };
        counter(&mut m, &labels, *n)?;
    }
    let mut m = encoder.encode_descriptor(
        "sonde_kube_events_collecting",
        "1 while this agent collects the cluster's Kubernetes events (it leads), else 0",
        None,
        MetricType::Gauge,
    )?;
    gauge(&mut m, &none, i64::from(k.collecting))?;
    let mut m = encoder.encode_descriptor(
        "sonde_kube_events_skipped",
        "Kubernetes events seen and not delivered, by reason: unchanged (seen before with this \
         count) or filtered (kube_events.kinds / kube_events.reasons)",
        None,
        MetricType::Counter,
    )?;
    counter(&mut m, &Labels::one("reason", "unchanged"), k.unchanged)?;
    counter(&mut m, &Labels::one("reason", "filtered"), k.filtered)?;
    let counters: [(&str, &str, u64); 5] = [
        (
            "sonde_kube_events_token_writes",
            "Resume tokens written to the ConfigMap sonde-events-token",
            k.token_writes,
        ),
        (
            "sonde_kube_events_token_write_failures",
            "Failed writes of the resume token (retried at the next interval)",
            k.token_write_failures,
        ),
        (
            "sonde_kube_events_lists",
            "Full lists of the cluster's events (a term without a token, and each after 410 Gone)",
            k.lists,
        ),
        (
            "sonde_kube_events_watch_expired",
            "410 Gone answers to the events watch (the version was compacted; relisted)",
            k.expired,
        ),
        (
            "sonde_kube_events_failures",
            "Failed requests of the events collector (list, watch, token)",
            k.failures,
        ),
    ];
    for (name, help, value) in counters {
        let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        counter(&mut m, &none, value)?;
    }
    let mut m = encoder.encode_descriptor(
        "sonde_kube_events_tracked",
        "Kubernetes events whose last count is remembered (kube_events.max_tracked at most)",
        None,
        MetricType::Gauge,
    )?;
    gauge(&mut m, &none, k.tracked as i64)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_self() {
        let stat = "4242 (so) de) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 \
                    1000 10000000 500 18446744073709551615";
        let usage = parse_self(stat, "2000 500 100 1 0 300 0\n", 100, 4096).expect("parses");
        assert_eq!(usage.cpu_seconds, 3.0);
        assert_eq!(usage.resident_bytes, 500 * 4096);
        assert!(parse_self("garbage", "", 100, 4096).is_none());
        let real = SelfUsage::read().expect("this process's /proc/self");
        assert!(real.resident_bytes > 0);
    }
}
