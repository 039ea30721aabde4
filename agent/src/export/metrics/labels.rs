//! What a series is about, and how it is named at scrape time.
//!
//! Series are keyed by [`WorkloadIdentity`]: what the cgroup path says (container id and
//! runtime, pod UID, or systemd unit), known as soon as the kernel reports the event. The
//! Kubernetes names (namespace, pod, container, owning workload) often arrive later; they are
//! looked up by a [`LabelSource`] each time /metrics is scraped, so a series counted before its
//! pod was known carries the pod's labels from the first scrape after it is (rule 6).
//!
//! The `remote` label of connection series comes from the join's [`Remote`] (service or pod
//! names, or `external`; the same value the NDJSON `remote_*` fields show), else the address
//! itself when it is in the configured allow-list, else `unknown`: a raw address never becomes
//! a label value otherwise ([`RemoteKey`], [`RemoteLabeler`]).

use std::{net::IpAddr, sync::Arc};

use super::IpCidr;
use crate::{
    kube::{PodStore, Remote, workload::Workloads},
    node::{cgroup::CgroupInfo, cgroup_path::Runtime},
};

/// The aggregation key of a workload: the identity labels its cgroup path gives. Processes of
/// one container (or one systemd unit) in several cgroups add up to one workload; events whose
/// cgroup is unknown, or names nothing, share the all-`None` identity.
///
/// Its hash is computed once, at construction: the registry looks identities up once per key
/// per drain, and container ids are long.
#[derive(Clone, Debug)]
pub struct WorkloadIdentity {
    container_id: Option<Arc<str>>,
    runtime: Option<Runtime>,
    pod_uid: Option<Arc<str>>,
    systemd_unit: Option<Arc<str>>,
    hash: u64,
}

impl WorkloadIdentity {
    pub fn new(
        container_id: Option<Arc<str>>,
        runtime: Option<Runtime>,
        pod_uid: Option<Arc<str>>,
        systemd_unit: Option<Arc<str>>,
    ) -> Self {
        use std::hash::{DefaultHasher, Hash, Hasher};
        let mut h = DefaultHasher::new();
        (&container_id, runtime, &pod_uid, &systemd_unit).hash(&mut h);
        Self {
            container_id,
            runtime,
            pod_uid,
            systemd_unit,
            hash: h.finish(),
        }
    }

    pub fn from_cgroup(cgroup: Option<&CgroupInfo>) -> Self {
        let Some(cg) = cgroup else {
            return Self::default();
        };
        let id = &cg.identity;
        Self::new(
            id.container_id.as_deref().map(Arc::from),
            id.runtime,
            id.pod_uid.as_deref().map(Arc::from),
            // The unit only names host services, not a container's own scope.
            if id.container_id.is_none() {
                id.systemd_unit.as_deref().map(Arc::from)
            } else {
                None
            },
        )
    }

    /// The container's full id (or LXC name).
    pub fn container_id(&self) -> Option<&str> {
        self.container_id.as_deref()
    }

    pub fn runtime(&self) -> Option<Runtime> {
        self.runtime
    }

    /// The kubelet pod UID from the cgroup path.
    pub fn pod_uid(&self) -> Option<&str> {
        self.pod_uid.as_deref()
    }

    /// For host services (no container id): the systemd unit.
    pub fn systemd_unit(&self) -> Option<&str> {
        self.systemd_unit.as_deref()
    }
}

impl Default for WorkloadIdentity {
    fn default() -> Self {
        Self::new(None, None, None, None)
    }
}

impl PartialEq for WorkloadIdentity {
    fn eq(&self, o: &Self) -> bool {
        self.hash == o.hash
            && self.container_id == o.container_id
            && self.runtime == o.runtime
            && self.pod_uid == o.pod_uid
            && self.systemd_unit == o.systemd_unit
    }
}

impl Eq for WorkloadIdentity {}

impl std::hash::Hash for WorkloadIdentity {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// The workload labels of a series, resolved at scrape time. Empty values are written as empty
/// labels (which Prometheus treats as absent).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkloadLabels {
    pub container_id: Option<Arc<str>>,
    pub runtime: Option<&'static str>,
    pub pod_uid: Option<Arc<str>>,
    pub namespace: Option<Arc<str>>,
    pub pod: Option<Arc<str>>,
    pub container: Option<Arc<str>>,
    /// The pod's owner (Deployment, DaemonSet, StatefulSet, Job, …) name.
    pub workload: Option<Arc<str>>,
    pub systemd_unit: Option<Arc<str>>,
}

/// Label names of every workload series, in exposition order.
pub const WORKLOAD_LABEL_NAMES: [&str; 8] = [
    "container_id",
    "runtime",
    "pod_uid",
    "namespace",
    "pod",
    "container",
    "workload",
    "systemd_unit",
];

impl WorkloadLabels {
    /// The labels the cgroup path alone gives.
    pub fn from_identity(id: &WorkloadIdentity) -> Self {
        Self {
            container_id: id.container_id.clone(),
            runtime: id.runtime.map(Runtime::as_str),
            pod_uid: id.pod_uid.clone(),
            systemd_unit: id.systemd_unit.clone(),
            ..Self::default()
        }
    }

