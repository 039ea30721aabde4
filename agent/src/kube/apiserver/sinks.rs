//! Where each watched kind's objects go, stripped: pods to the [`PodStore`], Services and
//! EndpointSlices to the [`RemoteIndex`], ReplicaSets and Jobs to the [`OwnerIndex`], the node
//! and namespaces to the [`LabelIndex`].

use std::{collections::BTreeMap, sync::Arc};

use kube::Resource;

use super::{
    labels::LabelIndex,
    owners::{OwnerEntry, OwnerIndex, OwnerLink},
    slim::{EndpointSlice, Pod, Service},
    strip::{controller, object_name},
    watch::Sink,
};
use crate::kube::{
    pods::{OwnerRef, PodMeta},
    services::{ObjectName, RemoteIndex, ServiceEntry, SliceEntry},
    store::{PodSource, PodStore},
};

/// This node's pods → the store's apiserver view.
pub(super) struct PodSink {
    pub store: Arc<PodStore>,
    pub listed: Vec<PodMeta>,
}

impl Sink<Pod> for PodSink {
    fn begin(&mut self) {
        self.listed.clear();
    }

    fn listed(&mut self, pod: Pod) {
        if let Some(meta) = pod.pod {
            self.listed.push(meta);
        }
    }

    fn commit(&mut self) {
        self.store
            .replace(PodSource::Apiserver, std::mem::take(&mut self.listed));
    }

    fn apply(&mut self, pod: Pod) {
        if let Some(meta) = pod.pod {
            self.store.upsert(PodSource::Apiserver, meta);
        }
    }

    fn delete(&mut self, pod: Pod) {
        if let Some(uid) = pod.metadata.uid.as_deref() {
            self.store.remove(PodSource::Apiserver, uid);
        }
    }

    fn count(&self) -> usize {
        self.store.counts(PodSource::Apiserver).pods
    }
}

/// This node's labels.
pub(super) struct NodeSink {
    pub labels: Arc<LabelIndex>,
    pub node_name: String,
    pub listed: Option<BTreeMap<String, String>>,
}

impl<K: Resource + Send + 'static> Sink<K> for NodeSink {
    fn begin(&mut self) {
        self.listed = None;
    }

    fn listed(&mut self, node: K) {
        self.listed = Some(node.meta().labels.clone().unwrap_or_default());
    }

    fn commit(&mut self) {
        if self.listed.is_none() {
            tracing::warn!(node = %self.node_name,
                "the apiserver knows no node of this name; node labels stay unknown. Fix: set \
                 the node name (NODE_NAME from spec.nodeName in a DaemonSet) to the node's \
                 Kubernetes name");
        }
        self.labels.set_node(self.listed.take());
    }

    fn apply(&mut self, node: K) {
        self.labels
            .set_node(Some(node.meta().labels.clone().unwrap_or_default()));
    }

    fn delete(&mut self, _node: K) {
        self.labels.set_node(None);
    }

    fn count(&self) -> usize {
        usize::from(self.labels.node().is_some())
    }
}

/// Namespaces' labels.
pub(super) struct NamespaceSink {
    pub labels: Arc<LabelIndex>,
    pub listed: Vec<(String, BTreeMap<String, String>)>,
}

impl<K: Resource + Send + 'static> Sink<K> for NamespaceSink {
    fn begin(&mut self) {
        self.listed.clear();
    }

    fn listed(&mut self, namespace: K) {
        let meta = namespace.meta();
        if let Some(name) = meta.name.clone() {
            self.listed
                .push((name, meta.labels.clone().unwrap_or_default()));
        }
    }

    fn commit(&mut self) {
        self.labels
            .replace_namespaces(std::mem::take(&mut self.listed));
    }

    fn apply(&mut self, namespace: K) {
        let meta = namespace.meta();
        if let Some(name) = meta.name.as_deref() {
            self.labels
                .set_namespace(name, Some(meta.labels.clone().unwrap_or_default()));
        }
    }

    fn delete(&mut self, namespace: K) {
        if let Some(name) = namespace.meta().name.as_deref() {
            self.labels.set_namespace(name, None);
        }
    }

    fn count(&self) -> usize {
        self.labels.namespace_count()
    }
}

