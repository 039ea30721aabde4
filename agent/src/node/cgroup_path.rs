//! What a cgroup v2 path says about the workload that runs in it.
//!
//! [`parse`] reads a path such as the one in a `/proc/<pid>/cgroup` `0::<path>` line, under the
//! cgroup2 mount, or in the `cgroup_mkdir` tracepoint, and returns a [`CgroupIdentity`]: the
//! container runtime and id, the kubelet pod UID and QoS class, and the systemd unit and slice.
//! A path it does not recognise gives an identity with every field `None` (the caller keeps the
//! raw path); no input makes it panic.
//!
//! The path is read one `/`-separated element at a time, from the root down, and the innermost
//! match wins. Recognised elements:
//!
//! | element | gives |
//! | --- | --- |
//! | `docker-<id>.scope`, `cri-containerd-<id>[.scope]`, `crio-<id>[.scope]`, `libpod-<id>[.scope]` | runtime + container id |
//! | `<pod slice>:cri-containerd:<id>` (also `crio`, `docker`, `libpod`) | pod, runtime + container id |
//! | `docker/<id>` | Docker for a Docker id (64 hex); ECS for an ECS task-container id (`<32 hex>-<n>`); otherwise the id alone |
//! | `ecs/<task>/<id>` | ECS + container id |
//! | `lxc.payload.<name>`, `lxc/<name>` | LXC + the container name |
//! | a bare 64-hex element (`/kubepods/<qos>/pod<uid>/<id>`, ...) | container id, runtime unknown |
//! | `kubepods[-<qos>][-pod<uid>][.slice]`, `kubepods/[<qos>/]pod<uid>` | QoS class, pod UID |
//! | `podruntime`, `system`, `init` as the first element | Talos system service |
//! | `<name>.slice` | systemd slice |
//! | `<name>.service`, `.scope`, `.mount`, `.socket`, `.swap` | systemd unit |
//!
//! Container ids must be the full 64-hex id; so `crio-conmon-<id>` and `libpod-conmon-<id>`
//! (the container monitor, not the container) and `crio-<id>.mount` are not containers. Children
//! of a container that are not a new hierarchy (`.../<id>.scope/container`, `init.scope`,
//! `/docker/<id>/ns`) keep the container's id. A slice, a non-scope unit or a `kubepods` element
//! *below* a container means that container is a node (kind, minikube, Docker-in-Podman) running
//! its own systemd or kubelet: the identity restarts from there, so `kubelet.service` in a kind
//! node has no container id and a pod's container in it gets its own. LXC containers are system
//! containers, so everything inside `lxc.payload.<name>` keeps that name.
//!
//! `..` elements (paths seen from inside a cgroup namespace) and empty elements are skipped.
//! Systemd escapes (`\x2d`) are decoded in unit and slice names; the kubelet's systemd driver
//! writes the pod UID with `_` for `-`, which is turned back.

use std::fmt;

/// A container runtime (or, for Talos, the system-service manager) that a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Runtime {
    Docker,
    Containerd,
    CriO,
    Podman,
    Lxc,
    /// Amazon ECS (`/ecs/<task>/<id>`, or a Fargate `<32 hex>-<n>` id).
    Ecs,
    /// A Talos Linux system service (`/system/...`, `/podruntime/...`, `/init`): not a container.
    Talos,
}

impl Runtime {
    /// The lowercase name: `docker`, `containerd`, `cri-o`, `podman`, `lxc`, `ecs`, `talos`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Podman => "podman",
            Runtime::Lxc => "lxc",
            Runtime::Ecs => "ecs",
            Runtime::Talos => "talos",
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A pod's Kubernetes QoS class, from the kubepods level it sits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QosClass {
    /// Directly under `kubepods` (no QoS level).
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    /// The Kubernetes name: `Guaranteed`, `Burstable`, `BestEffort`.
    pub const fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }

    /// The cgroup level name (`burstable`, `besteffort`); guaranteed pods have no level.
    fn from_level(level: &str) -> Option<Self> {
        match level {
            "burstable" => Some(QosClass::Burstable),
            "besteffort" => Some(QosClass::BestEffort),
            _ => None,
        }
    }
}

