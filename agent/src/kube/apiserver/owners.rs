//! Owner resolution: a pod's owner (a ReplicaSet, a Job) to the workload that made it — the
//! owner's own controller, whatever its kind: a Deployment, a CronJob, an Argo Rollout, any
//! custom controller.
//!
//! One entry per ReplicaSet and per Job of the cluster (the watches are metadata-only): its
//! namespace and name → its workload (its controller, or itself when it has none, so that a
//! bare ReplicaSet is not mistaken for a Deployment's by the name rules). Namespaces are shared
//! keys; lookups take `&str` and allocate nothing.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use crate::kube::{pods::OwnerRef, source::Generation};

/// namespace → name → workload.
type Links = HashMap<Arc<str>, HashMap<Box<str>, Arc<OwnerRef>>>;

/// ReplicaSets' and Jobs' workloads.
#[derive(Debug, Default)]
pub struct OwnerIndex {
    replica_sets: RwLock<Links>,
    jobs: RwLock<Links>,
    generation: Generation,
}

/// Which table a watch feeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnerLink {
    ReplicaSet,
    Job,
}

impl OwnerLink {
    /// The kind of the objects in the table.
    pub fn kind(self) -> &'static str {
        match self {
            OwnerLink::ReplicaSet => "ReplicaSet",
            OwnerLink::Job => "Job",
        }
    }

    fn of_kind(kind: &str) -> Option<Self> {
        match kind {
            "ReplicaSet" => Some(OwnerLink::ReplicaSet),
            "Job" => Some(OwnerLink::Job),
            _ => None,
        }
    }
}

/// One ReplicaSet's or Job's entry: `(namespace, name, workload)`.
pub type OwnerEntry = (String, String, OwnerRef);

impl OwnerIndex {
    pub fn new() -> Self {
        Self::default()
    }

    fn table(&self, link: OwnerLink) -> &RwLock<Links> {
        match link {
            OwnerLink::ReplicaSet => &self.replica_sets,
            OwnerLink::Job => &self.jobs,
        }
    }

    /// The workload of `owner` (a pod's owner, in `namespace`) when the index knows it: a
    /// ReplicaSet's or Job's controller (or the object itself when it has none). `None` for
    /// other kinds and for objects not known (yet).
    pub fn workload_of(&self, owner: &OwnerRef, namespace: &str) -> Option<Arc<OwnerRef>> {
        let link = OwnerLink::of_kind(&owner.kind)?;
        let table = self.table(link).read().unwrap_or_else(|e| e.into_inner());
        table.get(namespace)?.get(owner.name.as_str()).cloned()
    }

    /// [`Self::workload_of`], with `owner` itself when the index does not know it.
    pub fn workload(&self, owner: &OwnerRef, namespace: &str) -> OwnerRef {
        self.workload_of(owner, namespace)
            .map_or_else(|| owner.clone(), |w| OwnerRef::clone(&w))
    }

    /// Records (or, with `workload: None`, forgets) one ReplicaSet's or Job's workload.
    pub fn set(&self, link: OwnerLink, namespace: &str, name: &str, workload: Option<OwnerRef>) {
        let mut table = self.table(link).write().unwrap_or_else(|e| e.into_inner());
        match workload {
            Some(workload) => {
                insert(&mut table, namespace, name, workload);
            }
            None => {
                if let Some(names) = table.get_mut(namespace) {
                    names.remove(name);
                    if names.is_empty() {
                        table.remove(namespace);
                    }
                }
            }
        }
        drop(table);
        self.generation.bump();
    }

    /// Replaces every entry of one table (a re-list).
    pub fn replace(&self, link: OwnerLink, entries: Vec<OwnerEntry>) {
        let mut fresh = Links::new();
        for (namespace, name, workload) in entries {
            insert(&mut fresh, &namespace, &name, workload);
        }
        let old = std::mem::replace(
            &mut *self.table(link).write().unwrap_or_else(|e| e.into_inner()),
            fresh,
        );
        self.generation.bump();
        drop(old);
    }

    /// Changes so far (see [`Generation`]).
    pub fn generation(&self) -> u64 {
        self.generation.get()
    }

    /// Entries held in one table.
    pub fn len(&self, link: OwnerLink) -> usize {
        self.table(link)
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(HashMap::len)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len(OwnerLink::ReplicaSet) == 0 && self.len(OwnerLink::Job) == 0
    }
}

fn insert(table: &mut Links, namespace: &str, name: &str, workload: OwnerRef) {
    let names = match table.get_mut(namespace) {
        Some(names) => names,
        None => table.entry(Arc::from(namespace)).or_default(),
    };
    names.insert(Box::from(name), Arc::new(workload));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(kind: &str, name: &str) -> OwnerRef {
        OwnerRef {
            kind: kind.into(),
            name: name.into(),
        }
    }

    #[test]
    fn resolves_any_controller_kind_and_forgets() {
        let index = OwnerIndex::new();
        index.set(
            OwnerLink::ReplicaSet,
            "web",
            "front-7d9f",
            Some(owner("Deployment", "front")),
        );
        index.set(
            OwnerLink::ReplicaSet,
            "web",
            "canary-6f8d",
            Some(owner("Rollout", "canary")),
        );
        index.set(
            OwnerLink::Job,
            "batch",
            "report-29707813",
            Some(owner("CronJob", "report")),
        );
        assert_eq!(
            index.workload(&owner("ReplicaSet", "front-7d9f"), "web"),
            owner("Deployment", "front")
        );
        assert_eq!(
            index.workload(&owner("ReplicaSet", "canary-6f8d"), "web"),
            owner("Rollout", "canary")
        );
        // Same name, other namespace: not known.
        assert_eq!(
            index.workload_of(&owner("ReplicaSet", "front-7d9f"), "other"),
            None
        );
        assert_eq!(
            index.workload(&owner("Job", "report-29707813"), "batch"),
            owner("CronJob", "report")
        );
        // Kinds that are workloads themselves are not looked up.
        assert_eq!(index.workload_of(&owner("StatefulSet", "db"), "web"), None);
        assert_eq!(index.len(OwnerLink::ReplicaSet), 2);
        index.set(OwnerLink::ReplicaSet, "web", "front-7d9f", None);
        index.set(OwnerLink::ReplicaSet, "web", "canary-6f8d", None);
        assert_eq!(
            index.workload_of(&owner("ReplicaSet", "front-7d9f"), "web"),
            None
        );
        assert_eq!(index.len(OwnerLink::ReplicaSet), 0);
        index.replace(OwnerLink::Job, vec![]);
        assert!(index.is_empty());
    }
}
