//! The process table: every process Sonde knows, keyed by identity (pid + start time, never pid
//! alone), kept current by exec/fork/exit records and seeded by the start-up /proc scan.
//!
//! Exited processes stay for a grace period (late events and parent lookups), then go. The table
//! is bounded: past `max_entries` the oldest exited entries go first, then the oldest of all;
//! each eviction is counted. The table is an [`AgingMap`] (an exited process is a retired
//! entry), so expiry and eviction cost O(1) amortised per process even when it is full.

use foldhash::{HashMap, HashMapExt};
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use crate::aging::AgingMap;

/// How long an exited process stays in the table.
const EXITED_GRACE: Duration = Duration::from_secs(30);

/// A process identity: pid plus start time (ns since boot, `CLOCK_BOOTTIME`). /proc gives the
/// start time in clock ticks; [`ticks_to_ns`] converts, so both sources produce the same key.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProcKey {
    pub pid: u32,
    /// Start time truncated to whole clock ticks, the resolution /proc offers.
    pub start_ticks: u64,
}

impl ProcKey {
    pub fn from_kernel(pid: u32, start_ns: u64, ns_per_tick: u64) -> Self {
        Self {
            pid,
            start_ticks: start_ns / ns_per_tick.max(1),
        }
    }
}

/// Where the table learned of a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Running when Sonde started (the /proc scan).
    FoundAtStart,
    /// Seen by the kernel programs (fork or exec).
    Observed,
}

#[derive(Clone, Debug)]
pub struct ProcessInfo {
    pub key: ProcKey,
    /// Start time in ns since boot (tick resolution for processes found at start).
    pub start_ns: u64,
    pub parent: Option<ProcKey>,
    pub uid: u32,
    pub comm: Arc<str>,
    /// Command line (NUL-separated arguments joined by spaces), possibly truncated.
    pub cmdline: Arc<str>,
    pub cgroup_id: u64,
    pub origin: Origin,
    pub exited_at: Option<Instant>,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessTableStats {
    pub entries: usize,
    pub alive: usize,
    pub evicted: u64,
}

pub struct ProcessTable {
    by_key: AgingMap<ProcKey, ProcessInfo>,
    /// The live process behind each pid, for parent lookups by pid.
    by_pid: HashMap<u32, ProcKey>,
    ns_per_tick: u64,
}

/// Clock ticks per second as /proc counts them (USER_HZ).
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as u64 } else { 100 }
}

/// Converts a /proc start time in ticks to ns.
pub fn ticks_to_ns(ticks: u64, hz: u64) -> u64 {
    ticks.saturating_mul(1_000_000_000 / hz.max(1))
}

impl ProcessTable {
    pub fn new(max_entries: usize) -> Self {
        Self {
            by_key: AgingMap::new(max_entries, EXITED_GRACE),
            by_pid: HashMap::new(),
            ns_per_tick: 1_000_000_000 / ticks_per_second(),
        }
    }

    pub fn key(&self, pid: u32, start_ns: u64) -> ProcKey {
        ProcKey::from_kernel(pid, start_ns, self.ns_per_tick)
    }

    pub fn get(&self, key: &ProcKey) -> Option<&ProcessInfo> {
        self.by_key.get(key)
    }

    /// The live process with this pid.
    pub fn by_pid(&self, pid: u32) -> Option<&ProcessInfo> {
        self.by_pid.get(&pid).and_then(|k| self.by_key.get(k))
    }

    pub fn iter(&self) -> impl Iterator<Item = &ProcessInfo> {
        self.by_key.values()
    }

    pub fn stats(&self) -> ProcessTableStats {
        ProcessTableStats {
            entries: self.by_key.len(),
            alive: self.by_pid.len(),
            evicted: self.by_key.evicted(),
        }
    }

    /// Inserts or refreshes a process seen by the kernel (fork or exec). Exec keeps the identity
    /// and updates name, command line and cgroup.
    pub fn observe(&mut self, info: ProcessInfo) {
        let key = info.key;
        match self.by_key.get_mut(&key) {
            Some(existing) => {
                existing.comm = info.comm;
                if !info.cmdline.is_empty() {
                    existing.cmdline = info.cmdline;
                }
                existing.cgroup_id = info.cgroup_id;
                existing.uid = info.uid;
                if info.parent.is_some() {
                    existing.parent = info.parent;
                }
            }
            None => self.insert(info),
        }
    }

    /// Merges a process found by the start-up scan. A process the kernel already reported (it
    /// exec'd or exited during the scan) keeps the kernel's view: nothing is counted twice or
    /// brought back to life.
    pub fn merge_found(&mut self, info: ProcessInfo) -> bool {
        if self.by_key.contains_key(&info.key) {
            return false;
        }
        self.insert(info);
        true
    }

