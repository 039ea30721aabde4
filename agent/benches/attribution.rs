//! Attribution cost per event: the cgroup lookup alone, and `enrich::attribute` (apply to the
//! node model + lookup) over connection closes and whole process lifecycles, spread across
//! 1,000 containers' cgroups.
//! Run by `cargo xtask bench`; prints the median ns per event over batches.

use std::time::Instant;

use sonde::{
    enrich::{self, KubeJoin},
    event::{ConnEvent, ConnPhase, Event},
    kube,
    node::{NodeConfig, NodeModel},
};
use sonde_common::record::{
    ConnRecord, ExecRecord, ExitRecord, ForkRecord, Header, RecordKind, TaskIdentity, conn_flags,
    direction,
};

const CONTAINERS: u64 = 1_000;
const BATCH: usize = 10_000;
const BATCHES: usize = 50;
/// Pods the kubelet knows (their containers are the first `PODS` cgroups).
const PODS: u64 = 500;
/// Services the apiserver knows, each with 4 endpoints (the issue's join benchmark).
const SERVICES: u32 = 5_000;

fn v4(net: u8, i: u32) -> std::net::Ipv4Addr {
    let [_, a, b, c] = i.to_be_bytes();
    std::net::Ipv4Addr::new(net, a, b, c)
}

/// A remote index holding `SERVICES` Services and their endpoints.
fn remote_index() -> std::sync::Arc<kube::RemoteIndex> {
    use kube::{
        ObjectName,
        services::{EndpointEntry, ServiceEntry, SliceEntry},
    };
    let index = kube::RemoteIndex::new();
    for s in 0..SERVICES {
        let name = format!("svc-{s}");
        index.upsert_service(
            ObjectName::new("ns", &name),
            ServiceEntry {
                cluster_ips: vec![v4(10, s).into()],
                ports: vec![80],
            },
        );
        let endpoints = (0..4)
            .map(|e| EndpointEntry {
                ip: v4(11, s * 4 + e).into(),
                pod: Some(ObjectName::new("ns", &format!("{name}-pod-{e}"))),
            })
            .collect();
        index.upsert_slice(
            ObjectName::new("ns", &format!("{name}-slice")),
            SliceEntry {
                service: Some(name.as_str().into()),
                endpoints,
            },
        );
    }
    std::sync::Arc::new(index)
}

