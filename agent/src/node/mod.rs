//! The node model: who is behind every event. Cgroups (id → path → container, pod or systemd
//! unit), processes (identity, parent, name, cgroup) and the connections that existed at
//! start-up, kept current from the kernel's records and seeded by a /proc scan.
//!
//! One owner, no locks: the capture pipeline applies every record in order and asks for
//! attribution as it goes; the start-up scan runs on a blocking thread and is merged in by the
//! same owner.

pub mod cgroup;
pub mod cgroup_path;
pub mod hostfs;
pub mod process;
pub mod procfs;
pub mod sockets;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use cgroup::{CgroupError, CgroupIndex, CgroupInfo};
use hostfs::HostRoot;
use process::{Origin, ProcKey, ProcessInfo, ProcessTable};

use crate::event::{self, Event};

/// Connections remembered while the start-up scan runs (a bound for a connection storm during
/// start-up; past it, a connection could be reported both by the kernel and by the scan).
const MAX_SEEN_BEFORE_MERGE: usize = 200_000;

/// How often exited processes and stale entries are swept.
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// `node.*`: where the host is seen from, and the bounds of the node model's tables.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Where the host's `/` is mounted (`/` on the host, e.g. `/host` in a container).
    pub host_root: PathBuf,
    pub max_processes: usize,
    pub max_cgroups: usize,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            host_root: PathBuf::from("/"),
            max_processes: 200_000,
            max_cgroups: 100_000,
        }
    }
}

impl NodeConfig {
    /// The host's filesystem as seen from here.
    pub fn host(&self) -> HostRoot {
        HostRoot::new(&self.host_root)
    }
}

/// A connection that existed when Sonde started, with its owner from the fd scan.
#[derive(Clone, Debug)]
pub struct FoundConn {
    pub conn_id: u64,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// `inbound`, `outbound`, or `unknown` (see [`sockets::direction`]).
    pub direction: &'static str,
    pub owner: Option<ProcessInfo>,
    pub cgroup_id: u64,
}

/// What the start-up scan added, for the event stream.
#[derive(Debug, Default)]
pub struct BootstrapReport {
    /// Processes found running that the kernel had not already reported.
    pub processes: Vec<ProcessInfo>,
    pub conns: Vec<FoundConn>,
    pub duration: Duration,
    pub unreadable_processes: usize,
    pub socket_namespaces_failed: usize,
    /// Connections the scan saw that the kernel had already reported (not reported again).
    pub conns_already_reported: usize,
}

/// The raw result of the start-up scans, produced off the capture path.
pub struct Bootstrap {
    pub procs: procfs::ProcScan,
    pub sockets: sockets::SocketScan,
    pub duration: Duration,
}

/// Runs the start-up scans (blocking: /proc and netlink I/O).
pub fn scan(host: &HostRoot) -> Bootstrap {
    let started = Instant::now();
    let procs = procfs::scan(&host.proc());
    let mut members: std::collections::HashMap<u64, u32> = std::collections::HashMap::new();
    for p in &procs.processes {
        if let Some(ns) = p.netns {
            members.entry(ns).or_insert(p.pid);
        }
    }
    let sockets = sockets::scan(&host.proc(), &members);
    Bootstrap {
        procs,
        sockets,
        duration: started.elapsed(),
    }
}

pub struct NodeModel {
    pub host: HostRoot,
    pub cgroups: CgroupIndex,
    pub processes: ProcessTable,
    /// Connections found at start-up, by 4-tuple, until they close.
    found_conns: HashMap<(SocketAddr, SocketAddr), FoundConn>,
    /// Until the start-up scan is merged: the 4-tuples the kernel reported (open, close or
    /// fail) since the probes were attached. The scan may see such a connection too; the
    /// kernel's report wins and the scan's copy is dropped (merge by identity).
    seen_before_merge: Option<HashSet<(SocketAddr, SocketAddr)>>,
    hz: u64,
    /// The kernel time (`ts_ns` of the event) of the last sweep: events carry the clock, so
    /// applying one reads none.
    last_sweep_ns: u64,
}

impl NodeModel {
    /// Indexes the cgroup v2 hierarchy; processes and sockets come with [`Self::merge`].
    pub fn new(opts: &NodeConfig) -> Result<Self, CgroupError> {
        let host = opts.host();
        let root = cgroup::find_v2_root(&host)?;
        Ok(Self {
            host,
            cgroups: CgroupIndex::new(root, opts.max_cgroups),
            processes: ProcessTable::new(opts.max_processes),
            found_conns: HashMap::new(),
            seen_before_merge: Some(HashSet::new()),
            hz: process::ticks_per_second(),
            last_sweep_ns: 0,
        })
    }

