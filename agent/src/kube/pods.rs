//! The pod model Sonde keeps, and the lenient PodList parser that produces it.
//!
//! A kubelet `/pods` answer (or an apiserver list) carries the whole pod spec: env, volumes,
//! probes, managed fields, `last-applied-configuration` annotations. Sonde keeps the few
//! fields attribution needs ([`PodMeta`]); everything else is skipped while parsing, never
//! allocated. The parser is lenient the way real payloads require: `"items": null` (a kubelet
//! that just started), `null` and `{}` items, missing or null fields, unknown fields, containers
//! without a `containerID` yet (`ContainerCreating`). A malformed item is skipped and counted,
//! not allowed to fail the whole list; only a body that is not a PodList at all is an error.

use std::{collections::BTreeMap, fmt, net::IpAddr, sync::Arc};

use serde::{Deserialize, Serialize, de::IgnoredAny};
use serde_json::value::RawValue;

/// Annotation the kubelet sets to where a pod came from: `api`, `file`, `http`.
pub const CONFIG_SOURCE_ANNOTATION: &str = "kubernetes.io/config.source";
/// Annotation on the apiserver's mirror of a static pod.
pub const CONFIG_MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// A pod, stripped to what attribution needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PodMeta {
    pub namespace: String,
    pub name: String,
    /// `metadata.uid`; for a static pod on the kubelet, the config hash (32 hex digits), which
    /// is also what its cgroup path carries.
    pub uid: String,
    /// All labels; callers filter them by their allow-list.
    pub labels: BTreeMap<String, String>,
    /// The controlling owner (`controller: true`), else the first owner reference.
    pub owner: Option<OwnerRef>,
    /// The workload the pod's own fields imply ([`super::workload::by_name`]): what the join
    /// names when the apiserver's owner chain does not know the owner.
    pub workload: Option<Arc<OwnerRef>>,
    pub node_name: Option<String>,
    /// A static pod (`kubernetes.io/config.source` other than `api`) or the apiserver's mirror
    /// of one (`kubernetes.io/config.mirror` present).
    pub static_pod: bool,
    pub phase: PodPhase,
    /// The pod shares the node's network namespace: its IPs are the node's.
    pub host_network: bool,
    /// `status.podIPs` (else `status.podIP`); unparsable addresses are left out.
    pub pod_ips: Vec<IpAddr>,
    /// Init containers, then regular ones, then ephemeral ones, each in spec order.
    pub containers: Vec<ContainerMeta>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OwnerRef {
    pub kind: String,
    pub name: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PodPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
    #[default]
    Unknown,
}

impl PodPhase {
    fn parse(text: &str) -> Self {
        match text {
            "Pending" => PodPhase::Pending,
            "Running" => PodPhase::Running,
            "Succeeded" => PodPhase::Succeeded,
            "Failed" => PodPhase::Failed,
            _ => PodPhase::Unknown,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ContainerMeta {
    pub name: String,
    pub kind: ContainerKind,
    /// The running (or last) instance; `None` until the runtime created it.
    pub id: Option<ContainerId>,
    /// The instance before the last restart (`lastState.terminated.containerID`): its late
    /// events still belong to this container.
    pub previous_id: Option<ContainerId>,
    /// The image as the spec names it (else as the status reports it).
    pub image: String,
    /// The resolved image (digest) from the status; empty until pulled.
    pub image_id: String,
    pub state: ContainerState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerKind {
    Init,
    Regular,
    Ephemeral,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    Waiting,
    Running,
    Terminated,
    Unknown,
}

/// A runtime container id, `<runtime>://<id>` in Kubernetes, split.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct ContainerId {
    /// `containerd`, `cri-o`, `docker`, …; empty when the id had no runtime prefix.
    pub runtime: String,
    /// The bare id (64 hex digits for the common runtimes), as cgroup paths carry it.
    pub id: String,
}

impl ContainerId {
    /// Splits `containerd://abc` into (`containerd`, `abc`). Empty ids give `None`.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let (runtime, id) = match text.split_once("://") {
            Some((runtime, id)) => (runtime, id),
            None => ("", text),
        };
        if id.is_empty() {
            return None;
        }
        Some(ContainerId {
            runtime: runtime.to_string(),
            id: id.to_string(),
        })
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.runtime.is_empty() {
            f.write_str(&self.id)
        } else {
            write!(f, "{}://{}", self.runtime, self.id)
        }
    }
}

impl PodMeta {
    /// Every container id this pod accounts for (current and previous instances), with the
    /// index of its container in [`PodMeta::containers`].
    pub fn container_ids(&self) -> impl Iterator<Item = (&str, usize)> {
        self.containers.iter().enumerate().flat_map(|(i, c)| {
            [c.id.as_ref(), c.previous_id.as_ref()]
                .into_iter()
                .flatten()
                .map(move |id| (id.id.as_str(), i))
        })
    }

