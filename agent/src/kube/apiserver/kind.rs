//! The kinds Sonde watches, with the API coordinates an RBAC rule names.

use serde::Serialize;

/// One watched kind; exactly one watch per kind runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WatchKind {
    /// This node's pods (`fieldSelector=spec.nodeName=<node>`).
    Pods,
    /// This node (`fieldSelector=metadata.name=<node>`), for its labels.
    Node,
    /// All namespaces, for their labels.
    Namespaces,
    /// All ReplicaSets: ReplicaSet → Deployment.
    ReplicaSets,
    /// All Jobs: Job → CronJob.
    Jobs,
    /// All Services: ClusterIP:port → Service.
    Services,
    /// All EndpointSlices: endpoint address → pod and Service.
    EndpointSlices,
    /// All events: watched by the cluster's leader (`cluster::events`), not by the metadata
    /// source.
    Events,
}

impl WatchKind {
    /// The metadata source's kinds (not [`WatchKind::Events`], the leader's).
    pub const ALL: [WatchKind; 7] = [
        WatchKind::Pods,
        WatchKind::Node,
        WatchKind::Namespaces,
        WatchKind::ReplicaSets,
        WatchKind::Jobs,
        WatchKind::Services,
        WatchKind::EndpointSlices,
    ];

    /// Whether `config` has the metadata source watch this kind (the pods always; the rest for
    /// what it shows; the events never: the leader watches them).
    pub fn wanted(self, config: &super::config::KubernetesConfig) -> bool {
        match self {
            WatchKind::Pods => true,
            WatchKind::Node => !config.node_labels.is_empty(),
            WatchKind::Namespaces => !config.namespace_labels.is_empty(),
            WatchKind::ReplicaSets | WatchKind::Jobs => config.watch_owners,
            WatchKind::Services | WatchKind::EndpointSlices => config.watch_services,
            WatchKind::Events => false,
        }
    }

    /// The resource name, as in RBAC rules and URLs.
    pub fn resource(self) -> &'static str {
        match self {
            WatchKind::Pods => "pods",
            WatchKind::Node => "nodes",
            WatchKind::Namespaces => "namespaces",
            WatchKind::ReplicaSets => "replicasets",
            WatchKind::Jobs => "jobs",
            WatchKind::Services => "services",
            WatchKind::EndpointSlices => "endpointslices",
            WatchKind::Events => "events",
        }
    }

    /// The API group (`""` is the core group).
    pub fn api_group(self) -> &'static str {
        match self {
            WatchKind::Pods
            | WatchKind::Node
            | WatchKind::Namespaces
            | WatchKind::Services
            | WatchKind::Events => "",
            WatchKind::ReplicaSets => "apps",
            WatchKind::Jobs => "batch",
            WatchKind::EndpointSlices => "discovery.k8s.io",
        }
    }

    /// The RBAC rule that allows this watch, in ClusterRole YAML flow style.
    pub fn rbac_rule(self) -> String {
        rbac_rule(self.api_group(), self.resource(), &["list", "watch"])
    }
}

/// An RBAC rule in ClusterRole YAML flow style, as fixes quote it:
/// `{apiGroups: ["apps"], resources: ["replicasets"], verbs: ["list", "watch"]}`.
pub fn rbac_rule(group: &str, resource: &str, verbs: &[&str]) -> String {
    let verbs: Vec<String> = verbs.iter().map(|v| format!("\"{v}\"")).collect();
    format!(
        "{{apiGroups: [\"{group}\"], resources: [\"{resource}\"], verbs: [{}]}}",
        verbs.join(", ")
    )
}

impl std::fmt::Display for WatchKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.resource())
    }
}
