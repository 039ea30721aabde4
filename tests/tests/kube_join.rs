//! The Kubernetes join, end to end: real runc containers started with the container ids and
//! pod UIDs of the vendored kubelet payload, a test kubelet over real HTTPS serving that
//! payload as it is, and the real agent — its events name the namespace, pod, container,
//! image and owning workload; and when the kubelet only comes up after the agent (a node's
//! bootstrap), the same containers' events carry the tags within 2 s of it answering; with
//! the test apiserver, a connection's remote end is named (Service, pod, or external).

use std::time::{Duration, Instant};

use serde_json::Value;
use sonde_tests::{
    agent::Agent,
    cgroup::remove_everywhere,
    kube_standin::{
        ApiserverStandin, KubeletStandin, Resource,
        apiserver::{FIXTURE_NODE, endpoint_slice, service},
        payloads,
    },
    metrics::{Exposition, scrape},
    poll::poll_until,
    runc::{Bundle, container_id, pod_uid, unique_id},
};

/// How long the agent has to report what a test's workload did.
const WAIT: Duration = Duration::from_secs(10);

/// A pod of the vendored payload, as the test needs it.
struct FixturePod {
    namespace: String,
    name: String,
    uid: String,
    container: String,
    container_id: String,
    image: String,
    qos: String,
}

/// A pod object of the vendored payload, as JSON.
fn fixture_pod_json(name: &str) -> Value {
    let list: Value = serde_json::from_slice(&payloads::fixture(payloads::TEMPLATE_FIXTURE))
        .expect("fixture is JSON");
    let items = list["items"].as_array().expect("items");
    items
        .iter()
        .find(|p| p["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("pod {name} in the fixture"))
        .clone()
}

fn fixture_pod(name: &str) -> FixturePod {
    FixturePod::of(&fixture_pod_json(name))
}

impl FixturePod {
    fn of(pod: &Value) -> Self {
        let name = pod["metadata"]["name"].as_str().expect("name");
        let status = &pod["status"]["containerStatuses"][0];
        let id = status["containerID"].as_str().expect("containerID");
        FixturePod {
            namespace: pod["metadata"]["namespace"].as_str().expect("ns").into(),
            name: name.into(),
            uid: pod["metadata"]["uid"].as_str().expect("uid").into(),
            container: status["name"].as_str().expect("name").into(),
            container_id: id
                .strip_prefix("containerd://")
                .expect("containerd id")
                .into(),
            // The spec's image reference (what the pod asked for), as kubelet reports it.
            image: pod["spec"]["containers"][0]["image"]
                .as_str()
                .expect("image")
                .into(),
            qos: pod["status"]["qosClass"].as_str().expect("qos").into(),
        }
    }

    /// The kubelet systemd-driver cgroup path of this container, under `top`.
    fn cgroup_path(&self, top: &str) -> String {
        let qos = self.qos.to_lowercase();
        let uid = self.uid.replace('-', "_");
        let pod_slice = if qos == "guaranteed" {
            format!("kubepods-pod{uid}.slice")
        } else {
            format!("kubepods-{qos}.slice/kubepods-{qos}-pod{uid}.slice")
        };
        format!(
            "/{top}/kubepods.slice/{pod_slice}/cri-containerd-{}.scope",
            self.container_id
        )
    }
}

/// A container of `pod` that keeps exec'ing (`/bin/true` every 50 ms for about 15 s).
fn exec_loop(pod: &FixturePod, top: &str) -> Bundle {
    Bundle::new(
        &[
            "/bin/sh",
            "-c",
            "i=0; while [ $i -lt 300 ]; do /bin/true; sleep 0.05; i=$((i+1)); done",
        ],
        &pod.cgroup_path(top),
    )
}

fn execs_of<'a>(events: &'a [Value], container_id: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["type"] == "process_exec" && e["container_id"] == container_id)
        .collect()
}