/// What kind of workload an identity describes; see [`CgroupIdentity::kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A container: the identity has a container id.
    Container,
    /// In kubelet's pod tree but not a container: a QoS level, a pod, or a pod's conmon.
    Pod,
    /// A host service: a systemd unit or slice, or a Talos system service.
    HostService,
    /// Nothing recognised: keep the raw path.
    Unknown,
}

/// What a cgroup path says about its workload. `Default` is the unknown identity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupIdentity {
    /// The runtime of the innermost container (or [`Runtime::Talos`]), when the path names it.
    pub runtime: Option<Runtime>,
    /// The innermost container's full id (or LXC name), as written in the path.
    pub container_id: Option<String>,
    /// The kubelet pod UID, with the systemd driver's `_` turned back into `-`.
    pub pod_uid: Option<String>,
    /// The pod's QoS class, from `kubepods[-<qos>]`.
    pub qos: Option<QosClass>,
    /// The innermost systemd unit that is not a container's own scope, escapes decoded:
    /// `kubelet.service`, `postgresql@9.4-main.service`, `session-3.scope`.
    pub systemd_unit: Option<String>,
    /// The innermost systemd slice, escapes decoded: `system.slice`, `user-1000.slice`.
    pub systemd_slice: Option<String>,
}

impl CgroupIdentity {
    /// Container if there is a container id; else Pod if there is a pod UID or QoS class; else
    /// HostService if there is a systemd unit or slice or a Talos service; else Unknown.
    pub fn kind(&self) -> Kind {
        if self.container_id.is_some() {
            Kind::Container
        } else if self.pod_uid.is_some() || self.qos.is_some() {
            Kind::Pod
        } else if self.runtime == Some(Runtime::Talos)
            || self.systemd_unit.is_some()
            || self.systemd_slice.is_some()
        {
            Kind::HostService
        } else {
            Kind::Unknown
        }
    }
}

/// Parses a cgroup v2 path (absolute, relative to the cgroup mount, or with the `/..` prefix of a
/// cgroup namespace). Unknown or malformed paths give [`CgroupIdentity::default()`].
pub fn parse(path: &str) -> CgroupIdentity {
    let mut scan = Scan::default();
    let (mut parent, mut grandparent) = (None, None);
    let elements = path
        .trim_end_matches(['\n', '\r'])
        .split('/')
        .filter(|e| !matches!(*e, "" | "." | ".."));
    for (i, element) in elements.enumerate() {
        scan.element(element, i == 0, parent, grandparent);
        grandparent = parent;
        parent = Some(element);
    }
    scan.finish()
}

/// The identity while scanning, borrowing from the path: strings are built once, at the end.
#[derive(Default)]
struct Scan<'a> {
    runtime: Option<Runtime>,
    container_id: Option<&'a str>,
    /// As in the path (may have `_` for `-`).
    pod_uid: Option<&'a str>,
    qos: Option<QosClass>,
    /// As in the path (may have `\x2d` escapes).
    unit: Option<&'a str>,
    slice: Option<&'a str>,
}

/// A kubelet pod-tree element.
enum Kube<'a> {
    /// `kubepods` / `kubepods.slice`.
    Root,
    Qos(QosClass),
    Pod(QosClass, &'a str),
}

/// Unit types that own cgroups (besides slices).
const UNIT_SUFFIXES: [&str; 5] = [".service", ".scope", ".mount", ".socket", ".swap"];

/// `<prefix><id>[.scope]` container elements.
const SCOPE_PREFIXES: [(&str, Runtime); 4] = [
    ("docker-", Runtime::Docker),
    ("cri-containerd-", Runtime::Containerd),
    ("crio-", Runtime::CriO),
    ("libpod-", Runtime::Podman),
];

