//! Attribution cost per event: the cgroup lookup alone, and `enrich::attribute` (apply to the
//! node model + lookup) over connection closes and whole process lifecycles, spread across
//! 1,000 containers' cgroups.
//! Run by `cargo xtask bench`; prints the median ns per event over batches.

use std::time::Instant;

use sonde::{
    enrich,
    event::{ConnEvent, ConnPhase, Event},
    node::{NodeModel, NodeOptions},
};
use sonde_common::record::{
    ConnRecord, ExecRecord, ExitRecord, ForkRecord, Header, RecordKind, TaskIdentity, conn_flags,
    direction,
};

const CONTAINERS: u64 = 1_000;
const BATCH: usize = 10_000;
const BATCHES: usize = 50;

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
    let mut node = NodeModel::new(&NodeOptions::default()).expect("cgroup v2 on this machine");
    for c in 0..CONTAINERS {
        node.cgroups.created(
            1_000_000 + c,
            &format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{c:08}_0000_0000_0000_000000000000.slice/cri-containerd-{c:064x}.scope"
            ),
        );
    }
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
    measure("tcp close (apply + attribute)", &mut |i, node| {
        conn.header = header(RecordKind::ConnClose, i);
        conn.owner = task(i);
        let ev = Event::Conn(ConnEvent {
            phase: ConnPhase::Close,
            record: &conn,
        });
        std::hint::black_box(enrich::attribute(node, &ev));
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
                    std::hint::black_box(enrich::attribute(node, &Event::Fork(&fork)));
                }
                1 => {
                    exec.header = header(RecordKind::Exec, i);
                    exec.task = child;
                    std::hint::black_box(enrich::attribute(node, &Event::Exec(&exec)));
                }
                2 => {
                    conn.header = header(RecordKind::ConnClose, i);
                    conn.owner = child;
                    let ev = Event::Conn(ConnEvent {
                        phase: ConnPhase::Close,
                        record: &conn,
                    });
                    std::hint::black_box(enrich::attribute(node, &ev));
                }
                _ => {
                    exit.header = header(RecordKind::Exit, i);
                    exit.task = child;
                    std::hint::black_box(enrich::attribute(node, &Event::Exit(&exit)));
                }
            }
        },
    );
}
