//! Typed events: the kernel records, with accessors that interpret them (strings, addresses,
//! exit status, failure reasons). Fixed size, no heap: decoding is a copy.

use std::{
    borrow::Cow,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use sonde_common::{
    AF_INET,
    record::{
        CgroupRecord, ConnRecord, ExecRecord, ExitRecord, ForkRecord, TaskIdentity, conn_flags,
        direction,
    },
};

/// A kernel record, typed and borrowed in place from the ring buffer.
#[derive(Clone, Copy, Debug)]
pub enum Event<'a> {
    Exec(&'a ExecRecord),
    Fork(&'a ForkRecord),
    Exit(&'a ExitRecord),
    Conn(ConnEvent<'a>),
    /// A cgroup appeared (`removed == false`) or went away in the v2 hierarchy. Consumed by the
    /// node model; not part of the event stream.
    Cgroup {
        record: &'a CgroupRecord,
        removed: bool,
    },
}

impl Event<'_> {
    /// `CLOCK_BOOTTIME` nanoseconds when the kernel saw it.
    pub fn ts_ns(&self) -> u64 {
        match self {
            Event::Exec(r) => r.header.ts_ns,
            Event::Fork(r) => r.header.ts_ns,
            Event::Exit(r) => r.header.ts_ns,
            Event::Conn(c) => c.record.header.ts_ns,
            Event::Cgroup { record, .. } => record.header.ts_ns,
        }
    }

    /// Stable name of the event type, as in the NDJSON `type` field.
    pub fn type_name(&self) -> &'static str {
        match self {
            Event::Exec(_) => "process_exec",
            Event::Fork(_) => "process_fork",
            Event::Exit(_) => "process_exit",
            Event::Conn(c) => match c.phase {
                ConnPhase::Open => "tcp_open",
                ConnPhase::Close => "tcp_close",
                ConnPhase::Fail => "tcp_fail",
            },
            Event::Cgroup { removed: false, .. } => "cgroup_mkdir",
            Event::Cgroup { removed: true, .. } => "cgroup_rmdir",
        }
    }
}

/// A NUL-terminated kernel byte string as text (lossy only if it is not UTF-8).
pub fn c_str(bytes: &[u8]) -> Cow<'_, str> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end])
}

pub fn comm(task: &TaskIdentity) -> Cow<'_, str> {
    c_str(&task.comm)
}

/// The cgroup path of a mkdir/rmdir record, relative to the v2 root.
pub fn cgroup_path(r: &CgroupRecord) -> Cow<'_, str> {
    let len = (r.path_len as usize).min(r.path.len());
    String::from_utf8_lossy(&r.path[..len])
}

pub fn exec_filename(r: &ExecRecord) -> Cow<'_, str> {
    let len = (r.filename_len as usize).min(r.filename.len());
    String::from_utf8_lossy(&r.filename[..len])
}

/// The arguments captured at exec, as separate strings.
pub fn exec_args(r: &ExecRecord) -> impl Iterator<Item = Cow<'_, str>> {
    let len = (r.args_len as usize).min(r.args.len());
    let bytes = &r.args[..len];
    // The vector is NUL-terminated; a truncated one ends mid-argument.
    let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    bytes
        .split(|&b| b == 0)
        .filter(move |_| !bytes.is_empty())
        .map(String::from_utf8_lossy)
}

/// Whether the argument vector was longer than what the kernel copied.
pub fn exec_args_truncated(r: &ExecRecord) -> bool {
    r.args_size as usize > r.args_len as usize
}

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Code(u8),
    Signal { signal: u8, core_dumped: bool },
}

impl ExitStatus {
    /// Decodes `task_struct.exit_code` (`wait(2)` status form).
    pub fn from_raw(code: u32) -> Self {
        let signal = (code & 0x7f) as u8;
        if signal == 0 {
            ExitStatus::Code(((code >> 8) & 0xff) as u8)
        } else {
            ExitStatus::Signal {
                signal,
                core_dumped: code & 0x80 != 0,
            }
        }
    }
}

pub fn exit_status(r: &ExitRecord) -> ExitStatus {
    ExitStatus::from_raw(r.exit_code)
}

/// Lifetime of the process, from its start to this exit.
pub fn exit_lifetime_ns(r: &ExitRecord) -> u64 {
    r.header.ts_ns.saturating_sub(r.task.start_ns)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnPhase {
    /// Established (and, when inbound, accepted by a process).
    Open,
    /// Closed after being established.
    Close,
    /// Never established.
    Fail,
}

#[derive(Clone, Copy, Debug)]
pub struct ConnEvent<'a> {
    pub phase: ConnPhase,
    pub record: &'a ConnRecord,
}