    pub fn container(&self, name: &str) -> Option<&ContainerMeta> {
        self.containers.iter().find(|c| c.name == name)
    }
}

/// The pods of a list, and how many items could not be used.
#[derive(Clone, Debug, Default)]
pub struct ParsedPods {
    pub pods: Vec<PodMeta>,
    /// `null` items, items without `metadata.name`/`uid`, items that do not parse.
    pub skipped: usize,
    /// Why the first skipped item was skipped (for a log line; names no pod content).
    pub first_skip_reason: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("the body is not a JSON PodList: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the body is {what}, not a PodList")]
    NotPodList { what: String },
}

/// Parses a PodList (kubelet `/pods`, or an apiserver pod list), keeping what [`PodMeta`] holds.
pub fn parse_pod_list(bytes: &[u8]) -> Result<ParsedPods, ParseError> {
    // Items stay raw (borrowed slices of `bytes`) so that each parses on its own: one odd item
    // is skipped instead of failing the list.
    let list: RawList<'_> = serde_json::from_slice(bytes)?;
    match (&list.kind, &list.items) {
        (Some(kind), _) if kind != "PodList" => {
            return Err(ParseError::NotPodList {
                what: format!("a {kind} object"),
            });
        }
        // `"items": null` is a kubelet that has no pods yet; no `items` and no `kind` is some
        // other document (e.g. /stats/summary), which must not empty the store.
        (None, None) => {
            return Err(ParseError::NotPodList {
                what: "a JSON object with neither kind nor items".into(),
            });
        }
        _ => {}
    }
    let items = list.items.flatten().unwrap_or_default();
    let mut parsed = ParsedPods {
        pods: Vec::with_capacity(items.len()),
        ..ParsedPods::default()
    };
    for (index, item) in items.iter().enumerate() {
        match parse_pod(item.get()) {
            Ok(pod) => parsed.pods.push(pod),
            Err(reason) => {
                parsed.skipped += 1;
                if parsed.first_skip_reason.is_none() {
                    parsed.first_skip_reason = Some(format!("item {index}: {reason}"));
                }
            }
        }
    }
    Ok(parsed)
}

/// Parses one pod object (as in a list's `items`, or a watch event's `object`).
pub fn parse_pod(json: &str) -> Result<PodMeta, String> {
    let raw: Option<RawPod> = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let raw = raw.ok_or_else(|| "null item".to_string())?;
    raw.into_meta()
}

#[derive(Deserialize)]
struct RawList<'a> {
    #[serde(default)]
    kind: Option<String>,
    /// Outer `None`: no `items` key; inner `None`: `"items": null`.
    #[serde(borrow, default, deserialize_with = "present")]
    items: Option<Option<Vec<&'a RawValue>>>,
}

