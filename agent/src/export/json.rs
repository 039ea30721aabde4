//! NDJSON: one JSON object per event and line, with the stable field names documented in
//! docs/events.md. Written straight into the caller's buffer: no per-event allocation.

use std::{
    io::Write as _,
    net::{IpAddr, SocketAddr},
    time::{SystemTime, UNIX_EPOCH},
};

use sonde_common::record::TaskIdentity;

use super::Context;
use crate::{
    cluster::events::KubeEvent,
    enrich::Attribution,
    event::{self, ConnPhase, Event, ExitStatus},
    kube::Remote,
    node::{
        FoundConn,
        process::{self, ProcessInfo},
    },
};

/// RFC 3339 timestamps with nanoseconds, formatted once per second: the date and time of day
/// are cached, only the fraction is written per event.
#[derive(Default)]
pub struct TimeFormat {
    second: Option<u64>,
    prefix: String,
}

impl TimeFormat {
    fn write(&mut self, out: &mut Vec<u8>, t: SystemTime) {
        let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let second = since.as_secs();
        if self.second != Some(second) {
            self.prefix = humantime::format_rfc3339_seconds(UNIX_EPOCH + since)
                .to_string()
                .trim_end_matches('Z')
                .to_string();
            self.second = Some(second);
        }
        out.extend_from_slice(self.prefix.as_bytes());
        out.push(b'.');
        let mut digits = [b'0'; 9];
        let mut n = since.subsec_nanos();
        for d in digits.iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
        out.extend_from_slice(&digits);
        out.push(b'Z');
    }
}

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

    fn time(&mut self, key: &str, t: SystemTime, format: &mut TimeFormat) {
        self.key(key);
        self.out.push(b'"');
        format.write(self.out, t);
        self.out.push(b'"');
    }

    fn ip(&mut self, key: &str, addr: IpAddr) {
        self.key(key);
        self.out.push(b'"');
        match addr {
            IpAddr::V4(v4) => {
                let mut buf = itoa::Buffer::new();
                for (i, octet) in v4.octets().iter().enumerate() {
                    if i > 0 {
                        self.out.push(b'.');
                    }
                    self.out.extend_from_slice(buf.format(*octet).as_bytes());
                }
            }
            // IPv6 text never needs escaping.
            IpAddr::V6(v6) => {
                let _ = write!(self.out, "{v6}");
            }
        }
        self.out.push(b'"');
    }

    fn hex64(&mut self, key: &str, value: u64) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        self.key(key);
        self.out.push(b'"');
        for shift in (0..16).rev() {
            self.out.push(HEX[((value >> (shift * 4)) & 0xf) as usize]);
        }
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

/// Owner fields from the process table (processes found at start-up have no thread id).
fn process_fields(o: &mut Obj<'_>, p: &ProcessInfo) {
    o.u64("pid", p.key.pid as u64);
    o.null("tid");
    o.u64("start_time_ns", p.start_ns);
    o.u64("uid", p.uid as u64);
    o.str("comm", &p.comm);
}

fn no_owner(o: &mut Obj<'_>) {
    for key in ["pid", "tid", "start_time_ns", "uid", "comm"] {
        o.null(key);
    }
}

fn opt_str(o: &mut Obj<'_>, key: &str, value: Option<&str>) {
    match value {
        Some(v) => o.str(key, v),
        None => o.null(key),
    }
}

/// Where the event came from: cgroup path and what it names (container, pod, host service),
/// and the pod's metadata when known.
fn attribution_fields(o: &mut Obj<'_>, attr: &Attribution, pod_labels: &[String]) {
    let cgroup = attr.cgroup.as_deref();
    let id = cgroup.map(|c| &c.identity);
    opt_str(o, "cgroup_path", cgroup.map(|c| c.path.as_ref()));
    opt_str(
        o,
        "container_id",
        id.and_then(|i| i.container_id.as_deref()),
    );
    opt_str(o, "runtime", id.and_then(|i| i.runtime).map(|r| r.as_str()));
    opt_str(o, "pod_uid", id.and_then(|i| i.pod_uid.as_deref()));
    opt_str(o, "qos", id.and_then(|i| i.qos).map(|q| q.as_str()));
    opt_str(
        o,
        "systemd_unit",
        id.and_then(|i| i.systemd_unit.as_deref()),
    );
    opt_str(
        o,
        "systemd_slice",
        id.and_then(|i| i.systemd_slice.as_deref()),
    );
    let pod = attr.pod.as_ref();
    opt_str(o, "namespace", pod.map(|p| p.pod.namespace.as_str()));
    opt_str(o, "pod", pod.map(|p| p.pod.name.as_str()));
    opt_str(o, "container", pod.map(|p| p.container().name.as_str()));
    opt_str(o, "image", pod.map(|p| p.container().image.as_str()));
    let workload = attr.workload.as_deref();
    opt_str(o, "workload_kind", workload.map(|w| w.kind.as_str()));
    opt_str(o, "workload", workload.map(|w| w.name.as_str()));
    if let Some(p) = pod
        && !pod_labels.is_empty()
    {
        // Only the allow-listed keys the pod has.
        let pairs = pod_labels
            .iter()
            .filter_map(|key| Some((key.as_str(), p.pod.labels.get(key)?.as_str())));
        label_object(o, "pod_labels", pairs);
    }
    // The label index keeps only the allow-listed keys.
    for (name, labels) in [
        ("namespace_labels", &attr.namespace_labels),
        ("node_labels", &attr.node_labels),
    ] {
        if let Some(labels) = labels {
            label_object(
                o,
                name,
                labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            );
        }
    }
}

