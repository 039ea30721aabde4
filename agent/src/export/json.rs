//! NDJSON: one JSON object per event and line, with the stable field names documented in
//! docs/events.md. Written straight into the caller's buffer: no per-event allocation.

use std::io::Write as _;

use sonde_common::record::TaskIdentity;

use super::Context;
use crate::event::{self, ConnPhase, Event, ExitStatus};

/// Writes the fields of one JSON object; keys are static ASCII and never need escaping.
struct Obj<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Obj<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Self { out, first: true }
    }

    fn key(&mut self, key: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        write_str(self.out, value);
    }

    fn display(&mut self, key: &str, value: impl std::fmt::Display) {
        self.key(key);
        self.out.push(b'"');
        // Only used for values whose Display never needs escaping (addresses, timestamps).
        let _ = write!(self.out, "{value}");
        self.out.push(b'"');
    }

    fn u64(&mut self, key: &str, value: u64) {
        self.key(key);
        self.out
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    fn opt_u64(&mut self, key: &str, value: Option<u64>) {
        match value {
            Some(v) => self.u64(key, v),
            None => self.null(key),
        }
    }

    fn bool(&mut self, key: &str, value: bool) {
        self.key(key);
        self.out
            .extend_from_slice(if value { b"true" } else { b"false" });
    }

    fn null(&mut self, key: &str) {
        self.key(key);
        self.out.extend_from_slice(b"null");
    }

    fn str_array<'s>(&mut self, key: &str, items: impl Iterator<Item = std::borrow::Cow<'s, str>>) {
        self.key(key);
        self.out.push(b'[');
        for (i, item) in items.enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            write_str(self.out, &item);
        }
        self.out.push(b']');
    }

    fn end(self) {
        self.out.extend_from_slice(b"}\n");
    }
}

fn write_str(out: &mut Vec<u8>, value: &str) {
    // serde_json's escaping; writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

fn task_fields(o: &mut Obj<'_>, t: &TaskIdentity) {
    o.u64("pid", t.pid as u64);
    o.u64("tid", t.tid as u64);
    o.u64("start_time_ns", t.start_ns);
    o.u64("uid", t.uid as u64);
    o.str("comm", &event::comm(t));
}

/// Appends `ev` as one line of JSON to `out`.
pub fn write_event(out: &mut Vec<u8>, ev: &Event, ctx: &Context) {
    let mut o = Obj::new(out);
    o.str("type", ev.type_name());
    o.display(
        "time",
        humantime::format_rfc3339_nanos(ctx.clock.wall(ev.ts_ns())),
    );
    match ev {
        Event::Exec(r) => {
            task_fields(&mut o, &r.task);
            o.u64("ppid", r.ppid as u64);
            o.u64("parent_start_time_ns", r.parent_start_ns);
            o.u64("cgroup_id", r.task.cgroup_id);
            o.str("filename", &event::exec_filename(r));
            o.str_array("args", event::exec_args(r));
            o.bool("args_truncated", event::exec_args_truncated(r));
        }
        Event::Fork(r) => {
            o.u64("pid", r.child_pid as u64);
            o.u64("start_time_ns", r.child_start_ns);
            o.u64("ppid", r.parent.pid as u64);
            o.u64("parent_start_time_ns", r.parent.start_ns);
            o.u64("uid", r.parent.uid as u64);
            o.str("comm", &event::comm(&r.parent));
            o.u64("cgroup_id", r.child_cgroup_id);
        }
        Event::Exit(r) => {
            task_fields(&mut o, &r.task);
            o.u64("cgroup_id", r.task.cgroup_id);
            match event::exit_status(r) {
                ExitStatus::Code(code) => {
                    o.u64("exit_code", code as u64);
                    o.null("signal");
                    o.bool("core_dumped", false);
                }
                ExitStatus::Signal {
                    signal,
                    core_dumped,
                } => {
                    o.null("exit_code");
                    o.u64("signal", signal as u64);
                    o.bool("core_dumped", core_dumped);
                }
            }
            o.u64("lifetime_ns", event::exit_lifetime_ns(r));
        }
        Event::Conn(c) => {
            let r = &c.record;
            o.display("conn_id", format_args!("{:016x}", ctx.conn_id(r)));
            o.str("direction", c.direction_name());
            o.str("family", c.family_name());
            o.display("local_addr", c.local_addr());
            o.u64("local_port", r.sport as u64);
            o.display("remote_addr", c.remote_addr());
            o.u64("remote_port", r.dport as u64);
            match c.owner() {
                Some(owner) => task_fields(&mut o, owner),
                None => {
                    for key in ["pid", "tid", "start_time_ns", "uid", "comm"] {
                        o.null(key);
                    }
                }
            }
            o.u64("cgroup_id", c.cgroup_id());
            o.bool("seen_open", c.seen_open());
            if let Some(accepted) = c.accepted() {
                o.bool("accepted", accepted);
            }
            o.opt_u64("connect_latency_ns", c.connect_latency_ns());
            if c.phase != ConnPhase::Open {
                o.opt_u64("duration_ns", c.duration_ns());
            }
            if c.phase == ConnPhase::Close {
                o.u64("bytes_sent", r.bytes_sent);
                o.u64("bytes_received", r.bytes_received);
                o.u64("retransmits", r.retransmits as u64);
                o.u64("srtt_us", r.srtt_us as u64);
            }
            match c.error_name() {
                Some(e) => o.str("error", &e),
                None => o.null("error"),
            }
        }
    }
    o.end();
}
