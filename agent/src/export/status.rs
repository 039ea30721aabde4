//! `GET /v1/status`: the agent's health and its per-workload table, as one JSON document.
//!
//! A serialisation of the health model ([`crate::pipeline::health::Health`], built by the
//! pipeline about once a second): [`Status::from_health`]. Readers take the latest document from
//! a `watch` channel; the capture path takes no lock per event. The same types deserialize the
//! document in `sonde status`.

use std::{collections::BTreeMap, time::Duration, time::SystemTime};

use serde::{Deserialize, Serialize};

use super::summary::Workload;
use crate::{
    capture::ProbeStatus,
    node::cgroup_path::Kind,
    pipeline::health::{self, BootstrapStats},
};

impl Status {
    /// The document of the health model: the same counts /metrics and the stats file show.
    pub fn from_health(h: &health::Health) -> Self {
        let lost = h.losses();
        let stream = h.stream.unwrap_or_default();
        let table = |t: health::TableStats| TableSize {
            entries: t.entries,
            evicted: t.evicted,
        };
        Status {
            agent: Health {
                version: env!("CARGO_PKG_VERSION").to_string(),
                started_at: rfc3339(h.started_at),
                generated_at: rfc3339(h.generated_at),
                uptime_seconds: h.uptime.as_secs_f64(),
                probes: Probes::from_list(&h.probes),
                missing_kernel_fields: h.missing_kernel_fields.clone(),
                events: h.events.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
                lost: Lost {
                    total: lost.total(),
                    kernel: lost.kernel,
                    decode_errors: lost.decode_errors,
                    output_dropped: lost.output_dropped,
                    events_subscribers_dropped: lost.events_subscribers_dropped,
                },
                kernel_counters: h.kernel.named().map(|(k, v)| (k.to_string(), v)).collect(),
                stream: StreamStatus {
                    subscribers: stream.subscribers,
                    max_subscribers: stream.max_subscribers,
                    events_subscribers_dropped: stream.subscribers_dropped,
                    events_published: stream.events_published,
                },
                bootstrap: h.bootstrap.as_ref().map(BootstrapStatus::from),
                tables: Tables {
                    processes: table(h.processes),
                    cgroups: table(h.cgroups),
                    workloads: table(h.workload_table.unwrap_or_default()),
                },
                metadata: Metadata {
                    kubelet: h.kubelet.as_ref().map(SourceState::from_kubelet),
                    apiserver: h.apiserver.as_ref().map(SourceState::from_apiserver),
                },
                servers: h.servers.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
                leader: h.leader.clone(),
                kube_events: h.kube_events.clone(),
                controlplane: h.controlplane.clone(),
            },
            workloads: h.workloads.iter().map(WorkloadStatus::from).collect(),
        }
    }
}

impl From<&BootstrapStats> for BootstrapStatus {
    fn from(b: &BootstrapStats) -> Self {
        Self {
            duration_ms: b.duration_ms,
            processes_found: b.processes_found,
            connections_found: b.connections_found,
            unreadable_processes: b.unreadable_processes,
            socket_namespaces_failed: b.socket_namespaces_failed,
        }
    }
}