    /// `(name, value)` pairs in [`WORKLOAD_LABEL_NAMES`] order.
    pub fn pairs(&self) -> [(&'static str, &str); 8] {
        fn v(o: &Option<Arc<str>>) -> &str {
            o.as_deref().unwrap_or("")
        }
        [
            ("container_id", v(&self.container_id)),
            ("runtime", self.runtime.unwrap_or("")),
            ("pod_uid", v(&self.pod_uid)),
            ("namespace", v(&self.namespace)),
            ("pod", v(&self.pod)),
            ("container", v(&self.container)),
            ("workload", v(&self.workload)),
            ("systemd_unit", v(&self.systemd_unit)),
        ]
    }
}

/// Names workloads at scrape time. Called once per workload per scrape, from the HTTP server's
/// thread: it must not block for long (a map lookup, not a request).
pub trait LabelSource: Send + Sync + 'static {
    fn labels(&self, workload: &WorkloadIdentity) -> WorkloadLabels;
}

/// The default: what the cgroup path says, nothing from Kubernetes.
#[derive(Clone, Copy, Debug, Default)]
pub struct CgroupLabels;

impl LabelSource for CgroupLabels {
    fn labels(&self, workload: &WorkloadIdentity) -> WorkloadLabels {
        WorkloadLabels::from_identity(workload)
    }
}

/// The cgroup labels joined with the pod store: namespace, pod, container and owner by
/// container id (else pod by pod UID); the workload named as the join names it.
pub struct PodStoreLabels(pub Arc<PodStore>, pub Workloads);

impl LabelSource for PodStoreLabels {
    fn labels(&self, workload: &WorkloadIdentity) -> WorkloadLabels {
        let mut labels = WorkloadLabels::from_identity(workload);
        let found = workload
            .container_id()
            .and_then(|id| self.0.lookup_container(id));
        let pod = match &found {
            Some(c) => {
                labels.container = Some(Arc::from(c.container().name.as_str()));
                Some(Arc::clone(&c.pod))
            }
            None => workload.pod_uid().and_then(|uid| self.0.lookup_pod(uid)),
        };
        if let Some(pod) = pod {
            labels.namespace = Some(Arc::from(pod.namespace.as_str()));
            labels.pod = Some(Arc::from(pod.name.as_str()));
            labels.pod_uid = Some(Arc::from(pod.uid.as_str()));
            labels.workload = self.1.of(&pod).map(|w| Arc::from(w.name.as_str()));
        }
        labels
    }
}

/// The remote end of a connection series, as the join named it: by its Service or pod when the
/// apiserver metadata knows the address (or `External` when it knows it is neither), else by
/// the (canonical) address, which becomes a label only inside the allow-list.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RemoteKey {
    Known(Arc<Remote>),
    Addr(IpAddr),
}

impl RemoteKey {
    /// The key of a connection to `ip` that the join named `remote`.
    pub fn new(remote: Option<&Arc<Remote>>, ip: IpAddr) -> Self {
        match remote {
            Some(r) => RemoteKey::Known(Arc::clone(r)),
            None => RemoteKey::Addr(ip.to_canonical()),
        }
    }
}

/// The `remote` label value: `service:<ns>/<name>` (a ClusterIP, or a pod backing that
/// Service), `pod:<ns>/<name>`, `external`; else an allow-listed address; else `unknown`.
pub struct RemoteLabeler {
    allowlist: Vec<IpCidr>,
    unknown: Arc<str>,
    external: Arc<str>,
}

impl RemoteLabeler {
    pub fn new(allowlist: Vec<IpCidr>) -> Self {
        Self {
            allowlist,
            unknown: Arc::from("unknown"),
            external: Arc::from("external"),
        }
    }

