use super::*;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/cgroups/paths.tsv"
);

/// Data rows in the fixture (tests/fixtures/README.md); guards against a truncated read.
const FIXTURE_ROWS: usize = 87;

/// Rows whose `runtime` column is the source's attribution, not something the path encodes:
/// the innermost container is a bare 64-hex element (`/kubepods[/<qos>]/pod<uid>/<id>` or
/// `/<id>`) with no runtime token, and the same layout appears under different runtimes in
/// the table. For these the parser must say `None` (it cannot know); container id and pod
/// UID are still checked exactly. Every other row's runtime must match exactly.
const ATTRIBUTED_RUNTIME: [&str; 10] = [
    // coroot: its test classifies these as ContainerTypeDocker (column says `docker`).
    "/kubepods/burstable/pod6a4ce4a0-ba47-11ea-b2a7-0cc47ac5979e/17db96a24ae1e9dd57143e62b1cb0d2d35e693c65c774c7470e87b0572e07c1a",
    "/kubepods/burstable/pod8833712d-6e69-4f5c-95f3-aebd020ce2e7/95cbe853416f52d927dec41f1406dd75015ea131244a1ca875a7cd4ebe927ac8",
    "/kubepods/burstable/pod9729a196c4723b60ab401eaff722982d/d166c6190614efc91956b78e96d74c3fbc96ca8e91948c36de3bc5b0e7b27d48",
    "/kubepods/besteffort/pod0d08203e-255a-11e9-8cd9-0007cb0b2cc8/671a50f5d60566556912f61511d0ec9e4d5c78d53fbc4676727180438bbbbc55/kube-proxy",
    "/kubepods/poda38c12e8-255a-11e9-8cd9-0007cb0b2cc8/32c562ed81a2622b37b80cb216859820ba51bd694f60ee4cf10d07a4011266f8",
    // cadvisor: the containerd factory/handler tests (column says `containerd`).
    "/kubepods/besteffort/podd76e26fba3bf2bfd215eb29011d55250/40af7cdcbe507acad47a5a62025743ad3ddc6ab93b77b21363aa1c1d641047c9",
    "/kubepods/pod068e8fa0-9213-11e7-a01f-507b9d4141fa/40af7cdcbe507acad47a5a62025743ad3ddc6ab93b77b21363aa1c1d641047c9",
    // tetragon: "Minikube with containerd runtime and cgroupfs" (column says `containerd`).
    "/system.slice/docker-94acc75af8cf9c56e10676b0760ed424bec95dadc91f68f6564014686930200e.scope/kubepods/besteffort/pod13cb8437-00ed-40e4-99d8-e17193a58086/a5a6a3af5d51ad95b915ca948710b90a94abc279e84963b9d22a39f342ce67d9",
    "/kubepods/besteffort/pod13cb8437-00ed-40e4-99d8-e17193a58086/a5a6a3af5d51ad95b915ca948710b90a94abc279e84963b9d22a39f342ce67d9",
    // tetragon: a Docker container's cgroup seen from inside its own cgroup namespace, where
    // the `/docker/` parent is hidden (column says `docker`).
    "/5aaf9eb7648eeb1459d86eaa0ace8bcfa93089642e5c3113a14250dae3238aaf",
];

fn none_if_dash(s: &str) -> Option<&str> {
    (s != "-").then_some(s)
}

