//! Pods, Services and EndpointSlices decoded straight into what the join keeps. A pod is
//! decoded by the kubelet path's own decoder ([`RawPod`]) into the same [`PodMeta`], so the
//! two paths cannot disagree on a pod. A list page of
//! thousands of them is decoded field by field into these small types (name, namespace,
//! version; ClusterIPs and ports; addresses and their pods); everything else in the JSON —
//! managed fields, annotations, status, topology — is skipped by the decoder and never
//! allocated, where decoding whole k8s-openapi objects and stripping them afterwards made every
//! list page cost megabytes of short-lived heap.
//!
//! Each type is a kube [`Resource`](kube::Resource) through k8s-openapi's traits, with the API
//! coordinates of the object it stands for, so the watcher lists and watches it like any kind.

use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use k8s_openapi::{
    Metadata, Resource,
    api::{
        core::v1::{Pod as FullPod, Service as FullService},
        discovery::v1::EndpointSlice as FullSlice,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use serde::Deserialize;

use crate::kube::{
    pods::{PodMeta, RawPod},
    services::{EndpointEntry, ObjectName, ServiceEntry, SliceEntry},
};

/// The label on an EndpointSlice naming its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The object metadata the watcher and the join read: name, namespace, version, labels.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetaIn {
    name: Option<String>,
    namespace: Option<String>,
    resource_version: Option<String>,
    labels: Option<BTreeMap<String, String>>,
}

impl From<MetaIn> for ObjectMeta {
    fn from(m: MetaIn) -> Self {
        ObjectMeta {
            name: m.name,
            namespace: m.namespace,
            resource_version: m.resource_version,
            labels: m.labels,
            ..ObjectMeta::default()
        }
    }
}

fn slim_meta<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    MetaIn::deserialize(d).map(ObjectMeta::from)
}