/// How often the pipeline publishes a snapshot.
pub const STATUS_INTERVAL: Duration = crate::pipeline::health::HEALTH_INTERVAL;

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub agent: Health,
    /// One entry per container, host service or bare cgroup seen, sorted by name.
    pub workloads: Vec<WorkloadStatus>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Health {
    pub version: String,
    /// RFC 3339.
    pub started_at: String,
    /// When this snapshot was taken (RFC 3339).
    pub generated_at: String,
    pub uptime_seconds: f64,
    pub probes: Probes,
    /// Kernel struct members or tracepoint fields not found (their features are off).
    pub missing_kernel_fields: Vec<String>,
    /// Events delivered, by type.
    pub events: BTreeMap<String, u64>,
    pub lost: Lost,
    /// Every non-zero kernel counter, losses and degraded records (e.g. `conn_no_state`).
    pub kernel_counters: BTreeMap<String, u64>,
    pub stream: StreamStatus,
    /// The start-up scan; `None` until it is merged.
    pub bootstrap: Option<BootstrapStatus>,
    pub tables: Tables,
    pub metadata: Metadata,
    /// Connection counters of the HTTP servers, by server (`metrics`, `api`).
    #[serde(default)]
    pub servers: BTreeMap<String, crate::http::ServerCounts>,
    /// The leader election, when this agent contends (`leader_election`).
    #[serde(default)]
    pub leader: Option<crate::cluster::leader::ElectionState>,
    /// The leader's Kubernetes events collector, when this agent contends (`kube_events`).
    #[serde(default)]
    pub kube_events: Option<crate::cluster::events::collect::KubeEventsState>,
    /// The control plane's health, when this agent checks it (`controlplane`).
    #[serde(default)]
    pub controlplane: Option<crate::cluster::controlplane::ControlPlaneHealth>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Probes {
    pub attached: usize,
    /// Probes that are not running: unavailable on this kernel, or failed to load/attach
    /// (turned off by `--disable-probe` is not a failure).
    pub failed: usize,
    pub list: Vec<ProbeEntry>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ProbeEntry {
    pub program: String,
    pub hook: String,
    /// `attached`, `disabled`, `unavailable` or `failed`.
    pub state: String,
    pub reason: Option<String>,
}

/// Events lost, by reason. `total` is what the pipeline lost (kernel + decode + output);
/// subscriber drops lose events only for the subscriber that fell behind.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Lost {
    pub total: u64,
    /// Kernel loss counters (ring buffer full, map full, failed reads), added up.
    pub kernel: u64,
    pub decode_errors: u64,
    /// Events in output batches dropped because stdout / the output file could not keep up.
    pub output_dropped: u64,
    /// Event stream subscribers disconnected for falling behind.
    pub events_subscribers_dropped: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct StreamStatus {
    /// `GET /v1/events` readers connected now.
    pub subscribers: usize,
    pub max_subscribers: usize,
    pub events_subscribers_dropped: u64,
    pub events_published: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct BootstrapStatus {
    pub duration_ms: f64,
    pub processes_found: usize,
    pub connections_found: usize,
    pub unreadable_processes: usize,
    pub socket_namespaces_failed: usize,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Tables {
    pub processes: TableSize,
    pub cgroups: TableSize,
    pub workloads: TableSize,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TableSize {
    pub entries: usize,
    pub evicted: u64,
}

/// Kubernetes metadata sources; `None` while a source is not configured (the kube join sets
/// them).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Metadata {
    pub kubelet: Option<SourceState>,
    pub apiserver: Option<SourceState>,
}

impl SourceState {
    /// The kubelet source's state as status shows it.
    pub fn from_kubelet(k: &crate::kube::KubeletSyncState) -> Self {
        let state = if k.healthy() {
            "ok"
        } else if k.successes > 0 {
            "degraded"
        } else if k.last_attempt.is_none() {
            "starting"
        } else {
            "unreachable"
        };
        Self {
            state: state.into(),
            pods: (k.successes > 0).then_some(k.pods as u64),
            error: if k.healthy() {
                None
            } else {
                k.sync.last_error.clone()
            },
            last_sync: k.sync.last_success.map(rfc3339),
        }
    }
}

impl SourceState {
    /// The apiserver source's state as status shows it; `pods` is this node's pods.
    pub fn from_apiserver(a: &crate::kube::ApiserverSyncState) -> Self {
        use crate::kube::WatchKind;
        let failing = a.kinds.iter().find(|(_, k)| {
            k.sync.consecutive_failures > 0 || k.sync.last_error.is_some() && !k.synced
        });
        let state = if a.healthy() {
            "ok"
        } else if a.kinds.values().any(|k| k.synced) {
            "degraded"
        } else if a.client_error.is_some() || failing.is_some() {
            "unreachable"
        } else {
            "starting"
        };
        let error = a.client_error.clone().or_else(|| {
            failing
                .and_then(|(kind, k)| k.sync.last_error.as_ref().map(|e| format!("{kind:?}: {e}")))
        });
        let pods = a.kind(WatchKind::Pods).filter(|k| k.synced);
        Self {
            state: state.into(),
            pods: pods.map(|k| k.objects as u64),
            error: if a.healthy() { None } else { error },
            last_sync: pods.and_then(|k| k.sync.last_success).map(rfc3339),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SourceState {
    /// e.g. `ok`, `degraded`, `unreachable`, `unauthorized`.
    pub state: String,
    pub pods: Option<u64>,
    /// The last error, with its fix.
    pub error: Option<String>,
    /// RFC 3339 of the last successful sync.
    pub last_sync: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct WorkloadStatus {
    /// `namespace/pod/container` when known, else `runtime:<short id>`, the systemd unit, or
    /// the cgroup path.
    pub name: String,
    /// `container`, `pod`, `host_service` or `unknown`.
    pub kind: String,
    pub runtime: Option<String>,
    pub container_id: Option<String>,
    pub pod_uid: Option<String>,
    /// From the Kubernetes metadata (looked up when the snapshot is taken); `None` until the
    /// kubelet or apiserver knows the container.
    pub namespace: Option<String>,
    pub pod_name: Option<String>,
    pub container_name: Option<String>,
    pub systemd_unit: Option<String>,
    pub cgroup_path: Option<String>,
    /// Processes alive now.
    pub processes: u64,
    pub connections_open: u64,
    pub connections_opened: u64,
    pub connections_failed: u64,
    pub execs: u64,
    /// Payload bytes of connections that closed, received and sent.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// RFC 3339 of the workload's last event.
    pub last_activity: Option<String>,
}

pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

impl From<&ProbeStatus> for ProbeEntry {
    fn from(p: &ProbeStatus) -> Self {
        Self {
            program: p.program.to_string(),
            hook: p.hook.clone(),
            state: p.state.name().to_string(),
            reason: p.state.reason().map(str::to_string),
        }
    }
}

impl Probes {
    pub fn from_list(list: &[ProbeStatus]) -> Self {
        let list: Vec<ProbeEntry> = list.iter().map(ProbeEntry::from).collect();
        Self {
            attached: list.iter().filter(|p| p.state == "attached").count(),
            failed: list
                .iter()
                .filter(|p| p.state == "unavailable" || p.state == "failed")
                .count(),
            list,
        }
    }
}

impl From<&Workload> for WorkloadStatus {
    fn from(w: &Workload) -> Self {
        let cg = w.cgroup.as_deref();
        let id = cg.map(|c| &c.identity);
        let kind = match id.map_or(Kind::Unknown, |i| i.kind()) {
            Kind::Container => "container",
            Kind::Pod => "pod",
            Kind::HostService => "host_service",
            Kind::Unknown => "unknown",
        };
        let pod = w.pod.as_ref();
        Self {
            name: match pod {
                Some(p) => format!("{}/{}/{}", p.pod.namespace, p.pod.name, p.container().name),
                None => w.label.clone(),
            },
            kind: kind.to_string(),
            runtime: id.and_then(|i| i.runtime).map(|r| r.as_str().to_string()),
            container_id: id.and_then(|i| i.container_id.clone()),
            pod_uid: id.and_then(|i| i.pod_uid.clone()),
            namespace: pod.map(|p| p.pod.namespace.clone()),
            pod_name: pod.map(|p| p.pod.name.clone()),
            container_name: pod.map(|p| p.container().name.clone()),
            systemd_unit: id.and_then(|i| i.systemd_unit.clone()),
            cgroup_path: cg.map(|c| c.path.to_string()),
            processes: w.processes,
            connections_open: w.conns_open,
            connections_opened: w.conns_opened,
            connections_failed: w.conns_failed,
            execs: w.execs,
            bytes_in: w.bytes_in,
            bytes_out: w.bytes_out,
            last_activity: w.last_activity.map(rfc3339),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_document_round_trips() {
        let mut status = Status::default();
        status.agent.version = "0.1.0".into();
        status.agent.events.insert("process_exec".into(), 3);
        status.agent.metadata.kubelet = Some(SourceState {
            state: "ok".into(),
            pods: Some(4),
            ..SourceState::default()
        });
        status.workloads.push(WorkloadStatus {
            name: "docker:0123456789ab".into(),
            processes: 2,
            ..WorkloadStatus::default()
        });
        let text = serde_json::to_string(&status).unwrap();
        let back: Status = serde_json::from_str(&text).unwrap();
        assert_eq!(back, status);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(v["agent"]["metadata"]["apiserver"].is_null());
        assert_eq!(v["agent"]["lost"]["events_subscribers_dropped"], 0);
    }
}
