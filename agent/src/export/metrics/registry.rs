//! The shared registry of workload series: what the pipeline publishes once per drain and the
//! scrape encodes. Bounded by `max_series`: a new label set beyond it is refused and counted;
//! when full, workloads idle for [`IDLE_EVICT`] are evicted (at most once per
//! [`EVICT_INTERVAL`]) to make room for new ones.
//!
//! A "series" here is one label set: a workload (its process families), a (workload, direction,
//! remote) connection key (its counters and histograms), or a failure reason under such a key.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard, TryLockError,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use crate::aging::AgingMap;

use super::{
    labels::WorkloadIdentity,
    series::{ConnCounts, Direction, ProcCounts},
};

/// A workload with no new counts for this long may be evicted when the registry is full.
pub const IDLE_EVICT: Duration = Duration::from_secs(600);
/// Eviction scans at most this often.
pub const EVICT_INTERVAL: Duration = Duration::from_secs(60);

/// The connection part of a series key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub direction: Direction,
    pub remote: Arc<str>,
}

#[derive(Debug)]
pub struct WorkloadSeries {
    pub procs: ProcCounts,
    pub conns: HashMap<ConnKey, ConnCounts>,
}

impl WorkloadSeries {
    /// Label sets this workload holds.
    fn series(&self) -> usize {
        1 + self
            .conns
            .values()
            .map(|c| 1 + c.failed.len())
            .sum::<usize>()
    }
}

#[derive(Debug)]
pub struct Inner {
    /// Bounded by the series count (`max_series`), not by entries; idle ones are evicted.
    pub workloads: AgingMap<WorkloadIdentity, WorkloadSeries>,
    series: usize,
    last_evict: Option<Instant>,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            workloads: AgingMap::new(usize::MAX, Duration::ZERO),
            series: 0,
            last_evict: None,
        }
    }
}

#[derive(Debug)]
pub struct WorkloadRegistry {
    inner: Mutex<Inner>,
    max_series: usize,
    idle_evict: Duration,
    evict_interval: Duration,
    series: AtomicUsize,
    refused: AtomicU64,
    evicted: AtomicU64,
}

/// Exclusive access to the series, for a publish or a scrape.
pub struct Guard<'a> {
    registry: &'a WorkloadRegistry,
    inner: MutexGuard<'a, Inner>,
}

impl WorkloadRegistry {
    pub fn new(max_series: usize) -> Self {
        Self::with_eviction(max_series, IDLE_EVICT, EVICT_INTERVAL)
    }

    /// With other idle-eviction delays than [`IDLE_EVICT`] and [`EVICT_INTERVAL`].
    pub fn with_eviction(
        max_series: usize,
        idle_evict: Duration,
        evict_interval: Duration,
    ) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            max_series,
            idle_evict,
            evict_interval,
            series: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        }
    }

    pub fn max_series(&self) -> usize {
        self.max_series
    }

    /// Label sets held now.
    pub fn series(&self) -> usize {
        self.series.load(Ordering::Relaxed)
    }

    /// New label sets refused because the registry was full.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Label sets dropped by idle eviction.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Waits for the lock (scrapes).
    pub fn lock(&self) -> Guard<'_> {
        // Every change keeps `Inner` consistent between statements, so a poisoned lock is
        // still usable.
        Guard {
            registry: self,
            inner: self.inner.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }

    /// The lock if free now (the capture pipeline never waits for a scrape).
    pub fn try_lock(&self) -> Option<Guard<'_>> {
        let inner = match self.inner.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        Some(Guard {
            registry: self,
            inner,
        })
    }
}

