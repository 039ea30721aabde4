//! The join's per-cgroup memo: what it returns follows every change of the pod store, the
//! owner chain and the labels, and it stays bounded.

use super::*;
use crate::{
    kube::{
        OwnerIndex, PodMeta, PodSource, apiserver::OwnerLink, pods::parse_pod_list,
        workload::Workloads,
    },
    node::NodeConfig,
};

const CONTAINER: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A kubelet-shaped pod owned by ReplicaSet `web-7d9f`, labelled `rev=<rev>`, whose container
/// is `CONTAINER`.
fn pod(rev: &str) -> PodMeta {
    let list = format!(
        r#"{{"items":[{{"metadata":{{"name":"web-7d9f-x1","namespace":"shop","uid":"11111111-2222-3333-4444-555555555555","labels":{{"rev":"{rev}","pod-template-hash":"7d9f"}},"ownerReferences":[{{"kind":"ReplicaSet","name":"web-7d9f","controller":true}}]}},"spec":{{"containers":[{{"name":"web","image":"web:1"}}]}},"status":{{"containerStatuses":[{{"name":"web","containerID":"containerd://{CONTAINER}","image":"web:1","state":{{"running":{{}}}}}}]}}}}]}}"#
    );
    let mut parsed = parse_pod_list(list.as_bytes()).expect("test pod list parses");
    parsed.pods.remove(0)
}

/// A node model that knows cgroup `id` as a container of that pod (and nothing else).
fn node_with_container(id: u64) -> NodeModel {
    let mut node = NodeModel::new(&NodeConfig::default()).expect("this host's cgroup v2 hierarchy");
    node.cgroups.created(
        id,
        &format!(
            "/kubepods.slice/kubepods-pod11111111_2222_3333_4444_555555555555.slice/cri-containerd-{CONTAINER}.scope"
        ),
    );
    node
}

fn rev(attr: &Attribution) -> Option<String> {
    attr.pod.as_ref()?.pod.labels.get("rev").cloned()
}

#[test]
fn what_the_join_returns_follows_the_store_and_the_owner_chain() {
    let mut node = node_with_container(77);
    let pods = Arc::new(PodStore::new());
    let owners = Arc::new(OwnerIndex::new());
    let mut kube = KubeJoin {
        pods: Arc::clone(&pods),
        workloads: Workloads::with_owners(Arc::clone(&owners)),
        ..KubeJoin::default()
    };
    // Not known yet (the bootstrap phase): no pod, and nothing memoised for it.
    assert!(kube.attribute_cgroup(&mut node, 77).pod.is_none());
    assert!(
        kube.memo.by_cgroup.is_empty(),
        "an awaited pod was memoised"
    );

    pods.replace(PodSource::Kubelet, vec![pod("1")]);
    let first = kube.attribute_cgroup(&mut node, 77);
    assert_eq!(rev(&first).as_deref(), Some("1"));
    let workload = first
        .workload
        .as_deref()
        .map(|w| (w.kind.as_str(), w.name.as_str()));
    assert_eq!(workload, Some(("Deployment", "web")), "the name rules");
    assert_eq!(kube.memo.by_cgroup.len(), 1);
    // Memoised: the same shared pod, not looked up again.
    let again = kube.attribute_cgroup(&mut node, 77);
    assert!(Arc::ptr_eq(
        &first.pod.as_ref().expect("pod").pod,
        &again.pod.as_ref().expect("pod").pod
    ));

    // A change of the pod is seen by the next event.
    pods.upsert(PodSource::Kubelet, pod("2"));
    assert_eq!(
        rev(&kube.attribute_cgroup(&mut node, 77)).as_deref(),
        Some("2")
    );

    // So is a change of the owner chain (the ReplicaSet belongs to a Rollout).
    owners.set(
        OwnerLink::ReplicaSet,
        "shop",
        "web-7d9f",
        Some(OwnerRef {
            kind: "Rollout".into(),
            name: "web".into(),
        }),
    );
    let attr = kube.attribute_cgroup(&mut node, 77);
    let workload = attr
        .workload
        .as_deref()
        .map(|w| (w.kind.as_str(), w.name.as_str()));
    assert_eq!(workload, Some(("Rollout", "web")));

    // And the pod's removal.
    pods.replace(PodSource::Kubelet, vec![]);
    let attr = kube.attribute_cgroup(&mut node, 77);
    assert!(attr.pod.is_none() && attr.workload.is_none());
}

#[test]
fn the_memo_is_bounded() {
    let mut node = node_with_container(77);
    let mut kube = KubeJoin::default();
    for id in 1..=(MEMO_CGROUPS as u64 + 10) {
        kube.attribute_cgroup(&mut node, 1_000_000 + id);
        assert!(kube.memo.by_cgroup.len() <= MEMO_CGROUPS);
    }
    assert!(!kube.memo.by_cgroup.is_empty());
}
