//! Parsing of every vendored kubelet payload (tests/fixtures/kubelet, see its README), with
//! exact expectations taken from the files.

use super::*;

fn fixture(name: &str) -> Vec<u8> {
    let path =
        concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/kubelet/").to_string() + name;
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}

fn parse(name: &str) -> ParsedPods {
    parse_pod_list(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn pod<'a>(parsed: &'a ParsedPods, namespace: &str, name: &str) -> &'a PodMeta {
    parsed
        .pods
        .iter()
        .find(|p| p.namespace == namespace && p.name == name)
        .unwrap_or_else(|| panic!("no pod {namespace}/{name}"))
}

fn id(runtime: &str, id: &str) -> Option<ContainerId> {
    Some(ContainerId {
        runtime: runtime.into(),
        id: id.into(),
    })
}

fn owner(kind: &str, name: &str) -> Option<OwnerRef> {
    Some(OwnerRef {
        kind: kind.into(),
        name: name.into(),
    })
}

#[test]
fn every_fixture_parses() {
    // (file, pods, skipped)
    let expected = [
        ("podlist_1.8-1.json", 6, 0),
        ("podlist_1.8-2.json", 7, 0),
        ("podlist_container_creating.json", 1, 0),
        ("podlist_containerd_k8s-1.31.json", 23, 0),
        ("podlist_containerd_k8s-1.35.json", 24, 0),
        ("podlist_crio_gpu.json", 2, 0),
        ("podlist_expired.json", 4, 0),
        ("podlist_init_container_running.json", 5, 0),
        ("podlist_init_container_terminated.json", 5, 0),
        ("podlist_null_pod.json", 1, 2),
        ("podlist_short_lived_terminated.json", 5, 0),
        ("podlist_startup.json", 0, 0),
    ];
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/kubelet");
    let mut listed: Vec<String> = std::fs::read_dir(dir)
        .expect("fixtures dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("podlist_"))
        .collect();
    listed.sort();
    let mut names: Vec<&str> = expected.iter().map(|e| e.0).collect();
    names.sort();
    assert_eq!(listed, names, "every podlist fixture has an expectation");
    for (name, pods, skipped) in expected {
        let parsed = parse(name);
        assert_eq!(parsed.pods.len(), pods, "{name}: pods");
        assert_eq!(parsed.skipped, skipped, "{name}: skipped");
        for p in &parsed.pods {
            assert!(!p.uid.is_empty() && !p.name.is_empty(), "{name}");
        }
    }
}

#[test]
fn not_pod_lists_are_errors() {
    let err = parse_pod_list(&fixture("invalid.json")).expect_err("invalid.json");
    assert!(matches!(err, ParseError::Json(_)), "{err}");
    assert!(err.to_string().contains("line 1 column 1"), "{err}");
    for name in [
        "stats_summary.json",
        "stats_summary_containerd_k8s-1.35.json",
    ] {
        let err = parse_pod_list(&fixture(name)).expect_err(name);
        assert!(
            matches!(err, ParseError::NotPodList { .. }),
            "{name}: {err}"
        );
    }
    let status = br#"{"kind":"Status","apiVersion":"v1","status":"Failure","code":403}"#;
    let err = parse_pod_list(status).expect_err("Status");
    assert_eq!(
        err.to_string(),
        "the body is a Status object, not a PodList"
    );
    // A body cut mid-way is not JSON.
    let body = fixture("podlist_crio_gpu.json");
    let err = parse_pod_list(&body[..body.len() / 2]).expect_err("cut");
    assert!(err.to_string().contains("EOF"), "{err}");
    for odd in [&b"null"[..], b"[]", b"42"] {
        assert!(parse_pod_list(odd).is_err());
    }
}

#[test]
fn docker_era_pods_and_static_pods() {
    let parsed = parse("podlist_1.8-1.json");
    let nginx = pod(&parsed, "default", "nginx-99d8b564-4r4vq");
    assert_eq!(nginx.uid, "7979cfcd-0751-11e8-a2b8-000c29dea4f6");
    assert_eq!(nginx.owner, owner("ReplicaSet", "nginx-99d8b564"));
    assert_eq!(nginx.node_name.as_deref(), Some("my-node-name"));
    assert_eq!(nginx.phase, PodPhase::Running);
    assert!(!nginx.static_pod);
    assert_eq!(nginx.labels.get("app").map(String::as_str), Some("nginx"));
    assert_eq!(nginx.containers.len(), 1);
    let c = &nginx.containers[0];
    assert_eq!(c.name, "nginx");
    assert_eq!(c.kind, ContainerKind::Regular);
    assert_eq!(
        c.id,
        id(
            "docker",
            "61e83ec5ce7af1c134c159bac1bf94d3413486ba655e5ebd6231e0a92a1c7b54"
        )
    );
    assert_eq!(c.image, "nginx:latest");
    assert!(
        c.image_id.starts_with("docker-pullable://nginx@sha256:"),
        "{}",
        c.image_id
    );
    assert_eq!(c.state, ContainerState::Running);

    // A static pod (config.source=file) still Pending: its container has no status yet.
    let apiserver = pod(&parsed, "kube-system", "kube-apiserver-my-node-name");
    assert_eq!(apiserver.uid, "0a8863810b43d4d891fab0af80e28e4c");
    assert!(apiserver.static_pod);
    assert_eq!(apiserver.owner, None);
    assert_eq!(apiserver.phase, PodPhase::Pending);
    let names: Vec<&str> = apiserver
        .containers
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["etcd", "kube-apiserver"]);
    assert!(apiserver.containers.iter().all(|c| c.id.is_none()));
    assert_eq!(apiserver.containers[0].image, "quay.io/coreos/etcd:latest");
    assert_eq!(apiserver.containers[1].state, ContainerState::Unknown);

    let parsed = parse("podlist_1.8-2.json");
    let gke = pod(
        &parsed,
        "kube-system",
        "kube-proxy-gke-haissam-default-pool-be5066f1-wnvn",
    );
    assert!(gke.static_pod);
    assert_eq!(gke.uid, "260c2b1d43b094af6d6b4ccba082c2db");
    assert_eq!(
        gke.node_name.as_deref(),
        Some("gke-haissam-default-pool-be5066f1-wnvn")
    );
}

