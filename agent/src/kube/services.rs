//! The remote index: who is at a peer address — a Service (by ClusterIP and port), a pod (an
//! endpoint address of some Service), or something outside the cluster.
//!
//! It is filled from the apiserver's Services and EndpointSlices (all namespaces) and read by
//! the enrichment on every connection: [`RemoteIndex::lookup`] takes a read lock and does one
//! hash lookup (a fast non-SipHash hasher) that yields a prebuilt [`Remote`]; names are shared
//! (`Arc<str>`, namespaces interned), so a lookup allocates nothing.
//!
//! What is kept per Service: its ClusterIPs; per EndpointSlice: the addresses it indexed; per
//! address a 24-byte slot sharing the prebuilt `Remote`s. Memory is bounded by the cluster's
//! Services and endpoints (about 200 bytes per address, names included). Headless Services (`clusterIP: None`) and ExternalName
//! Services have no ClusterIP; their endpoints are still known.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard},
};

use serde::Serialize;

/// A namespaced object's name, shared.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ObjectName {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

impl ObjectName {
    pub fn new(namespace: &str, name: &str) -> Self {
        ObjectName {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for ObjectName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Who is at a remote address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Remote {
    /// A Service's ClusterIP (with one of its ports, or the ClusterIP alone).
    Service { namespace: Arc<str>, name: Arc<str> },
    /// A pod that is an endpoint of `service` (the EndpointSlice's Service).
    Pod {
        namespace: Arc<str>,
        name: Arc<str>,
        service: Option<Arc<str>>,
    },
    /// Not a Service or a known endpoint: outside the cluster, or not known (yet).
    External,
}

/// A Service, stripped to what the join needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceEntry {
    /// `spec.clusterIPs` (else `spec.clusterIP`); `None` and unparsable ones left out.
    pub cluster_ips: Vec<IpAddr>,
    /// `spec.ports[].port`.
    pub ports: Vec<u16>,
}

/// One address of an EndpointSlice and the pod it targets (`targetRef` of kind Pod).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointEntry {
    pub ip: IpAddr,
    pub pod: Option<ObjectName>,
}

/// An EndpointSlice, stripped: its Service (label `kubernetes.io/service-name`) and addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SliceEntry {
    pub service: Option<Arc<str>>,
    pub endpoints: Vec<EndpointEntry>,
}

/// What one address is: a Service's ClusterIP and/or a pod's endpoint address, each with
/// the [`Remote`] a lookup returns, built once and shared (a lookup is one reference count).
/// 24 bytes: the index holds one per address of the cluster.
#[derive(Default)]
struct Slot {
    /// The Service whose ClusterIP this is (a ClusterIP belongs to one Service; its
    /// `Remote::Service` names it, so it is also the owner).
    service: Option<Arc<Remote>>,
    /// The slice (by [`StoredSlice::id`]) that last reported this address with a Pod target
    /// (removing another slice leaves it), and the pod.
    endpoint: Option<(u64, Arc<Remote>)>,
}

/// What is kept of an EndpointSlice once indexed: the addresses it put in the index.
struct StoredSlice {
    id: u64,
    addresses: Box<[IpAddr]>,
}

struct Inner {
    /// Each Service's ClusterIPs (what to unindex when it changes).
    services: HashMap<ObjectName, Box<[IpAddr]>>,
    slices: HashMap<ObjectName, StoredSlice>,
    next_slice: u64,
    /// The hot-path index: one hash lookup per [`RemoteIndex::lookup`].
    by_ip: foldhash::HashMap<IpAddr, Slot>,
    /// Namespaces' names, shared by every entry of a namespace (few, kept hot in cache).
    namespaces: foldhash::HashSet<Arc<str>>,
    /// What a lookup of an unknown address returns (shared, like the others).
    external: Arc<Remote>,
    service_ips: usize,
    endpoint_ips: usize,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            services: HashMap::new(),
            slices: HashMap::new(),
            next_slice: 0,
            by_ip: foldhash::HashMap::default(),
            namespaces: foldhash::HashSet::default(),
            external: Arc::new(Remote::External),
            service_ips: 0,
            endpoint_ips: 0,
        }
    }
}

