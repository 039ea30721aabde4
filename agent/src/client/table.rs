//! The `sonde status` table: a health header, then one row per container / host service,
//! columns sized to their content like `kubectl get`.

use std::{io::Write as _, time::SystemTime};

use crate::export::{
    status::{SourceState, Status, WorkloadStatus},
    summary::human_bytes,
};

const COLUMNS: [&str; 9] = [
    "NAME",
    "NAMESPACE",
    "RUNTIME",
    "CONTAINER",
    "PROCS",
    "CONNS",
    "BYTES IN",
    "BYTES OUT",
    "LAST ACTIVITY",
];
/// Columns aligned right (numbers).
const RIGHT: [bool; 9] = [false, false, false, false, true, true, true, true, false];

fn parse_time(t: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(t.trim_end_matches('Z')).ok()
}

/// "3s ago", "5m ago", "2h ago", "4d ago", relative to the snapshot's own time.
fn ago(last: Option<&str>, now: Option<SystemTime>) -> String {
    let (Some(last), Some(now)) = (last.and_then(parse_time), now) else {
        return "-".into();
    };
    let s = now.duration_since(last).unwrap_or_default().as_secs();
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

fn uptime(seconds: f64) -> String {
    let s = seconds as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

fn source(s: &Option<SourceState>) -> String {
    match s {
        None => "not configured".into(),
        Some(s) => {
            let mut text = s.state.clone();
            if let Some(pods) = s.pods {
                text.push_str(&format!(" ({pods} pods)"));
            }
            if let Some(err) = &s.error {
                text.push_str(&format!(": {err}"));
            }
            text
        }
    }
}

/// NAME: `pod/container` when the pod is known, else the agent's label (unit, runtime:id…).
fn name(w: &WorkloadStatus) -> String {
    match (&w.pod_name, &w.container_name) {
        (Some(pod), Some(ctr)) => format!("{pod}/{ctr}"),
        (Some(pod), None) => pod.clone(),
        _ => w.name.clone(),
    }
}

fn row(w: &WorkloadStatus, now: Option<SystemTime>) -> [String; 9] {
    let dash = || "-".to_string();
    [
        name(w),
        w.namespace.clone().unwrap_or_else(dash),
        w.runtime.clone().unwrap_or_else(dash),
        w.container_id
            .as_deref()
            .map_or_else(dash, |id| id.chars().take(12).collect()),
        w.processes.to_string(),
        w.connections_open.to_string(),
        human_bytes(w.bytes_in),
        human_bytes(w.bytes_out),
        ago(w.last_activity.as_deref(), now),
    ]
}

/// Appends the header block and the table to `out`.
pub fn render(status: &Status, out: &mut Vec<u8>) {
    let a = &status.agent;
    let now = parse_time(&a.generated_at);
    let _ = writeln!(
        out,
        "Sonde {} — up {}, probes {} attached, {} failed",
        a.version,
        uptime(a.uptime_seconds),
        a.probes.attached,
        a.probes.failed
    );
    for p in a.probes.list.iter().filter(|p| p.reason.is_some()) {
        let _ = writeln!(
            out,
            "  probe {} {}: {}",
            p.program,
            p.state,
            p.reason.as_deref().unwrap_or("")
        );
    }
    let events: u64 = a.events.values().sum();
    let _ = writeln!(
        out,
        "Events {events}, lost {} (kernel {}, decode {}, output {}), stream subscribers {}/{} ({} dropped)",
        a.lost.total,
        a.lost.kernel,
        a.lost.decode_errors,
        a.lost.output_dropped,
        a.stream.subscribers,
        a.stream.max_subscribers,
        a.lost.events_subscribers_dropped
    );
    let _ = writeln!(
        out,
        "Tables: processes {} ({} evicted), cgroups {} ({} evicted), workloads {} ({} evicted)",
        a.tables.processes.entries,
        a.tables.processes.evicted,
        a.tables.cgroups.entries,
        a.tables.cgroups.evicted,
        a.tables.workloads.entries,
        a.tables.workloads.evicted
    );
    let _ = writeln!(
        out,
        "Metadata: kubelet {}, apiserver {}",
        source(&a.metadata.kubelet),
        source(&a.metadata.apiserver)
    );
    if let Some(l) = &a.leader {
        let role = if l.leader { "leader" } else { "stand-by" };
        let holder = l.holder.as_deref().unwrap_or("none");
        let _ = write!(
            out,
            "Cluster: {role} ({}, Lease {} held by {holder}, {} transitions)",
            l.identity, l.lease, l.transitions
        );
        if let Some(err) = &l.error {
            let _ = write!(out, ", error: {err}");
        }
        out.push(b'\n');
    }
    if let Some(c) = &a.controlplane {
        let mut parts: Vec<String> = c
            .apiserver
            .iter()
            .map(|e| {
                let failing: Vec<&str> = e
                    .checks
                    .iter()
                    .filter(|s| !s.up)
                    .map(|s| s.name.as_str())
                    .collect();
                match (e.up, &e.error) {
                    (true, _) => format!("{} ok", e.endpoint),
                    (false, _) if !failing.is_empty() => {
                        format!("{} failing {}", e.endpoint, failing.join(", "))
                    }
                    (false, Some(err)) => format!("{} down ({err})", e.endpoint),
                    (false, None) => format!("{} down", e.endpoint),
                }
            })
            .collect();
        for comp in c.componentstatuses.iter().chain(&c.components) {
            parts.push(match (&comp.error, comp.up) {
                (_, true) => format!("{} up ({:.0} ms)", comp.component, comp.latency_ms),
                (Some(err), false) => format!("{} down ({err})", comp.component),
                (None, false) => format!("{} not checked yet", comp.component),
            });
        }
        if !parts.is_empty() {
            let _ = writeln!(out, "Control plane: {}", parts.join(", "));
        }
    }
    if let Some(k) = &a.kube_events {
        let state = if k.collecting {
            "collecting"
        } else {
            "standing by"
        };
        let _ = write!(
            out,
            "Kubernetes events: {state}, {} emitted ({} repeats), {} unchanged, {} filtered, \
             token {} ({} writes)",
            k.emitted,
            k.repeats,
            k.unchanged,
            k.filtered,
            k.token.as_deref().unwrap_or("none"),
            k.token_writes
        );
        if let Some(err) = &k.error {
            let _ = write!(out, ", error: {err}");
        }
        out.push(b'\n');
    }
    out.push(b'\n');

    let rows: Vec<[String; 9]> = status.workloads.iter().map(|w| row(w, now)).collect();
    let mut widths = COLUMNS.map(|c| c.chars().count());
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut line = |cells: &[String; 9]| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let last = i + 1 == cells.len();
            let pad = widths[i].saturating_sub(cell.chars().count());
            if RIGHT[i] {
                text.push_str(&" ".repeat(pad));
                text.push_str(cell);
            } else {
                text.push_str(cell);
                if !last {
                    text.push_str(&" ".repeat(pad));
                }
            }
            if !last {
                text.push_str("   ");
            }
        }
        let _ = writeln!(out, "{}", text.trim_end());
    };
    line(&COLUMNS.map(String::from));
    for r in &rows {
        line(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::status::WorkloadStatus;

    #[test]
    fn the_table_has_a_header_block_and_aligned_rows() {
        let mut status = Status::default();
        status.agent.version = "0.1.0".into();
        status.agent.uptime_seconds = 3725.0;
        status.agent.generated_at = "2026-11-28T10:00:10.000Z".into();
        status.workloads = vec![
            WorkloadStatus {
                name: "docker:0123456789ab".into(),
                runtime: Some("docker".into()),
                container_id: Some("0123456789abcdef".into()),
                processes: 3,
                connections_open: 2,
                bytes_in: 2048,
                bytes_out: 10,
                last_activity: Some("2026-11-28T10:00:07.000Z".into()),
                ..WorkloadStatus::default()
            },
            WorkloadStatus {
                name: "nginx.service".into(),
                pod_name: Some("web-0".into()),
                container_name: Some("web".into()),
                namespace: Some("shop".into()),
                ..WorkloadStatus::default()
            },
        ];
        let mut out = Vec::new();
        render(&status, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("Sonde 0.1.0 — up 1h02m"), "{text}");
        assert!(text.contains("Metadata: kubelet not configured"), "{text}");
        let lines: Vec<&str> = text.lines().collect();
        let header = lines.iter().position(|l| l.starts_with("NAME")).unwrap();
        let ctr = lines[header + 1];
        assert!(ctr.starts_with("docker:0123456789ab"), "{ctr}");
        assert!(
            ctr.contains(" 0123456789ab ") && ctr.ends_with("3s ago"),
            "{ctr}"
        );
        assert!(ctr.contains("2.0KiB") && ctr.contains("10B"), "{ctr}");
        assert!(
            lines[header + 2].starts_with("web-0/web"),
            "{}",
            lines[header + 2]
        );
        assert!(lines[header + 2].contains("shop"));
        // Columns line up: CONTAINER starts at the same offset on every row.
        let col = lines[header].find("CONTAINER").unwrap();
        assert_eq!(&ctr[col..col + 12], "0123456789ab");
    }
}