/// `"name":{"key":"value",…}`.
fn label_object<'v>(o: &mut Obj<'_>, name: &str, pairs: impl Iterator<Item = (&'v str, &'v str)>) {
    o.key(name);
    o.out.push(b'{');
    for (i, (key, value)) in pairs.enumerate() {
        if i > 0 {
            o.out.push(b',');
        }
        write_str(o.out, key);
        o.out.push(b':');
        write_str(o.out, value);
    }
    o.out.push(b'}');
}

/// Who is at the remote end of a connection (Kubernetes Services and endpoints).
fn remote_fields(o: &mut Obj<'_>, remote: Option<&Remote>) {
    let (kind, namespace, name, service) = match remote {
        None => (None, None, None, None),
        Some(Remote::External) => (Some("external"), None, None, None),
        Some(Remote::Service { namespace, name }) => {
            (Some("service"), Some(namespace), Some(name), Some(name))
        }
        Some(Remote::Pod {
            namespace,
            name,
            service,
        }) => (Some("pod"), Some(namespace), Some(name), service.as_ref()),
    };
    opt_str(o, "remote_kind", kind);
    opt_str(o, "remote_namespace", namespace.map(|n| n.as_ref()));
    opt_str(o, "remote_name", name.map(|n| n.as_ref()));
    opt_str(o, "remote_service", service.map(|n| n.as_ref()));
}

fn addr_fields(o: &mut Obj<'_>, local: SocketAddr, remote: SocketAddr) {
    o.str("family", if local.is_ipv4() { "ipv4" } else { "ipv6" });
    o.ip("local_addr", local.ip());
    o.u64("local_port", local.port() as u64);
    o.ip("remote_addr", remote.ip());
    o.u64("remote_port", remote.port() as u64);
}

/// Appends `ev`, attributed, as one line of JSON to `out`. Cgroup records are not events of the
/// stream and write nothing.
pub fn write_event(out: &mut Vec<u8>, ev: &Event, attr: &Attribution, ctx: &mut Context) {
    if matches!(ev, Event::Cgroup { .. }) {
        return;
    }
    let mut o = Obj::new(out);
    o.str("type", ev.type_name());
    let wall = ctx.clock.wall(ev.ts_ns());
    o.time("time", wall, &mut ctx.time_format);
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
            let found = attr.found.as_ref();
            o.hex64(
                "conn_id",
                found.map_or_else(|| ctx.conn_id(r), |f| f.conn_id),
            );
            o.str(
                "direction",
                attr.direction.unwrap_or_else(|| c.direction_name()),
            );
            addr_fields(&mut o, c.local(), c.remote());
            match (c.owner(), found.and_then(|f| f.owner.as_ref())) {
                (Some(owner), _) => task_fields(&mut o, owner),
                (None, Some(owner)) => process_fields(&mut o, owner),
                (None, None) => no_owner(&mut o),
            }
            o.u64(
                "cgroup_id",
                attr.cgroup.as_ref().map_or(c.cgroup_id(), |cg| cg.id),
            );
            o.bool("seen_open", c.seen_open());
            if found.is_some() {
                o.bool("found_at_start", true);
            }
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
            remote_fields(&mut o, attr.remote.as_deref());
        }
        Event::Cgroup { .. } => {}
    }
    attribution_fields(&mut o, attr, &ctx.pod_labels);
    o.end();
}

