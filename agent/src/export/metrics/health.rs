//! The agent's own health for /metrics: events by type, losses, probes, table sizes, the
//! kubelet source's sync state, and the process's CPU time and memory.
//!
//! The pipeline publishes a [`HealthSnapshot`] about once a second (a lock and a small copy);
//! the kubelet state and /proc/self are read at scrape time.

use std::{
    collections::BTreeMap,
    sync::{Mutex, MutexGuard},
};

use sonde_common::counter;
use tokio::sync::watch;

use crate::{
    capture::{CounterValues, ProbeState, ProbeStatus},
    kube::KubeletSyncState,
};

/// Event types always exposed (at 0 until seen), so every documented series exists.
pub const EVENT_TYPES: [&str; 7] = [
    "process_exec",
    "process_fork",
    "process_exit",
    "tcp_open",
    "tcp_close",
    "tcp_fail",
    "process_found",
];

/// A kernel counter with its name and whether it counts lost records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelCounter {
    pub name: &'static str,
    pub loss: bool,
    pub value: u64,
}

#[derive(Clone, Debug, Default)]
pub struct HealthSnapshot {
    pub events: BTreeMap<&'static str, u64>,
    pub decode_errors: u64,
    pub output_dropped: u64,
    /// Every named kernel counter, zero or not.
    pub kernel: Vec<KernelCounter>,
    /// `(program, state, hooks)`: how many of the program's hooks are `attached`, `disabled`,
    /// `unavailable` or `failed` (a program may have several hooks, e.g. accept and accept4).
    pub probes: Vec<(&'static str, &'static str, u32)>,
    pub ring_buffer_bytes: u64,
    /// The most ring buffer bytes drained in one wake-up: its peak occupancy at a drain.
    pub ring_buffer_peak_used_bytes: u64,
    pub processes_known: usize,
    pub processes_evicted: u64,
    pub cgroups_known: usize,
    pub cgroups_evicted: u64,
    /// Metric publishes postponed because a scrape held the registry.
    pub publish_deferred: u64,
}

impl HealthSnapshot {
    pub fn set_kernel(&mut self, values: &CounterValues) {
        self.kernel.clear();
        for (i, name) in counter::NAMES.iter().enumerate() {
            if !name.is_empty() {
                self.kernel.push(KernelCounter {
                    name,
                    loss: counter::is_loss(i as u32),
                    value: values.0[i],
                });
            }
        }
    }

    pub fn set_probes(&mut self, probes: &[ProbeStatus]) {
        self.probes.clear();
        for p in probes {
            let state = match p.state {
                ProbeState::Attached => "attached",
                ProbeState::Disabled => "disabled",
                ProbeState::Unavailable(_) => "unavailable",
                ProbeState::Failed(_) => "failed",
            };
            match self
                .probes
                .iter_mut()
                .find(|(prog, st, _)| *prog == p.program && *st == state)
            {
                Some((_, _, n)) => *n += 1,
                None => self.probes.push((p.program, state, 1)),
            }
        }
    }
}

/// The health state shared between the pipeline (writer) and the scrape (reader).
#[derive(Debug, Default)]
pub struct Health {
    snapshot: Mutex<HealthSnapshot>,
    kubelet: Mutex<Option<watch::Receiver<KubeletSyncState>>>,
}

impl Health {
    pub fn publish(&self, snapshot: HealthSnapshot) {
        *self.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = snapshot;
    }

    pub fn snapshot(&self) -> MutexGuard<'_, HealthSnapshot> {
        self.snapshot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Follows a kubelet source's sync state (`KubeletHandle::subscribe`); without one, the
    /// `sonde_kubelet_*` families are absent.
    pub fn set_kubelet(&self, state: watch::Receiver<KubeletSyncState>) {
        *self.kubelet.lock().unwrap_or_else(|e| e.into_inner()) = Some(state);
    }

    pub fn kubelet(&self) -> Option<KubeletSyncState> {
        self.kubelet
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|rx| rx.borrow().clone())
    }
}

/// This process's CPU time and resident memory, from /proc/self.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SelfUsage {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
}

impl SelfUsage {
    /// `None` (and the families absent) if /proc/self cannot be read.
    pub fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        // SAFETY: sysconf has no preconditions.
        let (hz, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        parse_self(&stat, &statm, hz, page)
    }
}

fn parse_self(stat: &str, statm: &str, hz: i64, page: i64) -> Option<SelfUsage> {
    // Fields after the command name (which may contain spaces and parentheses): state is
    // field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let rss_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    if hz <= 0 || page <= 0 {
        return None;
    }
    Some(SelfUsage {
        cpu_seconds: (utime + stime) as f64 / hz as f64,
        resident_bytes: rss_pages * page as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_self() {
        let stat = "4242 (so) de) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 \
                    1000 10000000 500 18446744073709551615";
        let usage = parse_self(stat, "2000 500 100 1 0 300 0\n", 100, 4096).expect("parses");
        assert_eq!(usage.cpu_seconds, 3.0);
        assert_eq!(usage.resident_bytes, 500 * 4096);
        assert!(parse_self("garbage", "", 100, 4096).is_none());
        let real = SelfUsage::read().expect("this process's /proc/self");
        assert!(real.resident_bytes > 0);
    }

    #[test]
    fn every_named_kernel_counter_is_exposed() {
        let mut s = HealthSnapshot::default();
        s.set_kernel(&CounterValues::default());
        assert!(
            s.kernel
                .iter()
                .any(|k| k.name == "ringbuf_full_exec" && k.loss)
        );
        assert!(
            s.kernel
                .iter()
                .any(|k| k.name == "conn_map_full" && !k.loss)
        );
        assert_eq!(
            s.kernel.len(),
            counter::NAMES.iter().filter(|n| !n.is_empty()).count()
        );
    }
}