#[test]
fn container_events_carry_namespace_pod_container_image_and_workload() {
    let standin = KubeletStandin::start();
    let top = format!("sonde-test-{}", unique_id("kjoin"));
    // A Deployment's pod, a CronJob's pod and a static control-plane pod (no apiserver here:
    // it is known from the kubelet alone).
    let cases = [
        (
            fixture_pod("coredns-7d764666f9-qdcxt"),
            "Deployment",
            "coredns",
        ),
        (
            fixture_pod("e2e-cronjob-29707813-dhlr2"),
            "CronJob",
            "e2e-cronjob",
        ),
        (fixture_pod("etcd-datagen-1-35"), "", ""),
    ];
    let mut flags = standin.agent_flags();
    // Allow-listed pod labels: only these keys are shown, and only those the pod has.
    flags.extend([
        "--set".into(),
        "kubernetes.pod_labels=k8s-app,pod-template-hash,not-a-label".into(),
    ]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let agent = Agent::start(&flags);
    for (pod, _, _) in &cases {
        let bundle = Bundle::new(
            &["/bin/sh", "-c", "/bin/true; /bin/true; exit 0"],
            &pod.cgroup_path(&top),
        );
        assert!(bundle.run(&unique_id("kjoin")).success());
    }
    let events = agent.wait_for("two execs from each pod's container", WAIT, |ev| {
        cases
            .iter()
            .all(|(p, _, _)| execs_of(ev, &p.container_id).len() >= 2)
    });
    let stopped = agent.stop();
    for (pod, _, _) in &cases {
        remove_everywhere(&pod.cgroup_path(&top), "");
    }
    stopped.assert_nothing_lost();

    for (pod, kind, workload) in &cases {
        let execs = execs_of(&events, &pod.container_id);
        assert!(
            execs.len() >= 2,
            "{}: {} exec events from its container",
            pod.name,
            execs.len()
        );
        for e in execs {
            assert_eq!(e["namespace"], pod.namespace.as_str(), "{e}");
            assert_eq!(e["pod"], pod.name.as_str(), "{e}");
            assert_eq!(e["pod_uid"], pod.uid.as_str(), "{e}");
            assert_eq!(e["container"], pod.container.as_str(), "{e}");
            assert_eq!(e["image"], pod.image.as_str(), "{e}");
            if kind.is_empty() {
                assert!(e["workload"].is_null(), "a static pod has no workload: {e}");
            } else {
                assert_eq!(e["workload_kind"], *kind, "{e}");
                assert_eq!(e["workload"], *workload, "{e}");
            }
        }
    }
    let coredns = execs_of(&events, &cases[0].0.container_id)[0];
    assert_eq!(
        coredns["pod_labels"],
        serde_json::json!({"k8s-app": "kube-dns", "pod-template-hash": "7d764666f9"}),
        "{coredns}"
    );
    assert_eq!(
        stopped.stats["kubelet"]["consecutive_failures"], 0,
        "{}",
        stopped.stats
    );
}

#[test]
fn a_kubelet_that_comes_up_late_tags_the_same_containers_within_2_s() {
    let mut standin = KubeletStandin::start();
    standin.stop_serving();
    let top = format!("sonde-test-{}", unique_id("klate"));
    let pod = fixture_pod("e2e-deployment-79967c5968-8bnn8");
    let flags = standin.agent_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut agent = Agent::start(&flags);
    let metrics = agent.metrics_addr();
    let starts = |pod_name: &str| {
        Exposition::parse(&scrape(metrics)).value_or_zero(
            "sonde_process_starts_total",
            &[("container_id", &pod.container_id), ("pod", pod_name)],
        )
    };

    // A container that keeps exec'ing, started while the kubelet is down.
    let bundle = exec_loop(&pod, &top);
    let running = bundle.spawn(&unique_id("klate"));
    let untagged = agent.wait_for("five execs from the container", WAIT, |ev| {
        execs_of(ev, &pod.container_id).len() >= 5
    });
    let before = execs_of(&untagged, &pod.container_id);
    assert!(before.len() >= 5, "the container's events are captured");
    for e in &before {
        assert!(e["pod"].is_null(), "no kubelet yet, no pod name: {e}");
        assert_eq!(
            e["pod_uid"],
            pod.uid.as_str(),
            "the cgroup path names the pod"
        );
    }
    // Let the agent's retries back off, as they would during a long bootstrap: each failed
    // fetch doubles the retry timer (1 s at first), so after four a timer alone would wait 16 s.
    poll_until(
        "four failed kubelet fetches",
        Duration::from_secs(30),
        || {
            let failures = Exposition::parse(&scrape(metrics))
                .value_or_zero("sonde_kubelet_syncs_total", &[("result", "failure")]);
            if failures >= 4.0 {
                Ok(())
            } else {
                Err(failures)
            }
        },
    );
    // Its series exist, without pod names yet.
    assert!(starts("") >= 5.0, "{}", scrape(metrics));

    standin.resume_serving();
    let up = Instant::now();
    let tagged = |ev: &[Value]| {
        execs_of(ev, &pod.container_id)
            .iter()
            .any(|e| e["pod"] == pod.name.as_str())
    };
    let events = agent.wait_for("pod tags on the container's events", WAIT, tagged);
    let waited = up.elapsed();
    // The same series, relabelled: every start counted before the kubelet answered now carries
    // the pod's name, and no unlabelled series of the container is left.
    let relabelled = starts(&pod.name);
    let exposition = Exposition::parse(&scrape(metrics));
    let unlabelled = exposition.value_or_zero(
        "sonde_process_starts_total",
        &[("container_id", &pod.container_id), ("pod", "")],
    );
    drop(running);
    let stopped = agent.stop();
    remove_everywhere(&pod.cgroup_path(&top), "");
    stopped.assert_nothing_lost();
    assert!(tagged(&events), "the container's events never got pod tags");
    assert!(
        waited <= Duration::from_secs(2),
        "pod tags arrived {waited:?} after the kubelet came up (want <= 2 s)"
    );
    let first = execs_of(&events, &pod.container_id)
        .into_iter()
        .find(|e| e["pod"] == pod.name.as_str())
        .expect("tagged");
    assert_eq!(first["namespace"], pod.namespace.as_str());
    assert_eq!(first["workload"], "e2e-deployment");
    assert!(
        relabelled >= before.len() as f64,
        "starts labelled with the pod: {relabelled}, events before the kubelet: {}",
        before.len()
    );
    assert_eq!(
        unlabelled, 0.0,
        "a series of the container stayed unlabelled"
    );
    let labelled = exposition.find(
        "sonde_process_starts_total",
        &[("container_id", &pod.container_id)],
    );
    assert!(
        labelled
            .iter()
            .all(
                |s| s.labels.get("namespace").map(String::as_str) == Some(pod.namespace.as_str())
                    && s.labels.get("workload").map(String::as_str) == Some("e2e-deployment")
            ),
        "{labelled:?}"
    );
}

/// A listener on `ip` (any 127.0.0.0/8 address is local) that accepts and closes.
fn listen_on(ip: &str) -> u16 {
    let listener = std::net::TcpListener::bind((ip, 0)).expect("bind a loopback address");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            drop(conn);
        }
    });
    port
}

