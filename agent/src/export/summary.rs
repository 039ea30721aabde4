//! `sonde run --summary`: a live table, one row per container or host service, refreshed every
//! second — processes running, connections open, connections opened and failed, bytes in and
//! out (counted when connections close), last activity.

use std::{
    cell::Cell,
    collections::HashMap,
    io::Write as _,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use crate::{
    aging::{AgingMap, Now},
    enrich::Attribution,
    event::{ConnPhase, Event},
    kube::{ContainerRef, PodStore},
    node::{NodeModel, cgroup::CgroupInfo},
};

/// How often the table is drawn.
pub const REFRESH: Duration = Duration::from_secs(1);

/// The row an event belongs to: a container, a host service, or a bare cgroup path.
pub fn workload_label(cgroup: Option<&CgroupInfo>) -> String {
    let Some(cg) = cgroup else {
        return "(unknown cgroup)".into();
    };
    let id = &cg.identity;
    match (&id.container_id, &id.systemd_unit) {
        (Some(ctr), _) => {
            let runtime = id.runtime.map_or("container", |r| r.as_str());
            format!("{runtime}:{}", &ctr[..ctr.len().min(12)])
        }
        (None, Some(unit)) => unit.clone(),
        (None, None) if cg.path.as_ref() == "/" => "(host root cgroup)".into(),
        (None, None) => cg.path.to_string(),
    }
}

/// Removed cgroups' rows with no open connection are forgotten after this long idle.
const IDLE_EVICT: Duration = Duration::from_secs(300);
/// At most this many rows (cgroups); beyond it the oldest go first.
const MAX_ROWS: usize = 20_000;

/// The table's time: the drain's, set once per drain ([`Summary::set_now`]) instead of read per
/// event; as an `Instant` for the aging map, derived from the wall time the drain stamps.
#[derive(Debug)]
struct DrainNow {
    base: (Instant, SystemTime),
    now: Cell<Instant>,
}

impl Default for DrainNow {
    fn default() -> Self {
        let base = (Instant::now(), SystemTime::now());
        Self {
            base,
            now: Cell::new(base.0),
        }
    }
}

impl DrainNow {
    fn set(&self, wall: SystemTime) {
        let since = wall.duration_since(self.base.1).unwrap_or_default();
        self.now.set(self.base.0 + since);
    }
}

impl Now for DrainNow {
    fn now(&self) -> Instant {
        self.now.get()
    }
}

/// Counters of one cgroup.
#[derive(Clone, Debug, Default)]
struct Row {
    cgroup: Option<Arc<CgroupInfo>>,
    conns_open: u64,
    conns_opened: u64,
    conns_failed: u64,
    execs: u64,
    bytes_in: u64,
    bytes_out: u64,
    last_activity: Option<SystemTime>,
}

/// One workload (container, host service or bare cgroup): its cgroups' counters added up.
#[derive(Clone, Debug, Default)]
pub struct Workload {
    pub label: String,
    /// One of the workload's cgroups (they share the identity that names the workload).
    pub cgroup: Option<Arc<CgroupInfo>>,
    /// The pod and container, when the Kubernetes metadata knows the container (looked up
    /// when the table is read, so a pod that became known late is named).
    pub pod: Option<ContainerRef>,
    /// Processes alive now, from the process table.
    pub processes: u64,
    pub conns_open: u64,
    pub conns_opened: u64,
    pub conns_failed: u64,
    pub execs: u64,
    /// Bytes received and sent over connections that closed (counted at close).
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub last_activity: Option<SystemTime>,
}

/// The per-workload table behind `sonde run --summary` and the status API. Rows are kept per
/// cgroup id (a hash-map hit per event, no allocation) and added up by workload when read.
pub struct Summary {
    /// Rows by cgroup id; bounded to [`MAX_ROWS`], idle ones forgotten by [`Summary::expire`].
    rows: AgingMap<u64, Row, DrainNow>,
    /// Names containers' pods when the table is read.
    pods: Option<Arc<PodStore>>,
    last_render: Option<Instant>,
    /// The time stamped on activity: set once per drain, not read per event.
    now: SystemTime,
}

impl Default for Summary {
    fn default() -> Self {
        Self {
            rows: AgingMap::with_clock(MAX_ROWS, Duration::ZERO, DrainNow::default()),
            pods: None,
            last_render: None,
            now: SystemTime::now(),
        }
    }
}

impl Summary {
    /// A table whose containers are named from `pods` when read.
    pub fn with_pods(pods: Arc<PodStore>) -> Self {
        Self {
            pods: Some(pods),
            ..Self::default()
        }
    }

    fn row(&mut self, cgroup: Option<&Arc<CgroupInfo>>) -> &mut Row {
        let id = cgroup.map_or(0, |c| c.id);
        let row = self.rows.get_or_insert_with(&id, Row::default, |_, _| {});
        if row.cgroup.is_none() {
            row.cgroup = cgroup.cloned();
        }
        row.last_activity = Some(self.now);
        row
    }

    /// Sets the time stamped on the activity that follows (call once per drain).
    pub fn set_now(&mut self, now: SystemTime) {
        self.now = now;
        self.rows.clock().set(now);
    }

    /// Rows (cgroups) tracked.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Counts an attributed event.
    pub fn record(&mut self, ev: &Event, attr: &Attribution) {
        let cgroup = attr.cgroup.as_ref();
        match ev {
            Event::Exec(_) => self.row(cgroup).execs += 1,
            Event::Conn(c) => {
                let row = self.row(cgroup);
                match c.phase {
                    ConnPhase::Open => {
                        row.conns_open += 1;
                        row.conns_opened += 1;
                    }
                    ConnPhase::Close => {
                        row.conns_open = row.conns_open.saturating_sub(1);
                        row.bytes_out += c.record.bytes_sent;
                        row.bytes_in += c.record.bytes_received;
                    }
                    ConnPhase::Fail => row.conns_failed += 1,
                }
            }
            _ => {}
        }
    }

    /// A connection open at start-up.
    pub fn found_conn(&mut self, cgroup: Option<&Arc<CgroupInfo>>) {
        self.row(cgroup).conns_open += 1;
    }

    /// Forgets rows of removed cgroups idle for [`IDLE_EVICT`] with nothing open (the bound,
    /// [`MAX_ROWS`], is kept on insert: the oldest row goes first).
    pub fn expire(&mut self, node: &NodeModel) {
        self.rows.evict_idle(
            IDLE_EVICT,
            |&id, row| id != 0 && row.conns_open == 0 && node.cgroups.get(id).is_none(),
            |_, _| {},
        );
    }

    /// Rows forgotten (idle removed cgroups, or over the bound).
    pub fn evicted(&self) -> u64 {
        self.rows.evicted()
    }

    /// The table by workload, sorted by label: counters of its cgroups added up, and processes
    /// alive now from the node model.
    pub fn workloads(&self, node: &NodeModel) -> Vec<Workload> {
        let mut out: HashMap<String, Workload> = HashMap::new();
        for row in self.rows.values() {
            let label = workload_label(row.cgroup.as_deref());
            let w = out.entry(label).or_default();
            if w.cgroup.is_none() {
                w.cgroup = row.cgroup.clone();
            }
            w.conns_open += row.conns_open;
            w.conns_opened += row.conns_opened;
            w.conns_failed += row.conns_failed;
            w.execs += row.execs;
            w.bytes_in += row.bytes_in;
            w.bytes_out += row.bytes_out;
            w.last_activity = w.last_activity.max(row.last_activity);
        }
        for p in node.processes.iter().filter(|p| p.exited_at.is_none()) {
            let cgroup = node.cgroups.get(p.cgroup_id);
            let w = out
                .entry(workload_label(cgroup.map(|c| c.as_ref())))
                .or_default();
            if w.cgroup.is_none() {
                w.cgroup = cgroup.cloned();
            }
            w.processes += 1;
        }
        let mut list: Vec<Workload> = out
            .into_iter()
            .map(|(label, mut w)| {
                w.label = label;
                w.pod = self.pods.as_ref().and_then(|pods| {
                    let id = w.cgroup.as_ref()?.identity.container_id.as_deref()?;
                    pods.lookup_container(id)
                });
                w
            })
            .collect();
        list.sort_by(|a, b| a.label.cmp(&b.label));
        list
    }

    /// Draws the table into `out` when a refresh is due; `clear` redraws in place (terminal).
    pub fn render_due(&mut self, node: &NodeModel, out: &mut Vec<u8>, clear: bool) {
        if self.last_render.is_some_and(|t| t.elapsed() < REFRESH) {
            return;
        }
        self.last_render = Some(Instant::now());
        let workloads = self.workloads(node);
        if clear {
            out.extend_from_slice(b"\x1b[H\x1b[2J");
        }
        let _ = writeln!(
            out,
            "{} — {} workloads",
            humantime::format_rfc3339_seconds(SystemTime::now()),
            workloads.len()
        );
        let _ = writeln!(
            out,
            "{:<40} {:<36} {:>6} {:>6} {:>8} {:>6} {:>6} {:>10} {:>10} {:>9}",
            "WORKLOAD", "POD", "PROCS", "CONNS", "OPENED", "FAILED", "EXECS", "IN", "OUT", "LAST"
        );
        for w in &workloads {
            let last = w.last_activity.map_or("-".into(), |t| {
                let ago = SystemTime::now().duration_since(t).unwrap_or_default();
                format!("{}s ago", ago.as_secs())
            });
            let pod = match &w.pod {
                Some(p) => Some(format!("{}/{}", p.pod.namespace, p.pod.name)),
                None => w.cgroup.as_ref().and_then(|c| c.identity.pod_uid.clone()),
            };
            let _ = writeln!(
                out,
                "{:<40} {:<36} {:>6} {:>6} {:>8} {:>6} {:>6} {:>10} {:>10} {:>9}",
                truncate(&w.label, 40),
                pod.as_deref().unwrap_or("-"),
                w.processes,
                w.conns_open,
                w.conns_opened,
                w.conns_failed,
                w.execs,
                human_bytes(w.bytes_in),
                human_bytes(w.bytes_out),
                last
            );
        }
        out.push(b'\n');
    }
}

pub fn truncate(s: &str, n: usize) -> &str {
    if s.len() <= n {
        return s;
    }
    let mut cut = n;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n}B")
    } else {
        format!("{v:.1}{}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::{
        event::ConnEvent,
        node::{NodeConfig, cgroup_path::CgroupIdentity},
    };
    use sonde_common::record::ConnRecord;

    fn cgroup(id: u64, ctr: &str) -> Arc<CgroupInfo> {
        Arc::new(CgroupInfo {
            id,
            path: format!("/system.slice/docker-{ctr}.scope").into(),
            identity: CgroupIdentity {
                container_id: Some(ctr.into()),
                ..CgroupIdentity::default()
            },
        })
    }

    #[test]
    fn rows_per_cgroup_add_up_per_workload_and_idle_removed_ones_expire() {
        let node = NodeModel::new(&NodeConfig::default()).expect("cgroup v2 on this machine");
        let mut summary = Summary::default();
        let t0 = SystemTime::now();
        summary.set_now(t0);
        // SAFETY: all-zero is a valid value of this plain-data record.
        let mut close: ConnRecord = unsafe { std::mem::zeroed() };
        close.bytes_sent = 100;
        close.bytes_received = 7;
        let ev = |phase| {
            Event::Conn(ConnEvent {
                phase,
                record: &close,
            })
        };
        // Two cgroups of one container (e.g. the runtime's and a nested one), one of another.
        let (a1, a2, b) = (
            cgroup(901, "aaaa"),
            cgroup(902, "aaaa"),
            cgroup(903, "bbbb"),
        );
        for cg in [&a1, &a2, &b] {
            let attr = Attribution {
                cgroup: Some(Arc::clone(cg)),
                ..Attribution::default()
            };
            summary.record(&ev(ConnPhase::Open), &attr);
            summary.record(&ev(ConnPhase::Close), &attr);
        }
        summary.found_conn(Some(&b));
        let list = summary.workloads(&node);
        let a = list
            .iter()
            .find(|w| w.label == "container:aaaa")
            .expect("a");
        assert_eq!((a.conns_opened, a.conns_open), (2, 0));
        assert_eq!((a.bytes_in, a.bytes_out), (14, 200));
        let bw = list
            .iter()
            .find(|w| w.label == "container:bbbb")
            .expect("b");
        assert_eq!(bw.conns_open, 1);
        assert_eq!(summary.len(), 3);

        // Ten minutes on: the cgroups are unknown to the node model (removed); a's rows are
        // idle with nothing open and go, b keeps its open connection.
        summary.set_now(t0 + Duration::from_secs(600));
        summary.expire(&node);
        assert_eq!(summary.len(), 1);
        assert_eq!(summary.evicted(), 2);
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_bytes(512), "512B");
        assert_eq!(human_bytes(1536), "1.5KiB");
        assert_eq!(human_bytes(5 << 30), "5.0GiB");
        assert_eq!(truncate("abcdef", 3), "abc");
        assert_eq!(truncate("ab", 3), "ab");
    }
}