fn addr(family: u16, bytes: &[u8; 16]) -> IpAddr {
    if family == AF_INET {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*bytes))
    }
}

impl ConnEvent<'_> {
    pub fn local_addr(&self) -> IpAddr {
        addr(self.record.family, &self.record.saddr)
    }

    pub fn remote_addr(&self) -> IpAddr {
        addr(self.record.family, &self.record.daddr)
    }

    pub fn local(&self) -> SocketAddr {
        SocketAddr::new(self.local_addr(), self.record.sport)
    }

    pub fn remote(&self) -> SocketAddr {
        SocketAddr::new(self.remote_addr(), self.record.dport)
    }

    pub fn family_name(&self) -> &'static str {
        if self.record.family == AF_INET {
            "ipv4"
        } else {
            "ipv6"
        }
    }

    pub fn direction_name(&self) -> &'static str {
        match self.record.direction {
            direction::OUTBOUND => "outbound",
            direction::INBOUND => "inbound",
            _ => "unknown",
        }
    }

    /// The owner process, when the kernel knew it.
    pub fn owner(&self) -> Option<&TaskIdentity> {
        (self.record.flags & conn_flags::OWNER_KNOWN != 0).then_some(&self.record.owner)
    }

    /// Whether the kernel saw this connection open (false: it predates Sonde, or its state was
    /// evicted).
    pub fn seen_open(&self) -> bool {
        self.record.flags & conn_flags::NO_STATE == 0
    }

    /// For inbound connections: whether a process accepted it.
    pub fn accepted(&self) -> Option<bool> {
        (self.record.direction == direction::INBOUND)
            .then_some(self.record.flags & conn_flags::NOT_ACCEPTED == 0)
    }

    /// Handshake duration (outbound) or child creation to establishment (inbound).
    pub fn connect_latency_ns(&self) -> Option<u64> {
        let r = &self.record;
        (r.opened_ns != 0 && r.established_ns >= r.opened_ns)
            .then(|| r.established_ns - r.opened_ns)
    }

    /// Time from establishment (or first SYN, if it failed) to this record.
    pub fn duration_ns(&self) -> Option<u64> {
        let r = &self.record;
        let from = if r.established_ns != 0 {
            r.established_ns
        } else {
            r.opened_ns
        };
        (from != 0).then(|| r.header.ts_ns.saturating_sub(from))
    }

    /// cgroup the connection belongs to: the owner's, else the socket's.
    pub fn cgroup_id(&self) -> u64 {
        match self.owner() {
            Some(owner) if owner.cgroup_id != 0 => owner.cgroup_id,
            _ => self.record.sock_cgroup_id,
        }
    }

    /// Why it failed or was cut, from `sk_err`; None for a clean close or open.
    pub fn error_name(&self) -> Option<Cow<'static, str>> {
        let e = self.record.error;
        Some(match e {
            0 if self.phase == ConnPhase::Fail => "aborted".into(),
            0 => return None,
            libc::ECONNREFUSED => "refused".into(),
            libc::ETIMEDOUT => "timeout".into(),
            libc::ECONNRESET => "reset".into(),
            libc::EHOSTUNREACH => "host_unreachable".into(),
            libc::ENETUNREACH => "network_unreachable".into(),
            libc::EPIPE => "broken_pipe".into(),
            other => format!("errno_{other}").into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_decodes_codes_and_signals() {
        assert_eq!(ExitStatus::from_raw(0), ExitStatus::Code(0));
        assert_eq!(ExitStatus::from_raw(3 << 8), ExitStatus::Code(3));
        assert_eq!(
            ExitStatus::from_raw(9),
            ExitStatus::Signal {
                signal: 9,
                core_dumped: false
            }
        );
        assert_eq!(
            ExitStatus::from_raw(0x80 | 11),
            ExitStatus::Signal {
                signal: 11,
                core_dumped: true
            }
        );
    }

    #[test]
    fn args_split_on_nul_and_tolerate_truncation() {
        let mut r: ExecRecord = unsafe { std::mem::zeroed() };
        let argv = b"/bin/sh\0-c\0echo hi\0";
        r.args[..argv.len()].copy_from_slice(argv);
        r.args_len = argv.len() as u16;
        r.args_size = argv.len() as u32;
        let args: Vec<_> = exec_args(&r).collect();
        assert_eq!(args, ["/bin/sh", "-c", "echo hi"]);
        assert!(!exec_args_truncated(&r));
        r.args_len = 9; // "/bin/sh\0-"
        let args: Vec<_> = exec_args(&r).collect();
        assert_eq!(args, ["/bin/sh", "-"]);
        assert!(exec_args_truncated(&r));
        r.args_len = 0;
        assert_eq!(exec_args(&r).count(), 0);
    }
}