    /// Applies one kernel record to the model.
    pub fn apply(&mut self, ev: &Event) {
        match ev {
            Event::Exec(r) => {
                let info = ProcessInfo {
                    key: self.processes.key(r.task.pid, r.task.start_ns),
                    start_ns: r.task.start_ns,
                    parent: (r.ppid != 0).then(|| self.processes.key(r.ppid, r.parent_start_ns)),
                    uid: r.task.uid,
                    comm: Arc::from(event::comm(&r.task).as_ref()),
                    cmdline: joined_args(r),
                    cgroup_id: r.task.cgroup_id,
                    origin: Origin::Observed,
                    exited_at: None,
                };
                self.processes.observe(info);
            }
            Event::Fork(r) => {
                let parent = self.processes.key(r.parent.pid, r.parent.start_ns);
                let inherited = self.processes.get(&parent).map(|p| Arc::clone(&p.cmdline));
                let info = ProcessInfo {
                    key: self.processes.key(r.child_pid, r.child_start_ns),
                    start_ns: r.child_start_ns,
                    parent: Some(parent),
                    uid: r.parent.uid,
                    comm: Arc::from(event::comm(&r.parent).as_ref()),
                    cmdline: inherited.unwrap_or_else(|| Arc::from("")),
                    cgroup_id: r.child_cgroup_id,
                    origin: Origin::Observed,
                    exited_at: None,
                };
                self.processes.observe(info);
            }
            Event::Exit(r) => {
                let key = self.processes.key(r.task.pid, r.task.start_ns);
                self.processes.exited(key, || ProcessInfo {
                    key,
                    start_ns: r.task.start_ns,
                    parent: None,
                    uid: r.task.uid,
                    comm: Arc::from(event::comm(&r.task).as_ref()),
                    cmdline: Arc::from(""),
                    cgroup_id: r.task.cgroup_id,
                    origin: Origin::Observed,
                    exited_at: None,
                });
            }
            Event::Conn(c) => {
                if let Some(seen) = &mut self.seen_before_merge
                    && seen.len() < MAX_SEEN_BEFORE_MERGE
                {
                    seen.insert((c.local(), c.remote()));
                }
            }
            Event::Cgroup { record, removed } => {
                if *removed {
                    self.cgroups.removed(record.id);
                } else {
                    self.cgroups.created(record.id, &event::cgroup_path(record));
                }
            }
        }
        let now_ns = ev.ts_ns();
        if now_ns.saturating_sub(self.last_sweep_ns) >= SWEEP_INTERVAL.as_nanos() as u64 {
            self.last_sweep_ns = now_ns;
            self.processes.expire();
        }
    }

    /// The cgroup behind an id (re-walking the hierarchy on a miss, rate-limited).
    pub fn cgroup(&mut self, id: u64) -> Option<Arc<CgroupInfo>> {
        if id == 0 {
            return None;
        }
        self.cgroups.resolve(id)
    }

    /// Removes and returns the connection found at start-up with this 4-tuple (it is closing;
    /// its close record carries no owner).
    pub fn take_found_conn(&mut self, local: SocketAddr, remote: SocketAddr) -> Option<FoundConn> {
        if self.found_conns.is_empty() {
            return None;
        }
        self.found_conns.remove(&(local, remote))
    }

    /// Merges the start-up scans; returns what is new, for the event stream.
    pub fn merge(&mut self, scan: Bootstrap, conn_id: impl Fn(u64) -> u64) -> BootstrapReport {
        let mut report = BootstrapReport {
            duration: scan.duration,
            unreadable_processes: scan.procs.unreadable,
            socket_namespaces_failed: scan.sockets.failed.len(),
            ..Default::default()
        };
        let ns_per_tick = 1_000_000_000 / self.hz;
        let mut owners: HashMap<u32, ProcessInfo> = HashMap::new();
        for p in &scan.procs.processes {
            let cgroup_id = p
                .cgroup_path
                .as_deref()
                .and_then(|path| self.cgroups.id_of_path(path))
                .unwrap_or(0);
            let info = ProcessInfo {
                key: ProcKey {
                    pid: p.pid,
                    start_ticks: p.start_ticks,
                },
                start_ns: p.start_ticks * ns_per_tick,
                parent: p.parent_start_ticks.map(|t| ProcKey {
                    pid: p.ppid,
                    start_ticks: t,
                }),
                uid: p.uid,
                comm: Arc::from(p.comm.as_str()),
                cmdline: Arc::from(p.cmdline.as_str()),
                cgroup_id,
                origin: Origin::FoundAtStart,
                exited_at: None,
            };
            owners.insert(p.pid, info.clone());
            if self.processes.merge_found(info.clone()) {
                report.processes.push(info);
            }
        }
        let seen_by_kernel = self.seen_before_merge.take().unwrap_or_default();
        for c in &scan.sockets.conns {
            if seen_by_kernel.contains(&(c.local, c.remote)) {
                report.conns_already_reported += 1;
                continue;
            }
            let owner = scan
                .procs
                .socket_owner
                .get(&c.inode)
                .and_then(|pid| owners.get(pid))
                .cloned();
            let found = FoundConn {
                conn_id: conn_id(c.inode),
                local: c.local,
                remote: c.remote,
                direction: sockets::direction(c, &scan.sockets),
                cgroup_id: owner.as_ref().map_or(0, |o| o.cgroup_id),
                owner,
            };
            self.found_conns.insert((c.local, c.remote), found.clone());
            report.conns.push(found);
        }
        for (ns, reason) in &scan.sockets.failed {
            tracing::warn!(netns = ns, %reason, "sockets of a network namespace could not be read");
        }
        report
    }
}

/// The exec record's arguments joined by spaces, built in one buffer.
fn joined_args(r: &sonde_common::record::ExecRecord) -> Arc<str> {
    let mut line = String::with_capacity(r.args_len as usize);
    for (i, arg) in event::exec_args(r).enumerate() {
        if i > 0 {
            line.push(' ');
        }
        line.push_str(&arg);
    }
    Arc::from(line)
}
