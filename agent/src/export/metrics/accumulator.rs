//! The capture pipeline's side of the metrics: a local accumulator updated per event with no
//! lock and no allocation in the steady state (hash-map hits keyed by cgroup id, and by cgroup
//! id + direction + remote end for connections, both as the join resolved them), published into
//! the shared [`WorkloadRegistry`] once per drain batch.
//!
//! Publishing takes the registry lock with `try_lock`: while a scrape is encoding, the counts
//! stay here and go out with the next batch, so the drain never waits for an HTTP client. The
//! cgroup → workload identity and remote end → `remote` label translations happen at publish
//! time, once per distinct key, and are cached.

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use super::{
    labels::{RemoteKey, RemoteLabeler, WorkloadIdentity},
    registry::{ConnKey, WorkloadRegistry},
    series::{CONNECT_BUCKETS, ConnCounts, Direction, ProcCounts, RTT_BUCKETS},
};
use crate::{
    enrich::Attribution,
    event::{ConnPhase, Event, ExitStatus, exit_status},
    node::{FoundConn, cgroup::CgroupInfo},
};

/// Cache sizes above which a cache is simply cleared.
const MAX_CACHED: usize = 50_000;

#[derive(Default)]
struct LocalWorkload {
    cgroup: Option<Arc<CgroupInfo>>,
    procs: ProcCounts,
}

pub struct Accumulator {
    registry: Arc<WorkloadRegistry>,
    labeler: RemoteLabeler,
    workloads: HashMap<u64, LocalWorkload>,
    conns: HashMap<(u64, Direction, RemoteKey), ConnCounts>,
    identities: HashMap<u64, WorkloadIdentity>,
    remotes: HashMap<RemoteKey, Arc<str>>,
    /// Publishes postponed because a scrape held the registry.
    pub deferred: u64,
}

impl Accumulator {
    pub fn new(registry: Arc<WorkloadRegistry>, labeler: RemoteLabeler) -> Self {
        Self {
            registry,
            labeler,
            workloads: HashMap::new(),
            conns: HashMap::new(),
            identities: HashMap::new(),
            remotes: HashMap::new(),
            deferred: 0,
        }
    }

    /// Counts one attributed event.
    pub fn record(&mut self, ev: &Event, attr: &Attribution) {
        let local = self.local(attr);
        match ev {
            Event::Exec(_) => local.procs.execs += 1,
            Event::Fork(_) => local.procs.forks += 1,
            Event::Exit(r) => match exit_status(r) {
                ExitStatus::Code(0) => local.procs.exits_ok += 1,
                ExitStatus::Code(_) => local.procs.exits_error += 1,
                ExitStatus::Signal { .. } => local.procs.exits_signal += 1,
            },
            Event::Conn(c) => {
                let direction = attr.direction.unwrap_or_else(|| c.direction_name());
                let counts = self.conn(attr, direction, c.remote_addr());
                match c.phase {
                    ConnPhase::Open => {
                        counts.opened += 1;
                        if let Some(ns) = c.connect_latency_ns() {
                            counts.connect.observe(&CONNECT_BUCKETS, ns as f64 / 1e9);
                        }
                    }
                    ConnPhase::Close => {
                        counts.closed += 1;
                        counts.sent_bytes += c.record.bytes_sent;
                        counts.received_bytes += c.record.bytes_received;
                        counts.retransmits += u64::from(c.record.retransmits);
                        if c.record.srtt_us > 0 {
                            counts
                                .rtt
                                .observe(&RTT_BUCKETS, f64::from(c.record.srtt_us) / 1e6);
                        }
                    }
                    ConnPhase::Fail => {
                        let reason = c.error_name().unwrap_or("aborted".into());
                        counts.fail(reason, 1);
                    }
                }
            }
            Event::Cgroup { .. } => {}
        }
    }

    /// A connection found open at start-up (counted as opened, without a connect time).
    pub fn found_conn(&mut self, conn: &FoundConn, attr: &Attribution) {
        let direction = attr.direction.unwrap_or(conn.direction);
        self.local(attr);
        self.conn(attr, direction, conn.remote.ip()).opened += 1;
    }

    /// The process counts of the event's cgroup.
    fn local(&mut self, attr: &Attribution) -> &mut LocalWorkload {
        let cg = attr.cgroup.as_ref().map_or(0, |c| c.id);
        let local = self.workloads.entry(cg).or_default();
        if local.cgroup.is_none()
            && let Some(c) = &attr.cgroup
        {
            local.cgroup = Some(Arc::clone(c));
        }
        local
    }

    /// The connection counts of the event's cgroup, direction and remote end.
    fn conn(&mut self, attr: &Attribution, direction: &str, ip: IpAddr) -> &mut ConnCounts {
        let cg = attr.cgroup.as_ref().map_or(0, |c| c.id);
        let key = (
            cg,
            Direction::from_name(direction),
            RemoteKey::new(attr.remote.as_ref(), ip),
        );
        self.conns.entry(key).or_default()
    }

    /// Moves the batch's counts into the shared registry, unless a scrape holds it (then they
    /// wait for the next batch). Returns whether anything was published.
    pub fn publish(&mut self) -> bool {
        if self.workloads.is_empty() && self.conns.is_empty() {
            return false;
        }
        let registry = Arc::clone(&self.registry);
        let Some(mut guard) = registry.try_lock() else {
            self.deferred += 1;
            return false;
        };
        if self.remotes.len() > MAX_CACHED {
            self.remotes.clear();
        }
        if self.identities.len() > MAX_CACHED {
            self.identities.clear();
        }
        let unknown = WorkloadIdentity::default();
        for ((cg, direction, remote), counts) in self.conns.drain() {
            cache_identity(&mut self.identities, &self.workloads, cg);
            let id = self.identities.get(&cg).unwrap_or(&unknown);
            let labeler = &self.labeler;
            let remote = self
                .remotes
                .entry(remote)
                .or_insert_with_key(|key| labeler.label(key));
            let key = ConnKey {
                direction,
                remote: Arc::clone(remote),
            };
            guard.add_conn(id, key, &counts);
        }
        for (cg, local) in self.workloads.iter() {
            if local.procs != ProcCounts::default() {
                cache_identity(&mut self.identities, &self.workloads, *cg);
                let id = self.identities.get(cg).unwrap_or(&unknown);
                guard.add_procs(id, &local.procs);
            }
        }
        self.workloads.clear();
        true
    }
}

/// Caches the workload identity of cgroup `cg` once its cgroup is known (an unknown one maps
/// to the all-`None` identity, uncached: the cgroup may be learned later).
fn cache_identity(
    cache: &mut HashMap<u64, WorkloadIdentity>,
    workloads: &HashMap<u64, LocalWorkload>,
    cg: u64,
) {
    if cache.contains_key(&cg) {
        return;
    }
    if let Some(cgroup) = workloads.get(&cg).and_then(|w| w.cgroup.as_deref()) {
        cache.insert(cg, WorkloadIdentity::from_cgroup(Some(cgroup)));
    }
}