/// Compares one fixture row with the parser's answer; returns what differs.
fn check_row(path: &str, runtime: &str, container_id: &str, pod_uid: &str) -> Vec<String> {
    let got = parse(path);
    let got_runtime = got.runtime.map(Runtime::as_str);
    let mut errors = Vec::new();
    if got.container_id.as_deref() != none_if_dash(container_id) {
        errors.push(format!(
            "container_id {:?}, want {container_id}",
            got.container_id
        ));
    }
    if got.pod_uid.as_deref() != none_if_dash(pod_uid) {
        errors.push(format!("pod_uid {:?}, want {pod_uid}", got.pod_uid));
    }
    if ATTRIBUTED_RUNTIME.contains(&path) {
        if matches!(runtime, "-" | "systemd") {
            errors.push(format!(
                "listed as attributed but the column says {runtime}"
            ));
        }
        if got_runtime.is_some() {
            errors.push(format!(
                "runtime {got_runtime:?}, want None (not in the path)"
            ));
        }
    } else if runtime == "systemd" {
        if got_runtime.is_some() {
            errors.push(format!("runtime {got_runtime:?} for a systemd service"));
        }
        if got.systemd_unit.is_none() && got.systemd_slice.is_none() {
            errors.push("no systemd unit or slice".to_owned());
        }
        if got.kind() != Kind::HostService {
            errors.push(format!("kind {:?}, want HostService", got.kind()));
        }
    } else if got_runtime != none_if_dash(runtime) {
        errors.push(format!("runtime {got_runtime:?}, want {runtime}"));
    }
    if (got.kind() == Kind::Container) != got.container_id.is_some() {
        errors.push(format!(
            "kind {:?} with container_id {:?}",
            got.kind(),
            got.container_id
        ));
    }
    errors
}

