//! Kubernetes objects (as kube-rs decodes them) stripped to what the join keeps: a Pod to the
//! same [`PodMeta`] the kubelet's PodList parser produces, a ReplicaSet or Job to its owner.
//! The full objects are dropped right after. (Services and EndpointSlices, by far the most
//! numerous, are decoded straight into small types instead: [`super::slim`].)

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Container, ContainerStatus, EphemeralContainer, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::kube::{
    pods::{
        CONFIG_MIRROR_ANNOTATION, CONFIG_SOURCE_ANNOTATION, ContainerId, ContainerKind,
        ContainerMeta, ContainerState, OwnerRef, PodMeta, PodPhase,
    },
    services::ObjectName,
};

fn non_empty(text: Option<&String>) -> Option<String> {
    text.filter(|t| !t.is_empty()).cloned()
}

/// The controlling owner (`controller: true`), else the first one: the kubelet parser's rule.
pub fn controller(meta: &ObjectMeta) -> Option<OwnerRef> {
    let owners = meta.owner_references.as_deref().unwrap_or_default();
    owners
        .iter()
        .find(|o| o.controller == Some(true))
        .or(owners.first())
        .map(|o: &OwnerReference| OwnerRef {
            kind: o.kind.clone(),
            name: o.name.clone(),
        })
}

/// The object's namespace/name, if it has a name.
pub fn object_name(meta: &ObjectMeta) -> Option<ObjectName> {
    let name = meta.name.as_deref().filter(|n| !n.is_empty())?;
    Some(ObjectName::new(
        meta.namespace.as_deref().unwrap_or_default(),
        name,
    ))
}

/// A Pod as [`PodMeta`]; `None` without `metadata.name` or `uid` (as the kubelet parser).
pub fn pod_meta(pod: &Pod) -> Option<PodMeta> {
    let meta = &pod.metadata;
    let name = non_empty(meta.name.as_ref())?;
    let uid = non_empty(meta.uid.as_ref())?;
    let annotations = meta.annotations.as_ref();
    let static_pod = annotations.is_some_and(|a| {
        a.get(CONFIG_SOURCE_ANNOTATION)
            .is_some_and(|source| source != "api")
            || a.contains_key(CONFIG_MIRROR_ANNOTATION)
    });
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let mut pod_ips: Vec<IpAddr> = status
        .and_then(|s| s.pod_ips.as_deref())
        .unwrap_or_default()
        .iter()
        .filter_map(|p| p.ip.parse().ok())
        .collect();
    if pod_ips.is_empty()
        && let Some(ip) = status
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse().ok())
    {
        pod_ips.push(ip);
    }
    let specs = |list: Option<&Vec<Container>>| -> Vec<(String, Option<String>)> {
        list.map(|l| {
            l.iter()
                .map(|c| (c.name.clone(), c.image.clone()))
                .collect()
        })
        .unwrap_or_default()
    };
    let ephemeral: Vec<(String, Option<String>)> = spec
        .and_then(|s| s.ephemeral_containers.as_ref())
        .map(|l| {
            l.iter()
                .map(|c: &EphemeralContainer| (c.name.clone(), c.image.clone()))
                .collect()
        })
        .unwrap_or_default();
    let mut containers = Vec::new();
    for (kind, specs, statuses) in [
        (
            ContainerKind::Init,
            specs(spec.and_then(|s| s.init_containers.as_ref())),
            status.and_then(|s| s.init_container_statuses.as_deref()),
        ),
        (
            ContainerKind::Regular,
            specs(spec.map(|s| &s.containers)),
            status.and_then(|s| s.container_statuses.as_deref()),
        ),
        (
            ContainerKind::Ephemeral,
            ephemeral,
            status.and_then(|s| s.ephemeral_container_statuses.as_deref()),
        ),
    ] {
        merge_containers(kind, specs, statuses.unwrap_or_default(), &mut containers);
    }
    Some(PodMeta {
        namespace: meta.namespace.clone().unwrap_or_default(),
        name,
        uid,
        labels: meta.labels.clone().unwrap_or_default(),
        owner: controller(meta),
        node_name: non_empty(spec.and_then(|s| s.node_name.as_ref())),
        static_pod,
        phase: match status.and_then(|s| s.phase.as_deref()) {
            Some("Pending") => PodPhase::Pending,
            Some("Running") => PodPhase::Running,
            Some("Succeeded") => PodPhase::Succeeded,
            Some("Failed") => PodPhase::Failed,
            _ => PodPhase::Unknown,
        },
        host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
        pod_ips,
        containers,
    })
}

/// Joins spec containers with their statuses by name; a status without a spec entry still
/// yields a container (the kubelet parser's rule).
fn merge_containers(
    kind: ContainerKind,
    specs: Vec<(String, Option<String>)>,
    statuses: &[ContainerStatus],
    out: &mut Vec<ContainerMeta>,
) {
    let mut used = vec![false; statuses.len()];
    for (name, image) in specs {
        if name.is_empty() {
            continue;
        }
        let status = statuses
            .iter()
            .enumerate()
            .find(|(i, s)| !used[*i] && s.name == name)
            .map(|(i, s)| {
                used[i] = true;
                s
            });
        out.push(container_meta(
            kind,
            name,
            image.filter(|i| !i.is_empty()),
            status,
        ));
    }
    for (i, status) in statuses.iter().enumerate() {
        if used[i] || status.name.is_empty() {
            continue;
        }
        out.push(container_meta(
            kind,
            status.name.clone(),
            None,
            Some(status),
        ));
    }
}

fn container_meta(
    kind: ContainerKind,
    name: String,
    spec_image: Option<String>,
    status: Option<&ContainerStatus>,
) -> ContainerMeta {
    let state = match status.and_then(|s| s.state.as_ref()) {
        Some(s) if s.running.is_some() => ContainerState::Running,
        Some(s) if s.terminated.is_some() => ContainerState::Terminated,
        Some(s) if s.waiting.is_some() => ContainerState::Waiting,
        _ => ContainerState::Unknown,
    };
    let previous_id = status
        .and_then(|s| s.last_state.as_ref())
        .and_then(|s| s.terminated.as_ref())
        .and_then(|t| ContainerId::parse(t.container_id.as_deref()?));
    let status_image = status.map(|s| s.image.clone()).filter(|i| !i.is_empty());
    ContainerMeta {
        name,
        kind,
        id: status
            .and_then(|s| s.container_id.as_deref())
            .and_then(ContainerId::parse),
        previous_id,
        image: spec_image.or(status_image).unwrap_or_default(),
        image_id: status.map(|s| s.image_id.clone()).unwrap_or_default(),
        state,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::pods::parse_pod_list;

    /// The apiserver path and the kubelet path make the same [`PodMeta`] from the same pods.
    #[test]
    fn pod_meta_matches_the_kubelet_parser() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/kubelet");
        let mut compared = 0;
        for entry in std::fs::read_dir(&dir).expect("fixtures dir") {
            let path = entry.expect("dir entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if !name.starts_with("podlist_") {
                continue;
            }
            let bytes = std::fs::read(&path).expect("fixture");
            let Ok(parsed) = parse_pod_list(&bytes) else {
                continue;
            };
            let value: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
            let items = value["items"].as_array().cloned().unwrap_or_default();
            for item in items {
                // Pods the strict k8s-openapi decoder rejects never reach the apiserver path.
                let Ok(pod) = serde_json::from_value::<Pod>(item) else {
                    continue;
                };
                let Some(meta) = pod_meta(&pod) else { continue };
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
}
