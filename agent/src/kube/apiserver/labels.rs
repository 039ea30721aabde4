//! Labels of this node and of every namespace, as the apiserver reports them.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, RwLock},
};

pub type Labels = Arc<BTreeMap<String, String>>;

/// This node's labels and each namespace's labels.
#[derive(Debug, Default)]
pub struct LabelIndex {
    node: RwLock<Option<Labels>>,
    namespaces: RwLock<HashMap<Arc<str>, Labels>>,
}

impl LabelIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// This node's labels; `None` until the node was seen (or after it was deleted).
    pub fn node(&self) -> Option<Labels> {
        self.node.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_node(&self, labels: Option<BTreeMap<String, String>>) {
        *self.node.write().unwrap_or_else(|e| e.into_inner()) = labels.map(Arc::new);
    }

    /// A namespace's labels; `None` for a namespace not known.
    pub fn namespace(&self, name: &str) -> Option<Labels> {
        self.namespaces
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    pub fn set_namespace(&self, name: &str, labels: Option<BTreeMap<String, String>>) {
        let mut namespaces = self.namespaces.write().unwrap_or_else(|e| e.into_inner());
        match labels {
            Some(labels) => {
                namespaces.insert(name.into(), Arc::new(labels));
            }
            None => {
                namespaces.remove(name);
            }
        }
    }

    /// Replaces every namespace (a re-list).
    pub fn replace_namespaces(&self, all: Vec<(String, BTreeMap<String, String>)>) {
        let fresh: HashMap<Arc<str>, Labels> = all
            .into_iter()
            .map(|(name, labels)| (name.into(), Arc::new(labels)))
            .collect();
        let old = std::mem::replace(
            &mut *self.namespaces.write().unwrap_or_else(|e| e.into_inner()),
            fresh,
        );
        drop(old);
    }

    pub fn namespace_count(&self) -> usize {
        self.namespaces
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}