/// Whether `remote` is the Service `key` names.
fn is_service(remote: &Remote, key: &ObjectName) -> bool {
    matches!(remote, Remote::Service { namespace, name }
        if *namespace == key.namespace && *name == key.name)
}

impl Inner {
    fn lookup(&self, ip: IpAddr, _port: u16) -> Arc<Remote> {
        match self.by_ip.get(&ip) {
            Some(Slot {
                service: Some(remote),
                ..
            })
            | Some(Slot {
                endpoint: Some((_, remote)),
                ..
            }) => Arc::clone(remote),
            _ => Arc::clone(&self.external),
        }
    }

    fn intern(&mut self, namespace: &Arc<str>) -> Arc<str> {
        if let Some(shared) = self.namespaces.get(namespace) {
            return Arc::clone(shared);
        }
        self.namespaces.insert(Arc::clone(namespace));
        Arc::clone(namespace)
    }

    fn index_service(&mut self, key: ObjectName, entry: ServiceEntry) {
        let remote = Arc::new(Remote::Service {
            namespace: self.intern(&key.namespace),
            name: Arc::clone(&key.name),
        });
        for ip in &entry.cluster_ips {
            let slot = self.by_ip.entry(*ip).or_default();
            if slot.service.is_none() {
                self.service_ips += 1;
            }
            slot.service = Some(Arc::clone(&remote));
        }
        self.services
            .insert(key, entry.cluster_ips.into_boxed_slice());
    }

    fn unindex_service(&mut self, key: &ObjectName) {
        let Some(ips) = self.services.remove(key) else {
            return;
        };
        for ip in &ips {
            let Some(slot) = self.by_ip.get_mut(ip) else {
                continue;
            };
            if slot.service.as_deref().is_some_and(|r| is_service(r, key)) {
                slot.service = None;
                self.service_ips -= 1;
                if slot.endpoint.is_none() {
                    self.by_ip.remove(ip);
                }
            }
        }
    }

    fn index_slice(&mut self, key: ObjectName, entry: SliceEntry) {
        let id = self.next_slice;
        self.next_slice += 1;
        let mut addresses = Vec::with_capacity(entry.endpoints.len());
        for endpoint in entry.endpoints {
            let Some(pod) = endpoint.pod else {
                continue;
            };
            let remote = Arc::new(Remote::Pod {
                namespace: self.intern(&pod.namespace),
                name: pod.name,
                service: entry.service.clone(),
            });
            let slot = self.by_ip.entry(endpoint.ip).or_default();
            if slot.endpoint.is_none() {
                self.endpoint_ips += 1;
            }
            slot.endpoint = Some((id, remote));
            addresses.push(endpoint.ip);
        }
        let addresses = addresses.into_boxed_slice();
        self.slices.insert(key, StoredSlice { id, addresses });
    }

    fn unindex_slice(&mut self, key: &ObjectName) {
        let Some(slice) = self.slices.remove(key) else {
            return;
        };
        for ip in &slice.addresses {
            let Some(slot) = self.by_ip.get_mut(ip) else {
                continue;
            };
            if slot
                .endpoint
                .as_ref()
                .is_some_and(|(owner, _)| *owner == slice.id)
            {
                slot.endpoint = None;
                self.endpoint_ips -= 1;
                if slot.service.is_none() {
                    self.by_ip.remove(ip);
                }
            }
        }
    }

    fn clear_services(&mut self) {
        self.services.clear();
        self.by_ip.retain(|_, slot| {
            slot.service = None;
            slot.endpoint.is_some()
        });
        self.service_ips = 0;
    }

    fn clear_slices(&mut self) {
        self.slices.clear();
        self.by_ip.retain(|_, slot| {
            slot.endpoint = None;
            slot.service.is_some()
        });
        self.endpoint_ips = 0;
    }

    /// After a re-list: the tables are sized for what is there now, not for the list's peak.
    fn shrink(&mut self) {
        self.by_ip.shrink_to_fit();
        self.services.shrink_to_fit();
        self.slices.shrink_to_fit();
    }
}

