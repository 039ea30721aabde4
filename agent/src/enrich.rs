//! The join: an event plus what the node model and the Kubernetes metadata know → an
//! attributed record.
//!
//! Every event says which cgroup it came from and what that cgroup is (container runtime and
//! id, pod UID and QoS class, or systemd unit and slice); connections whose owner the kernel did
//! not know (they predate Sonde) get it from the start-up scan. A container id the pod store
//! knows adds the pod: namespace, name, container name, image and owning workload (the
//! apiserver's owner chain — any controller kind — else the name rules, [`Workloads`]). A container
//! of a pod (its cgroup is under kubepods) that the store does not know yet asks the kubelet
//! source for a refresh (coalesced and rate-limited there), so metadata that arrives late — the
//! bootstrap phase of a node — is picked up within a refresh interval of the first event. A
//! connection's remote address is named from the apiserver's Services and EndpointSlices.
//!
//! The Kubernetes half of a cgroup's attribution is memoised per cgroup ([`JoinMemo`]): the
//! pod store, the owner chain and the labels are read once per container until one of them
//! changes, not on every event.

use std::sync::Arc;

use crate::{
    event::{ConnPhase, Event},
    kube::{
        ContainerRef, KubeletHandle, LabelIndex, PodStore, Remote, RemoteIndex,
        apiserver::labels::Labels, pods::OwnerRef, workload::Workloads,
    },
    node::{FoundConn, NodeModel, cgroup::CgroupInfo},
};

/// What an event is attributed to, beyond what the kernel record carries.
#[derive(Clone, Debug, Default)]
pub struct Attribution {
    /// The cgroup of the process (or socket) behind the event, when known.
    pub cgroup: Option<Arc<CgroupInfo>>,
    /// The pod and container behind the cgroup's container id, when the metadata knows it.
    pub pod: Option<ContainerRef>,
    /// The pod's workload (its owner chain from the apiserver, else the name rules).
    pub workload: Option<Arc<OwnerRef>>,
    /// The allow-listed labels of the pod's namespace (`kubernetes.namespace_labels`).
    pub namespace_labels: Option<Labels>,
    /// The allow-listed labels of this node (`kubernetes.node_labels`).
    pub node_labels: Option<Labels>,
    /// For a connection found at start-up and now closing: its owner and id from the scan.
    pub found: Option<FoundConn>,
    /// For a connection: the Service or pod at the remote address, or `External`; `None`
    /// without apiserver metadata, or while it knows no Service yet.
    pub remote: Option<Arc<Remote>>,
    /// For a connection: `outbound`, `inbound` or `unknown` — the kernel's word when it knew,
    /// else the start-up scan's.
    pub direction: Option<&'static str>,
}

impl Attribution {
    /// The container id the cgroup path names, if any.
    pub fn container_id(&self) -> Option<&str> {
        self.cgroup.as_ref()?.identity.container_id.as_deref()
    }
}

/// The Kubernetes half of a cgroup's attribution, memoised per cgroup: the pod store, the owner
/// chain and the labels are read once per container and generation, not once per event.
#[derive(Clone, Debug, Default)]
struct PodJoin {
    pod: Option<ContainerRef>,
    workload: Option<Arc<OwnerRef>>,
    namespace_labels: Option<Labels>,
    node_labels: Option<Labels>,
}

/// Cgroups whose Kubernetes half is memoised at most (then the memo starts afresh).
const MEMO_CGROUPS: usize = 4096;

/// The join's memo: cgroup id → [`PodJoin`], valid while the pod store's, the owner index's and
/// the label index's generations are those it was filled at (any change empties it: changes
/// are rare next to events). A kubepods cgroup whose container is not known yet is never
/// memoised: each of its events asks the kubelet source again (coalesced there), as without
/// the memo.
#[derive(Default)]
pub struct JoinMemo {
    stamp: [u64; 3],
    by_cgroup: foldhash::HashMap<u64, PodJoin>,
}

impl Clone for JoinMemo {
    /// A copy starts empty (a memo belongs to the join that fills it).
    fn clone(&self) -> Self {
        Self::default()
    }
}

/// The Kubernetes side of the join: the pod store, and the kubelet source to ask for a refresh
/// when a pod's container is not known yet. Empty on a host without Kubernetes.
#[derive(Clone, Default)]
pub struct KubeJoin {
    pub pods: Arc<PodStore>,
    pub kubelet: Option<Arc<KubeletHandle>>,
    /// Services and endpoints by address, when the apiserver source runs.
    pub remote: Option<Arc<RemoteIndex>>,
    /// Names pods' workloads (with the apiserver's owner chain when it runs).
    pub workloads: Workloads,
    /// Node and namespace labels, when the apiserver runs and the configuration shows some.
    pub labels: Option<Arc<LabelIndex>>,
    /// What the join has looked up per cgroup (filled by the join itself).
    pub memo: JoinMemo,
}

