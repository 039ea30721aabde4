//! Control-plane health. The leader reads the apiserver's own health checks
//! (`/readyz?verbose`, `/livez?verbose`: one result per sub-check, etcd's included) and, when
//! enabled, the deprecated `componentstatuses` ([`apiserver`]); every agent on a control-plane
//! node checks that node's scheduler, controller-manager and etcd ([`components`]).

pub mod apiserver;
pub mod components;

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

/// `controlplane.*`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlPlaneConfig {
    /// The leader reads the apiserver's `/readyz?verbose` and `/livez?verbose`.
    pub enabled: bool,
    /// How often every check runs.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// The leader also lists `componentstatuses` (deprecated; off by default).
    pub componentstatuses: bool,
    /// Check this node's scheduler, controller-manager and etcd: `auto` (those whose kubeadm
    /// static pod manifest is under `<host-root>/etc/kubernetes/manifests`), `on`, `off`.
    pub node_components: NodeComponents,
    pub scheduler_url: String,
    pub controller_manager_url: String,
    pub etcd_url: String,
    /// etcd's CA and the client certificate it accepts (kubeadm's layout by default; read under
    /// `--host-root`).
    pub etcd_ca_file: PathBuf,
    pub etcd_cert_file: PathBuf,
    pub etcd_key_file: PathBuf,
    /// The CA of the scheduler's and controller-manager's serving certificates; `None`: their
    /// self-signed certificates (kubeadm's default) are accepted.
    pub components_ca_file: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeComponents {
    #[default]
    Auto,
    On,
    Off,
}

/// kubeadm's static pod manifests: a component is on this node when its manifest is.
pub const STATIC_POD_DIR: &str = "/etc/kubernetes/manifests";

impl Default for ControlPlaneConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(15),
            componentstatuses: false,
            node_components: NodeComponents::Auto,
            scheduler_url: "https://127.0.0.1:10259/healthz".into(),
            controller_manager_url: "https://127.0.0.1:10257/healthz".into(),
            etcd_url: "https://127.0.0.1:2379/health".into(),
            etcd_ca_file: "/etc/kubernetes/pki/etcd/ca.crt".into(),
            etcd_cert_file: "/etc/kubernetes/pki/etcd/healthcheck-client.crt".into(),
            etcd_key_file: "/etc/kubernetes/pki/etcd/healthcheck-client.key".into(),
            components_ca_file: None,
        }
    }
}

impl ControlPlaneConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.interval < Duration::from_secs(1) {
            return Err((
                "controlplane.interval",
                format!("{:?} is below 1s", self.interval),
            ));
        }
        for (key, url) in [
            ("controlplane.scheduler_url", &self.scheduler_url),
            (
                "controlplane.controller_manager_url",
                &self.controller_manager_url,
            ),
            ("controlplane.etcd_url", &self.etcd_url),
        ] {
            components::Target::parse(url).map_err(|reason| (key, reason))?;
        }
        Ok(())
    }
}

/// One of the apiserver's health endpoints as last read.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointHealth {
    /// `readyz` or `livez`.
    pub endpoint: String,
    /// Answered 200 (every sub-check passed).
    pub up: bool,
    /// Each sub-check (`etcd`, `ping`, `poststarthook/…`) and whether it passed.
    pub checks: Vec<SubCheck>,
    pub latency_ms: f64,
    /// Why it could not be read, or the failing checks' reasons.
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubCheck {
    pub name: String,
    pub up: bool,
}

/// A control-plane component as last checked (this node's, or a componentstatus).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ComponentHealth {
    /// `scheduler`, `controller-manager`, `etcd` (a componentstatus: its name, e.g. `etcd-0`).
    pub component: String,
    /// Where it was checked (`componentstatuses` for those).
    pub url: String,
    pub up: bool,
    pub latency_ms: f64,
    /// Why it is down (cause and fix).
    pub error: Option<String>,
    pub checks: u64,
    pub failures: u64,
}

/// Everything the health model shows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ControlPlaneHealth {
    /// The leader's reading of the apiserver (empty on stand-bys).
    pub apiserver: Vec<EndpointHealth>,
    /// `componentstatuses`, when enabled, on the leader.
    pub componentstatuses: Vec<ComponentHealth>,
    /// This node's components.
    pub components: Vec<ComponentHealth>,
}

/// A response's status and whole body (the health answers are a few hundred bytes), for both
/// clients the checks use: the kube client's and the components' own.
pub(crate) async fn status_and_body<B>(
    response: http::Response<B>,
) -> Result<(http::StatusCode, bytes::Bytes), String>
where
    B: hyper::body::Body,
    B::Error: std::fmt::Display,
{
    use http_body_util::BodyExt;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

/// The sub-checks of a `?verbose` body: `[+]name ok` / `[-]name failed: reason withheld`.
pub fn parse_verbose(body: &str) -> Vec<SubCheck> {
    body.lines()
        .filter_map(|line| {
            let (up, rest) = if let Some(rest) = line.strip_prefix("[+]") {
                (true, rest)
            } else {
                (false, line.strip_prefix("[-]")?)
            };
            let name = rest.split_whitespace().next()?;
            Some(SubCheck {
                name: name.to_string(),
                up,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbose_bodies_give_one_result_per_check() {
        let body = "[+]ping ok\n[+]log ok\n[-]etcd failed: reason withheld\n\
                    [+]poststarthook/start-apiextensions-informers ok\n[+]shutdown ok\n\
                    readyz check failed\n";
        let checks = parse_verbose(body);
        let names: Vec<(&str, bool)> = checks.iter().map(|c| (c.name.as_str(), c.up)).collect();
        assert_eq!(
            names,
            [
                ("ping", true),
                ("log", true),
                ("etcd", false),
                ("poststarthook/start-apiextensions-informers", true),
                ("shutdown", true)
            ]
        );
        assert!(parse_verbose("ok").is_empty());
    }

    #[test]
    fn urls_and_interval_are_validated() {
        assert_eq!(ControlPlaneConfig::default().validate(), Ok(()));
        let bad = ControlPlaneConfig {
            etcd_url: "etcd:2379".into(),
            ..ControlPlaneConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().0, "controlplane.etcd_url");
        let fast = ControlPlaneConfig {
            interval: Duration::from_millis(10),
            ..ControlPlaneConfig::default()
        };
        assert_eq!(fast.validate().unwrap_err().0, "controlplane.interval");
    }
}
