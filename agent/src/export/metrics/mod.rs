//! Prometheus metrics: per-workload process and TCP series, and the agent's own health, served
//! at `GET /metrics` (families and labels in docs/metrics.md).
//!
//! - [`accumulator`]: the capture pipeline's local counts, published once per drain batch;
//! - [`registry`]: the shared, bounded series (`max_series`), keyed by workload identity;
//! - [`labels`]: identity → labels at scrape time ([`LabelSource`]), the join's remote end →
//!   `remote` label ([`RemoteLabeler`], CIDR allow-list);
//! - [`collector`]: encodes everything at scrape time; [`health`]: the agent's own state;
//! - [`http`]: the endpoint.
//!
//! Hot path: one hash-map hit per event in [`Accumulator`], no lock; the registry lock is
//! taken once per drain batch with `try_lock` (never waiting for a scrape) and by scrapes.

pub mod accumulator;
pub mod collector;
pub mod health;
pub mod http;
pub mod labels;
pub mod pipeline;
pub mod registry;
pub mod series;
pub mod stream;

use std::{net::SocketAddr, sync::Arc};

pub use crate::units::Cidr as IpCidr;
pub use accumulator::Accumulator;
pub use health::Health;
pub use http::MetricsError;
pub use labels::{
    CgroupLabels, LabelSource, PodStoreLabels, RemoteKey, RemoteLabeler, WorkloadIdentity,
    WorkloadLabels,
};
pub use registry::WorkloadRegistry;

/// Default listen address: local only (expose it with `--metrics-listen 0.0.0.0:9464`), on
/// 9464, the port OpenTelemetry's Prometheus exporters use.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9464);
pub const DEFAULT_MAX_SERIES: usize = 10_000;

/// `metrics.*`: the Prometheus endpoint.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    pub enabled: bool,
    /// Where /metrics is served.
    pub listen: SocketAddr,
    /// Label sets kept at most (workloads, connection keys, failure reasons); new ones beyond
    /// are refused and counted in `sonde_metrics_series_refused_total`.
    pub max_series: usize,
    /// Remote addresses inside these networks appear as themselves in the `remote` label
    /// (otherwise only resolved names, or `unknown`).
    pub remote_ip_allowlist: Vec<IpCidr>,
    /// A scraper must send each request head within this (see [`crate::http::server`]).
    #[serde(with = "humantime_serde")]
    pub header_timeout: std::time::Duration,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: DEFAULT_LISTEN,
            max_series: DEFAULT_MAX_SERIES,
            remote_ip_allowlist: Vec::new(),
            header_timeout: crate::http::server::DEFAULT_HEADER_TIMEOUT,
        }
    }
}

/// The metrics of one agent: the shared registry and health, and how series are labelled.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Arc<WorkloadRegistry>,
    pub health: Arc<Health>,
    labels: Arc<dyn LabelSource>,
    allowlist: Vec<IpCidr>,
}

impl Metrics {
    /// Labels from cgroup paths only ([`CgroupLabels`]), `remote` from the allow-list only.
    pub fn new(opts: &MetricsConfig) -> Self {
        Self {
            registry: Arc::new(WorkloadRegistry::new(opts.max_series)),
            health: Arc::new(Health::default()),
            labels: Arc::new(CgroupLabels),
            allowlist: opts.remote_ip_allowlist.clone(),
        }
    }

    /// Names workloads with `labels` at scrape time (e.g. [`PodStoreLabels`]).
    pub fn with_label_source(mut self, labels: Arc<dyn LabelSource>) -> Self {
        self.labels = labels;
        self
    }

    /// A pipeline-local accumulator publishing into this registry.
    pub fn accumulator(&self) -> Accumulator {
        Accumulator::new(
            Arc::clone(&self.registry),
            RemoteLabeler::new(self.allowlist.clone()),
        )
    }