impl Guard<'_> {
    pub fn workloads(&self) -> &AgingMap<WorkloadIdentity, WorkloadSeries> {
        &self.inner.workloads
    }

    fn refuse(&self) {
        self.registry.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Room for `n` more label sets, evicting idle workloads if that makes it.
    fn room_for(&mut self, n: usize) -> bool {
        let max = self.registry.max_series;
        if self.inner.series + n <= max {
            return true;
        }
        let due = self
            .inner
            .last_evict
            .is_none_or(|t| t.elapsed() >= self.registry.evict_interval);
        if due {
            self.inner.last_evict = Some(Instant::now());
            let idle = self.registry.idle_evict;
            let mut freed = 0;
            self.inner
                .workloads
                .evict_idle(idle, |_, _| true, |_, w| freed += w.series());
            self.inner.series = self.inner.series.saturating_sub(freed);
            if freed > 0 {
                self.registry
                    .evicted
                    .fetch_add(freed as u64, Ordering::Relaxed);
                tracing::info!(
                    freed,
                    idle_secs = idle.as_secs(),
                    "metrics series limit reached: evicted idle workloads"
                );
            }
            self.sync_count();
        }
        self.inner.series + n <= max
    }

    fn sync_count(&self) {
        self.registry
            .series
            .store(self.inner.series, Ordering::Relaxed);
    }

    /// The workload's entry, created if there is room.
    fn workload(&mut self, id: &WorkloadIdentity) -> Option<&mut WorkloadSeries> {
        if !self.inner.workloads.contains_key(id) {
            if !self.room_for(1) {
                self.refuse();
                return None;
            }
            self.inner.series += 1;
            self.sync_count();
            self.inner.workloads.insert(
                id.clone(),
                WorkloadSeries {
                    procs: ProcCounts::default(),
                    conns: HashMap::new(),
                },
                |_, _| {},
            );
        }
        self.inner.workloads.get_mut_touched(id)
    }

    pub fn add_procs(&mut self, id: &WorkloadIdentity, procs: &ProcCounts) {
        if let Some(w) = self.workload(id) {
            w.procs.add(procs);
        }
    }

    pub fn add_conn(&mut self, id: &WorkloadIdentity, key: ConnKey, counts: &ConnCounts) {
        // Fast path, the common case: the workload and key exist, no new failure reason.
        if let Some(w) = self.inner.workloads.get_mut_touched(id)
            && let Some(c) = w.conns.get_mut(&key)
            && counts
                .failed
                .iter()
                .all(|(r, _)| c.failed.iter().any(|(e, _)| e == r))
        {
            c.add_counts(counts);
            for (reason, n) in &counts.failed {
                c.fail(reason.clone(), *n);
            }
            return;
        }
        self.add_conn_slow(id, key, counts);
    }

    /// A new workload, connection key or failure reason: each is a label set, counted against
    /// the limit.
    fn add_conn_slow(&mut self, id: &WorkloadIdentity, key: ConnKey, counts: &ConnCounts) {
        let Some(exists) = self.workload(id).map(|w| w.conns.contains_key(&key)) else {
            return;
        };
        if !exists {
            if !self.room_for(1) {
                self.refuse();
                return;
            }
            self.inner.series += 1;
        }
        // New failure reasons are label sets too: count the ones that fit.
        let new_reasons: Vec<bool> = {
            let existing = self.inner.workloads.get(id).and_then(|w| w.conns.get(&key));
            counts
                .failed
                .iter()
                .map(|(r, _)| existing.is_none_or(|c| !c.failed.iter().any(|(e, _)| e == r)))
                .collect()
        };
        let mut admitted = Vec::with_capacity(counts.failed.len());
        for ((reason, n), new) in counts.failed.iter().zip(new_reasons) {
            if !new {
                admitted.push((reason.clone(), *n));
            } else if self.room_for(1) {
                self.inner.series += 1;
                admitted.push((reason.clone(), *n));
            } else {
                self.refuse();
            }
        }
        self.sync_count();
        let Some(w) = self.inner.workloads.get_mut(id) else {
            return;
        };
        let entry = w.conns.entry(key).or_default();
        entry.add_counts(counts);
        for (reason, n) in admitted {
            entry.fail(reason, n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> WorkloadIdentity {
        WorkloadIdentity::new(Some(Arc::from(format!("{n:064x}"))), None, None, None)
    }

    fn key(remote: &str) -> ConnKey {
        ConnKey {
            direction: Direction::Outbound,
            remote: Arc::from(remote),
        }
    }

    #[test]
    fn counts_add_up_and_the_cap_refuses_new_label_sets() {
        let registry = WorkloadRegistry::new(4);
        let mut g = registry.lock();
        let procs = ProcCounts {
            execs: 2,
            ..Default::default()
        };
        g.add_procs(&id(1), &procs);
        g.add_procs(&id(1), &procs);
        let mut conn = ConnCounts {
            opened: 1,
            sent_bytes: 10,
            ..Default::default()
        };
        conn.fail("refused".into(), 1);
        g.add_conn(&id(1), key("unknown"), &conn);
        g.add_conn(&id(1), key("unknown"), &conn);
        let w = g.workloads().get(&id(1)).expect("workload 1");
        assert_eq!(w.procs.execs, 4);
        let c = &w.conns[&key("unknown")];
        assert_eq!((c.opened, c.sent_bytes), (2, 20));
        assert_eq!(c.failed, vec![("refused".into(), 2)]);
        drop(g);
        assert_eq!(registry.series(), 3);
        assert_eq!(registry.refused(), 0);

        let mut g = registry.lock();
        g.add_procs(&id(2), &procs); // the 4th label set fits
        g.add_procs(&id(3), &procs); // refused
        g.add_conn(&id(2), key("db"), &conn); // refused (key), reason never reached
        g.add_procs(&id(1), &procs); // existing: still counted
        assert!(!g.workloads().contains_key(&id(3)));
        assert_eq!(
            g.workloads().get(&id(1)).expect("workload 1").procs.execs,
            6
        );
        drop(g);
        assert_eq!(registry.series(), 4);
        assert_eq!(registry.refused(), 2);
    }

    #[test]
    fn idle_workloads_make_room_when_full() {
        let registry =
            WorkloadRegistry::with_eviction(2, Duration::from_millis(50), Duration::from_millis(0));
        let procs = ProcCounts {
            execs: 1,
            ..Default::default()
        };
        registry.lock().add_procs(&id(1), &procs);
        std::thread::sleep(Duration::from_millis(80));
        let mut g = registry.lock();
        g.add_procs(&id(2), &procs); // fits without eviction
        g.add_procs(&id(3), &procs); // full: id(1) is idle and goes
        assert!(!g.workloads().contains_key(&id(1)));
        assert!(g.workloads().contains_key(&id(2)) && g.workloads().contains_key(&id(3)));
        g.add_procs(&id(4), &procs); // full, nothing idle: refused
        drop(g);
        assert_eq!((registry.evicted(), registry.refused()), (1, 1));
        assert_eq!(registry.series(), 2);
    }

    #[test]
    fn try_lock_does_not_wait_for_a_scrape() {
        let registry = WorkloadRegistry::new(10);
        let scrape = registry.lock();
        assert!(registry.try_lock().is_none());
        drop(scrape);
        assert!(registry.try_lock().is_some());
    }
}
