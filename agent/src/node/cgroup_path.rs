//! STUB (replaced by the real parser from wip/cgroup-parser).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runtime {
    Docker,
    Containerd,
    CriO,
    Podman,
    Lxc,
    Ecs,
    Talos,
}
impl Runtime {
    pub fn as_str(&self) -> &'static str {
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}
impl QosClass {
    pub fn as_str(&self) -> &'static str {
        match self {
            QosClass::Guaranteed => "guaranteed",
            QosClass::Burstable => "burstable",
            QosClass::BestEffort => "besteffort",
        }
    }
}
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupIdentity {
    pub runtime: Option<Runtime>,
    pub container_id: Option<String>,
    pub pod_uid: Option<String>,
    pub qos: Option<QosClass>,
    pub systemd_unit: Option<String>,
    pub systemd_slice: Option<String>,
}
pub fn parse(path: &str) -> CgroupIdentity {
    let mut id = CgroupIdentity::default();
    for part in path.split('/') {
        if let Some(rest) = part
            .strip_prefix("cri-containerd-")
            .and_then(|r| r.strip_suffix(".scope"))
        {
            id.runtime = Some(Runtime::Containerd);
            id.container_id = Some(rest.into());
        }
        if let Some(rest) = part
            .strip_prefix("docker-")
            .and_then(|r| r.strip_suffix(".scope"))
        {
            id.runtime = Some(Runtime::Docker);
            id.container_id = Some(rest.into());
        }
        if part.ends_with(".service") {
            id.systemd_unit = Some(part.into());
        }
        if let Some(rest) = part.strip_prefix("pod") {
            if rest.len() >= 32 {
                id.pod_uid = Some(rest.trim_end_matches(".slice").replace('_', "-"));
            }
        }
    }
    id
}