    /// A process ended. Unknown processes (they predate Sonde and the scan missed them) are
    /// recorded as exited so late lookups still find their identity.
    pub fn exited(&mut self, key: ProcKey, fallback: impl FnOnce() -> ProcessInfo) {
        if !self.by_key.contains_key(&key) {
            self.insert(fallback());
        }
        if self.by_key.retired_at(&key).is_none() {
            let at = self.by_key.retire(&key);
            if let Some(info) = self.by_key.get_mut(&key) {
                info.exited_at = at;
            }
        }
        if self.by_pid.get(&key.pid) == Some(&key) {
            self.by_pid.remove(&key.pid);
        }
    }

    /// Drops exited processes past their grace period.
    pub fn expire(&mut self) {
        let by_pid = &mut self.by_pid;
        self.by_key.expire(|key, _| forget_pid(by_pid, key));
    }

    fn insert(&mut self, info: ProcessInfo) {
        let key = info.key;
        let exited_at = info.exited_at;
        if exited_at.is_none() {
            self.by_pid.insert(key.pid, key);
        }
        let by_pid = &mut self.by_pid;
        self.by_key
            .insert(key, info, |gone, _| forget_pid(by_pid, gone));
        if let Some(at) = exited_at {
            self.by_key.retire_at(&key, at);
        }
    }

    /// Parent chain of a process, nearest first, up to `max` ancestors.
    pub fn ancestors(&self, key: &ProcKey, max: usize) -> Vec<&ProcessInfo> {
        let mut out = Vec::new();
        let mut next = self.by_key.get(key).and_then(|p| p.parent);
        while let Some(k) = next {
            if out.len() >= max {
                break;
            }
            let Some(p) = self.by_key.get(&k) else { break };
            out.push(p);
            next = p.parent;
        }
        out
    }
}

/// A removed process no longer answers for its pid (unless a newer one already does).
fn forget_pid(by_pid: &mut HashMap<u32, ProcKey>, key: ProcKey) {
    if by_pid.get(&key.pid) == Some(&key) {
        by_pid.remove(&key.pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(pid: u32, start: u64, parent: Option<ProcKey>) -> ProcessInfo {
        ProcessInfo {
            key: ProcKey {
                pid,
                start_ticks: start,
            },
            start_ns: start * 10_000_000,
            parent,
            uid: 0,
            comm: Arc::from("x"),
            cmdline: Arc::from(""),
            cgroup_id: 1,
            origin: Origin::Observed,
            exited_at: None,
        }
    }

    #[test]
    fn kernel_and_proc_start_times_give_the_same_key() {
        // /proc's starttime is start_boottime / (1e9 / USER_HZ), truncated.
        let ns_per_tick = 10_000_000;
        let start_ns = 123_456_789_012;
        let ticks = start_ns / ns_per_tick;
        assert_eq!(
            ProcKey::from_kernel(7, start_ns, ns_per_tick),
            ProcKey {
                pid: 7,
                start_ticks: ticks
            }
        );
    }

    #[test]
    fn scan_results_never_resurrect_or_double_count() {
        let mut t = ProcessTable::new(100);
        let p = proc(10, 5, None);
        t.observe(p.clone());
        t.exited(p.key, || unreachable!());
        // The scan saw it alive just before it exited: the kernel's view wins.
        assert!(!t.merge_found(proc(10, 5, None)));
        assert!(t.get(&p.key).expect("kept").exited_at.is_some());
        assert!(t.by_pid(10).is_none());
        // A reused pid with another start time is another process.
        assert!(t.merge_found(proc(10, 9, None)));
        assert_eq!(t.by_pid(10).expect("new one").key.start_ticks, 9);
    }

    #[test]
    fn bounded_with_exited_first_eviction_and_parent_chains() {
        let mut t = ProcessTable::new(3);
        let a = proc(1, 1, None);
        let b = proc(2, 2, Some(a.key));
        let c = proc(3, 3, Some(b.key));
        t.observe(a.clone());
        t.observe(b.clone());
        t.observe(c.clone());
        let chain: Vec<u32> = t.ancestors(&c.key, 8).iter().map(|p| p.key.pid).collect();
        assert_eq!(chain, [2, 1]);
        t.exited(b.key, || unreachable!());
        t.observe(proc(4, 4, None));
        assert!(t.get(&b.key).is_none(), "the exited entry goes first");
        assert_eq!(t.stats().evicted, 1);
        assert_eq!(t.stats().entries, 3);
    }
}
