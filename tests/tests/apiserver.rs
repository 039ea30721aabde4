//! The real apiserver source (`sonde::kube::apiserver`: the kube-rs client and watcher) against
//! the test apiserver (`kube_standin::apiserver`) over real HTTPS on 127.0.0.1, configured
//! through a real kubeconfig file: pods by field selector, live changes, 410 Gone re-lists,
//! bookmarks, streams cut mid-object, 401 and 403 diagnoses, remote naming and owner
//! resolution. Nothing here is mocked, and nothing needs root.

use std::{net::IpAddr, sync::Arc, time::Duration};

use serde_json::json;
use sonde::kube::{
    ApiserverError, ApiserverHandle, KubernetesConfig, PodSource, PodStore, Remote, RemoteIndex,
    WatchKind, pods::OwnerRef, spawn_apiserver_source,
};
use sonde_tests::{
    kube_standin::{
        ApiserverStandin, Resource,
        apiserver::{FIXTURE_NODE, endpoint_slice, replica_set, service},
    },
    poll::poll_until_async,
};

const WAIT: Duration = Duration::from_secs(10);

struct Running {
    standin: ApiserverStandin,
    pods: Arc<PodStore>,
    remote: Arc<RemoteIndex>,
    handle: ApiserverHandle,
}

/// A node label key and a namespace label key of the stand-in's seed.
const ZONE: &str = "topology.kubernetes.io/zone";
const NAMESPACE_NAME: &str = "kubernetes.io/metadata.name";

/// Every kind watched: node and namespace labels are shown (allow-listed).
fn config(kubeconfig: std::path::PathBuf) -> KubernetesConfig {
    KubernetesConfig {
        kubeconfig: Some(kubeconfig),
        max_backoff: Duration::from_secs(1),
        node_labels: vec![ZONE.into()],
        namespace_labels: vec![NAMESPACE_NAME.into()],
        ..KubernetesConfig::default()
    }
}

/// Starts the source against `standin` with its valid kubeconfig.
fn start_with(standin: ApiserverStandin) -> Running {
    let pods = Arc::new(PodStore::new());
    let remote = Arc::new(RemoteIndex::new());
    let handle = spawn_apiserver_source(
        config(standin.kubeconfig()),
        FIXTURE_NODE,
        Arc::clone(&pods),
        Arc::clone(&remote),
    )
    .expect("source starts");
    Running {
        standin,
        pods,
        remote,
        handle,
    }
}

/// Starts, and waits until every kind has listed.
async fn start_synced(standin: ApiserverStandin) -> Running {
    let running = start_with(standin);
    let state = tokio::time::timeout(
        WAIT,
        running
            .handle
            .wait_for(|s| s.kinds.len() == WatchKind::ALL.len() && s.healthy()),
    )
    .await
    .unwrap_or_else(|_| panic!("not synced: {:#?}", running.handle.state()));
    assert!(state.healthy());
    // Listed, and watching: changes from now on travel as live events.
    wait_watches(&running.standin, 1).await;
    running
}

/// Waits until every resource has `n` watches open on the stand-in.
async fn wait_watches(standin: &ApiserverStandin, n: usize) {
    poll_until_async(format!("{n} watch(es) open per resource"), WAIT, || {
        let open: Vec<(Resource, usize)> = Resource::SOURCE_KINDS
            .iter()
            .map(|&r| (r, standin.open_watches(r)))
            .collect();
        if open.iter().all(|&(_, o)| o == n) {
            Ok(())
        } else {
            Err(open)
        }
    })
    .await
}

/// Waits until the pod `uid` is in the store with label `sonde-test` = `value`.
async fn wait_label(running: &Running, uid: &str, value: &str, within: Duration) {
    let what = format!("pod {uid} labelled sonde-test={value}");
    poll_until_async(what, within, || {
        let label = running
            .pods
            .lookup_pod(uid)
            .map(|p| p.labels.get("sonde-test").cloned());
        if label == Some(Some(value.to_string())) {
            Ok(())
        } else {
            Err((label, running.handle.state()))
        }
    })
    .await
}

/// Waits until the pod `uid` is in the store (`true`) or not (`false`).
async fn wait_pod(running: &Running, uid: &str, present: bool, within: Duration) {
    let what = format!(
        "pod {uid} {} the store",
        if present { "in" } else { "out of" }
    );
    poll_until_async(what, within, || {
        if running.pods.lookup_pod(uid).is_some() == present {
            Ok(())
        } else {
            Err(running.handle.state())
        }
    })
    .await
}