#[test]
fn containerd_k8s_1_35_capture() {
    let parsed = parse("podlist_containerd_k8s-1.35.json");
    let apiserver = pod(&parsed, "kube-system", "kube-apiserver-datagen-1-35");
    assert_eq!(apiserver.uid, "8ac8c3a9ee4d182b8d934f20e971ada7");
    assert!(apiserver.static_pod);
    assert_eq!(apiserver.node_name.as_deref(), Some("datagen-1-35"));
    assert_eq!(
        apiserver.containers[0].id,
        id(
            "containerd",
            "88e37f75c461dd32860815f6490cabf0edd2e77f835d1b2625142b3d98d52f27"
        )
    );
    assert_eq!(
        apiserver.containers[0].image,
        "registry.k8s.io/kube-apiserver:v1.35.0"
    );
    assert!(apiserver.host_network);

    let coredns = pod(&parsed, "kube-system", "coredns-7d764666f9-qdcxt");
    assert_eq!(coredns.uid, "36447428-81f8-45eb-b825-414de2e8012b");
    assert_eq!(coredns.owner, owner("ReplicaSet", "coredns-7d764666f9"));
    assert!(!coredns.static_pod);
    assert!(!coredns.host_network);
    assert_eq!(coredns.pod_ips.len(), 1);
    assert_eq!(
        coredns.containers[0].id,
        id(
            "containerd",
            "facedc3f02c7efea0daff3590c408c2fb5820f875b93cb4c757df0d10d73786f"
        )
    );
    assert_eq!(
        coredns.containers[0].image,
        "registry.k8s.io/coredns/coredns:v1.13.1"
    );

    let failed = pod(&parsed, "scraper", "e2e-failjob-64h4g");
    assert_eq!(failed.phase, PodPhase::Failed);
    assert_eq!(failed.owner, owner("Job", "e2e-failjob"));
    assert_eq!(failed.containers[0].state, ContainerState::Terminated);

    // A restarted container: the previous instance's id is kept for its late events.
    let restarted = pod(&parsed, "scraper", "e2e-container-creating");
    assert_eq!(
        restarted.containers[0].previous_id,
        id(
            "containerd",
            "68acd6c031804d3992302cb76c9feec17b419b2616f770501fca8fc92a3fff10"
        )
    );
    let statics: Vec<&str> = parsed
        .pods
        .iter()
        .filter(|p| p.static_pod)
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(statics.len(), 4, "{statics:?}");
}