/// Deserializes a field that is present (even as `null`) as `Some`.
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// A pod object as the decoder reads it: only the fields [`PodMeta`] keeps are allocated.
/// The apiserver's pod watch decodes into it too ([`crate::kube::apiserver::slim::Pod`]), so
/// both paths build their [`PodMeta`] with the one [`RawPod::into_meta`].
#[derive(Deserialize, Default)]
pub(crate) struct RawPod {
    #[serde(default)]
    pub(crate) metadata: Option<RawMeta>,
    #[serde(default)]
    spec: Option<RawSpec>,
    #[serde(default)]
    status: Option<RawStatus>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RawMeta {
    #[serde(default)]
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) namespace: Option<String>,
    #[serde(default)]
    pub(crate) uid: Option<String>,
    /// Read by the apiserver's watch (the kubelet's answer carries it too, unused there).
    #[serde(default)]
    pub(crate) resource_version: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    annotations: Option<RawAnnotations>,
    #[serde(default)]
    owner_references: Option<Vec<RawOwner>>,
}

/// Only the annotations Sonde reads; the others (often large) are skipped unallocated.
#[derive(Deserialize, Default)]
struct RawAnnotations {
    #[serde(rename = "kubernetes.io/config.source", default)]
    config_source: Option<String>,
    #[serde(rename = "kubernetes.io/config.mirror", default)]
    config_mirror: Option<IgnoredAny>,
}

