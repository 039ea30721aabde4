//! Readable lines for a terminal, one per event:
//!
//! ```text
//! 12:00:01.123456 EXEC    pid=4242 ppid=1 uid=0 comm=curl  /usr/bin/curl -s http://x
//! 12:00:01.130007 CONNECT pid=4242 comm=curl  10.0.0.5:41562 -> 10.0.0.9:80  latency=0.21ms
//! 12:00:01.180551 CLOSE   pid=4242 comm=curl  10.0.0.5:41562 -> 10.0.0.9:80  sent=78B recv=612B rtt=0.05ms retrans=0 after 50.5ms
//! ```

use std::{
    io::Write as _,
    time::{Duration, SystemTime},
};

use super::Context;
use crate::{
    cluster::events::KubeEvent,
    enrich::Attribution,
    event::{self, ConnPhase, Event, ExitStatus},
    node::{FoundConn, process::ProcessInfo},
};

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// ` [ns/pod/container]`, ` [containerd:1a2b3c4d5e6f pod=<uid>]` or ` [kubelet.service]`: where
/// the event came from.
fn write_attribution(out: &mut Vec<u8>, attr: &Attribution) {
    let Some(cg) = attr.cgroup.as_deref() else {
        return;
    };
    let id = &cg.identity;
    let _ = match (&id.container_id, &id.systemd_unit) {
        (Some(_), _) if let Some(p) = &attr.pod => write!(
            out,
            " [{}/{}/{}]",
            p.pod.namespace,
            p.pod.name,
            p.container().name
        ),
        (Some(ctr), _) => {
            let short = &ctr[..ctr.len().min(12)];
            let runtime = id.runtime.map_or("container", |r| r.as_str());
            match &id.pod_uid {
                Some(pod) => write!(out, " [{runtime}:{short} pod={pod}]"),
                None => write!(out, " [{runtime}:{short}]"),
            }
        }
        (None, Some(unit)) => write!(out, " [{unit}]"),
        (None, None) if cg.path.as_ref() != "/" => write!(out, " [{}]", cg.path),
        (None, None) => Ok(()),
    };
}

/// `HH:MM:SS.micros ` (UTC).
fn write_time(out: &mut Vec<u8>, wall: SystemTime) {
    let since_midnight = wall
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_micros()
        % (86_400 * 1_000_000);
    let (h, m, s, us) = (
        since_midnight / 3_600_000_000,
        since_midnight / 60_000_000 % 60,
        since_midnight / 1_000_000 % 60,
        since_midnight % 1_000_000,
    );
    let _ = write!(out, "{h:02}:{m:02}:{s:02}.{us:06} ");
}

