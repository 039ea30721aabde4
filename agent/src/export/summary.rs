//! `sonde run --summary`: a live table, one row per container or host service, refreshed every
//! second — processes running, connections open, connections opened and failed, bytes in and
//! out (counted when connections close), last activity.

use std::{
    collections::HashMap,
    io::Write as _,
    time::{Duration, Instant, SystemTime},
};

use crate::{
    enrich::Attribution,
    event::{ConnPhase, Event},
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

#[derive(Clone, Debug, Default)]
struct Row {
    pod: Option<String>,
    conns_open: u64,
    conns_opened: u64,
    conns_failed: u64,
    execs: u64,
    bytes_in: u64,
    bytes_out: u64,
    last_activity: Option<SystemTime>,
}

#[derive(Default)]
pub struct Summary {
    rows: HashMap<String, Row>,
    last_render: Option<Instant>,
}

impl Summary {
    fn row(&mut self, attr: &Attribution) -> &mut Row {
        let cgroup = attr.cgroup.as_deref();
        let row = self.rows.entry(workload_label(cgroup)).or_default();
        // The pod's name once the metadata knows it (it may arrive late), else its uid.
        if let Some(p) = &attr.pod {
            if row.pod.as_deref().is_none_or(|known| !known.contains('/')) {
                row.pod = Some(format!("{}/{}", p.pod.namespace, p.pod.name));
            }
        } else if row.pod.is_none() {
            row.pod = cgroup.and_then(|c| c.identity.pod_uid.clone());
        }
        row.last_activity = Some(SystemTime::now());
        row
    }

    /// Counts an attributed event.
    pub fn record(&mut self, ev: &Event, attr: &Attribution) {
        match ev {
            Event::Exec(_) => self.row(attr).execs += 1,
            Event::Conn(c) => {
                let row = self.row(attr);
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
    pub fn found_conn(&mut self, attr: &Attribution) {
        self.row(attr).conns_open += 1;
    }

    /// Draws the table into `out` when a refresh is due; `clear` redraws in place (terminal).
    pub fn render_due(&mut self, node: &NodeModel, out: &mut Vec<u8>, clear: bool) {
        if self.last_render.is_some_and(|t| t.elapsed() < REFRESH) {
            return;
        }
        self.last_render = Some(Instant::now());
        let mut procs: HashMap<String, u64> = HashMap::new();
        for p in node.processes.iter().filter(|p| p.exited_at.is_none()) {
            let label = workload_label(node.cgroups.get(p.cgroup_id).map(|c| c.as_ref()));
            *procs.entry(label).or_default() += 1;
        }
        let mut labels: Vec<&String> = self.rows.keys().chain(procs.keys()).collect();
        labels.sort();
        labels.dedup();
        if clear {
            out.extend_from_slice(b"\x1b[H\x1b[2J");
        }
        let _ = writeln!(
            out,
            "{} — {} workloads",
            humantime::format_rfc3339_seconds(SystemTime::now()),
            labels.len()
        );
        let _ = writeln!(
            out,
            "{:<40} {:<36} {:>6} {:>6} {:>8} {:>6} {:>6} {:>10} {:>10} {:>9}",
            "WORKLOAD", "POD", "PROCS", "CONNS", "OPENED", "FAILED", "EXECS", "IN", "OUT", "LAST"
        );
        let empty = Row::default();
        for label in labels {
            let row = self.rows.get(label).unwrap_or(&empty);
            let last = row.last_activity.map_or("-".into(), |t| {
                let ago = SystemTime::now().duration_since(t).unwrap_or_default();
                format!("{}s ago", ago.as_secs())
            });
            let _ = writeln!(
                out,
                "{:<40} {:<36} {:>6} {:>6} {:>8} {:>6} {:>6} {:>10} {:>10} {:>9}",
                truncate(label, 40),
                row.pod.as_deref().unwrap_or("-"),
                procs.get(label).copied().unwrap_or(0),
                row.conns_open,
                row.conns_opened,
                row.conns_failed,
                row.execs,
                human_bytes(row.bytes_in),
                human_bytes(row.bytes_out),
                last
            );
        }
        out.push(b'\n');
    }
}

fn truncate(s: &str, n: usize) -> &str {
    if s.len() <= n {
        return s;
    }
    let mut cut = n;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

fn human_bytes(n: u64) -> String {
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

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_bytes(512), "512B");
        assert_eq!(human_bytes(1536), "1.5KiB");
        assert_eq!(human_bytes(5 << 30), "5.0GiB");
        assert_eq!(truncate("abcdef", 3), "abc");
        assert_eq!(truncate("ab", 3), "ab");
    }
}