#[derive(Deserialize, Default)]
struct RawOwner {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    controller: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawSpec {
    #[serde(default)]
    node_name: Option<String>,
    #[serde(default)]
    host_network: Option<bool>,
    #[serde(default)]
    init_containers: Option<Vec<RawContainer>>,
    #[serde(default)]
    containers: Option<Vec<RawContainer>>,
    #[serde(default)]
    ephemeral_containers: Option<Vec<RawContainer>>,
}

#[derive(Deserialize, Default)]
struct RawContainer {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    image: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawStatus {
    #[serde(default)]
    phase: Option<String>,
    #[serde(rename = "podIP", default)]
    pod_ip: Option<String>,
    #[serde(rename = "podIPs", default)]
    pod_ips: Option<Vec<RawPodIp>>,
    #[serde(default)]
    init_container_statuses: Option<Vec<RawContainerStatus>>,
    #[serde(default)]
    container_statuses: Option<Vec<RawContainerStatus>>,
    #[serde(default)]
    ephemeral_container_statuses: Option<Vec<RawContainerStatus>>,
}

#[derive(Deserialize, Default)]
struct RawPodIp {
    #[serde(default)]
    ip: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawContainerStatus {
    #[serde(default)]
    name: Option<String>,
    #[serde(rename = "containerID", default)]
    container_id: Option<String>,
    #[serde(default)]
    image: Option<String>,
    #[serde(rename = "imageID", default)]
    image_id: Option<String>,
    #[serde(default)]
    state: Option<RawState>,
    #[serde(default)]
    last_state: Option<RawState>,
}

#[derive(Deserialize, Default)]
struct RawState {
    #[serde(default)]
    waiting: Option<IgnoredAny>,
    #[serde(default)]
    running: Option<IgnoredAny>,
    #[serde(default)]
    terminated: Option<RawTerminated>,
}

#[derive(Deserialize, Default)]
struct RawTerminated {
    #[serde(rename = "containerID", default)]
    container_id: Option<String>,
}

fn non_empty(text: Option<String>) -> Option<String> {
    text.filter(|t| !t.is_empty())
}

impl RawPod {
    /// The [`PodMeta`] of this pod; `Err` (why, naming no pod content) without
    /// `metadata.name` or `metadata.uid`.
    pub(crate) fn into_meta(self) -> Result<PodMeta, String> {
        let meta = self.metadata.unwrap_or_default();
        let name = non_empty(meta.name).ok_or("no metadata.name")?;
        let uid = non_empty(meta.uid).ok_or("no metadata.uid")?;
        let annotations = meta.annotations.unwrap_or_default();
        let static_pod = annotations
            .config_source
            .as_deref()
            .is_some_and(|source| source != "api")
            || annotations.config_mirror.is_some();
        let owners = meta.owner_references.unwrap_or_default();
        let owner = owners
            .iter()
            .find(|o| o.controller == Some(true))
            .or(owners.first())
            .and_then(|o| {
                Some(OwnerRef {
                    kind: o.kind.clone()?,
                    name: o.name.clone()?,
                })
            });
        let spec = self.spec.unwrap_or_default();
        let status = self.status.unwrap_or_default();
        let mut pod_ips: Vec<IpAddr> = status
            .pod_ips
            .unwrap_or_default()
            .iter()
            .filter_map(|p| p.ip.as_deref()?.parse().ok())
            .collect();
        if pod_ips.is_empty()
            && let Some(ip) = status.pod_ip.as_deref().and_then(|ip| ip.parse().ok())
        {
            pod_ips.push(ip);
        }
        let mut containers = Vec::new();
        for (kind, specs, statuses) in [
            (
                ContainerKind::Init,
                spec.init_containers,
                status.init_container_statuses,
            ),
            (
                ContainerKind::Regular,
                spec.containers,
                status.container_statuses,
            ),
            (
                ContainerKind::Ephemeral,
                spec.ephemeral_containers,
                status.ephemeral_container_statuses,
            ),
        ] {
            merge_containers(
                kind,
                specs.unwrap_or_default(),
                statuses.unwrap_or_default(),
                &mut containers,
            );
        }
        let mut pod = PodMeta {
            namespace: meta.namespace.unwrap_or_default(),
            name,
            uid,
            labels: meta.labels.unwrap_or_default(),
            owner,
            workload: None,
            node_name: non_empty(spec.node_name),
            static_pod,
            phase: status
                .phase
                .as_deref()
                .map_or(PodPhase::Unknown, PodPhase::parse),
            host_network: spec.host_network.unwrap_or(false),
            pod_ips,
            containers,
        };
        pod.workload = super::workload::by_name(&pod).map(Arc::new);
        Ok(pod)
    }
}

/// Joins spec containers with their statuses by name; a status without a spec entry (trimmed
/// specs) still yields a container.
fn merge_containers(
    kind: ContainerKind,
    specs: Vec<RawContainer>,
    mut statuses: Vec<RawContainerStatus>,
    out: &mut Vec<ContainerMeta>,
) {
    for spec in specs {
        let Some(name) = non_empty(spec.name) else {
            continue;
        };
        let status = statuses
            .iter()
            .position(|s| s.name.as_deref() == Some(name.as_str()))
            .map(|i| statuses.swap_remove(i));
        out.push(container_meta(kind, name, non_empty(spec.image), status));
    }
    for status in statuses {
        let Some(name) = non_empty(status.name.clone()) else {
            continue;
        };
        out.push(container_meta(kind, name, None, Some(status)));
    }
}

fn container_meta(
    kind: ContainerKind,
    name: String,
    spec_image: Option<String>,
    status: Option<RawContainerStatus>,
) -> ContainerMeta {
    let status = status.unwrap_or_default();
    let state = match status.state {
        Some(RawState {
            running: Some(_), ..
        }) => ContainerState::Running,
        Some(RawState {
            terminated: Some(_),
            ..
        }) => ContainerState::Terminated,
        Some(RawState {
            waiting: Some(_), ..
        }) => ContainerState::Waiting,
        _ => ContainerState::Unknown,
    };
    let previous_id = status
        .last_state
        .and_then(|s| s.terminated)
        .and_then(|t| ContainerId::parse(t.container_id.as_deref()?));
    ContainerMeta {
        name,
        kind,
        id: status.container_id.as_deref().and_then(ContainerId::parse),
        previous_id,
        image: spec_image.or(non_empty(status.image)).unwrap_or_default(),
        image_id: status.image_id.unwrap_or_default(),
        state,
    }
}

#[cfg(test)]
mod tests;