/// A pod store holding `n` pods, parsed from a kubelet-shaped pod list like the real one.
fn kube_with_pods(n: u64) -> KubeJoin {
    let items: Vec<String> = (0..n)
        .map(|c| {
            format!(
                r#"{{"metadata":{{"name":"web-7d764666f9-{c:05}","namespace":"ns-{ns}","uid":"{c:08}-0000-0000-0000-000000000000","labels":{{"app":"web","pod-template-hash":"7d764666f9"}},"ownerReferences":[{{"kind":"ReplicaSet","name":"web-7d764666f9","controller":true}}]}},"spec":{{"nodeName":"n1","containers":[{{"name":"web","image":"registry.example/web:1.{c}"}}]}},"status":{{"phase":"Running","podIP":"10.1.{a}.{b}","containerStatuses":[{{"name":"web","containerID":"containerd://{c:064x}","image":"registry.example/web:1.{c}","imageID":"","state":{{"running":{{}}}}}}]}}}}"#,
                ns = c % 20,
                a = c / 250,
                b = c % 250
            )
        })
        .collect();
    let list = format!(r#"{{"kind":"PodList","items":[{}]}}"#, items.join(","));
    let parsed = kube::parse_pod_list(list.as_bytes()).expect("generated pod list parses");
    assert_eq!(parsed.pods.len() as u64, n, "every generated pod parses");
    let store = kube::PodStore::new();
    store.replace(kube::PodSource::Kubelet, parsed.pods);
    KubeJoin {
        pods: std::sync::Arc::new(store),
        kubelet: None,
        remote: None,
        ..KubeJoin::default()
    }
}

fn task(i: u64) -> TaskIdentity {
    TaskIdentity {
        pid: 100_000 + (i % 30_000) as u32,
        tid: 100_000 + (i % 30_000) as u32,
        start_ns: 1_000_000_000 + i * 10_000_000,
        cgroup_id: 1_000_000 + i % CONTAINERS,
        uid: 0,
        _pad0: 0,
        comm: *b"worker\0\0\0\0\0\0\0\0\0\0",
    }
}

fn header(kind: RecordKind, i: u64) -> Header {
    Header {
        kind: kind as u16,
        _pad0: 0,
        cpu: 0,
        ts_ns: 2_000_000_000 + i,
    }
}

fn main() {
    let mut node = NodeModel::new(&NodeConfig::default()).expect("cgroup v2 on this machine");
    for c in 0..CONTAINERS {
        node.cgroups.created(
            1_000_000 + c,
            &format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{c:08}_0000_0000_0000_000000000000.slice/cri-containerd-{c:064x}.scope"
            ),
        );
    }
    // Steady state: the start-up scan has been merged (nothing found, in this bench).
    node.merge(
        sonde::node::Bootstrap {
            procs: Default::default(),
            sockets: Default::default(),
            duration: std::time::Duration::ZERO,
        },
        |inode| inode,
    );
    let mut kube = kube_with_pods(PODS);
    kube.remote = Some(remote_index());
    assert!(
        kube.attribute_cgroup(&mut node, 1_000_000 + 7)
            .pod
            .is_some(),
        "the generated pods join their containers' cgroups"
    );
    // SAFETY: all-zero is a valid value of these plain-data records.
    let mut exec: ExecRecord = unsafe { std::mem::zeroed() };
    let mut exit: ExitRecord = unsafe { std::mem::zeroed() };
    let mut conn: ConnRecord = unsafe { std::mem::zeroed() };
    exec.filename[..9].copy_from_slice(b"/bin/true");
    exec.filename_len = 9;
    conn.family = sonde_common::AF_INET;
    conn.direction = direction::OUTBOUND;
    conn.flags = conn_flags::OWNER_KNOWN;

    let mut i = 0u64;
    let mut measure = |name: &str, f: &mut dyn FnMut(u64, &mut NodeModel)| {
        let mut per_event = Vec::with_capacity(BATCHES);
        for _ in 0..BATCHES {
            let started = Instant::now();
            for _ in 0..BATCH {
                i += 1;
                f(i, &mut node);
            }
            per_event.push(started.elapsed().as_nanos() as f64 / BATCH as f64);
        }
        per_event.sort_by(f64::total_cmp);
        println!(
            "attribution {name}: median {:.0} ns/event (p90 {:.0}), {CONTAINERS} containers",
            per_event[per_event.len() / 2],
            per_event[per_event.len() * 9 / 10]
        );
    };
    // The lookup alone: cgroup id -> container/pod/unit identity.
    measure("lookup (cgroup id -> identity)", &mut |i, node| {
        std::hint::black_box(node.cgroup(1_000_000 + i % CONTAINERS));
    });
    // The join: cgroup id -> identity -> pod, namespace, container, image, owner.
    measure(
        "join (cgroup id -> identity + pod metadata)",
        &mut |i, node| {
            std::hint::black_box(kube.attribute_cgroup(node, 1_000_000 + i % PODS));
        },
    );
    // The whole join of a connection event: identity + pod + the remote end (a Service's
    // ClusterIP, an endpoint pod, or an external address in turn).
    let mut join_conn: ConnRecord = conn;
    measure(
        "join of a connection (identity + pod + remote, 500 pods, 5,000 services)",
        &mut |i, node| {
            join_conn.header = header(RecordKind::ConnClose, i);
            join_conn.owner = task(i % PODS);
            let remote = match i % 3 {
                0 => v4(10, (i as u32 * 7) % SERVICES),
                1 => v4(11, (i as u32 * 13) % (SERVICES * 4)),
                _ => v4(8, i as u32),
            };
            join_conn.daddr[..4].copy_from_slice(&remote.octets());
            join_conn.dport = 80;
            let ev = Event::Conn(ConnEvent {
                phase: ConnPhase::Close,
                record: &join_conn,
            });
            std::hint::black_box(enrich::attribute(node, &mut kube, &ev));
        },
    );
    measure("tcp close (apply + attribute)", &mut |i, node| {
        conn.header = header(RecordKind::ConnClose, i);
        conn.owner = task(i);
        let ev = Event::Conn(ConnEvent {
            phase: ConnPhase::Close,
            record: &conn,
        });
        std::hint::black_box(enrich::attribute(node, &mut kube, &ev));
    });
    // A process lifecycle as the kernel reports it: fork, exec, connection close, exit, over a
    // working set of live processes (the table stays at its steady-state size).
    let mut fork: ForkRecord = unsafe { std::mem::zeroed() };
    measure(
        "process lifecycle (fork+exec+close+exit, per event)",
        &mut |i, node| {
            let child = task(i / 4 + 7);
            match i % 4 {
                0 => {
                    fork.header = header(RecordKind::Fork, i);
                    fork.parent = task(1);
                    fork.child_pid = child.pid;
                    fork.child_start_ns = child.start_ns;
                    fork.child_cgroup_id = child.cgroup_id;
                    std::hint::black_box(enrich::attribute(node, &mut kube, &Event::Fork(&fork)));
                }
                1 => {
                    exec.header = header(RecordKind::Exec, i);
                    exec.task = child;
                    std::hint::black_box(enrich::attribute(node, &mut kube, &Event::Exec(&exec)));
                }
                2 => {
                    conn.header = header(RecordKind::ConnClose, i);
                    conn.owner = child;
                    let ev = Event::Conn(ConnEvent {
                        phase: ConnPhase::Close,
                        record: &conn,
                    });
                    std::hint::black_box(enrich::attribute(node, &mut kube, &ev));
                }
                _ => {
                    exit.header = header(RecordKind::Exit, i);
                    exit.task = child;
                    std::hint::black_box(enrich::attribute(node, &mut kube, &Event::Exit(&exit)));
                }
            }
        },
    );
}