impl<'a> Scan<'a> {
    fn element(
        &mut self,
        e: &'a str,
        first: bool,
        parent: Option<&'a str>,
        grandparent: Option<&'a str>,
    ) {
        if first && matches!(e, "podruntime" | "system" | "init") {
            self.runtime = Some(Runtime::Talos);
            return;
        }
        if let Some((runtime, id)) = container(e, parent, grandparent) {
            self.runtime = runtime;
            self.container_id = Some(id);
            return;
        }
        if let Some((slice, runtime, id)) = slice_colon_form(e) {
            self.element(slice, false, parent, grandparent);
            self.runtime = Some(runtime);
            self.container_id = Some(id);
            return;
        }

        let kube = kube(e, parent, grandparent);
        let is_slice = is_unit_name(e, ".slice");
        let is_unit = UNIT_SUFFIXES.iter().any(|s| is_unit_name(e, s));
        let new_hierarchy = kube.is_some() || is_slice || (is_unit && !e.ends_with(".scope"));
        if new_hierarchy && self.container_id.is_some() && self.runtime != Some(Runtime::Lxc) {
            // A node inside the container (kind, minikube): describe what runs in it instead.
            *self = Scan::default();
        }
        match kube {
            Some(Kube::Root) => return, // kubepods itself: not a workload.
            Some(Kube::Qos(qos)) => self.qos = Some(qos),
            Some(Kube::Pod(qos, uid)) => {
                self.qos = Some(qos);
                self.pod_uid = Some(uid);
            }
            None => {}
        }
        if is_slice {
            self.slice = Some(e);
        } else if is_unit {
            self.unit = Some(e);
        }
    }

    fn finish(self) -> CgroupIdentity {
        CgroupIdentity {
            runtime: self.runtime,
            container_id: self.container_id.map(str::to_owned),
            pod_uid: self.pod_uid.map(|uid| uid.replace('_', "-")),
            qos: self.qos,
            systemd_unit: self.unit.map(unescape),
            systemd_slice: self.slice.map(unescape),
        }
    }
}

/// A container element: its runtime (when the path says) and id.
fn container<'a>(
    e: &'a str,
    parent: Option<&str>,
    grandparent: Option<&str>,
) -> Option<(Option<Runtime>, &'a str)> {
    if let Some(name) = e.strip_prefix("lxc.payload.") {
        return is_lxc_name(name).then_some((Some(Runtime::Lxc), name));
    }
    if parent == Some("lxc") && is_lxc_name(e) {
        return Some((Some(Runtime::Lxc), e));
    }
    if parent == Some("docker") {
        // Docker ids are 64 hex. Other ids under /docker/ are other runtimes reusing the name.
        if is_full_id(e) {
            return Some((Some(Runtime::Docker), e));
        } else if is_ecs_id(e) {
            return Some((Some(Runtime::Ecs), e));
        } else if is_loose_id(e) {
            return Some((None, e));
        }
    }
    if grandparent == Some("ecs") && is_loose_id(e) {
        return Some((Some(Runtime::Ecs), e));
    }
    let stem = e.strip_suffix(".scope").unwrap_or(e);
    for (prefix, runtime) in SCOPE_PREFIXES {
        if let Some(id) = stem.strip_prefix(prefix) {
            // `crio-conmon-<id>` / `libpod-conmon-<id>` fail here: conmon is not the container.
            return is_full_id(id).then_some((Some(runtime), id));
        }
    }
    is_full_id(e).then_some((None, e))
}

/// `<pod slice>:<runtime>:<id>`, the systemd driver's name used as a plain directory.
fn slice_colon_form(e: &str) -> Option<(&str, Runtime, &str)> {
    let mut parts = e.splitn(3, ':');
    let (slice, prefix, id) = (parts.next()?, parts.next()?, parts.next()?);
    let runtime = match prefix {
        "cri-containerd" => Runtime::Containerd,
        "crio" => Runtime::CriO,
        "docker" => Runtime::Docker,
        "libpod" => Runtime::Podman,
        _ => return None,
    };
    (slice.ends_with(".slice") && !slice.contains(':') && is_full_id(id))
        .then_some((slice, runtime, id))
}

