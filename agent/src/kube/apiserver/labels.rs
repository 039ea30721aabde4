//! Labels of this node and of every namespace, as the apiserver reports them — only the keys
//! the configuration allows (`kubernetes.node_labels`, `kubernetes.namespace_labels`): other
//! keys are never stored, and with an empty allow-list the kind is not watched at all.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, RwLock},
};

use crate::kube::source::Generation;

pub type Labels = Arc<BTreeMap<String, String>>;

/// This node's labels and each namespace's labels, allow-listed.
#[derive(Debug, Default)]
pub struct LabelIndex {
    node_keys: Vec<String>,
    namespace_keys: Vec<String>,
    node: RwLock<Option<Labels>>,
    namespaces: RwLock<HashMap<Arc<str>, Labels>>,
    generation: Generation,
}

/// The allow-listed part of `labels`.
fn allowed(keys: &[String], mut labels: BTreeMap<String, String>) -> Labels {
    labels.retain(|k, _| keys.iter().any(|allowed| allowed == k));
    Arc::new(labels)
}

impl LabelIndex {
    /// An index keeping only `node_keys` of the node's labels and `namespace_keys` of
    /// namespaces' labels.
    pub fn new(node_keys: Vec<String>, namespace_keys: Vec<String>) -> Self {
        Self {
            node_keys,
            namespace_keys,
            ..Self::default()
        }
    }

    /// Whether any node label is wanted (else the node is not watched).
    pub fn wants_node(&self) -> bool {
        !self.node_keys.is_empty()
    }

    /// Whether any namespace label is wanted (else namespaces are not watched).
    pub fn wants_namespaces(&self) -> bool {
        !self.namespace_keys.is_empty()
    }

    /// This node's labels; `None` until the node was seen (or after it was deleted).
    pub fn node(&self) -> Option<Labels> {
        self.node.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_node(&self, labels: Option<BTreeMap<String, String>>) {
        *self.node.write().unwrap_or_else(|e| e.into_inner()) =
            labels.map(|l| allowed(&self.node_keys, l));
        self.generation.bump();
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
                namespaces.insert(name.into(), allowed(&self.namespace_keys, labels));
            }
            None => {
                namespaces.remove(name);
            }
        }
        drop(namespaces);
        self.generation.bump();
    }

    /// Replaces every namespace (a re-list).
    pub fn replace_namespaces(&self, all: Vec<(String, BTreeMap<String, String>)>) {
        let fresh: HashMap<Arc<str>, Labels> = all
            .into_iter()
            .map(|(name, labels)| (name.into(), allowed(&self.namespace_keys, labels)))
            .collect();
        let old = std::mem::replace(
            &mut *self.namespaces.write().unwrap_or_else(|e| e.into_inner()),
            fresh,
        );
        self.generation.bump();
        drop(old);
    }

    /// Changes so far (see [`Generation`]).
    pub fn generation(&self) -> u64 {
        self.generation.get()
    }

    pub fn namespace_count(&self) -> usize {
        self.namespaces
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allow_listed_keys_are_kept() {
        let index = LabelIndex::new(vec!["zone".into()], vec!["team".into()]);
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        index.set_node(Some(labels(&[("zone", "a"), ("secret-ish", "x")])));
        assert_eq!(*index.node().expect("node"), labels(&[("zone", "a")]));
        index.replace_namespaces(vec![("shop".into(), labels(&[("team", "t1"), ("x", "y")]))]);
        assert_eq!(
            *index.namespace("shop").expect("ns"),
            labels(&[("team", "t1")])
        );
        index.set_namespace("shop", None);
        assert!(index.namespace("shop").is_none());
        assert!(index.wants_node() && index.wants_namespaces());
        assert!(!LabelIndex::default().wants_node());
    }
}