/// ReplicaSets' and Jobs' workloads: their controller, of any kind.
pub(super) struct OwnerSink {
    pub owners: Arc<OwnerIndex>,
    pub link: OwnerLink,
    pub listed: Vec<OwnerEntry>,
}

impl OwnerSink {
    /// `(namespace, name, workload)`: the object's controller, or the object itself.
    fn entry_of<K: Resource>(&self, object: &K) -> Option<OwnerEntry> {
        let meta = object.meta();
        let name = meta.name.clone().filter(|n| !n.is_empty())?;
        let workload = controller(meta).unwrap_or_else(|| OwnerRef {
            kind: self.link.kind().to_string(),
            name: name.clone(),
        });
        Some((meta.namespace.clone().unwrap_or_default(), name, workload))
    }
}

impl<K: Resource + Send + 'static> Sink<K> for OwnerSink {
    fn begin(&mut self) {
        self.listed.clear();
    }

    fn listed(&mut self, object: K) {
        if let Some(entry) = self.entry_of(&object) {
            self.listed.push(entry);
        }
    }

    fn commit(&mut self) {
        self.owners
            .replace(self.link, std::mem::take(&mut self.listed));
    }

    fn apply(&mut self, object: K) {
        if let Some((namespace, name, workload)) = self.entry_of(&object) {
            self.owners
                .set(self.link, &namespace, &name, Some(workload));
        }
    }

    fn delete(&mut self, object: K) {
        let meta = object.meta();
        if let Some(name) = meta.name.as_deref() {
            self.owners.set(
                self.link,
                meta.namespace.as_deref().unwrap_or_default(),
                name,
                None,
            );
        }
    }

    fn count(&self) -> usize {
        self.owners.len(self.link)
    }
}

/// Services → ClusterIP:port names.
pub(super) struct ServiceSink {
    pub remote: Arc<RemoteIndex>,
    pub listed: Vec<(ObjectName, ServiceEntry)>,
}

impl Sink<Service> for ServiceSink {
    fn begin(&mut self) {
        self.listed.clear();
    }

    fn listed(&mut self, service: Service) {
        if let Some(key) = object_name(&service.metadata) {
            self.listed.push((key, service.entry));
        }
    }

    fn commit(&mut self) {
        self.remote
            .replace_services(std::mem::take(&mut self.listed));
    }

    fn apply(&mut self, service: Service) {
        if let Some(key) = object_name(&service.metadata) {
            self.remote.upsert_service(key, service.entry);
        }
    }

    fn delete(&mut self, service: Service) {
        if let Some(key) = object_name(&service.metadata) {
            self.remote.remove_service(&key);
        }
    }

    fn count(&self) -> usize {
        self.remote.counts().services
    }
}

/// EndpointSlices → endpoint addresses' pods and Services.
pub(super) struct SliceSink {
    pub remote: Arc<RemoteIndex>,
    pub listed: Vec<(ObjectName, SliceEntry)>,
}

impl Sink<EndpointSlice> for SliceSink {
    fn begin(&mut self) {
        self.listed.clear();
    }

    fn listed(&mut self, slice: EndpointSlice) {
        if let Some(key) = object_name(&slice.metadata) {
            self.listed.push((key, slice.entry));
        }
    }

    fn commit(&mut self) {
        self.remote.replace_slices(std::mem::take(&mut self.listed));
    }

    fn apply(&mut self, slice: EndpointSlice) {
        if let Some(key) = object_name(&slice.metadata) {
            self.remote.upsert_slice(key, slice.entry);
        }
    }

    fn delete(&mut self, slice: EndpointSlice) {
        if let Some(key) = object_name(&slice.metadata) {
            self.remote.remove_slice(&key);
        }
    }

    fn count(&self) -> usize {
        self.remote.counts().endpoint_slices
    }
}