impl KubeJoin {
    /// The pod and container of a cgroup, when the metadata knows them.
    pub fn pod_of(&self, cgroup: Option<&CgroupInfo>) -> Option<ContainerRef> {
        let id = &cgroup?.identity;
        let container_id = id.container_id.as_deref()?;
        let found = self.pods.lookup_container(container_id);
        if found.is_none()
            && id.pod_uid.is_some()
            && let Some(kubelet) = &self.kubelet
        {
            kubelet.request_refresh();
        }
        found
    }

    /// The attribution of a cgroup alone (processes and connections found at start-up).
    pub fn attribute_cgroup(&mut self, node: &mut NodeModel, cgroup_id: u64) -> Attribution {
        let cgroup = node.cgroup(cgroup_id);
        let PodJoin {
            pod,
            workload,
            namespace_labels,
            node_labels,
        } = self.pod_join(cgroup_id, cgroup.as_deref());
        Attribution {
            workload,
            namespace_labels,
            node_labels,
            pod,
            cgroup,
            found: None,
            remote: None,
            direction: None,
        }
    }

    /// The Kubernetes half of `cgroup`'s attribution, from the memo when it is current.
    fn pod_join(&mut self, cgroup_id: u64, cgroup: Option<&CgroupInfo>) -> PodJoin {
        let stamp = [
            self.pods.generation(),
            self.workloads.generation(),
            self.labels.as_ref().map_or(0, |l| l.generation()),
        ];
        if stamp != self.memo.stamp || self.memo.by_cgroup.len() >= MEMO_CGROUPS {
            self.memo.by_cgroup.clear();
            self.memo.stamp = stamp;
        }
        if let Some(known) = self.memo.by_cgroup.get(&cgroup_id) {
            return known.clone();
        }
        let pod = self.pod_of(cgroup);
        let (namespace_labels, node_labels) = match &self.labels {
            Some(labels) => (
                pod.as_ref()
                    .and_then(|p| labels.namespace(&p.pod.namespace)),
                labels.node(),
            ),
            None => (None, None),
        };
        let join = PodJoin {
            workload: pod.as_ref().and_then(|p| self.workloads.of(&p.pod)),
            namespace_labels,
            node_labels,
            pod,
        };
        let awaited = join.pod.is_none() && cgroup.is_some_and(|c| c.identity.pod_uid.is_some());
        if !awaited {
            self.memo.by_cgroup.insert(cgroup_id, join.clone());
        }
        join
    }

    /// The attribution of a connection found open at start-up.
    pub fn attribute_found(&mut self, node: &mut NodeModel, conn: &FoundConn) -> Attribution {
        Attribution {
            remote: self.remote_of(conn.remote),
            direction: Some(conn.direction),
            ..self.attribute_cgroup(node, conn.cgroup_id)
        }
    }

    /// The Service or pod at `addr`, when the apiserver metadata is there and knows Services
    /// (before that, nothing can be called external).
    pub fn remote_of(&self, addr: std::net::SocketAddr) -> Option<Arc<Remote>> {
        // An IPv4-mapped address (a dual-stack socket) is the IPv4 address it maps.
        self.remote
            .as_ref()?
            .lookup_known(addr.ip().to_canonical(), addr.port())
    }
}

/// The cgroup id an event belongs to.
pub fn cgroup_id(ev: &Event) -> u64 {
    match ev {
        Event::Exec(r) => r.task.cgroup_id,
        Event::Fork(r) => r.child_cgroup_id,
        Event::Exit(r) => r.task.cgroup_id,
        Event::Conn(c) => c.cgroup_id(),
        Event::Cgroup { record, .. } => record.id,
    }
}

/// Applies `ev` to the model and attributes it.
pub fn attribute(node: &mut NodeModel, kube: &mut KubeJoin, ev: &Event) -> Attribution {
    let found = match ev {
        // Closing a connection that existed at start-up: the scan knows its owner.
        Event::Conn(c) if c.phase != ConnPhase::Open && !c.seen_open() => {
            node.take_found_conn(c.local(), c.remote())
        }
        _ => None,
    };
    node.apply(ev);
    if matches!(ev, Event::Cgroup { .. }) {
        return Attribution::default();
    }
    let mut id = cgroup_id(ev);
    if id == 0 {
        id = found.as_ref().map_or(0, |f| f.cgroup_id);
    }
    let (remote, direction) = match ev {
        Event::Conn(c) => {
            let direction = match (c.direction_name(), &found) {
                ("unknown", Some(f)) => f.direction,
                (kernel, _) => kernel,
            };
            (kube.remote_of(c.remote()), Some(direction))
        }
        _ => (None, None),
    };
    Attribution {
        found,
        remote,
        direction,
        ..kube.attribute_cgroup(node, id)
    }
}

#[cfg(test)]
mod tests;