/// A kubelet pod-tree element, in the systemd (`kubepods-burstable-pod<uid>.slice`) or cgroupfs
/// (`kubepods/burstable/pod<uid>`) layout, or DataDog's hybrid of the two (no `.slice`).
fn kube<'a>(e: &'a str, parent: Option<&str>, grandparent: Option<&str>) -> Option<Kube<'a>> {
    let name = e.strip_suffix(".slice").unwrap_or(e);
    if name == "kubepods" {
        return Some(Kube::Root);
    }
    if let Some(rest) = name.strip_prefix("kubepods-") {
        if let Some(uid) = rest.strip_prefix("pod") {
            return pod_uid(uid).map(|uid| Kube::Pod(QosClass::Guaranteed, uid));
        }
        let (level, pod) = match rest.split_once('-') {
            Some((level, pod)) => (level, Some(pod)),
            None => (rest, None),
        };
        let qos = QosClass::from_level(level)?;
        return match pod {
            None => Some(Kube::Qos(qos)),
            Some(pod) => pod_uid(pod.strip_prefix("pod")?).map(|uid| Kube::Pod(qos, uid)),
        };
    }
    // cgroupfs driver: only directly under kubepods or kubepods/<qos>.
    let qos = match (parent?, grandparent) {
        ("kubepods", _) => match QosClass::from_level(e) {
            Some(qos) => return Some(Kube::Qos(qos)),
            None => QosClass::Guaranteed,
        },
        (level, Some("kubepods")) => QosClass::from_level(level)?,
        _ => return None,
    };
    pod_uid(e.strip_prefix("pod")?).map(|uid| Kube::Pod(qos, uid))
}

/// A pod UID: a UUID (with `-`, or `_` from the systemd driver), or a static pod's 32-hex hash.
fn pod_uid(uid: &str) -> Option<&str> {
    let b = uid.as_bytes();
    let ok = match b.len() {
        32 => b.iter().all(u8::is_ascii_hexdigit),
        36 => b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => matches!(c, b'-' | b'_'),
            _ => c.is_ascii_hexdigit(),
        }),
        _ => false,
    };
    ok.then_some(uid)
}

/// A full container id: 64 hex digits (Docker, containerd, CRI-O, Podman).
fn is_full_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|c| c.is_ascii_hexdigit())
}

/// An ECS task container id: `<32 hex task id>-<decimal>` (Fargate).
fn is_ecs_id(id: &str) -> bool {
    id.split_once('-').is_some_and(|(task, n)| {
        task.len() == 32
            && task.bytes().all(|c| c.is_ascii_hexdigit())
            && (1..=20).contains(&n.len())
            && n.bytes().all(|c| c.is_ascii_digit())
    })
}

/// An id-looking name under a runtime's directory: hex digits and dashes (Garden, ECS).
fn is_loose_id(id: &str) -> bool {
    let b = id.as_bytes();
    (16..=128).contains(&b.len())
        && b.iter().all(|c| c.is_ascii_hexdigit() || *c == b'-')
        && b.first().is_some_and(u8::is_ascii_hexdigit)
        && b.last().is_some_and(u8::is_ascii_hexdigit)
}

/// An LXC container name.
fn is_lxc_name(name: &str) -> bool {
    (1..=255).contains(&name.len())
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// `<name><suffix>`: a systemd unit name (escaped charset, at most 255 bytes).
fn is_unit_name(e: &str, suffix: &str) -> bool {
    e.len() <= 255
        && e.strip_suffix(suffix).is_some_and(|stem| !stem.is_empty())
        && e.bytes().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, b':' | b'_' | b'.' | b'\\' | b'@' | b'-')
        })
}

/// Decodes systemd's `\xNN` escapes (`system-serial\x2dgetty.slice` → `system-serial-getty.slice`).
fn unescape(name: &str) -> String {
    if !name.contains('\\') {
        return name.to_owned();
    }
    let hex = |c: Option<&u8>| c.and_then(|c| char::from(*c).to_digit(16));
    let b = name.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'\\'
            && b.get(i + 1) == Some(&b'x')
            && let (Some(hi), Some(lo)) = (hex(b.get(i + 2)), hex(b.get(i + 3)))
        {
            out.push((hi * 16 + lo) as u8);
            i += 4;
            continue;
        }
        out.push(c);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests;