#[test]
fn fixture_table() {
    let text = std::fs::read_to_string(FIXTURE).expect("read tests/fixtures/cgroups/paths.tsv");
    let mut lines = text.lines().enumerate();
    assert_eq!(
        lines.next().map(|(_, l)| l),
        Some("path\truntime\tcontainer_id\tpod_uid\tsource")
    );
    let mut rows = 0;
    let mut seen_attributed = Vec::new();
    let mut failures = Vec::new();
    for (n, line) in lines.filter(|(_, l)| !l.is_empty()) {
        rows += 1;
        let cols: Vec<&str> = line.split('\t').collect();
        let [path, runtime, container_id, pod_uid, _source] = cols[..] else {
            failures.push(format!("line {}: {} columns: {line}", n + 1, cols.len()));
            continue;
        };
        if ATTRIBUTED_RUNTIME.contains(&path) {
            seen_attributed.push(path);
        }
        for error in check_row(path, runtime, container_id, pod_uid) {
            failures.push(format!("line {} {path}: {error}", n + 1));
        }
    }
    for path in ATTRIBUTED_RUNTIME {
        if !seen_attributed.contains(&path) {
            failures.push(format!(
                "ATTRIBUTED_RUNTIME lists a path not in the table: {path}"
            ));
        }
    }
    assert_eq!(rows, FIXTURE_ROWS, "fixture rows");
    assert!(
        failures.is_empty(),
        "{} fixture mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

const ID: &str = "49f9e8e5395d57c1083996c09e2e6f042d5fe1ec0310facab32f94912b35ce59";
const UID: &str = "2942c55e-c9cb-428a-93f4-eaf89c1f3ce0";
const UID_: &str = "2942c55e_c9cb_428a_93f4_eaf89c1f3ce0";

fn id(
    runtime: Option<Runtime>,
    container_id: Option<&str>,
    pod_uid: Option<&str>,
    qos: Option<QosClass>,
    unit: Option<&str>,
    slice: Option<&str>,
) -> CgroupIdentity {
    CgroupIdentity {
        runtime,
        container_id: container_id.map(str::to_owned),
        pod_uid: pod_uid.map(str::to_owned),
        qos,
        systemd_unit: unit.map(str::to_owned),
        systemd_slice: slice.map(str::to_owned),
    }
}

#[test]
fn containerd() {
    let pod_slice = format!("kubepods-burstable-pod{UID_}.slice");
    let want = id(
        Some(Runtime::Containerd),
        Some(ID),
        Some(UID),
        Some(QosClass::Burstable),
        None,
        Some(&pod_slice),
    );
    let systemd =
        format!("/kubepods.slice/kubepods-burstable.slice/{pod_slice}/cri-containerd-{ID}.scope");
    assert_eq!(parse(&systemd), want);
    let colon = format!("/system.slice/containerd.service/{pod_slice}:cri-containerd:{ID}");
    let want_colon = CgroupIdentity {
        systemd_unit: Some("containerd.service".into()),
        ..want
    };
    assert_eq!(parse(&colon), want_colon);
    assert_eq!(parse(&colon).kind(), Kind::Container);
    // cgroupfs driver: the id alone, no runtime token.
    assert_eq!(
        parse(&format!("/kubepods/burstable/pod{UID}/{ID}")),
        id(
            None,
            Some(ID),
            Some(UID),
            Some(QosClass::Burstable),
            None,
            None
        )
    );
}

#[test]
fn cri_o() {
    for path in [
        format!("/kubepods/besteffort/pod{UID}/crio-{ID}"),
        format!("/kubepods/besteffort/pod{UID}/crio-{ID}.scope"),
    ] {
        assert_eq!(
            parse(&path),
            id(
                Some(Runtime::CriO),
                Some(ID),
                Some(UID),
                Some(QosClass::BestEffort),
                None,
                None
            ),
            "{path}"
        );
    }
    // The `container` child of the scope keeps the scope's id.
    let got = parse(&format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-{ID}.scope/container"
    ));
    assert_eq!(
        (got.runtime, got.container_id.as_deref()),
        (Some(Runtime::CriO), Some(ID))
    );
    // conmon is the container's monitor, not the container; the pod still applies.
    let conmon = parse(&format!(
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-conmon-{ID}.scope"
    ));
    assert_eq!(
        (conmon.runtime, conmon.container_id.as_deref()),
        (None, None)
    );
    assert_eq!(conmon.pod_uid.as_deref(), Some(UID));
    assert_eq!(conmon.kind(), Kind::Pod);
    assert_eq!(
        parse(&format!("/kubepods/pod{UID}/crio-conmon-{ID}")).kind(),
        Kind::Pod
    );
    // A mount unit named after a container is not one.
    let mount = parse(&format!("/kubepods/pod{UID}/crio-{ID}.mount"));
    assert_eq!(mount.container_id, None);
    assert_eq!(mount.systemd_unit, Some(format!("crio-{ID}.mount")));
}

#[test]
fn docker() {
    assert_eq!(
        parse(&format!("/system.slice/docker-{ID}.scope")),
        id(
            Some(Runtime::Docker),
            Some(ID),
            None,
            None,
            None,
            Some("system.slice")
        )
    );
    assert_eq!(
        parse(&format!("/docker/{ID}")),
        id(Some(Runtime::Docker), Some(ID), None, None, None, None)
    );
    // Children of the container keep its id.
    let got = parse(&format!("/docker/{ID}/ns"));
    assert_eq!(got.container_id.as_deref(), Some(ID));
    let got = parse(&format!("/system.slice/docker-{ID}.scope/init.scope"));
    assert_eq!(
        (got.runtime, got.container_id.as_deref()),
        (Some(Runtime::Docker), Some(ID))
    );
    // Not an id: a truncated id, a non-hex name, the service itself.
    assert_eq!(
        parse(&format!("/system.slice/docker-{}.scope", &ID[..12])).container_id,
        None
    );
    assert_eq!(parse("/docker/buildkit").kind(), Kind::Unknown);
    assert_eq!(
        parse("/system.slice/docker.service"),
        id(
            None,
            None,
            None,
            None,
            Some("docker.service"),
            Some("system.slice")
        )
    );
}

#[test]
fn docker_parent_with_other_id_formats() {
    // A Fargate task container id names ECS even under /docker/.
    let ecs = "0123456789abcdef0123456789abcdef-2495160603";
    let got = parse(&format!("/docker/{ecs}"));
    assert_eq!(
        (got.runtime, got.container_id.as_deref()),
        (Some(Runtime::Ecs), Some(ecs))
    );
    let got = parse(&format!("/ecs/0123456789abcdef0123456789abcdef/{ecs}"));
    assert_eq!(
        (got.runtime, got.container_id.as_deref()),
        (Some(Runtime::Ecs), Some(ecs))
    );
    let got = parse(&format!("/ecs/0123456789abcdef0123456789abcdef/{ID}"));
    assert_eq!(
        (got.runtime, got.container_id.as_deref()),
        (Some(Runtime::Ecs), Some(ID))
    );
    // Any other id-like name: the id, without claiming Docker.
    let got = parse("/docker/01234567-0123-4567-890a-bcde");
    assert_eq!(got.runtime, None);
    assert_eq!(
        got.container_id.as_deref(),
        Some("01234567-0123-4567-890a-bcde")
    );
}

#[test]
fn podman() {
    let want = id(
        Some(Runtime::Podman),
        Some(ID),
        None,
        None,
        None,
        Some("machine.slice"),
    );
    assert_eq!(
        parse(&format!("/machine.slice/libpod-{ID}.scope/container")),
        want
    );
    let rootless = parse(&format!(
        "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container"
    ));
    assert_eq!(
        rootless,
        id(
            Some(Runtime::Podman),
            Some(ID),
            None,
            None,
            Some("user@1000.service"),
            Some("user.slice")
        )
    );
    let got = parse(&format!("/libpod_parent/libpod-{ID}"));
    assert_eq!(
        (got.runtime, got.container_id.as_deref()),
        (Some(Runtime::Podman), Some(ID))
    );
    assert_eq!(parse("/libpod_parent/conmon"), CgroupIdentity::default());
    let conmon = parse(&format!("/machine.slice/libpod-conmon-{ID}.scope"));
    assert_eq!(
        (conmon.runtime, conmon.container_id.as_deref()),
        (None, None)
    );
    assert_eq!(conmon.kind(), Kind::HostService);
}

#[test]
fn kubelet_qos_and_pods() {
    let qos = |p: &str| parse(p).qos;
    assert_eq!(
        qos("/kubepods.slice/kubepods-besteffort.slice"),
        Some(QosClass::BestEffort)
    );
    assert_eq!(qos("/kubepods/burstable"), Some(QosClass::Burstable));
    assert_eq!(
        qos(&format!("/kubepods.slice/kubepods-pod{UID_}.slice")),
        Some(QosClass::Guaranteed)
    );
    assert_eq!(
        qos(&format!("/kubepods/pod{UID}")),
        Some(QosClass::Guaranteed)
    );
    // kubepods itself is not a workload; pod-level cgroups are Kind::Pod.
    assert_eq!(parse("/kubepods.slice"), CgroupIdentity::default());
    assert_eq!(parse("/kubepods"), CgroupIdentity::default());
    let pod = parse(&format!("/kubepods/besteffort/pod{UID}"));
    assert_eq!(
        pod,
        id(
            None,
            None,
            Some(UID),
            Some(QosClass::BestEffort),
            None,
            None
        )
    );
    assert_eq!(pod.kind(), Kind::Pod);
    // Static / mirror pods: a 32-hex config hash, kept as is.
    let hash = "3e61c214bc3ed9ff81e21474dd6cba17";
    let got = parse(&format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{hash}.slice/cri-containerd-{ID}"
    ));
    assert_eq!(got.pod_uid.as_deref(), Some(hash));
    assert_eq!(got.container_id.as_deref(), Some(ID));
    // DataDog's hybrid layout (systemd names, no .slice).
    let got = parse(&format!(
        "kubepods/kubepods-besteffort/kubepods-besteffort-pod{UID_}/{ID}"
    ));
    assert_eq!(
        got,
        id(
            None,
            Some(ID),
            Some(UID),
            Some(QosClass::BestEffort),
            None,
            None
        )
    );
    // `pod<uid>` only counts under kubepods, and the UID must be well formed.
    assert_eq!(parse(&format!("/pod{UID}/{ID}")).pod_uid, None);
    assert_eq!(parse("/kubepods/podnot-a-uid").pod_uid, None);
    assert_eq!(parse("/kubepods.slice/kubepods-gold.slice").qos, None);
}