#[test]
fn containerd_k8s_1_31_capture() {
    let parsed = parse("podlist_containerd_k8s-1.31.json");
    let sp = pod(&parsed, "kube-system", "storage-provisioner");
    assert_eq!(sp.uid, "65c8810c-0f13-4424-8043-f499bf51570b");
    assert_eq!(sp.owner, None);
    let c = &sp.containers[0];
    assert_eq!(
        c.id,
        id(
            "containerd",
            "29b949f1ef370653aa2aa2b9d3c7ed6987016352a5ce91eafacb96bf8f630a60"
        )
    );
    assert_eq!(
        c.previous_id,
        id(
            "containerd",
            "cb48286eefb5e42ac22abd6b290464d33f3d5891b75ccc3ca2d1d57c1ce3b80a"
        )
    );
    let ids: Vec<(&str, usize)> = sp.container_ids().collect();
    assert_eq!(ids.len(), 2);
    // metrics-server: the status reports a bare digest as image; the spec's name is kept.
    let ms = pod(&parsed, "kube-system", "metrics-server-7b56b5cf7d-9swk6");
    assert!(
        !ms.containers[0].image.starts_with("sha256:"),
        "{}",
        ms.containers[0].image
    );
}

#[test]
fn cri_o_gpu_pods() {
    let parsed = parse("podlist_crio_gpu.json");
    let job = pod(&parsed, "default", "gpu-job-xkbmx");
    assert_eq!(job.uid, "d54d2cf1-87fc-400f-b4b4-e7f144f1a537");
    assert_eq!(job.owner, owner("Job", "gpu-job"));
    assert_eq!(job.node_name.as_deref(), Some("10.0.15.229"));
    assert_eq!(
        job.pod_ips,
        vec!["10.244.6.41".parse::<IpAddr>().expect("ip")]
    );
    // No config.source annotation at all: not a static pod.
    assert!(!job.static_pod);
    assert_eq!(
        job.labels.get("job-name").map(String::as_str),
        Some("gpu-job")
    );
    let c = &job.containers[0];
    assert_eq!(c.name, "gpu-container");
    assert_eq!(
        c.id,
        id(
            "cri-o",
            "1767d1fd8561642f818e16f411e6b1c61b77caabfe848266f2a44685eb782016"
        )
    );
    // The image as the spec names it; the status's normalized name is not used.
    assert_eq!(c.image, "nvidia/cuda:12.3.2-base-ubuntu22.04");
    assert!(c.image_id.contains("sha256:"), "{}", c.image_id);
    let debug = pod(&parsed, "default", "node-debugger-10.0.12.244-2x8vm");
    assert_eq!(debug.phase, PodPhase::Succeeded);
    assert_eq!(debug.containers[0].state, ContainerState::Terminated);
}

#[test]
fn container_creating_has_no_id() {
    let parsed = parse("podlist_container_creating.json");
    let p = pod(&parsed, "default", "pod-containercreating");
    assert_eq!(p.uid, "a7b2a624-3b27-11eb-bf0e-42010a8400c5");
    assert_eq!(p.phase, PodPhase::Pending);
    let c = &p.containers[0];
    assert_eq!(c.name, "test-container");
    assert_eq!(c.id, None);
    assert_eq!(c.image, "k8s.gcr.io/test-webserver");
    assert_eq!(c.image_id, "");
    assert_eq!(c.state, ContainerState::Waiting);
    assert_eq!(p.container_ids().count(), 0);
}

#[test]
fn init_containers() {
    let parsed = parse("podlist_init_container_running.json");
    let p = pod(&parsed, "default", "myapp-pod");
    assert_eq!(p.uid, "7760601b-65a6-11e9-bc12-02f121c1eeb4");
    let kinds: Vec<(&str, ContainerKind, ContainerState)> = p
        .containers
        .iter()
        .map(|c| (c.name.as_str(), c.kind, c.state))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (
                "init-myservice",
                ContainerKind::Init,
                ContainerState::Running
            ),
            (
                "myapp-container",
                ContainerKind::Regular,
                ContainerState::Waiting
            ),
        ]
    );
    assert_eq!(
        p.containers[0].id,
        id(
            "containerd",
            "922a2f3f14d1724d7eeb6cad2b5138bcbd85948c802fead1af2a1e5d79807e4e"
        )
    );
    assert_eq!(p.containers[1].id, None);

    let parsed = parse("podlist_init_container_terminated.json");
    let p = pod(&parsed, "default", "myapp-pod");
    assert_eq!(p.phase, PodPhase::Running);
    assert_eq!(p.containers[0].kind, ContainerKind::Init);
    assert_eq!(p.containers[0].state, ContainerState::Terminated);
    assert_eq!(
        p.containers[1].id,
        id(
            "containerd",
            "aa4f77272e3407f4ba15cd14f885d3799f6373e8a2b2ef883f9acfccd3c73ba3"
        )
    );
    assert_eq!(p.containers[1].image, "busybox");
}