/// Implements the k8s-openapi traits (hence kube's `Resource`) for a slim type, with the API
/// coordinates of the full type it stands for.
macro_rules! stands_for {
    ($slim:ty, $full:ty) => {
        impl Resource for $slim {
            const API_VERSION: &'static str = <$full as Resource>::API_VERSION;
            const GROUP: &'static str = <$full as Resource>::GROUP;
            const KIND: &'static str = <$full as Resource>::KIND;
            const VERSION: &'static str = <$full as Resource>::VERSION;
            const URL_PATH_SEGMENT: &'static str = <$full as Resource>::URL_PATH_SEGMENT;
            type Scope = <$full as Resource>::Scope;
        }

        impl Metadata for $slim {
            type Ty = ObjectMeta;

            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }

            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

/// A pod: its [`PodMeta`] (`None` without `metadata.name` or `uid`, which the kubelet parser
/// skips too), and the metadata the watcher reads.
#[derive(Clone, Debug, Deserialize)]
#[serde(from = "RawPod")]
pub struct Pod {
    pub metadata: ObjectMeta,
    pub pod: Option<PodMeta>,
}

stands_for!(Pod, FullPod);

impl From<RawPod> for Pod {
    fn from(raw: RawPod) -> Self {
        let metadata = raw
            .metadata
            .as_ref()
            .map_or_else(ObjectMeta::default, |m| ObjectMeta {
                name: m.name.clone(),
                namespace: m.namespace.clone(),
                uid: m.uid.clone(),
                resource_version: m.resource_version.clone(),
                ..ObjectMeta::default()
            });
        Pod {
            metadata,
            pod: raw.into_meta().ok(),
        }
    }
}

/// A Service: its ClusterIPs and ports.
#[derive(Clone, Debug, Deserialize)]
#[serde(from = "ServiceIn")]
pub struct Service {
    pub metadata: ObjectMeta,
    pub entry: ServiceEntry,
}

stands_for!(Service, FullService);

#[derive(Deserialize)]
struct ServiceIn {
    #[serde(deserialize_with = "slim_meta")]
    metadata: ObjectMeta,
    spec: Option<ServiceSpecIn>,
}

#[derive(Deserialize)]
struct ServiceSpecIn {
    #[serde(rename = "clusterIP")]
    cluster_ip: Option<String>,
    #[serde(rename = "clusterIPs")]
    cluster_ips: Option<Vec<String>>,
    ports: Option<Vec<PortIn>>,
}

#[derive(Deserialize)]
struct PortIn {
    port: i32,
}

impl From<ServiceIn> for Service {
    fn from(s: ServiceIn) -> Self {
        let entry = s.spec.map_or_else(ServiceEntry::default, |spec| {
            let mut ips = spec.cluster_ips.unwrap_or_default();
            if ips.is_empty() {
                ips.extend(spec.cluster_ip);
            }
            ServiceEntry {
                // "None" (headless) and "" do not parse and are left out.
                cluster_ips: ips.iter().filter_map(|ip| ip.parse().ok()).collect(),
                ports: spec
                    .ports
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|p| u16::try_from(p.port).ok())
                    .collect(),
            }
        });
        Service {
            metadata: s.metadata,
            entry,
        }
    }
}

/// An EndpointSlice: its Service (label `kubernetes.io/service-name`) and its addresses with
/// the pods they target.
#[derive(Clone, Debug, Deserialize)]
#[serde(from = "SliceIn")]
pub struct EndpointSlice {
    pub metadata: ObjectMeta,
    pub entry: SliceEntry,
}

stands_for!(EndpointSlice, FullSlice);

#[derive(Deserialize)]
struct SliceIn {
    #[serde(deserialize_with = "slim_meta")]
    metadata: ObjectMeta,
    endpoints: Option<Vec<EndpointIn>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EndpointIn {
    addresses: Vec<String>,
    target_ref: Option<TargetRefIn>,
}

#[derive(Deserialize)]
struct TargetRefIn {
    kind: Option<String>,
    name: Option<String>,
    namespace: Option<String>,
}

impl From<SliceIn> for EndpointSlice {
    fn from(s: SliceIn) -> Self {
        let namespace = s.metadata.namespace.as_deref().unwrap_or_default();
        let service = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .map(|name| Arc::<str>::from(name.as_str()));
        let mut endpoints = Vec::new();
        for endpoint in s.endpoints.unwrap_or_default() {
            let pod = endpoint.target_ref.and_then(|t| {
                if t.kind.as_deref() != Some("Pod") {
                    return None;
                }
                let name = t.name.filter(|n| !n.is_empty())?;
                Some(ObjectName::new(
                    t.namespace.as_deref().unwrap_or(namespace),
                    &name,
                ))
            });
            endpoints.extend(
                endpoint
                    .addresses
                    .iter()
                    .filter_map(|a| a.parse::<IpAddr>().ok())
                    .map(|ip| EndpointEntry {
                        ip,
                        pod: pod.clone(),
                    }),
            );
        }
        EndpointSlice {
            metadata: s.metadata,
            entry: SliceEntry { service, endpoints },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::kube::{apiserver::strip::object_name, pods::parse_pod_list};

    /// The apiserver path decodes every pod of the vendored kubelet payloads to the same
    /// [`PodMeta`] as the kubelet path, and keeps the metadata its watch reads.
    #[test]
    fn a_pod_decodes_to_the_kubelet_parsers_pod_meta() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/kubelet");
        let mut compared = 0;
        for entry in std::fs::read_dir(&dir).expect("fixtures dir") {
            let path = entry.expect("dir entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            if !name.starts_with("podlist_") {
                continue;
            }
            let bytes = std::fs::read(&path).expect("fixture");
            let Ok(parsed) = parse_pod_list(&bytes) else {
                continue;
            };
            let value: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
            for item in value["items"].as_array().cloned().unwrap_or_default() {
                if item.is_null() {
                    continue;
                }
                let uid = item["metadata"]["uid"].as_str().map(str::to_string);
                let version = item["metadata"]["resourceVersion"]
                    .as_str()
                    .map(str::to_string);
                let pod: Pod = serde_json::from_value(item).expect("any pod object decodes");
                assert_eq!(pod.metadata.uid, uid, "{name}");
                assert_eq!(pod.metadata.resource_version, version, "{name}");
                let Some(meta) = pod.pod else {
                    assert!(
                        uid.is_none() || pod.metadata.name.is_none(),
                        "{name}: a pod with name and uid gave no PodMeta"
                    );
                    continue;
                };
                let expected = parsed
                    .pods
                    .iter()
                    .find(|p| p.uid == meta.uid)
                    .unwrap_or_else(|| panic!("{name}: {} not in the kubelet parse", meta.name));
                assert_eq!(&meta, expected, "{name}: {}", meta.name);
                compared += 1;
            }
        }
        assert!(compared > 50, "only {compared} pods compared");
    }

    #[test]
    fn a_service_decodes_to_its_cluster_ips_and_ports() {
        let service: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "42",
                         "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": {"clusterIP": "10.96.0.7", "clusterIPs": ["10.96.0.7", "fd00::7"],
                     "ports": [{"port": 80, "protocol": "TCP"}, {"port": 443}]},
            "status": {"loadBalancer": {}}
        }))
        .expect("service");
        assert_eq!(service.entry.cluster_ips.len(), 2);
        assert_eq!(service.entry.ports, vec![80, 443]);
        assert_eq!(service.metadata.resource_version.as_deref(), Some("42"));
        assert_eq!(
            object_name(&service.metadata),
            Some(ObjectName::new("shop", "web"))
        );
        // Nothing else of the metadata is kept.
        assert!(
            service.metadata.annotations.is_none() && service.metadata.managed_fields.is_none()
        );
        let headless: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db"}, "spec": {"clusterIP": "None", "ports": null}
        }))
        .expect("headless");
        assert!(headless.entry.cluster_ips.is_empty() && headless.entry.ports.is_empty());
        let bare: Service =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "x"}})).expect("bare");
        assert_eq!(bare.entry, ServiceEntry::default());
    }

    #[test]
    fn a_slice_decodes_to_its_service_and_pod_addresses() {
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-x1", "namespace": "shop",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.244.0.5"], "conditions": {"ready": true},
                 "targetRef": {"kind": "Pod", "name": "web-1", "namespace": "shop"}},
                {"addresses": ["192.168.1.9"]},
                {"addresses": ["10.244.0.6"], "targetRef": {"kind": "Pod", "name": "web-2"}},
                {"addresses": ["not-an-ip"], "targetRef": {"kind": "Node", "name": "n1"}}
            ],
            "ports": [{"port": 8080}]
        }))
        .expect("slice");
        let entry = &slice.entry;
        assert_eq!(entry.service.as_deref(), Some("web"));
        assert_eq!(entry.endpoints.len(), 3);
        assert_eq!(
            entry.endpoints[0].pod,
            Some(ObjectName::new("shop", "web-1"))
        );
        assert_eq!(entry.endpoints[1].pod, None);
        // A targetRef without a namespace is in the slice's.
        assert_eq!(
            entry.endpoints[2].pod,
            Some(ObjectName::new("shop", "web-2"))
        );
        let empty: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "e"}, "addressType": "IPv4", "endpoints": null
        }))
        .expect("no endpoints");
        assert!(empty.entry.endpoints.is_empty() && empty.entry.service.is_none());
    }

    #[test]
    fn slim_kinds_have_the_full_kinds_api_coordinates() {
        use kube::Resource as _;
        assert_eq!(Service::plural(&()), "services");
        assert_eq!(Service::api_version(&()), "v1");
        assert_eq!(EndpointSlice::plural(&()), "endpointslices");
        assert_eq!(EndpointSlice::api_version(&()), "discovery.k8s.io/v1");
    }
}
