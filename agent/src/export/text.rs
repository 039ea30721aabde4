//! Readable lines for a terminal, one per event:
//!
//! ```text
//! 12:00:01.123456 EXEC    pid=4242 ppid=1 uid=0 comm=curl  /usr/bin/curl -s http://x
//! 12:00:01.130007 CONNECT pid=4242 comm=curl  10.0.0.5:41562 -> 10.0.0.9:80  latency=0.21ms
//! 12:00:01.180551 CLOSE   pid=4242 comm=curl  10.0.0.5:41562 -> 10.0.0.9:80  sent=78B recv=612B rtt=0.05ms retrans=0 after 50.5ms
//! ```

use std::{io::Write as _, time::Duration};

use super::Context;
use crate::event::{self, ConnPhase, Event, ExitStatus};

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// Appends `ev` as one readable line to `out`.
pub fn write_event(out: &mut Vec<u8>, ev: &Event, ctx: &Context) {
    let wall = ctx.clock.wall(ev.ts_ns());
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
    let _ = match ev {
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
            writeln!(out)
        }
        Event::Fork(r) => writeln!(
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
            writeln!(
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
            writeln!(out)
        }
    };
}