#[test]
fn terminated_and_trimmed_pods() {
    let parsed = parse("podlist_short_lived_terminated.json");
    let p = pod(&parsed, "default", "my-short-lived-pod");
    assert_eq!(p.phase, PodPhase::Succeeded);
    assert_eq!(p.containers[0].state, ContainerState::Terminated);
    assert_eq!(
        p.containers[0].id,
        id(
            "containerd",
            "45dbe6934f4a07b2f8418ee345cb0904b726dfa0d0729b0cabc0f5fb56d4f8e6"
        )
    );

    // "spec": {} — containers come from the statuses alone.
    let parsed = parse("podlist_expired.json");
    let p = pod(&parsed, "default", "hello8-1550505780-kdnjx");
    assert_eq!(p.node_name, None);
    let names: Vec<&str> = p.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["expired", "not-expired"]);
    assert_eq!(p.containers[0].image, "busybox:latest");
    assert_eq!(
        p.containers[0].id,
        id(
            "docker",
            "b11c99327eaedd721d74a22d87cac957c887dfa551bf43512ee30586ef004321"
        )
    );
}

#[test]
fn null_items_and_empty_items() {
    let parsed = parse("podlist_null_pod.json");
    assert_eq!(parsed.pods.len(), 1);
    assert_eq!(parsed.pods[0].name, "nginx-99d8b564-4r4vq");
    assert_eq!(parsed.skipped, 2);
    assert_eq!(
        parsed.first_skip_reason.as_deref(),
        Some("item 0: null item")
    );

    let parsed = parse("podlist_startup.json");
    assert!(parsed.pods.is_empty());
    assert_eq!(parsed.skipped, 0);

    // Odd items are skipped, not fatal; null fields everywhere are tolerated.
    let body = br#"{"kind":"PodList","items":[
        {"metadata":{"name":"a","uid":"u-a","labels":{"x":1}}},
        {"metadata":{"name":"b","uid":"u-b","namespace":null,"labels":null,"annotations":null,
          "ownerReferences":null},"spec":null,"status":{"containerStatuses":null,"podIPs":null,
          "phase":null}},
        {"metadata":{"name":"c","uid":"u-c","ownerReferences":[{"kind":"Node"}]},
          "spec":{"containers":[{"name":"m","image":"img"},{"image":"nameless"}]},
          "status":{"podIP":"10.0.0.9","containerStatuses":[{"name":"m","containerID":"",
          "state":{"waiting":{"reason":"ContainerCreating"}},"futureField":{}}]}},
        "not an object"
    ]}"#;
    let parsed = parse_pod_list(body).expect("parses");
    let names: Vec<&str> = parsed.pods.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["b", "c"]);
    assert_eq!(parsed.skipped, 2);
    let c = &parsed.pods[1];
    assert_eq!(c.owner, None, "an owner without a name is dropped");
    assert_eq!(c.pod_ips, vec!["10.0.0.9".parse::<IpAddr>().expect("ip")]);
    assert_eq!(c.containers.len(), 1);
    assert_eq!(c.containers[0].id, None);
    assert_eq!(c.containers[0].state, ContainerState::Waiting);
}

#[test]
fn container_id_forms() {
    assert_eq!(
        ContainerId::parse("containerd://abc"),
        id("containerd", "abc")
    );
    assert_eq!(ContainerId::parse("cri-o://def"), id("cri-o", "def"));
    assert_eq!(ContainerId::parse("0123abcd"), id("", "0123abcd"));
    assert_eq!(ContainerId::parse(""), None);
    assert_eq!(ContainerId::parse("docker://"), None);
    assert_eq!(
        id("containerd", "abc").map(|i| i.to_string()).as_deref(),
        Some("containerd://abc")
    );
}
