//! The pod store: what each metadata source last reported, indexed by container id and pod uid.
//!
//! Each source (the kubelet, later the apiserver watchers) owns its own snapshot; a source
//! replaces its snapshot whole ([`PodStore::replace`], a kubelet poll or a watch re-list) or
//! changes one pod ([`PodStore::upsert`], [`PodStore::remove`], watch events). Lookups ask the
//! sources in [`PodSource`] order; the first that knows the id answers. Indexes are built
//! outside the lock, so readers wait only for a pointer swap.
//!
//! Memory is bounded by what the sources report (one node's pods for the kubelet); a container
//! id is indexed for its current and its previous instance only.

use foldhash::{HashMap, HashMapExt};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde::Serialize;

use super::{
    pods::{ContainerMeta, PodMeta},
    source::Generation,
};

/// Where pod metadata came from, in lookup priority order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PodSource {
    /// The node's kubelet (`/pods`): this node's pods, static pods under their own uid.
    Kubelet,
    /// The apiserver (watch on pods with `spec.nodeName=<node>`).
    Apiserver,
}

impl PodSource {
    const ALL: [PodSource; 2] = [PodSource::Kubelet, PodSource::Apiserver];

    fn slot(self) -> usize {
        self as usize
    }
}

/// A container found by id: its pod, and which of the pod's containers it is.
#[derive(Clone, Debug)]
pub struct ContainerRef {
    pub pod: Arc<PodMeta>,
    pub index: usize,
    pub source: PodSource,
}

impl ContainerRef {
    pub fn container(&self) -> &ContainerMeta {
        &self.pod.containers[self.index]
    }
}

#[derive(Default)]
struct Snapshot {
    pods: HashMap<Box<str>, Arc<PodMeta>>,
    /// Bare container id -> (pod, container index).
    containers: HashMap<Box<str>, (Arc<PodMeta>, usize)>,
}

impl Snapshot {
    fn build(pods: Vec<PodMeta>) -> Self {
        let mut snapshot = Snapshot {
            pods: HashMap::with_capacity(pods.len()),
            containers: HashMap::with_capacity(pods.len() * 2),
        };
        for pod in pods {
            snapshot.insert(Arc::new(pod));
        }
        snapshot
    }

    fn insert(&mut self, pod: Arc<PodMeta>) {
        if let Some(old) = self.pods.insert(pod.uid.as_str().into(), Arc::clone(&pod)) {
            self.unindex(&old);
        }
        for (id, index) in pod.container_ids() {
            self.containers.insert(id.into(), (Arc::clone(&pod), index));
        }
    }

    fn remove(&mut self, uid: &str) -> Option<Arc<PodMeta>> {
        let old = self.pods.remove(uid)?;
        self.unindex(&old);
        Some(old)
    }

    /// Drops the index entries that still point at `old` (a container id reused by a newer
    /// pod version stays).
    fn unindex(&mut self, old: &Arc<PodMeta>) {
        for (id, _) in old.container_ids() {
            if let Some((pod, _)) = self.containers.get(id)
                && Arc::ptr_eq(pod, old)
            {
                self.containers.remove(id);
            }
        }
    }
}

/// Counts for status and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SourceCounts {
    pub pods: usize,
    pub containers: usize,
}

/// The pods known to the agent, shared between the sources that fill it and the enrichment
/// that reads it.
#[derive(Default)]
pub struct PodStore {
    sources: RwLock<[Arc<Snapshot>; 2]>,
    generation: Generation,
}

impl std::fmt::Debug for PodStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("PodStore");
        for source in PodSource::ALL {
            d.field(&format!("{source:?}"), &self.counts(source));
        }
        d.finish()
    }
}