#[test]
fn host_services_and_escapes() {
    assert_eq!(
        parse("/system.slice/kubelet.service"),
        id(
            None,
            None,
            None,
            None,
            Some("kubelet.service"),
            Some("system.slice")
        )
    );
    assert_eq!(
        parse("/system.slice/system-postgresql.slice/postgresql@9.4-main.service"),
        id(
            None,
            None,
            None,
            None,
            Some("postgresql@9.4-main.service"),
            Some("system-postgresql.slice")
        )
    );
    assert_eq!(
        parse(r"/system.slice/system-serial\x2dgetty.slice")
            .systemd_slice
            .as_deref(),
        Some("system-serial-getty.slice")
    );
    assert_eq!(
        parse(r"/system.slice/system-getty.slice/getty@tty\x2d1.service")
            .systemd_unit
            .as_deref(),
        Some("getty@tty-1.service")
    );
    // Incomplete escapes are kept as written.
    assert_eq!(
        parse(r"/a\x2.slice").systemd_slice.as_deref(),
        Some(r"a\x2.slice")
    );
    let session = parse("/user.slice/user-1000.slice/session-3.scope");
    assert_eq!(
        session,
        id(
            None,
            None,
            None,
            None,
            Some("session-3.scope"),
            Some("user-1000.slice")
        )
    );
    assert_eq!(session.kind(), Kind::HostService);
    assert_eq!(
        parse("/user.slice/user-1000.slice")
            .systemd_slice
            .as_deref(),
        Some("user-1000.slice")
    );
    assert_eq!(
        parse("/init.scope").systemd_unit.as_deref(),
        Some("init.scope")
    );
}