/// Counts for status and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RemoteCounts {
    pub services: usize,
    pub endpoint_slices: usize,
    /// ClusterIPs indexed.
    pub service_ips: usize,
    /// Endpoint addresses (with a Pod target) indexed.
    pub endpoints: usize,
}

/// Remote addresses → Services and pods. Shared between the apiserver watchers that fill it
/// and the enrichment that reads it.
#[derive(Default)]
pub struct RemoteIndex {
    inner: RwLock<Inner>,
}

impl std::fmt::Debug for RemoteIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteIndex")
            .field("counts", &self.counts())
            .finish()
    }
}

impl RemoteIndex {
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        // Every change completes under the lock or not at all (no panicking code inside), so
        // a poisoned lock still holds a consistent index.
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Who is at `ip:port`: a Service by ClusterIP (a ClusterIP belongs to one Service, so
    /// the port only confirms it), else a pod by endpoint address, else [`Remote::External`].
    /// One read lock, one hash lookup, one reference-count increment: no allocation.
    pub fn lookup(&self, ip: IpAddr, port: u16) -> Arc<Remote> {
        self.read().lookup(ip, port)
    }

    /// [`Self::lookup`], or `None` while no Service is indexed (the index has not synced: an
    /// address cannot be called external yet).
    pub fn lookup_known(&self, ip: IpAddr, port: u16) -> Option<Arc<Remote>> {
        let inner = self.read();
        if inner.services.is_empty() {
            return None;
        }
        Some(inner.lookup(ip, port))
    }

    /// Adds or replaces one Service.
    pub fn upsert_service(&self, key: ObjectName, entry: ServiceEntry) {
        let mut inner = self.write();
        inner.unindex_service(&key);
        inner.index_service(key, entry);
    }

    pub fn remove_service(&self, key: &ObjectName) {
        self.write().unindex_service(key);
    }

    /// Replaces every Service (a re-list).
    pub fn replace_services(&self, services: Vec<(ObjectName, ServiceEntry)>) {
        let mut inner = self.write();
        inner.clear_services();
        for (key, entry) in services {
            inner.index_service(key, entry);
        }
        inner.shrink();
    }

    /// Adds or replaces one EndpointSlice.
    pub fn upsert_slice(&self, key: ObjectName, entry: SliceEntry) {
        let mut inner = self.write();
        inner.unindex_slice(&key);
        inner.index_slice(key, entry);
    }

    pub fn remove_slice(&self, key: &ObjectName) {
        self.write().unindex_slice(key);
    }

    /// Replaces every EndpointSlice (a re-list).
    pub fn replace_slices(&self, slices: Vec<(ObjectName, SliceEntry)>) {
        let mut inner = self.write();
        inner.clear_slices();
        for (key, entry) in slices {
            inner.index_slice(key, entry);
        }
        inner.shrink();
    }

    pub fn counts(&self) -> RemoteCounts {
        let inner = self.read();
        RemoteCounts {
            services: inner.services.len(),
            endpoint_slices: inner.slices.len(),
            service_ips: inner.service_ips,
            endpoints: inner.endpoint_ips,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    fn service(ips: &[&str], ports: &[u16]) -> ServiceEntry {
        ServiceEntry {
            cluster_ips: ips.iter().map(|i| ip(i)).collect(),
            ports: ports.to_vec(),
        }
    }

    #[test]
    fn services_pods_and_external() {
        let index = RemoteIndex::new();
        index.upsert_service(
            ObjectName::new("web", "frontend"),
            service(&["10.96.0.10", "fd00::10"], &[80, 443]),
        );
        index.upsert_slice(
            ObjectName::new("web", "frontend-abc12"),
            SliceEntry {
                service: Some("frontend".into()),
                endpoints: vec![
                    EndpointEntry {
                        ip: ip("10.244.1.5"),
                        pod: Some(ObjectName::new("web", "frontend-7d9f-x")),
                    },
                    EndpointEntry {
                        ip: ip("10.244.1.6"),
                        pod: None,
                    },
                ],
            },
        );
        let frontend = Remote::Service {
            namespace: "web".into(),
            name: "frontend".into(),
        };
        assert_eq!(*index.lookup(ip("10.96.0.10"), 443), frontend);
        assert_eq!(*index.lookup(ip("fd00::10"), 80), frontend);
        // ClusterIP alone (a port the Service does not expose) still names it.
        assert_eq!(*index.lookup(ip("10.96.0.10"), 9999), frontend);
        assert_eq!(
            *index.lookup(ip("10.244.1.5"), 8080),
            Remote::Pod {
                namespace: "web".into(),
                name: "frontend-7d9f-x".into(),
                service: Some("frontend".into()),
            }
        );
        // An endpoint that targets no pod (a node, an external IP) is not a pod.
        assert_eq!(*index.lookup(ip("10.244.1.6"), 8080), Remote::External);
        assert_eq!(*index.lookup(ip("1.1.1.1"), 443), Remote::External);

        // A change of ClusterIP drops the old one.
        index.upsert_service(
            ObjectName::new("web", "frontend"),
            service(&["10.96.0.11"], &[80]),
        );
        assert_eq!(*index.lookup(ip("10.96.0.10"), 80), Remote::External);
        assert_eq!(*index.lookup(ip("10.96.0.11"), 80), frontend);
        index.remove_service(&ObjectName::new("web", "frontend"));
        index.remove_slice(&ObjectName::new("web", "frontend-abc12"));
        assert_eq!(*index.lookup(ip("10.96.0.11"), 80), Remote::External);
        assert_eq!(*index.lookup(ip("10.244.1.5"), 80), Remote::External);
        assert_eq!(index.counts(), RemoteCounts::default());
    }

    #[test]
    fn removing_a_slice_keeps_addresses_another_slice_owns() {
        let index = RemoteIndex::new();
        let entry = |pod: &str| SliceEntry {
            service: Some("svc".into()),
            endpoints: vec![EndpointEntry {
                ip: ip("10.244.0.9"),
                pod: Some(ObjectName::new("ns", pod)),
            }],
        };
        index.upsert_slice(ObjectName::new("ns", "old"), entry("a"));
        // The address moved to a new slice (a new pod got the IP) before the old was deleted.
        index.upsert_slice(ObjectName::new("ns", "new"), entry("b"));
        index.remove_slice(&ObjectName::new("ns", "old"));
        assert!(matches!(
            &*index.lookup(ip("10.244.0.9"), 1),
            Remote::Pod { name, .. } if &**name == "b"
        ));
        index.replace_slices(vec![]);
        assert_eq!(*index.lookup(ip("10.244.0.9"), 1), Remote::External);
    }

    /// The index holds one slot per address of the cluster: keep it small.
    #[test]
    fn a_slot_is_three_words() {
        assert_eq!(std::mem::size_of::<Slot>(), 24);
    }

    #[test]
    fn lookup_is_fast() {
        let index = RemoteIndex::new();
        for i in 0..10_000u32 {
            let [_, _, a, b] = i.to_be_bytes();
            index.upsert_service(
                ObjectName::new("ns", &format!("svc-{i}")),
                service(&[&format!("10.96.{a}.{b}")], &[80, 443]),
            );
        }
        let probes: Vec<IpAddr> = (0..1000u32)
            .map(|i| {
                let [_, _, a, b] = (i * 7).to_be_bytes();
                ip(&format!("10.96.{a}.{b}"))
            })
            .collect();
        let rounds = 200;
        let started = std::time::Instant::now();
        let mut hits = 0usize;
        for _ in 0..rounds {
            for probe in &probes {
                if matches!(*index.lookup(*probe, 443), Remote::Service { .. }) {
                    hits += 1;
                }
            }
        }
        let per_lookup = started.elapsed() / (rounds * probes.len() as u32);
        assert_eq!(hits, rounds as usize * probes.len());
        // The target is ≤ 200 ns in release builds; unoptimized test builds get 10× slack.
        assert!(
            per_lookup < std::time::Duration::from_micros(2),
            "{per_lookup:?} per lookup"
        );
    }
}
