//! Owner resolution: a pod's owner (a ReplicaSet, a Job) to the workload that made it (a
//! Deployment, a CronJob).
//!
//! Only the links are kept: one entry per ReplicaSet owned by a Deployment and per Job owned
//! by a CronJob (namespace, name → owner name); other ReplicaSets and Jobs are not stored.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use crate::kube::pods::OwnerRef;

type Links = HashMap<(Arc<str>, Arc<str>), Arc<str>>;

/// ReplicaSet → Deployment and Job → CronJob links.
#[derive(Debug, Default)]
pub struct OwnerIndex {
    replica_sets: RwLock<Links>,
    jobs: RwLock<Links>,
}

/// Which link table a watch feeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnerLink {
    /// ReplicaSet → Deployment.
    ReplicaSet,
    /// Job → CronJob.
    Job,
}

impl OwnerLink {
    /// The owner kind that makes a link.
    pub fn parent_kind(self) -> &'static str {
        match self {
            OwnerLink::ReplicaSet => "Deployment",
            OwnerLink::Job => "CronJob",
        }
    }
}

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

    /// The workload `owner` (a pod's owner, in `namespace`) belongs to: the Deployment of a
    /// ReplicaSet, the CronJob of a Job; any other owner (or one not known yet) is returned as
    /// it is.
    pub fn workload(&self, owner: &OwnerRef, namespace: &str) -> OwnerRef {
        let link = match owner.kind.as_str() {
            "ReplicaSet" => OwnerLink::ReplicaSet,
            "Job" => OwnerLink::Job,
            _ => return owner.clone(),
        };
        let table = self.table(link).read().unwrap_or_else(|e| e.into_inner());
        match table.get(&(Arc::from(namespace), Arc::from(owner.name.as_str()))) {
            Some(parent) => OwnerRef {
                kind: link.parent_kind().to_string(),
                name: parent.to_string(),
            },
            None => owner.clone(),
        }
    }

    /// Records (or, with `parent: None`, forgets) the link of one ReplicaSet or Job.
    pub fn set(&self, link: OwnerLink, namespace: &str, name: &str, parent: Option<&str>) {
        let mut table = self.table(link).write().unwrap_or_else(|e| e.into_inner());
        let key = (Arc::from(namespace), Arc::from(name));
        match parent {
            Some(parent) => {
                table.insert(key, Arc::from(parent));
            }
            None => {
                table.remove(&key);
            }
        }
    }

    /// Replaces every link of one table (a re-list): `(namespace, name, parent)`.
    pub fn replace(&self, link: OwnerLink, links: Vec<(String, String, String)>) {
        let fresh: Links = links
            .into_iter()
            .map(|(ns, name, parent)| ((ns.into(), name.into()), parent.into()))
            .collect();
        let old = std::mem::replace(
            &mut *self.table(link).write().unwrap_or_else(|e| e.into_inner()),
            fresh,
        );
        drop(old);
    }

    /// Links held in one table.
    pub fn len(&self, link: OwnerLink) -> usize {
        self.table(link)
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len(OwnerLink::ReplicaSet) == 0 && self.len(OwnerLink::Job) == 0
    }
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
    fn resolves_and_forgets() {
        let index = OwnerIndex::new();
        index.set(OwnerLink::ReplicaSet, "web", "front-7d9f", Some("front"));
        index.set(OwnerLink::Job, "batch", "report-29707813", Some("report"));
        assert_eq!(
            index.workload(&owner("ReplicaSet", "front-7d9f"), "web"),
            owner("Deployment", "front")
        );
        // Same name, other namespace: not linked.
        assert_eq!(
            index.workload(&owner("ReplicaSet", "front-7d9f"), "other"),
            owner("ReplicaSet", "front-7d9f")
        );
        assert_eq!(
            index.workload(&owner("Job", "report-29707813"), "batch"),
            owner("CronJob", "report")
        );
        assert_eq!(
            index.workload(&owner("StatefulSet", "db"), "web"),
            owner("StatefulSet", "db")
        );
        index.set(OwnerLink::ReplicaSet, "web", "front-7d9f", None);
        assert_eq!(
            index.workload(&owner("ReplicaSet", "front-7d9f"), "web"),
            owner("ReplicaSet", "front-7d9f")
        );
        index.replace(OwnerLink::Job, vec![]);
        assert!(index.is_empty());
    }
}