    /// Called when counts are published, once per distinct key (answers are cached there).
    pub fn label(&self, key: &RemoteKey) -> Arc<str> {
        match key {
            RemoteKey::Known(known) => match &**known {
                Remote::Service { namespace, name }
                | Remote::Pod {
                    namespace,
                    service: Some(name),
                    ..
                } => Arc::from(format!("service:{namespace}/{name}")),
                Remote::Pod {
                    namespace, name, ..
                } => Arc::from(format!("pod:{namespace}/{name}")),
                Remote::External => Arc::clone(&self.external),
            },
            RemoteKey::Addr(ip) if self.allowlist.iter().any(|net| net.contains(*ip)) => {
                Arc::from(ip.to_string())
            }
            RemoteKey::Addr(_) => Arc::clone(&self.unknown),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        kube::{
            ContainerId, ContainerKind, ContainerMeta, ContainerState, OwnerRef, PodMeta, PodSource,
        },
        node::cgroup_path,
    };

    fn cgroup(path: &str) -> CgroupInfo {
        CgroupInfo {
            id: 7,
            path: path.into(),
            identity: cgroup_path::parse(path),
        }
    }

    #[test]
    fn identity_from_container_and_unit_paths() {
        let ctr = "a".repeat(64);
        let info = cgroup(&format!(
            "/kubepods.slice/kubepods-pod11111111_2222_3333_4444_555555555555.slice/cri-containerd-{ctr}.scope"
        ));
        let id = WorkloadIdentity::from_cgroup(Some(&info));
        assert_eq!(id.container_id(), Some(ctr.as_str()));
        assert_eq!(id.runtime(), Some(Runtime::Containerd));
        assert_eq!(id.pod_uid(), Some("11111111-2222-3333-4444-555555555555"));
        assert_eq!(id.systemd_unit(), None);
        let unit = WorkloadIdentity::from_cgroup(Some(&cgroup("/system.slice/nginx.service")));
        assert_eq!(unit.systemd_unit(), Some("nginx.service"));
        // The same container seen through another cgroup is the same workload.
        let again = WorkloadIdentity::from_cgroup(Some(&info));
        assert_eq!(again, id);
        let state = std::hash::RandomState::new();
        assert_eq!(
            std::hash::BuildHasher::hash_one(&state, &again),
            std::hash::BuildHasher::hash_one(&state, &id)
        );

        assert_eq!(
            WorkloadIdentity::from_cgroup(None),
            WorkloadIdentity::default()
        );
    }

    #[test]
    fn pod_store_labels_come_when_the_pod_is_known() {
        let store = Arc::new(PodStore::new());
        let source = PodStoreLabels(Arc::clone(&store), Workloads::by_name_only());
        let id = WorkloadIdentity::new(
            Some(Arc::from("c0ffee")),
            Some(Runtime::Containerd),
            Some(Arc::from("uid-1")),
            None,
        );
        let before = source.labels(&id);
        assert_eq!(before.pod, None);
        assert_eq!(before.container_id.as_deref(), Some("c0ffee"));
        store.replace(
            PodSource::Kubelet,
            vec![PodMeta {
                namespace: "shop".into(),
                name: "web-7d9f-abc".into(),
                uid: "uid-1".into(),
                labels: Default::default(),
                owner: Some(OwnerRef {
                    kind: "ReplicaSet".into(),
                    name: "web-7d9f".into(),
                }),
                // What the name rules give a ReplicaSet without the hash label: itself.
                workload: Some(Arc::new(OwnerRef {
                    kind: "ReplicaSet".into(),
                    name: "web-7d9f".into(),
                })),
                node_name: None,
                static_pod: false,
                phase: Default::default(),
                host_network: false,
                pod_ips: vec![],
                containers: vec![ContainerMeta {
                    name: "nginx".into(),
                    kind: ContainerKind::Regular,
                    id: ContainerId::parse("containerd://c0ffee"),
                    previous_id: None,
                    image: String::new(),
                    image_id: String::new(),
                    state: ContainerState::Running,
                }],
            }],
        );
        let after = source.labels(&id);
        assert_eq!(after.namespace.as_deref(), Some("shop"));
        assert_eq!(after.pod.as_deref(), Some("web-7d9f-abc"));
        assert_eq!(after.container.as_deref(), Some("nginx"));
        assert_eq!(after.workload.as_deref(), Some("web-7d9f"));
    }

    #[test]
    fn remote_labels_never_leak_addresses_outside_the_allowlist() {
        let ip = |s: &str| -> IpAddr { s.parse().expect("ip") };
        let addr = |s: &str| RemoteKey::new(None, ip(s));
        let plain = RemoteLabeler::new(vec![]);
        assert_eq!(&*plain.label(&addr("10.1.2.3")), "unknown");
        let allowed = RemoteLabeler::new(vec!["10.1.0.0/16".parse().expect("cidr")]);
        assert_eq!(&*allowed.label(&addr("10.1.2.3")), "10.1.2.3");
        // An IPv4-mapped address is the IPv4 address it maps.
        assert_eq!(&*allowed.label(&addr("::ffff:10.1.2.3")), "10.1.2.3");
        assert_eq!(&*allowed.label(&addr("10.2.0.1")), "unknown");
        let (ns, name): (Arc<str>, Arc<str>) = (Arc::from("shop"), Arc::from("web"));
        let service = Remote::Service {
            namespace: Arc::clone(&ns),
            name: Arc::clone(&name),
        };
        let known = |r: &Remote| RemoteKey::new(Some(&Arc::new(r.clone())), ip("10.1.2.3"));
        assert_eq!(&*plain.label(&known(&service)), "service:shop/web");
        let backing = Remote::Pod {
            namespace: Arc::clone(&ns),
            name: Arc::from("web-1"),
            service: Some(Arc::clone(&name)),
        };
        assert_eq!(&*plain.label(&known(&backing)), "service:shop/web");
        let lone = Remote::Pod {
            namespace: ns,
            name: Arc::from("web-1"),
            service: None,
        };
        assert_eq!(&*plain.label(&known(&lone)), "pod:shop/web-1");
        // Known to be outside the cluster: `external`, even inside the allow-list.
        assert_eq!(&*allowed.label(&known(&Remote::External)), "external");
    }
}