/// A process that was running when Sonde started (`process_found`).
pub fn write_process_found(
    out: &mut Vec<u8>,
    p: &ProcessInfo,
    attr: &Attribution,
    ctx: &mut Context,
) {
    let mut o = Obj::new(out);
    o.str("type", "process_found");
    o.time("time", SystemTime::now(), &mut ctx.time_format);
    process_fields(&mut o, p);
    o.opt_u64("ppid", p.parent.map(|k| k.pid as u64));
    let hz = process::ticks_per_second();
    o.opt_u64(
        "parent_start_time_ns",
        p.parent.map(|k| process::ticks_to_ns(k.start_ticks, hz)),
    );
    o.u64("cgroup_id", p.cgroup_id);
    o.str("cmdline", &p.cmdline);
    attribution_fields(&mut o, attr, &ctx.pod_labels);
    o.end();
}

/// A connection that was open when Sonde started (`tcp_open` with `found_at_start`).
pub fn write_conn_found(out: &mut Vec<u8>, c: &FoundConn, attr: &Attribution, ctx: &mut Context) {
    let mut o = Obj::new(out);
    o.str("type", "tcp_open");
    o.time("time", SystemTime::now(), &mut ctx.time_format);
    o.hex64("conn_id", c.conn_id);
    o.str("direction", c.direction);
    addr_fields(&mut o, c.local, c.remote);
    match &c.owner {
        Some(p) => process_fields(&mut o, p),
        None => no_owner(&mut o),
    }
    o.u64("cgroup_id", c.cgroup_id);
    o.bool("seen_open", false);
    o.bool("found_at_start", true);
    o.null("connect_latency_ns");
    o.null("error");
    remote_fields(&mut o, attr.remote.as_deref());
    attribution_fields(&mut o, attr, &ctx.pod_labels);
    o.end();
}

/// A Kubernetes event of the cluster (`kube_event`); empty fields are `null`.
pub fn write_kube_event(out: &mut Vec<u8>, e: &KubeEvent, ctx: &mut Context) {
    let mut o = Obj::new(out);
    o.str("type", crate::pipeline::sink::KUBE_EVENT);
    o.time("time", SystemTime::now(), &mut ctx.time_format);
    for (key, value) in [
        ("event_uid", &e.uid),
        ("event_namespace", &e.namespace),
        ("event_name", &e.name),
        ("event_type", &e.event_type),
        ("reason", &e.reason),
        ("message", &e.message),
    ] {
        opt_str(&mut o, key, Some(value.as_str()).filter(|v| !v.is_empty()));
    }
    o.bool("message_truncated", e.message_truncated);
    o.u64("count", u64::from(e.count));
    for (key, value) in [
        ("involved_kind", &e.involved_kind),
        ("involved_namespace", &e.involved_namespace),
        ("involved_name", &e.involved_name),
        ("involved_uid", &e.involved_uid),
        ("involved_field_path", &e.involved_field_path),
        ("source_component", &e.source_component),
        ("source_host", &e.source_host),
        ("first_seen", &e.first_seen),
        ("last_seen", &e.last_seen),
        ("resource_version", &e.resource_version),
    ] {
        opt_str(&mut o, key, Some(value.as_str()).filter(|v| !v.is_empty()));
    }
    o.end();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_with_nanoseconds_across_seconds() {
        let mut format = TimeFormat::default();
        let t = UNIX_EPOCH + Duration::new(1_795_000_000, 5);
        let mut out = Vec::new();
        format.write(&mut out, t);
        out.push(b' ');
        format.write(&mut out, t + Duration::from_millis(999));
        out.push(b' ');
        format.write(&mut out, t + Duration::from_secs(1));
        let text = String::from_utf8(out).unwrap();
        let parts: Vec<&str> = text.split(' ').collect();
        assert_eq!(parts[0], humantime::format_rfc3339_nanos(t).to_string());
        assert_eq!(
            parts[1],
            humantime::format_rfc3339_nanos(t + Duration::from_millis(999)).to_string()
        );
        assert_eq!(
            parts[2],
            humantime::format_rfc3339_nanos(t + Duration::from_secs(1)).to_string()
        );
    }

    #[test]
    fn ip_and_hex_fields_are_valid_json() {
        let mut out = Vec::new();
        let mut o = Obj::new(&mut out);
        o.ip("a", "10.0.255.1".parse().unwrap());
        o.ip("b", "2001:db8::1".parse().unwrap());
        o.hex64("c", 0xdead_beef);
        o.end();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["a"], "10.0.255.1");
        assert_eq!(v["b"], "2001:db8::1");
        assert_eq!(v["c"], "00000000deadbeef");
    }
}
