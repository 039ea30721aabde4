//! The capture pipeline's side of the metrics: a local accumulator updated per event with no
//! lock and no allocation in the steady state (hash-map hits keyed by cgroup id, and by cgroup
//! id + direction + remote address for connections), published into the shared
//! [`WorkloadRegistry`] once per drain batch.
//!
//! Publishing takes the registry lock with `try_lock`: while a scrape is encoding, the counts
//! stay here and go out with the next batch, so the drain never waits for an HTTP client. The
//! cgroup → workload identity and address → `remote` label translations happen at publish time,
//! once per distinct key, and are cached.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use super::{
    labels::{RemoteLabeler, WorkloadIdentity},
    registry::{ConnKey, WorkloadRegistry},
    series::{CONNECT_BUCKETS, ConnCounts, Direction, ProcCounts, RTT_BUCKETS},
};
use crate::{
    enrich::Attribution,
    event::{ConnPhase, Event, ExitStatus, exit_status},
    node::cgroup::CgroupInfo,
};

/// Remote names are re-asked this often, so a name learned later applies to new counts.
const REMOTE_CACHE_TTL: Duration = Duration::from_secs(30);
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
    conns: HashMap<(u64, Direction, IpAddr), ConnCounts>,
    identities: HashMap<u64, WorkloadIdentity>,
    remotes: HashMap<IpAddr, Arc<str>>,
    remotes_since: Instant,
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
            remotes_since: Instant::now(),
            deferred: 0,
        }
    }

    /// Counts one attributed event.
    pub fn record(&mut self, ev: &Event, attr: &Attribution) {
        let cg = attr.cgroup.as_ref().map_or(0, |c| c.id);
        let local = self.workloads.entry(cg).or_default();
        if local.cgroup.is_none()
            && let Some(c) = &attr.cgroup
        {
            local.cgroup = Some(Arc::clone(c));
        }
        match ev {
            Event::Exec(_) => local.procs.execs += 1,
            Event::Fork(_) => local.procs.forks += 1,
            Event::Exit(r) => match exit_status(r) {
                ExitStatus::Code(0) => local.procs.exits_ok += 1,
                ExitStatus::Code(_) => local.procs.exits_error += 1,
                ExitStatus::Signal { .. } => local.procs.exits_signal += 1,
            },
            Event::Conn(c) => {
                let mut direction = Direction::from_name(c.direction_name());
                if direction == Direction::Unknown
                    && let Some(found) = &attr.found
                {
                    direction = Direction::from_name(found.direction);
                }
                let counts = self
                    .conns
                    .entry((cg, direction, c.remote_addr()))
                    .or_default();
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
    pub fn found_conn(&mut self, cgroup: Option<&Arc<CgroupInfo>>, direction: &str, ip: IpAddr) {
        let cg = cgroup.map_or(0, |c| c.id);
        let local = self.workloads.entry(cg).or_default();
        if local.cgroup.is_none() {
            local.cgroup = cgroup.cloned();
        }
        self.conns
            .entry((cg, Direction::from_name(direction), ip))
            .or_default()
            .opened += 1;
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
        if self.remotes_since.elapsed() >= REMOTE_CACHE_TTL || self.remotes.len() > MAX_CACHED {
            self.remotes.clear();
            self.remotes_since = Instant::now();
        }
        if self.identities.len() > MAX_CACHED {
            self.identities.clear();
        }
        let unknown = WorkloadIdentity::default();
        for ((cg, direction, ip), counts) in self.conns.drain() {
            cache_identity(&mut self.identities, &self.workloads, cg);
            let id = self.identities.get(&cg).unwrap_or(&unknown);
            let remote = self
                .remotes
                .entry(ip)
                .or_insert_with(|| self.labeler.label(ip));
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
