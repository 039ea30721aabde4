//! The `kubernetes.*` configuration keys: how to reach the apiserver, and what to watch.

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

/// Where a host install finds the apiserver when `kubernetes.kubeconfig` is unset and it is not
/// in a pod: the kubelet's own kubeconfig, as each distribution puts it (kubeadm, then the
/// `/var/lib/kubelet/kubeconfig` of EKS and GKE, then k3s). The node's credentials
/// (`system:node:<name>`) read what the node authorizer allows a node: its pods, Services and
/// EndpointSlices; owners are refused and degraded with the reason.
pub const NODE_KUBECONFIGS: [&str; 3] = [
    "/etc/kubernetes/kubelet.conf",
    "/var/lib/kubelet/kubeconfig",
    "/var/lib/rancher/k3s/agent/kubelet.kubeconfig",
];

/// The first of `candidates` that exists.
pub fn node_kubeconfig<'a>(candidates: impl IntoIterator<Item = &'a str>) -> Option<PathBuf> {
    candidates
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

impl KubernetesConfig {
    /// Whether there is anything to reach the apiserver with: a kubeconfig, a pod's service
    /// account, or (a host install on a node) the kubelet's kubeconfig.
    pub fn has_credentials(&self) -> bool {
        self.kubeconfig.is_some()
            || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
            || node_kubeconfig(NODE_KUBECONFIGS).is_some()
    }
}

/// The `kubernetes.*` configuration (apiserver watches).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubernetesConfig {
    /// `kubernetes.enabled`: watch the apiserver at all. `false` on plain hosts.
    pub enabled: bool,
    /// `kubernetes.kubeconfig`: a kubeconfig file (server, CA, credentials). `null` (the
    /// default) uses the in-cluster service account (`KUBERNETES_SERVICE_HOST`/`_PORT`, the
    /// token and CA under `/var/run/secrets/kubernetes.io/serviceaccount/`).
    pub kubeconfig: Option<PathBuf>,
    /// `kubernetes.context`: the kubeconfig context to use; `null` uses its current context.
    pub context: Option<String>,
    /// `kubernetes.watch_services`: watch Services and EndpointSlices (all namespaces) to
    /// name remote addresses. Off saves their memory on very large clusters.
    pub watch_services: bool,
    /// `kubernetes.watch_owners`: watch ReplicaSets and Jobs (all namespaces) to resolve a
    /// pod's owner to its controller (a Deployment, a CronJob, any custom controller kind).
    pub watch_owners: bool,
    /// `kubernetes.max_backoff`: longest wait between retries of a failing watch.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// `kubernetes.pod_labels`: pod label keys shown on events (an allow-list).
    pub pod_labels: Vec<String>,
    /// `kubernetes.namespace_labels`: namespace label keys shown on events (an allow-list).
    /// Empty (the default): namespaces are not watched at all.
    pub namespace_labels: Vec<String>,
    /// `kubernetes.node_labels`: this node's label keys shown on events (an allow-list).
    /// Empty (the default): the node is not watched.
    pub node_labels: Vec<String>,
    /// `kubernetes.namespace`: the agent's own namespace (its Lease) when neither
    /// `POD_NAMESPACE` nor the service account says.
    pub namespace: String,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            kubeconfig: None,
            context: None,
            watch_services: true,
            watch_owners: true,
            max_backoff: Duration::from_secs(30),
            pod_labels: Vec::new(),
            namespace_labels: Vec::new(),
            node_labels: Vec::new(),
            namespace: "sonde".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_existing_node_kubeconfig_is_used() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (
            dir.path().join("kubelet.conf"),
            dir.path().join("kubeconfig"),
        );
        std::fs::write(&b, "apiVersion: v1\n").expect("write");
        let candidates = [a.to_str().expect("utf-8"), b.to_str().expect("utf-8")];
        assert_eq!(node_kubeconfig(candidates), Some(b.clone()));
        std::fs::write(&a, "apiVersion: v1\n").expect("write");
        assert_eq!(node_kubeconfig(candidates), Some(a));
        assert_eq!(node_kubeconfig(["/nonexistent/kubelet.conf"]), None);
    }

    #[test]
    fn config_keys() {
        let config: KubernetesConfig = serde_json::from_str(
            r#"{"kubeconfig": "/etc/sonde/kubeconfig", "context": "kind",
                "watch_services": false, "max_backoff": "5s"}"#,
        )
        .expect("config parses");
        assert!(config.enabled);
        assert_eq!(
            config.kubeconfig,
            Some(PathBuf::from("/etc/sonde/kubeconfig"))
        );
        assert_eq!(config.context.as_deref(), Some("kind"));
        assert!(!config.watch_services);
        assert!(config.watch_owners);
        assert_eq!(config.max_backoff, Duration::from_secs(5));
        let config: KubernetesConfig =
            serde_json::from_str(r#"{"enabled": false}"#).expect("enabled");
        assert!(!config.enabled);
        assert!(serde_json::from_str::<KubernetesConfig>(r#"{"kubeconfg": "/x"}"#).is_err());
    }
}