    /// A prometheus-client registry whose collector encodes everything at scrape time.
    pub fn prometheus_registry(&self) -> prometheus_client::registry::Registry {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(collector::SondeCollector {
            registry: Arc::clone(&self.registry),
            health: Arc::clone(&self.health),
            labels: Arc::clone(&self.labels),
        }));
        registry
    }

    /// The exposition, as a scrape would get it.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(
            &mut out,
            &self.prometheus_registry(),
        )?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use sonde_common::record::{ConnRecord, ExecRecord, ExitRecord, conn_flags, direction};

    use super::*;
    use crate::{
        enrich::Attribution,
        event::{ConnEvent, ConnPhase, Event},
        kube::{PodMeta, PodSource, PodStore},
        node::{cgroup::CgroupInfo, cgroup_path},
    };

    const CTR: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const POD: &str = "11111111-2222-3333-4444-555555555555";

    fn container() -> Attribution {
        let path = format!(
            "/kubepods.slice/kubepods-pod{}.slice/cri-containerd-{CTR}.scope",
            POD.replace('-', "_")
        );
        Attribution {
            cgroup: Some(Arc::new(CgroupInfo {
                id: 42,
                identity: cgroup_path::parse(&path),
                path: path.into(),
            })),
            direction: Some("outbound"),
            ..Attribution::default()
        }
    }

    fn conn(phase: ConnPhase, r: &ConnRecord) -> Event<'_> {
        Event::Conn(ConnEvent { phase, record: r })
    }

    /// Three outbound connections to 10.0.0.9 (one refused), an exec and two exits.
    fn record_sample(acc: &mut Accumulator, attr: &Attribution) {
        // SAFETY: all-zero is a valid value of these plain-data records.
        let (exec, mut exit, mut c): (ExecRecord, ExitRecord, ConnRecord) =
            unsafe { (std::mem::zeroed(), std::mem::zeroed(), std::mem::zeroed()) };
        c.family = sonde_common::AF_INET;
        c.direction = direction::OUTBOUND;
        c.flags = conn_flags::OWNER_KNOWN;
        c.owner.cgroup_id = 42;
        c.daddr[..4].copy_from_slice(&[10, 0, 0, 9]);
        c.opened_ns = 1_000_000;
        c.established_ns = 1_300_000; // 300 µs handshake
        c.bytes_sent = 100;
        c.bytes_received = 1000;
        c.retransmits = 1;
        c.srtt_us = 50;
        for _ in 0..2 {
            acc.record(&conn(ConnPhase::Open, &c), attr);
            acc.record(&conn(ConnPhase::Close, &c), attr);
        }
        c.established_ns = 0;
        c.error = libc::ECONNREFUSED;
        acc.record(&conn(ConnPhase::Fail, &c), attr);
        acc.record(&Event::Exec(&exec), attr);
        acc.record(&Event::Exit(&exit), attr);
        exit.exit_code = 9; // SIGKILL
        acc.record(&Event::Exit(&exit), attr);
    }

    fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting with {prefix} in:\n{text}"))
    }

    #[test]
    fn counts_become_labelled_series() {
        let metrics = Metrics::new(&MetricsConfig::default());
        let mut acc = metrics.accumulator();
        let attr = container();
        record_sample(&mut acc, &attr);
        assert!(acc.publish());
        let text = metrics.encode().expect("encodes");
        let labels = format!(
            "container_id=\"{CTR}\",runtime=\"containerd\",pod_uid=\"{POD}\",namespace=\"\",pod=\"\",container=\"\",workload=\"\",systemd_unit=\"\""
        );
        let conn = format!("{labels},direction=\"outbound\",remote=\"unknown\"");
        for (name, value) in [
            ("sonde_tcp_connections_opened_total", "2"),
            ("sonde_tcp_connections_closed_total", "2"),
            ("sonde_tcp_sent_bytes_total", "200"),
            ("sonde_tcp_received_bytes_total", "2000"),
            ("sonde_tcp_retransmits_total", "2"),
        ] {
            assert_eq!(
                line(&text, &format!("{name}{{{conn}}}")),
                format!("{name}{{{conn}}} {value}")
            );
        }
        assert!(text.contains(&format!(
            "sonde_tcp_connections_failed_total{{{conn},reason=\"refused\"}} 1\n"
        )));
        assert!(text.contains(&format!(
            "sonde_tcp_connect_duration_seconds_bucket{{{conn},le=\"0.0005\"}} 2\n"
        )));
        assert!(text.contains(&format!("sonde_tcp_rtt_seconds_count{{{conn}}} 2\n")));
        assert!(text.contains(&format!("sonde_process_starts_total{{{labels}}} 1\n")));
        for (class, n) in [("ok", 1), ("error", 0), ("signal", 1)] {
            assert!(text.contains(&format!(
                "sonde_process_exits_total{{{labels},exit_class=\"{class}\"}} {n}\n"
            )));
        }
        assert!(text.contains("# TYPE sonde_tcp_rtt_seconds histogram\n"));
        assert!(text.contains("sonde_metrics_series 3\n"), "{text}");
    }

    #[test]
    fn series_counted_before_the_pod_is_known_are_relabelled() {
        use crate::kube::workload::Workloads;
        let store = Arc::new(PodStore::new());
        let metrics = Metrics::new(&MetricsConfig::default()).with_label_source(Arc::new(
            PodStoreLabels(Arc::clone(&store), Workloads::by_name_only()),
        ));
        let mut acc = metrics.accumulator();
        record_sample(&mut acc, &container());
        acc.publish();
        assert!(metrics.encode().expect("encodes").contains("pod=\"\""));
        let pod = crate::kube::pods::parse_pod(&format!(
            r#"{{"metadata": {{"name": "web-1", "namespace": "shop", "uid": "{POD}"}},
                "status": {{"containerStatuses": [{{"name": "nginx",
                  "containerID": "containerd://{CTR}"}}]}}}}"#
        ))
        .expect("pod parses");
        let _: &PodMeta = &pod;
        store.replace(PodSource::Kubelet, vec![pod]);
        let text = metrics.encode().expect("encodes");
        assert!(
            !text.contains("pod=\"\""),
            "no series stays unlabelled:\n{text}"
        );
        assert!(text.contains("namespace=\"shop\",pod=\"web-1\",container=\"nginx\""));
    }

    #[test]
    fn a_scrape_in_progress_defers_the_publish_without_losing_counts() {
        let metrics = Metrics::new(&MetricsConfig::default());
        let mut acc = metrics.accumulator();
        let attr = container();
        record_sample(&mut acc, &attr);
        let scrape = metrics.registry.lock();
        assert!(!acc.publish());
        assert_eq!(acc.deferred, 1);
        drop(scrape);
        record_sample(&mut acc, &attr);
        assert!(acc.publish());
        let text = metrics.encode().expect("encodes");
        assert!(text.contains("remote=\"unknown\"} 4\n"), "{text}");
    }

    #[test]
    fn kubelet_and_apiserver_sync_families_appear_with_their_sources() {
        let metrics = Metrics::new(&MetricsConfig::default());
        let text = metrics.encode().expect("encodes");
        assert!(!text.contains("sonde_kubelet_"), "{text}");
        assert!(!text.contains("sonde_apiserver_"), "{text}");
        use crate::kube::source::SyncHealth;
        let (tx, rx) = crate::pipeline::health::channel(Default::default());
        metrics.health.follow(rx);
        let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let mut model = crate::pipeline::health::Health {
            kubelet: Some(crate::kube::KubeletSyncState {
                sync: SyncHealth {
                    last_success: Some(when),
                    consecutive_failures: 2,
                    failures: 3,
                    ..Default::default()
                },
                successes: 5,
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut apiserver = crate::kube::ApiserverSyncState::default();
        apiserver.kinds.insert(
            crate::kube::WatchKind::Services,
            crate::kube::KindSyncState {
                synced: true,
                sync: SyncHealth {
                    last_success: Some(when),
                    ..Default::default()
                },
                objects: 12,
                lists: 2,
                expired: 1,
                ..Default::default()
            },
        );
        apiserver.kinds.insert(
            crate::kube::WatchKind::Pods,
            crate::kube::KindSyncState {
                sync: SyncHealth {
                    consecutive_failures: 4,
                    failures: 4,
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        model.apiserver = Some(apiserver);
        tx.send_replace(Arc::new(model));
        let text = metrics.encode().expect("encodes");
        for line in [
            "sonde_kubelet_sync_last_success_timestamp_seconds 1700000000.0\n",
            "sonde_kubelet_sync_consecutive_failures 2\n",
            "sonde_kubelet_syncs_total{result=\"success\"} 5\n",
            "sonde_kubelet_syncs_total{result=\"failure\"} 3\n",
            "sonde_apiserver_synced{kind=\"services\"} 1.0\n",
            "sonde_apiserver_synced{kind=\"pods\"} 0.0\n",
            "sonde_apiserver_objects{kind=\"services\"} 12.0\n",
            "sonde_apiserver_sync_consecutive_failures{kind=\"pods\"} 4.0\n",
            "sonde_apiserver_sync_last_success_timestamp_seconds{kind=\"services\"} 1700000000.0\n",
            "sonde_apiserver_lists_total{kind=\"services\"} 2\n",
            "sonde_apiserver_watch_expired_total{kind=\"services\"} 1\n",
            "sonde_apiserver_sync_failures_total{kind=\"pods\"} 4\n",
        ] {
            assert!(text.contains(line), "{line} in:\n{text}");
        }
    }

    #[test]
    fn the_series_cap_refuses_and_counts() {
        let metrics = Metrics::new(&MetricsConfig {
            max_series: 1,
            ..MetricsConfig::default()
        });
        let mut acc = metrics.accumulator();
        record_sample(&mut acc, &container());
        acc.publish();
        let text = metrics.encode().expect("encodes");
        assert!(
            text.contains("sonde_metrics_series_refused_total 1\n"),
            "{text}"
        );
        assert!(text.contains("sonde_metrics_series 1\n"));
    }
}