/// Appends `ev` as one readable line to `out` (nothing for cgroup records).
pub fn write_event(out: &mut Vec<u8>, ev: &Event, attr: &Attribution, ctx: &Context) {
    if matches!(ev, Event::Cgroup { .. }) {
        return;
    }
    write_time(out, ctx.clock.wall(ev.ts_ns()));
    let _ = match ev {
        Event::Cgroup { .. } => Ok(()),
        Event::Exec(r) => {
            let _ = write!(
                out,
                "EXEC    pid={} ppid={} uid={} comm={} ",
                r.task.pid,
                r.ppid,
                r.task.uid,
                event::comm(&r.task)
            );
            let mut args = event::exec_args(r).peekable();
            if args.peek().is_none() {
                let _ = write!(out, " {}", event::exec_filename(r));
            }
            for arg in args {
                let _ = write!(out, " {arg}");
            }
            if event::exec_args_truncated(r) {
                let _ = write!(out, " …");
            }
            Ok(())
        }
        Event::Fork(r) => write!(
            out,
            "FORK    pid={} comm={} -> child pid={}",
            r.parent.pid,
            event::comm(&r.parent),
            r.child_pid
        ),
        Event::Exit(r) => {
            let status = match event::exit_status(r) {
                ExitStatus::Code(code) => format!("code={code}"),
                ExitStatus::Signal {
                    signal,
                    core_dumped,
                } => format!(
                    "signal={signal}{}",
                    if core_dumped { " (core dumped)" } else { "" }
                ),
            };
            write!(
                out,
                "EXIT    pid={} comm={} {status} after {:.2}ms",
                r.task.pid,
                event::comm(&r.task),
                ms(event::exit_lifetime_ns(r))
            )
        }
        Event::Conn(c) => {
            let label = match (c.phase, c.record.direction) {
                (ConnPhase::Open, sonde_common::record::direction::INBOUND) => "ACCEPT ",
                (ConnPhase::Open, _) => "CONNECT",
                (ConnPhase::Close, _) => "CLOSE  ",
                (ConnPhase::Fail, _) => "FAIL   ",
            };
            let _ = write!(out, "{label} ");
            let _ = match c.owner() {
                Some(o) => write!(out, "pid={} comm={} ", o.pid, event::comm(o)),
                None => write!(out, "pid=? cgroup={} ", c.cgroup_id()),
            };
            let _ = write!(
                out,
                " {}:{} {} {}:{} ",
                c.local_addr(),
                c.record.sport,
                if c.record.direction == sonde_common::record::direction::INBOUND {
                    "<-"
                } else {
                    "->"
                },
                c.remote_addr(),
                c.record.dport
            );
            if c.phase == ConnPhase::Close {
                let _ = write!(
                    out,
                    " sent={}B recv={}B rtt={:.2}ms retrans={}",
                    c.record.bytes_sent,
                    c.record.bytes_received,
                    c.record.srtt_us as f64 / 1e3,
                    c.record.retransmits
                );
            } else if let Some(lat) = c.connect_latency_ns() {
                let _ = write!(out, " latency={:.2}ms", ms(lat));
            }
            if let Some(err) = c.error_name() {
                let _ = write!(out, " error={err}");
            }
            if c.phase != ConnPhase::Open
                && let Some(d) = c.duration_ns()
            {
                let _ = write!(out, " after {:.2}ms", ms(d));
            }
            if !c.seen_open() {
                let _ = write!(out, " (opened before capture)");
            }
            Ok(())
        }
    };
    write_attribution(out, attr);
    out.push(b'\n');
}

/// A process running when Sonde started.
pub fn write_process_found(out: &mut Vec<u8>, p: &ProcessInfo, attr: &Attribution) {
    write_time(out, SystemTime::now());
    let _ = write!(
        out,
        "FOUND   pid={} ppid={} uid={} comm={}  {}",
        p.key.pid,
        p.parent.map_or(0, |k| k.pid),
        p.uid,
        p.comm,
        p.cmdline
    );
    write_attribution(out, attr);
    out.push(b'\n');
}

/// A connection open when Sonde started.
pub fn write_conn_found(out: &mut Vec<u8>, c: &FoundConn, attr: &Attribution) {
    write_time(out, SystemTime::now());
    let _ = match &c.owner {
        Some(p) => write!(out, "OPEN    pid={} comm={} ", p.key.pid, p.comm),
        None => write!(out, "OPEN    pid=? "),
    };
    let _ = write!(
        out,
        " {} {} {}  (open before capture)",
        c.local,
        match c.direction {
            "inbound" => "<-",
            "outbound" => "->",
            _ => "--",
        },
        c.remote
    );
    write_attribution(out, attr);
    out.push(b'\n');
}

/// A Kubernetes event: `KUBE    Warning BackOff Pod shop/web-1 (x7, kubelet): message`.
pub fn write_kube_event(out: &mut Vec<u8>, e: &KubeEvent) {
    write_time(out, SystemTime::now());
    let object = if e.involved_namespace.is_empty() {
        e.involved_name.clone()
    } else {
        format!("{}/{}", e.involved_namespace, e.involved_name)
    };
    let _ = write!(
        out,
        "KUBE    {} {} {} {} (x{}, {}): {}",
        e.event_type,
        e.reason,
        e.involved_kind,
        object,
        e.count,
        e.source_component,
        e.message.replace('\n', " ")
    );
    out.push(b'\n');
}