#[test]
fn connections_to_a_service_and_to_a_pod_are_named() {
    // Loopback addresses stand for a ClusterIP and a pod IP: the apiserver says what they are.
    let (cluster_ip, pod_ip, outside_ip) = ("127.10.0.1", "127.10.0.2", "127.10.0.3");
    let (svc_port, pod_port, outside_port) = (
        listen_on(cluster_ip),
        listen_on(pod_ip),
        listen_on(outside_ip),
    );
    let standin = ApiserverStandin::start();
    standin.apply(
        Resource::Services,
        service("scraper", "e2e-web", cluster_ip, &[svc_port]),
    );
    standin.apply(
        Resource::EndpointSlices,
        endpoint_slice(
            "scraper",
            "e2e-web-x7k2p",
            "e2e-web",
            &[(pod_ip, "e2e-deployment-79967c5968-8bnn8")],
        ),
    );
    let kubeconfig = standin.kubeconfig();
    let agent = Agent::start(&[
        "--kubeconfig",
        kubeconfig.to_str().expect("utf-8"),
        "--node-name",
        FIXTURE_NODE,
        "--kubelet-enabled",
        "false",
    ]);
    let named = |ev: &[Value], port: u16, kind: &str| {
        ev.iter().any(|e| {
            e["type"] == "tcp_close"
                && e["direction"] == "outbound"
                && e["remote_port"] == port
                && e["remote_kind"] == kind
        })
    };
    let targets = [
        (cluster_ip, svc_port),
        (pod_ip, pod_port),
        (outside_ip, outside_port),
    ];
    // Until the watches have listed, remote ends are not known yet: connect again, a round at
    // a time (each waits for its own three closes), until a round is named.
    let what = "connections named service, pod and external";
    let events = poll_until(what, Duration::from_secs(15), || {
        let round: Vec<(u16, u16)> = targets
            .iter()
            .map(|&(ip, port)| {
                let stream = std::net::TcpStream::connect((ip, port)).expect("connect");
                (stream.local_addr().expect("local address").port(), port)
            })
            .collect();
        let close = |ev: &[Value], (local, remote): (u16, u16)| {
            ev.iter()
                .find(|e| {
                    e["type"] == "tcp_close"
                        && e["local_port"] == local
                        && e["remote_port"] == remote
                })
                .map(|e| e["remote_kind"].clone())
        };
        let events = agent.wait_for("the closes of this round's connections", WAIT, |ev| {
            round.iter().all(|&c| close(ev, c).is_some())
        });
        if named(&events, svc_port, "service")
            && named(&events, pod_port, "pod")
            && named(&events, outside_port, "external")
        {
            Ok(events)
        } else {
            Err(round.iter().map(|&c| close(&events, c)).collect::<Vec<_>>())
        }
    });
    // The pods watch lists on its own schedule: wait for every kind, not only the Services.
    let mut agent = agent;
    let readyz = agent.metrics_addr();
    poll_until("every apiserver kind synced", WAIT, || {
        let (_, body) = sonde_tests::api::get(readyz, "/readyz");
        if body.contains("[+]apiserver synced") {
            Ok(())
        } else {
            Err(body)
        }
    });
    let stopped = agent.stop();
    stopped.assert_nothing_lost();
    let first = |port: u16, kind: &str| {
        events
            .iter()
            .find(|e| {
                e["type"] == "tcp_close" && e["remote_port"] == port && e["remote_kind"] == kind
            })
            .unwrap_or_else(|| panic!("no tcp_close to port {port} named {kind}"))
            .clone()
    };
    let svc = first(svc_port, "service");
    assert_eq!(svc["remote_namespace"], "scraper");
    assert_eq!(svc["remote_name"], "e2e-web");
    let pod = first(pod_port, "pod");
    assert_eq!(pod["remote_namespace"], "scraper");
    assert_eq!(pod["remote_name"], "e2e-deployment-79967c5968-8bnn8");
    assert_eq!(pod["remote_service"], "e2e-web");
    let outside = first(outside_port, "external");
    assert!(outside["remote_name"].is_null(), "{outside}");
    // The apiserver's pods of this node fill the pod store too.
    assert!(
        stopped.stats["apiserver"]["kinds"]["pods"]["objects"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{}",
        stopped.stats["apiserver"]
    );
}

/// A pod owned by a ReplicaSet whose controller is not a Deployment (an Argo Rollout here, any
/// custom controller kind in general): with the apiserver, its events and its series name
/// that controller as the workload, where the name rules alone would name the ReplicaSet.
#[test]
fn a_custom_controllers_pod_is_named_by_the_owner_chain() {
    let standin = ApiserverStandin::start();
    let (rollout, replica_set) = ("canary", "canary-6f8d9c7b5");
    // The fixture's Deployment pod, re-made as the Rollout's: Argo labels its pods with
    // rollouts-pod-template-hash, not pod-template-hash.
    let mut json = fixture_pod_json("e2e-deployment-79967c5968-8bnn8");
    let id = container_id();
    json["metadata"]["name"] = format!("{replica_set}-x2x9p").into();
    json["metadata"]["uid"] = pod_uid().into();
    json["metadata"]["labels"] =
        serde_json::json!({"app": rollout, "rollouts-pod-template-hash": "6f8d9c7b5"});
    json["metadata"]["ownerReferences"] = serde_json::json!([{
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": replica_set,
        "uid": format!("rs-{replica_set}"), "controller": true, "blockOwnerDeletion": true}]);
    json["status"]["containerStatuses"][0]["containerID"] = format!("containerd://{id}").into();
    let pod = FixturePod::of(&json);
    let namespace = pod.namespace.clone();
    standin.apply(
        Resource::ReplicaSets,
        serde_json::json!({"metadata": {"name": replica_set, "namespace": namespace,
            "uid": format!("rs-{replica_set}"),
            "ownerReferences": [{"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
                "name": rollout, "uid": "rollout-uid-1", "controller": true,
                "blockOwnerDeletion": true}]},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": rollout}}}}),
    );
    standin.apply(Resource::Pods, json);
    let kubeconfig = standin.kubeconfig();
    let mut agent = Agent::start(&[
        "--kubeconfig",
        kubeconfig.to_str().expect("utf-8"),
        "--node-name",
        FIXTURE_NODE,
        "--kubelet-enabled",
        "false",
        // Shown labels of the namespace and of the node: only these keys.
        "--set",
        "kubernetes.namespace_labels=kubernetes.io/metadata.name",
        "--set",
        "kubernetes.node_labels=topology.kubernetes.io/zone",
    ]);
    let metrics = agent.metrics_addr();
    let top = format!("sonde-test-{}", unique_id("kowner"));
    let bundle = exec_loop(&pod, &top);
    let running = bundle.spawn(&unique_id("kowner"));
    // Until the watches have listed, the pod and the labels are not known: wait for an exec
    // that has them all.
    let labelled = |e: &Value| {
        e["namespace_labels"] == serde_json::json!({"kubernetes.io/metadata.name": namespace})
            && e["node_labels"] == serde_json::json!({"topology.kubernetes.io/zone": "zone-a"})
    };
    let named = |ev: &[Value]| {
        execs_of(ev, &pod.container_id)
            .iter()
            .any(|e| !e["workload"].is_null() && labelled(e))
    };
    let events = agent.wait_for(
        "an exec of the pod with its workload, namespace and node labels",
        WAIT,
        named,
    );
    let what = "the container's series labelled with the Rollout";
    let series = poll_until(what, WAIT, || {
        let exposition = Exposition::parse(&scrape(metrics));
        let workloads: Vec<Option<String>> = exposition
            .find(
                "sonde_process_starts_total",
                &[("container_id", &pod.container_id)],
            )
            .iter()
            .map(|s| s.labels.get("workload").cloned())
            .collect();
        if !workloads.is_empty() && workloads.iter().all(|w| w.as_deref() == Some(rollout)) {
            Ok(workloads.len())
        } else {
            Err(workloads)
        }
    });
    drop(running);
    let stopped = agent.stop();
    remove_everywhere(&pod.cgroup_path(&top), "");
    stopped.assert_nothing_lost();
    assert!(series > 0);
    let named_execs: Vec<&Value> = execs_of(&events, &pod.container_id)
        .into_iter()
        .filter(|e| !e["workload"].is_null())
        .collect();
    assert!(!named_execs.is_empty(), "no exec named its workload");
    for e in named_execs {
        assert_eq!(e["pod"], pod.name.as_str(), "{e}");
        assert_eq!(e["workload_kind"], "Rollout", "{e}");
        assert_eq!(e["workload"], rollout, "{e}");
    }
    assert!(
        named(&events),
        "no exec carried the workload and the labels"
    );
}