fn fixture_pod(standin: &ApiserverStandin, name: &str) -> serde_json::Value {
    standin
        .objects(Resource::Pods)
        .into_iter()
        .find(|p| p["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("fixture pod {name}"))
}

fn pods_on_node(standin: &ApiserverStandin, node: &str) -> usize {
    standin
        .objects(Resource::Pods)
        .iter()
        .filter(|p| p["spec"]["nodeName"] == node)
        .count()
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("test address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_of_this_node_arrive_and_other_nodes_pods_do_not() {
    let standin = ApiserverStandin::start();
    let mut other = fixture_pod(&standin, "e2e-deployment-79967c5968-8bnn8");
    other["metadata"]["name"] = json!("elsewhere-1");
    other["metadata"]["uid"] = json!("0ther-node-pod-uid");
    other["spec"]["nodeName"] = json!("other-node");
    standin.apply(Resource::Pods, other);
    let expected = pods_on_node(&standin, FIXTURE_NODE);
    assert!(expected >= 20, "fixture has {expected} pods");

    let running = start_synced(standin).await;
    let counts = running.pods.counts(PodSource::Apiserver);
    assert_eq!(counts.pods, expected);
    assert!(running.pods.lookup_pod("0ther-node-pod-uid").is_none());
    // A container of a fixture pod is found by its bare id, from the apiserver view.
    let pod = fixture_pod(&running.standin, "e2e-deployment-79967c5968-8bnn8");
    let uid = pod["metadata"]["uid"].as_str().expect("uid");
    let id = pod["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .expect("container id");
    let bare = id.split_once("://").map_or(id, |(_, b)| b);
    let found = running
        .pods
        .lookup_container(bare)
        .expect("container indexed");
    assert_eq!(found.pod.uid, uid);
    assert_eq!(found.source, PodSource::Apiserver);

    // The selector was asked of the server (not applied after the fact).
    let requests = running.standin.requests();
    let pod_requests: Vec<_> = requests
        .iter()
        .filter(|r| r.resource == Resource::Pods)
        .collect();
    assert!(!pod_requests.is_empty());
    for r in pod_requests {
        assert_eq!(
            r.param("fieldSelector").as_deref(),
            Some(format!("spec.nodeName={FIXTURE_NODE}").as_str()),
            "{r:?}"
        );
    }
    let state = running.handle.state();
    assert_eq!(
        state.kind(WatchKind::Pods).map(|k| k.objects),
        Some(expected)
    );
    assert!(state.server.starts_with("https://127.0.0.1:"), "{state:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_and_deletions_arrive_within_two_seconds() {
    let running = start_synced(ApiserverStandin::start()).await;
    let s = &running.standin;

    // Modified: a new label.
    let mut pod = fixture_pod(s, "e2e-deployment-79967c5968-8bnn8");
    let uid = pod["metadata"]["uid"].as_str().expect("uid").to_string();
    pod["metadata"]["labels"]["sonde-test"] = json!("changed");
    s.apply(Resource::Pods, pod);
    wait_label(&running, &uid, "changed", Duration::from_secs(2)).await;

    // Deleted.
    let gone = fixture_pod(s, "e2e-scraper-5f97dc94d8-vkcjl");
    let gone_uid = gone["metadata"]["uid"].as_str().expect("uid").to_string();
    assert!(running.pods.lookup_pod(&gone_uid).is_some());
    assert!(s.delete(Resource::Pods, "scraper", "e2e-scraper-5f97dc94d8-vkcjl"));
    wait_pod(&running, &gone_uid, false, Duration::from_secs(2)).await;

    // Added.
    let mut new = fixture_pod(s, "e2e-deployment-79967c5968-zjslc");
    new["metadata"]["name"] = json!("e2e-deployment-79967c5968-new01");
    new["metadata"]["uid"] = json!("11111111-2222-4333-8444-555555555555");
    s.apply(Resource::Pods, new);
    let new_uid = "11111111-2222-4333-8444-555555555555";
    wait_pod(&running, new_uid, true, Duration::from_secs(2)).await;
    // The store is changed before the kind's state counts the event: wait for the count.
    let counted = |st: &sonde::kube::ApiserverSyncState| {
        st.kind(WatchKind::Pods).is_some_and(|k| k.events >= 3)
    };
    tokio::time::timeout(WAIT, running.handle.wait_for(counted))
        .await
        .unwrap_or_else(|_| panic!("3 events never counted: {:#?}", running.handle.state()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_forces_a_relist_and_the_store_is_right_afterwards() {
    let running = start_synced(ApiserverStandin::start()).await;
    let s = &running.standin;
    assert_eq!(s.list_requests(Resource::Pods), 1);

    // A partition: the agent misses a deletion and an addition, and the history is compacted
    // past its version, so only a re-list can tell it.
    s.pause_watches(true);
    let gone = fixture_pod(s, "e2e-statefulset-0");
    let gone_uid = gone["metadata"]["uid"].as_str().expect("uid").to_string();
    assert!(s.delete(Resource::Pods, "scraper", "e2e-statefulset-0"));
    let mut new = fixture_pod(s, "e2e-statefulset-1");
    new["metadata"]["name"] = json!("e2e-statefulset-2");
    new["metadata"]["uid"] = json!("22222222-2222-4333-8444-555555555555");
    s.apply(Resource::Pods, new);
    s.compact();
    s.pause_watches(false);
    s.cut_watches();

    wait_pod(&running, &gone_uid, false, Duration::from_secs(5)).await;
    let new_uid = "22222222-2222-4333-8444-555555555555";
    wait_pod(&running, new_uid, true, Duration::from_secs(5)).await;
    assert_eq!(
        running.pods.counts(PodSource::Apiserver).pods,
        pods_on_node(s, FIXTURE_NODE)
    );
    assert!(s.list_requests(Resource::Pods) >= 2, "no re-list");
    // The store is filled before the kind's state counts the list: wait for the count.
    let relisted = |st: &sonde::kube::ApiserverSyncState| {
        st.kind(WatchKind::Pods).is_some_and(|k| k.lists >= 2)
    };
    let state = tokio::time::timeout(WAIT, running.handle.wait_for(relisted))
        .await
        .unwrap_or_else(|_| panic!("the re-list never counted: {:#?}", running.handle.state()));
    let pods = state.kind(WatchKind::Pods).expect("pods state");
    assert!(pods.expired >= 1, "{pods:?}");
    assert!(pods.lists >= 2, "{pods:?}");
    assert_eq!(
        pods.sync.consecutive_failures, 0,
        "410 is not a failure: {pods:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookmarks_keep_the_version_current_so_no_relist_is_needed() {
    let running = start_synced(ApiserverStandin::start()).await;
    let s = &running.standin;

    // Changes the pod watch does not see (another node's pod) move the version on.
    let mut other = fixture_pod(s, "e2e-deployment-79967c5968-8bnn8");
    other["metadata"]["name"] = json!("elsewhere-2");
    other["metadata"]["uid"] = json!("0ther-node-pod-uid-2");
    other["spec"]["nodeName"] = json!("other-node");
    s.apply(Resource::Pods, other);
    // A bookmark carries the new version to the agent; then the history is compacted and
    // the watch ends. Resuming from the bookmark's version is still valid: no 410, no list.
    s.send_bookmarks();
    // The one fixed wait left here: the agent shows no sign of having read a bookmark (its
    // sync state has no resource version and does not count bookmarks), and any event sent to
    // mark it would carry a newer version itself and prove nothing about bookmarks.
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.compact();
    s.cut_watches();
    wait_watches(s, 1).await;
    let mut new = fixture_pod(s, "e2e-deployment-79967c5968-zjslc");
    new["metadata"]["name"] = json!("after-bookmark");
    new["metadata"]["uid"] = json!("33333333-2222-4333-8444-555555555555");
    s.apply(Resource::Pods, new);
    let new_uid = "33333333-2222-4333-8444-555555555555";
    wait_pod(&running, new_uid, true, Duration::from_secs(2)).await;
    assert_eq!(s.list_requests(Resource::Pods), 1, "re-listed");
    let state = running.handle.state();
    assert_eq!(state.kind(WatchKind::Pods).map(|k| k.expired), Some(0));
    let resumed = s
        .requests()
        .into_iter()
        .rfind(|r| r.resource == Resource::Pods && r.watch)
        .expect("watch request");
    assert_eq!(
        resumed.param("allowWatchBookmarks").as_deref(),
        Some("true")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_mid_object_is_resumed() {
    let running = start_synced(ApiserverStandin::start()).await;
    let s = &running.standin;
    let watches_before = s.watch_requests(Resource::Pods);
    s.cut_next_event(Resource::Pods);
    let mut pod = fixture_pod(s, "e2e-kube-state-metrics-75b885dc9-97mtr");
    let uid = pod["metadata"]["uid"].as_str().expect("uid").to_string();
    pod["metadata"]["labels"]["sonde-test"] = json!("after-cut");
    s.apply(Resource::Pods, pod);
    wait_label(&running, &uid, "after-cut", Duration::from_secs(5)).await;
    assert_eq!(s.cuts(), 1, "the event was not cut");
    // Resumed from its version (the event replayed by a new watch), not re-listed. kube-rs
    // takes a connection cut mid-chunk for the end of the watch (no error comes out), so the
    // resumption shows in the stand-in's requests, not in `stream_errors`.
    assert!(s.watch_requests(Resource::Pods) > watches_before);
    assert_eq!(s.list_requests(Resource::Pods), 1);
    let state = running.handle.state();
    let pods = state.kind(WatchKind::Pods).expect("pods state");
    assert_eq!(pods.sync.consecutive_failures, 0, "{pods:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_event_is_counted_and_the_watch_goes_on() {
    let running = start_synced(ApiserverStandin::start()).await;
    let s = &running.standin;
    s.send_raw_line(
        Resource::Pods,
        r#"{"type": "ADDED", "object": {"metadata": 7"#,
    );
    let mut pod = fixture_pod(s, "e2e-deployment-79967c5968-zjslc");
    let uid = pod["metadata"]["uid"].as_str().expect("uid").to_string();
    pod["metadata"]["labels"]["sonde-test"] = json!("after-garbage");
    s.apply(Resource::Pods, pod);
    wait_label(&running, &uid, "after-garbage", Duration::from_secs(2)).await;
    let state = running.handle.state();
    let pods = state.kind(WatchKind::Pods).expect("pods state");
    assert!(pods.stream_errors >= 1, "{pods:?}");
    assert_eq!(pods.sync.consecutive_failures, 0, "{pods:?}");
    assert_eq!(s.list_requests(Resource::Pods), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_is_diagnosed_as_401() {
    let standin = ApiserverStandin::start();
    let kubeconfig = standin.write_kubeconfig("bad-kubeconfig", "not-the-token");
    let pods = Arc::new(PodStore::new());
    let handle = spawn_apiserver_source(
        config(kubeconfig.clone()),
        FIXTURE_NODE,
        Arc::clone(&pods),
        Arc::new(RemoteIndex::new()),
    )
    .expect("source starts");
    let state = tokio::time::timeout(
        WAIT,
        handle.wait_for(|s| {
            s.kind(WatchKind::Pods)
                .is_some_and(|k| k.sync.last_error.is_some())
        }),
    )
    .await
    .expect("an error is reported");
    let pods_state = state.kind(WatchKind::Pods).expect("pods");
    let message = pods_state.sync.last_error.as_deref().unwrap_or_default();
    assert!(message.contains("401 Unauthorized"), "{message}");
    assert!(
        message.contains(&kubeconfig.display().to_string()),
        "{message}"
    );
    assert!(message.contains("Fix:"), "{message}");
    assert!(
        !message.contains("not-the-token"),
        "token leaked: {message}"
    );
    assert!(!pods_state.synced);
    assert_eq!(pods.counts(PodSource::Apiserver).pods, 0);
    // The token was sent, and retried.
    assert!(
        standin
            .requests()
            .iter()
            .all(|r| r.bearer.as_deref() == Some("not-the-token"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_kind_names_the_missing_rbac_rule_and_recovers() {
    let standin = ApiserverStandin::start();
    standin.forbid(Resource::EndpointSlices, true);
    let running = start_with(standin);
    let state = tokio::time::timeout(
        WAIT,
        running.handle.wait_for(|s| {
            s.kind(WatchKind::EndpointSlices)
                .is_some_and(|k| k.sync.last_error.is_some())
                && s.kind(WatchKind::Pods).is_some_and(|k| k.synced)
                && s.kind(WatchKind::Services).is_some_and(|k| k.synced)
        }),
    )
    .await
    .unwrap_or_else(|_| panic!("{:#?}", running.handle.state()));
    let slices = state.kind(WatchKind::EndpointSlices).expect("slices");
    let message = slices.sync.last_error.as_deref().unwrap_or_default();
    assert!(message.contains("403 Forbidden"), "{message}");
    assert!(
        message.contains(
            r#"{apiGroups: ["discovery.k8s.io"], resources: ["endpointslices"], verbs: ["list", "watch"]}"#
        ),
        "{message}"
    );
    assert!(message.contains("list endpointslices"), "{message}");
    assert!(!slices.synced);
    // The other kinds are not held back.
    assert!(state.kind(WatchKind::Services).is_some_and(|k| k.synced));

    running.standin.forbid(Resource::EndpointSlices, false);
    tokio::time::timeout(
        WAIT,
        running.handle.wait_for(|s| {
            s.kind(WatchKind::EndpointSlices)
                .is_some_and(|k| k.healthy())
        }),
    )
    .await
    .expect("recovers once allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_addresses_name_services_and_pods() {
    let standin = ApiserverStandin::start();
    standin.apply(
        Resource::Services,
        service("scraper", "e2e-deployment", "10.96.12.34", &[80, 8080]),
    );
    standin.apply(
        Resource::EndpointSlices,
        endpoint_slice(
            "scraper",
            "e2e-deployment-x7k2p",
            "e2e-deployment",
            &[
                ("10.244.0.8", "e2e-deployment-79967c5968-8bnn8"),
                ("10.244.0.9", "e2e-deployment-79967c5968-zjslc"),
            ],
        ),
    );
    let running = start_synced(standin).await;
    let r = &running.remote;
    let svc = Remote::Service {
        namespace: "scraper".into(),
        name: "e2e-deployment".into(),
    };
    assert_eq!(*r.lookup(ip("10.96.12.34"), 80), svc);
    assert_eq!(*r.lookup(ip("10.96.12.34"), 12345), svc);
    assert_eq!(
        *r.lookup(ip("10.244.0.9"), 8080),
        Remote::Pod {
            namespace: "scraper".into(),
            name: "e2e-deployment-79967c5968-zjslc".into(),
            service: Some("e2e-deployment".into()),
        }
    );
    assert_eq!(*r.lookup(ip("8.8.8.8"), 53), Remote::External);

    // Live: a new Service, a Service deleted.
    running.standin.apply(
        Resource::Services,
        service("kube-system", "kube-dns", "10.96.0.10", &[53]),
    );
    let dns = Remote::Service {
        namespace: "kube-system".into(),
        name: "kube-dns".into(),
    };
    wait_remote(r, "10.96.0.10:53", &dns).await;
    running
        .standin
        .delete(Resource::Services, "scraper", "e2e-deployment");
    wait_remote(r, "10.96.12.34:80", &Remote::External).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_lists_are_read_in_pages_and_every_object_is_known() {
    // More Services and EndpointSlices than one page holds (the watcher asks for 500).
    const SERVICES: usize = 1_203;
    let standin = ApiserverStandin::start();
    for i in 0..SERVICES {
        let (a, b) = (i / 250, i % 250);
        let name = format!("svc-{i:04}");
        standin.apply(
            Resource::Services,
            service("big", &name, &format!("10.97.{a}.{b}"), &[80]),
        );
        let pod = format!("{name}-pod");
        standin.apply(
            Resource::EndpointSlices,
            endpoint_slice(
                "big",
                &format!("{name}-x"),
                &name,
                &[(&format!("10.245.{a}.{b}"), &pod)],
            ),
        );
    }
    let running = start_synced(standin).await;
    for resource in [Resource::Services, Resource::EndpointSlices] {
        let lists: Vec<_> = running
            .standin
            .requests()
            .into_iter()
            .filter(|r| r.resource == resource && !r.watch)
            .collect();
        let limits: Vec<Option<String>> = lists.iter().map(|r| r.param("limit")).collect();
        let continued = lists
            .iter()
            .filter(|r| r.param("continue").is_some())
            .count();
        // Three pages (500 + 500 + 203): the first request, then two continuations.
        assert_eq!(lists.len(), 3, "{resource:?} lists: {limits:?}");
        assert!(
            limits.iter().all(|l| l.as_deref() == Some("500")),
            "{limits:?}"
        );
        assert_eq!(continued, 2, "{resource:?}");
    }
    let state = running.handle.state();
    for kind in [WatchKind::Services, WatchKind::EndpointSlices] {
        assert_eq!(
            state.kind(kind).map(|k| k.objects),
            Some(SERVICES),
            "{state:#?}"
        );
    }
    // The first and the last of every page are known: nothing was lost between pages.
    for i in [0, 499, 500, 999, 1000, SERVICES - 1] {
        let (a, b) = (i / 250, i % 250);
        let name = format!("svc-{i:04}");
        assert_eq!(
            *running.remote.lookup(ip(&format!("10.97.{a}.{b}")), 80),
            Remote::Service {
                namespace: "big".into(),
                name: name.as_str().into(),
            }
        );
        assert_eq!(
            *running.remote.lookup(ip(&format!("10.245.{a}.{b}")), 8080),
            Remote::Pod {
                namespace: "big".into(),
                name: format!("{name}-pod").into(),
                service: Some(name.as_str().into()),
            }
        );
    }
}

/// Waits until `addr` is named `want`.
async fn wait_remote(index: &RemoteIndex, addr: &str, want: &Remote) {
    let addr: std::net::SocketAddr = addr.parse().expect("test address");
    let what = format!("{addr} named {want:?}");
    poll_until_async(what, Duration::from_secs(2), || {
        match index.lookup(addr.ip(), addr.port()) {
            seen if *seen == *want => Ok(()),
            seen => Err(seen),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_resolve_to_deployments_and_cronjobs() {
    let running = start_synced(ApiserverStandin::start()).await;
    let h = &running.handle;
    let owner = |kind: &str, name: &str| OwnerRef {
        kind: kind.into(),
        name: name.into(),
    };
    // The pod's own owner, from the pod store.
    let pod = fixture_pod(&running.standin, "e2e-deployment-79967c5968-8bnn8");
    let uid = pod["metadata"]["uid"].as_str().expect("uid");
    let meta = running.pods.lookup_pod(uid).expect("pod");
    let pod_owner = meta.owner.clone().expect("owner");
    assert_eq!(pod_owner, owner("ReplicaSet", "e2e-deployment-79967c5968"));
    assert_eq!(
        h.workload(&pod_owner, &meta.namespace),
        owner("Deployment", "e2e-deployment")
    );
    assert_eq!(
        h.workload(&owner("Job", "e2e-cronjob-29707813"), "scraper"),
        owner("CronJob", "e2e-cronjob")
    );
    // A Job no CronJob made, and kinds that are workloads already, stay as they are.
    assert_eq!(
        h.workload(&owner("Job", "e2e-failjob"), "scraper"),
        owner("Job", "e2e-failjob")
    );
    assert_eq!(
        h.workload(&owner("StatefulSet", "e2e-statefulset"), "scraper"),
        owner("StatefulSet", "e2e-statefulset")
    );
    // Live: a new ReplicaSet (a rollout).
    running.standin.apply(
        Resource::ReplicaSets,
        replica_set("scraper", "e2e-deployment-5c6d7e8f9", "e2e-deployment"),
    );
    let rollout = owner("ReplicaSet", "e2e-deployment-5c6d7e8f9");
    let deployment = owner("Deployment", "e2e-deployment");
    let what = "the new ReplicaSet resolved to its Deployment";
    poll_until_async(what, Duration::from_secs(2), || {
        match h.workload(&rollout, "scraper") {
            seen if seen == deployment => Ok(()),
            seen => Err(seen),
        }
    })
    .await;

    // Node and namespace labels came with metadata-only requests, only the allow-listed keys.
    let node = h.node_labels().expect("node labels");
    assert_eq!(
        node.iter().collect::<Vec<_>>(),
        [(&ZONE.to_string(), &"zone-a".to_string())],
        "only the allow-listed node label"
    );
    let namespace = h.labels().namespace("scraper").expect("namespace labels");
    assert_eq!(
        namespace.get(NAMESPACE_NAME).map(String::as_str),
        Some("scraper")
    );
    for r in running.standin.requests() {
        let metadata_only = matches!(
            r.resource,
            Resource::Nodes | Resource::Namespaces | Resource::ReplicaSets | Resource::Jobs
        );
        assert_eq!(r.metadata_only, metadata_only, "{r:?}");
    }
}

/// With no node or namespace label shown (the default), neither is watched: no memory, no
/// requests, no RBAC rule needed for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_and_namespaces_are_not_watched_unless_their_labels_are_shown() {
    let standin = ApiserverStandin::start();
    let handle = spawn_apiserver_source(
        KubernetesConfig {
            kubeconfig: Some(standin.kubeconfig()),
            max_backoff: Duration::from_secs(1),
            ..KubernetesConfig::default()
        },
        FIXTURE_NODE,
        Arc::new(PodStore::new()),
        Arc::new(RemoteIndex::new()),
    )
    .expect("source starts");
    let watched: Vec<WatchKind> = WatchKind::ALL
        .into_iter()
        .filter(|k| !matches!(k, WatchKind::Node | WatchKind::Namespaces))
        .collect();
    let state = tokio::time::timeout(
        WAIT,
        handle.wait_for(|s| s.healthy() && watched.iter().all(|k| s.kinds.contains_key(k))),
    )
    .await
    .unwrap_or_else(|_| panic!("not synced: {:#?}", handle.state()));
    let kinds: Vec<WatchKind> = state.kinds.keys().copied().collect();
    assert_eq!(kinds, watched, "{state:#?}");
    for resource in [Resource::Nodes, Resource::Namespaces] {
        assert_eq!(
            standin.list_requests(resource),
            0,
            "{resource:?} was listed"
        );
        assert_eq!(
            standin.watch_requests(resource),
            0,
            "{resource:?} was watched"
        );
    }
    assert!(handle.node_labels().is_none());
    assert_eq!(handle.labels().namespace_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_apiserver_is_retried_and_reported() {
    let standin = ApiserverStandin::start();
    // Nothing listens on a port just released.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let kubeconfig = standin.dir().join("unreachable");
    let text = std::fs::read_to_string(standin.kubeconfig())
        .expect("kubeconfig")
        .replace(&standin.url(), &format!("https://127.0.0.1:{port}"));
    std::fs::write(&kubeconfig, text).expect("write");
    let handle = spawn_apiserver_source(
        config(kubeconfig),
        FIXTURE_NODE,
        Arc::new(PodStore::new()),
        Arc::new(RemoteIndex::new()),
    )
    .expect("source starts");
    let state = tokio::time::timeout(
        WAIT,
        handle.wait_for(|s| {
            s.kind(WatchKind::Pods)
                .is_some_and(|k| k.sync.consecutive_failures >= 2)
        }),
    )
    .await
    .unwrap_or_else(|_| panic!("{:#?}", handle.state()));
    let message = state
        .kind(WatchKind::Pods)
        .and_then(|k| k.sync.last_error.clone())
        .unwrap_or_default();
    assert!(message.contains("cannot reach the apiserver"), "{message}");
    assert!(message.contains(&port.to_string()), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_configuration_is_refused_with_the_fix() {
    let disabled = spawn_apiserver_source(
        KubernetesConfig {
            enabled: false,
            ..KubernetesConfig::default()
        },
        FIXTURE_NODE,
        Arc::new(PodStore::new()),
        Arc::new(RemoteIndex::new()),
    );
    assert!(matches!(disabled, Err(ApiserverError::Disabled)));

    let missing = std::path::PathBuf::from("/nonexistent/sonde/kubeconfig");
    let err = spawn_apiserver_source(
        config(missing.clone()),
        FIXTURE_NODE,
        Arc::new(PodStore::new()),
        Arc::new(RemoteIndex::new()),
    )
    .err()
    .expect("refused");
    let message = err.to_string();
    assert!(
        matches!(err, ApiserverError::Kubeconfig { .. }),
        "{message}"
    );
    assert!(
        message.contains("/nonexistent/sonde/kubeconfig"),
        "{message}"
    );
    assert!(message.contains("Fix:"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_handle_stops_every_watch_and_keeps_the_data() {
    let running = start_synced(ApiserverStandin::start()).await;
    let pods = running.pods.counts(PodSource::Apiserver).pods;
    assert!(pods > 0);
    drop(running.handle);
    wait_watches(&running.standin, 0).await;
    assert_eq!(running.pods.counts(PodSource::Apiserver).pods, pods);
}