impl PodStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, [Arc<Snapshot>; 2]> {
        // A panic while holding the lock cannot leave a snapshot half-built (they are swapped
        // whole), so a poisoned lock is still consistent.
        self.sources.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, [Arc<Snapshot>; 2]> {
        self.sources.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces everything `source` knew with `pods`; returns the new counts.
    pub fn replace(&self, source: PodSource, pods: Vec<PodMeta>) -> SourceCounts {
        let snapshot = Arc::new(Snapshot::build(pods));
        let counts = SourceCounts {
            pods: snapshot.pods.len(),
            containers: snapshot.containers.len(),
        };
        let old = std::mem::replace(&mut self.write()[source.slot()], snapshot);
        self.generation.bump();
        // The old snapshot is freed here, outside the lock.
        drop(old);
        counts
    }

    /// Adds or updates one pod (keyed by uid) in `source`'s view.
    pub fn upsert(&self, source: PodSource, pod: PodMeta) {
        self.modify(source, |s| s.insert(Arc::new(pod)));
    }

    /// Removes one pod from `source`'s view; returns it if it was known.
    pub fn remove(&self, source: PodSource, uid: &str) -> Option<Arc<PodMeta>> {
        let mut removed = None;
        self.modify(source, |s| removed = s.remove(uid));
        removed
    }

    /// Copy-on-write change of one source's snapshot (cheap while no reader holds it: the
    /// snapshot is then changed in place).
    fn modify(&self, source: PodSource, change: impl FnOnce(&mut Snapshot)) {
        let mut sources = self.write();
        let slot = &mut sources[source.slot()];
        if let Some(snapshot) = Arc::get_mut(slot) {
            change(snapshot);
        } else {
            let mut copy = Snapshot {
                pods: slot.pods.clone(),
                containers: slot.containers.clone(),
            };
            change(&mut copy);
            *slot = Arc::new(copy);
        }
        self.generation.bump();
    }

    /// Changes so far: a lookup memoised at one generation is still right at the same one.
    pub fn generation(&self) -> u64 {
        self.generation.get()
    }

    /// The pod and container a runtime container id (bare, as in cgroup paths) belongs to.
    pub fn lookup_container(&self, id: &str) -> Option<ContainerRef> {
        let sources = self.read();
        PodSource::ALL.into_iter().find_map(|source| {
            let (pod, index) = sources[source.slot()].containers.get(id)?;
            Some(ContainerRef {
                pod: Arc::clone(pod),
                index: *index,
                source,
            })
        })
    }

    /// The pod with this uid (as in cgroup paths: `pod<uid>`).
    pub fn lookup_pod(&self, uid: &str) -> Option<Arc<PodMeta>> {
        let sources = self.read();
        PodSource::ALL
            .into_iter()
            .find_map(|source| sources[source.slot()].pods.get(uid).cloned())
    }

    pub fn counts(&self, source: PodSource) -> SourceCounts {
        let snapshot = &self.read()[source.slot()];
        SourceCounts {
            pods: snapshot.pods.len(),
            containers: snapshot.containers.len(),
        }
    }

    /// All pods `source` knows, in no particular order.
    pub fn pods(&self, source: PodSource) -> Vec<Arc<PodMeta>> {
        self.read()[source.slot()].pods.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::pods::{ContainerId, ContainerKind, ContainerState};

    fn pod(uid: &str, ids: &[&str]) -> PodMeta {
        PodMeta {
            namespace: "ns".into(),
            name: format!("pod-{uid}"),
            uid: uid.into(),
            labels: Default::default(),
            owner: None,
            workload: None,
            node_name: None,
            static_pod: false,
            phase: Default::default(),
            host_network: false,
            pod_ips: vec![],
            containers: ids
                .iter()
                .enumerate()
                .map(|(i, id)| ContainerMeta {
                    name: format!("c{i}"),
                    kind: ContainerKind::Regular,
                    id: ContainerId::parse(id),
                    previous_id: None,
                    image: String::new(),
                    image_id: String::new(),
                    state: ContainerState::Running,
                })
                .collect(),
        }
    }

    #[test]
    fn replace_and_lookup() {
        let store = PodStore::new();
        let counts = store.replace(
            PodSource::Kubelet,
            vec![
                pod("u1", &["containerd://a", "containerd://b"]),
                pod("u2", &[""]),
            ],
        );
        assert_eq!(
            counts,
            SourceCounts {
                pods: 2,
                containers: 2
            }
        );
        let found = store.lookup_container("b").expect("b indexed");
        assert_eq!(found.pod.uid, "u1");
        assert_eq!(found.container().name, "c1");
        assert_eq!(found.source, PodSource::Kubelet);
        assert!(store.lookup_container("containerd://a").is_none());
        assert_eq!(
            store.lookup_pod("u2").map(|p| p.name.clone()).as_deref(),
            Some("pod-u2")
        );

        store.replace(PodSource::Kubelet, vec![pod("u3", &["containerd://c"])]);
        assert!(store.lookup_container("a").is_none());
        assert!(store.lookup_pod("u1").is_none());
        assert_eq!(store.lookup_container("c").map(|c| c.index), Some(0));
    }

    #[test]
    fn sources_are_separate_and_ordered() {
        let store = PodStore::new();
        store.replace(PodSource::Apiserver, vec![pod("api", &["x", "y"])]);
        store.replace(PodSource::Kubelet, vec![pod("kubelet", &["x"])]);
        assert_eq!(
            store.lookup_container("x").map(|c| c.source),
            Some(PodSource::Kubelet)
        );
        assert_eq!(
            store.lookup_container("y").map(|c| c.source),
            Some(PodSource::Apiserver)
        );
        store.replace(PodSource::Kubelet, vec![]);
        assert_eq!(
            store.lookup_container("x").map(|c| c.source),
            Some(PodSource::Apiserver)
        );
    }

    #[test]
    fn upsert_and_remove() {
        let store = PodStore::new();
        store.upsert(PodSource::Apiserver, pod("u1", &["a"]));
        let held = store.lookup_container("a").expect("a");
        // A reader keeps the pod version it was given.
        store.upsert(PodSource::Apiserver, pod("u1", &["b"]));
        assert_eq!(
            held.pod.containers[0].id.as_ref().map(|i| i.id.as_str()),
            Some("a")
        );
        assert!(store.lookup_container("a").is_none());
        assert!(store.lookup_container("b").is_some());
        assert!(store.remove(PodSource::Apiserver, "u1").is_some());
        assert!(store.lookup_container("b").is_none());
        assert_eq!(store.counts(PodSource::Apiserver), SourceCounts::default());
    }
}