#[test]
fn cgroup_namespace_prefix() {
    let got = parse(&format!("/../../../../system.slice/docker-{ID}.scope"));
    assert_eq!(
        got,
        id(
            Some(Runtime::Docker),
            Some(ID),
            None,
            None,
            None,
            Some("system.slice")
        )
    );
    assert_eq!(
        parse("/../../system.slice/etcd.service")
            .systemd_unit
            .as_deref(),
        Some("etcd.service")
    );
}

#[test]
fn nested_nodes() {
    let node = format!("/system.slice/docker-{}.scope", "c".repeat(64));
    // kind: the node's own services are not the node container.
    let kubelet = parse(&format!("{node}/system.slice/kubelet.service"));
    assert_eq!(
        kubelet,
        id(
            None,
            None,
            None,
            None,
            Some("kubelet.service"),
            Some("system.slice")
        )
    );
    assert_eq!(kubelet.kind(), Kind::HostService);
    // kind, systemd driver: the pod's container inside the node.
    let got = parse(&format!(
        "{node}/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/docker-{ID}.scope"
    ));
    assert_eq!(
        (got.runtime, got.container_id.as_deref()),
        (Some(Runtime::Docker), Some(ID))
    );
    assert_eq!(
        (got.pod_uid.as_deref(), got.qos),
        (Some(UID), Some(QosClass::BestEffort))
    );
    // minikube, cgroupfs driver, with and without kind's `kubelet` level.
    for path in [
        format!("{node}/kubepods/burstable/pod{UID}/{ID}"),
        format!("{node}/kubelet/kubepods/burstable/pod{UID}/{ID}"),
    ] {
        assert_eq!(
            parse(&path),
            id(
                None,
                Some(ID),
                Some(UID),
                Some(QosClass::Burstable),
                None,
                None
            ),
            "{path}"
        );
    }
    // Docker in Podman.
    let got = parse(&format!(
        "libpod_parent/libpod-{}/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/docker-{ID}.scope",
        "a".repeat(64)
    ));
    assert_eq!(
        (got.runtime, got.container_id.as_deref()),
        (Some(Runtime::Docker), Some(ID))
    );
}

#[test]
fn lxc_and_talos() {
    let got = parse("/lxc.payload.first/system.slice/systemd-logind.service");
    assert_eq!(
        got,
        id(
            Some(Runtime::Lxc),
            Some("first"),
            None,
            None,
            Some("systemd-logind.service"),
            Some("system.slice")
        )
    );
    assert_eq!(
        parse("/lxc/mysql-primary-db").container_id.as_deref(),
        Some("mysql-primary-db")
    );
    assert_eq!(parse("/lxc.monitor.first"), CgroupIdentity::default());
    for path in ["/podruntime/kubelet", "/system/dashboard", "/init"] {
        let got = parse(path);
        assert_eq!(
            got,
            id(Some(Runtime::Talos), None, None, None, None, None),
            "{path}"
        );
        assert_eq!(got.kind(), Kind::HostService);
    }
    // Only as the first element; `podruntime.slice` is a systemd slice.
    assert_eq!(parse("/podruntime.slice/kubelet.service").runtime, None);
    assert_eq!(parse("/foo/system/dashboard"), CgroupIdentity::default());
}

