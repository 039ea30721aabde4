//! Kubernetes metadata: which pod and container an event belongs to.
//!
//! - [`pods`]: the stripped pod model ([`PodMeta`]) and the lenient PodList parser;
//! - [`store`]: the pod store and its container-id index, fed by one or more sources;
//! - [`kubelet`]: the kubelet `/pods` client, its diagnosis of failures, and the refresher task
//!   that keeps the store's kubelet view current;
//! - [`node`]: which node this agent runs on; [`detect`]: whether this host is a Kubernetes node;
//! - [`workload`]: a pod's top-level controller (Deployment, CronJob, …) from the pod alone.
//!
//! The apiserver watchers plug in as another [`store::PodSource`] feeding the same store.

pub mod detect;
pub mod kubelet;
pub mod node;
pub mod pods;
pub mod store;
pub mod workload;

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
