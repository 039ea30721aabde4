//! Kubernetes metadata: which pod and container an event belongs to.
//!
//! - [`pods`]: the stripped pod model ([`PodMeta`]) and the lenient PodList parser;
//! - [`store`]: the pod store and its container-id index, fed by one or more sources;
//! - [`kubelet`]: the kubelet `/pods` client, its diagnosis of failures, and the refresher task
//!   that keeps the store's kubelet view current;
//! - [`node`]: which node this agent runs on; [`detect`]: whether this host is a Kubernetes node;
//! - [`workload`]: a pod's top-level controller: the apiserver's owner chain, else the name rules;
//! - [`apiserver`]: the apiserver watches (kube-rs): this node's pods as another
//!   [`store::PodSource`] feeding the same store, node and namespace labels, owners
//!   (each ReplicaSet's and Job's controller), Services and EndpointSlices;
//! - [`services`]: the remote index — which Service or pod is at a peer address;
//! - [`source`]: the kit every source shares: [`source::SourceHandle`], [`source::Backoff`],
//!   [`source::SyncHealth`].

pub mod apiserver;
pub mod detect;
pub mod kubelet;
pub mod node;
pub mod pods;
pub mod services;
pub mod source;
pub mod store;
pub mod workload;

pub use apiserver::{
    ApiserverError, ApiserverHandle, ApiserverSyncState, KindSyncState, KubernetesConfig,
    LabelIndex, OwnerIndex, WatchKind, spawn_apiserver_source,
};
pub use services::{ObjectName, Remote, RemoteIndex};

pub use kubelet::{
    KubeletClient, KubeletConfig, KubeletError, KubeletHandle, KubeletSyncState,
    spawn_kubelet_source,
};
pub use node::{NodeName, NodeNameSource, resolve_node_name};
pub use pods::{
    ContainerId, ContainerKind, ContainerMeta, ContainerState, OwnerRef, ParseError, ParsedPods,
    PodMeta, PodPhase, parse_pod_list,
};
pub use store::{ContainerRef, PodSource, PodStore};

/// Up to `max` characters of a peer's text (kubelet, apiserver), on one line, for an error
/// message.
pub(crate) fn snippet(text: &str, max: usize) -> String {
    let mut out: String = text
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    if text.trim().chars().count() > max {
        out.push('…');
    }
    out
}