#[test]
fn unknown_and_malformed() {
    for path in [
        "",
        "/",
        "//..//.",
        "garbage",
        "/actions_job",
        "/.service",
        "/my unit.service",
        "/docker/",
        "/docker/not-an-id",
        &format!("/{}", &ID[..63]),
        &format!("/docker-{ID}x"),
        &format!("/kubepods/pod{}", &UID[..35]),
        "/\u{0}/\u{fffd}é/ü.slice\x00",
    ] {
        let got = parse(path);
        assert_eq!(got, CgroupIdentity::default(), "{path:?}");
        assert_eq!(got.kind(), Kind::Unknown);
    }
    // A trailing newline (a raw /proc line's) is ignored.
    assert_eq!(
        parse(&format!("/docker/{ID}\n")).container_id.as_deref(),
        Some(ID)
    );
}

#[test]
fn names() {
    let all = [
        (Runtime::Docker, "docker"),
        (Runtime::Containerd, "containerd"),
        (Runtime::CriO, "cri-o"),
        (Runtime::Podman, "podman"),
        (Runtime::Lxc, "lxc"),
        (Runtime::Ecs, "ecs"),
        (Runtime::Talos, "talos"),
    ];
    for (runtime, name) in all {
        assert_eq!(runtime.as_str(), name);
        assert_eq!(runtime.to_string(), name);
    }
    assert_eq!(QosClass::BestEffort.as_str(), "BestEffort");
}

mod props {
    use super::super::*;
    use proptest::prelude::*;

    /// Pieces of real layouts, near-misses and awkward characters.
    const TOKENS: &[&str] = &[
        "kubepods",
        "kubepods.slice",
        "kubepods-burstable.slice",
        "kubepods-besteffort",
        "kubepods-pod",
        "kubepods-burstable-pod",
        "burstable",
        "besteffort",
        "pod",
        "2942c55e-c9cb-428a-93f4-eaf89c1f3ce0",
        "2942c55e_c9cb_428a_93f4_eaf89c1f3ce0",
        "3e61c214bc3ed9ff81e21474dd6cba17",
        "49f9e8e5395d57c1083996c09e2e6f042d5fe1ec0310facab32f94912b35ce59",
        "49f9e8e5",
        "0123456789abcdef0123456789abcdef-12",
        "docker",
        "docker-",
        "cri-containerd-",
        "crio-",
        "crio-conmon-",
        "libpod-",
        "libpod-conmon-",
        "libpod_parent",
        "conmon",
        ":cri-containerd:",
        ":crio:",
        ".slice",
        ".scope",
        ".service",
        ".mount",
        "system.slice",
        "user.slice",
        "user-1000.slice",
        "user@1000.service",
        "kubelet.service",
        "session-3.scope",
        "init.scope",
        "container",
        "lxc",
        "lxc.payload.",
        "lxc.monitor.",
        "ecs",
        "system",
        "podruntime",
        "init",
        "..",
        ".",
        "",
        "\\x2d",
        "\\x",
        "\\xZ",
        "\\xff",
        "\\",
        ":",
        "-",
        "_",
        "@",
        "é",
        "\u{fffd}",
        "\0",
    ];

    fn path_like() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            4 => prop::sample::select(TOKENS).prop_map(str::to_owned),
            1 => prop::collection::vec(any::<char>(), 0..6).prop_map(String::from_iter),
        ];
        let sep = prop::sample::select(&["/", "/", "/", "", ":", "-", "_", "."][..]);
        prop::collection::vec((sep, piece), 0..16)
            .prop_map(|parts| parts.into_iter().map(|(s, p)| s.to_owned() + &p).collect())
    }

    /// Parses `path` (must not panic) and checks invariants of the answer.
    fn check(path: &str) -> Result<(), TestCaseError> {
        let got = parse(path);
        if let Some(id) = &got.container_id {
            prop_assert!(path.contains(id.as_str()), "{id} not in {path:?}");
        }
        if let Some(uid) = &got.pod_uid {
            prop_assert!(matches!(uid.len(), 32 | 36) && !uid.contains('_'));
        }
        if got.runtime.is_some_and(|r| r != Runtime::Talos) {
            prop_assert!(got.container_id.is_some(), "runtime without a container");
        }
        prop_assert_eq!(got.kind() == Kind::Container, got.container_id.is_some());
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            check(&String::from_utf8_lossy(&bytes))?;
        }

        #[test]
        fn path_like_strings_never_panic(path in path_like()) {
            check(&path)?;
        }
    }
}
