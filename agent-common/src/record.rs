//! Records carried by the `EVENTS` ring buffer.
//!
//! Every record starts with a [`Header`] whose `kind` tells which struct follows. Records are
//! lifecycle events only (rule 2 of the architecture): a process exec, fork or exit; a connection
//! opened, closed or failed. Byte counts, retransmits and RTT are aggregated by the kernel and read
//! once, when the connection closes.

use crate::COMM_LEN;

/// Bytes of the executed file's path kept in an [`ExecRecord`].
pub const FILENAME_LEN: usize = 256;
/// Bytes of a cgroup path kept in a [`CgroupRecord`] (relative to the cgroup v2 root).
pub const CGROUP_PATH_LEN: usize = 512;
/// Bytes of the argument vector (NUL-separated, as in `/proc/<pid>/cmdline`) kept in an
/// [`ExecRecord`]; `args_size` tells how long the full vector was.
pub const ARGS_LEN: usize = 512;

/// Discriminant in [`Header::kind`].
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    Exec = 1,
    Fork = 2,
    Exit = 3,
    ConnOpen = 4,
    ConnClose = 5,
    ConnFail = 6,
    CgroupMkdir = 7,
    CgroupRmdir = 8,
}

impl RecordKind {
    pub const fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            1 => Self::Exec,
            2 => Self::Fork,
            3 => Self::Exit,
            4 => Self::ConnOpen,
            5 => Self::ConnClose,
            6 => Self::ConnFail,
            7 => Self::CgroupMkdir,
            8 => Self::CgroupRmdir,
            _ => return None,
        })
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Header {
    /// A [`RecordKind`].
    pub kind: u16,
    pub _pad0: u16,
    /// CPU the record was produced on.
    pub cpu: u32,
    /// `CLOCK_BOOTTIME` nanoseconds when the kernel saw the event.
    pub ts_ns: u64,
}

/// Who did it: the identity of a task, taken in the kernel at the moment of the event
/// (rule 1: never reconstructed from /proc afterwards).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TaskIdentity {
    /// Process id (the kernel's tgid) in the initial pid namespace. 0 means "unknown".
    pub pid: u32,
    /// Thread id (the kernel's pid) in the initial pid namespace.
    pub tid: u32,
    /// `start_boottime` of the thread-group leader, `CLOCK_BOOTTIME` ns: with `pid` it identifies
    /// the process even after the pid is reused. `/proc/<pid>/stat` field 22 is this value in
    /// clock ticks.
    pub start_ns: u64,
    /// cgroup v2 id: the inode number of the task's cgroup directory in the unified hierarchy.
    pub cgroup_id: u64,
    pub uid: u32,
    pub _pad0: u32,
    pub comm: [u8; COMM_LEN],
}

impl TaskIdentity {
    pub const UNKNOWN: Self = Self {
        pid: 0,
        tid: 0,
        start_ns: 0,
        cgroup_id: 0,
        uid: 0,
        _pad0: 0,
        comm: [0; COMM_LEN],
    };
}

/// `sched/sched_process_exec`: a process replaced its image.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecRecord {
    pub header: Header,
    pub task: TaskIdentity,
    /// Parent process id (tgid of `real_parent`).
    pub ppid: u32,
    /// Full length of the argument vector in the new image, which may exceed [`ARGS_LEN`].
    pub args_size: u32,
    /// Start time of the parent process, completing its identity.
    pub parent_start_ns: u64,
    /// Bytes of `filename` filled (without the trailing NUL).
    pub filename_len: u16,
    /// Bytes of `args` filled.
    pub args_len: u16,
    pub _pad0: u32,
    pub filename: [u8; FILENAME_LEN],
    pub args: [u8; ARGS_LEN],
}

/// `sched/sched_process_fork` (raw tracepoint, for the child's task): a new process. Threads
/// (`CLONE_THREAD`) do not produce records.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ForkRecord {
    pub header: Header,
    /// The forking process, in whose context the record was taken.
    pub parent: TaskIdentity,
    pub child_pid: u32,
    pub _pad0: u32,
    pub child_start_ns: u64,
    /// cgroup of the child (differs from the parent's with `CLONE_INTO_CGROUP`).
    pub child_cgroup_id: u64,
}

/// `sched/sched_process_exit` of the last thread of a process: the process is gone.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExitRecord {
    pub header: Header,
    pub task: TaskIdentity,
    /// `task_struct.exit_code`, in `wait(2)` status form: `status << 8`, or the terminating
    /// signal in the low 7 bits with `0x80` set for a core dump.
    pub exit_code: u32,
    pub _pad0: u32,
}

/// `cgroup/cgroup_mkdir` or `cgroup_rmdir` in the cgroup v2 hierarchy: the id and path of a cgroup
/// as it appears or goes, so a container that lived 50 ms is still named after its directory is
/// gone.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CgroupRecord {
    pub header: Header,
    /// The cgroup v2 id (inode of the directory), as `bpf_get_current_cgroup_id()` returns it.
    pub id: u64,
    /// Depth below the root (the root is 0).
    pub level: u32,
    /// Bytes of `path` filled (without the trailing NUL).
    pub path_len: u16,
    pub _pad0: u16,
    /// Path relative to the hierarchy root, e.g. `/kubepods.slice/.../cri-containerd-<id>.scope`.
    pub path: [u8; CGROUP_PATH_LEN],
}

/// Direction of a connection as seen from this host.
pub mod direction {
    /// Never seen opening (it existed before Sonde started, or its state was evicted).
    pub const UNKNOWN: u8 = 0;
    /// Active open: a local process called `connect()`.
    pub const OUTBOUND: u8 = 1;
    /// Passive open: a local listener accepted it.
    pub const INBOUND: u8 = 2;
}

/// Bits of [`ConnRecord::flags`].
pub mod conn_flags {
    /// `owner` is the process that connected or accepted the socket.
    pub const OWNER_KNOWN: u8 = 1;
    /// The kernel had no state for this socket when it closed: it was opened before Sonde started
    /// or its state was evicted from the LRU map. Open-time fields are zero.
    pub const NO_STATE: u8 = 2;
    /// An inbound connection that closed before any process accepted it.
    pub const NOT_ACCEPTED: u8 = 4;
}

/// A TCP connection lifecycle record: open (established and attributed), close, or fail (never
/// established).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnRecord {
    pub header: Header,
    /// The process that connected (outbound) or accepted (inbound); see `conn_flags::OWNER_KNOWN`.
    pub owner: TaskIdentity,
    /// Kernel address of the socket: joins the open and close records of one connection. Never
    /// shown to users as is.
    pub sock_id: u64,
    /// cgroup v2 id of the socket (`sk_cgrp_data`: the cgroup of the process that created it),
    /// read only when the owner is unknown (otherwise 0: the owner's `cgroup_id` applies).
    pub sock_cgroup_id: u64,
    /// `CLOCK_BOOTTIME` ns of the first SYN (outbound) or of the child socket's creation (inbound).
    pub opened_ns: u64,
    /// `CLOCK_BOOTTIME` ns when the handshake completed; 0 if it never did.
    pub established_ns: u64,
    /// Payload bytes sent, each byte once (`tcp_sock.bytes_sent - bytes_retrans`). Close only.
    pub bytes_sent: u64,
    /// Payload bytes received (`tcp_sock.bytes_received`, less the peer's FIN). Close only.
    pub bytes_received: u64,
    /// Segments retransmitted (`tcp_sock.total_retrans`). Close only.
    pub retransmits: u32,
    /// Last smoothed RTT in microseconds (`tcp_sock.srtt_us >> 3`). Close only.
    pub srtt_us: u32,
    /// `sk_err` when the connection failed or closed: a positive errno, 0 for none.
    pub error: i32,
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    /// Local and remote ports, host byte order.
    pub sport: u16,
    pub dport: u16,
    /// One of [`direction`].
    pub direction: u8,
    /// Bits of [`conn_flags`].
    pub flags: u8,
    /// TCP state the socket left when this record was produced.
    pub old_state: u8,
    pub _pad0: [u8; 3],
    /// Local and remote addresses: IPv4 in the first 4 bytes, or IPv6.
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

// ABI checks: these hold for the bpf target and for the host alike, so a layout change that
// would make the two halves disagree fails to compile on both.
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<Header>() == 16);
    assert!(offset_of!(Header, kind) == 0);
    assert!(offset_of!(Header, cpu) == 4);
    assert!(offset_of!(Header, ts_ns) == 8);

    assert!(size_of::<TaskIdentity>() == 48);
    assert!(offset_of!(TaskIdentity, pid) == 0);
    assert!(offset_of!(TaskIdentity, tid) == 4);
    assert!(offset_of!(TaskIdentity, start_ns) == 8);
    assert!(offset_of!(TaskIdentity, cgroup_id) == 16);
    assert!(offset_of!(TaskIdentity, uid) == 24);
    assert!(offset_of!(TaskIdentity, comm) == 32);

    assert!(size_of::<ExecRecord>() == 16 + 48 + 24 + FILENAME_LEN + ARGS_LEN);
    assert!(offset_of!(ExecRecord, task) == 16);
    assert!(offset_of!(ExecRecord, ppid) == 64);
    assert!(offset_of!(ExecRecord, args_size) == 68);
    assert!(offset_of!(ExecRecord, parent_start_ns) == 72);
    assert!(offset_of!(ExecRecord, filename_len) == 80);
    assert!(offset_of!(ExecRecord, args_len) == 82);
    assert!(offset_of!(ExecRecord, filename) == 88);
    assert!(offset_of!(ExecRecord, args) == 88 + FILENAME_LEN);

    assert!(size_of::<ForkRecord>() == 88);
    assert!(offset_of!(ForkRecord, parent) == 16);
    assert!(offset_of!(ForkRecord, child_pid) == 64);
    assert!(offset_of!(ForkRecord, child_start_ns) == 72);
    assert!(offset_of!(ForkRecord, child_cgroup_id) == 80);

    assert!(size_of::<ExitRecord>() == 72);
    assert!(offset_of!(ExitRecord, task) == 16);
    assert!(offset_of!(ExitRecord, exit_code) == 64);

    assert!(size_of::<ConnRecord>() == 168);
    assert!(offset_of!(ConnRecord, owner) == 16);
    assert!(offset_of!(ConnRecord, sock_id) == 64);
    assert!(offset_of!(ConnRecord, sock_cgroup_id) == 72);
    assert!(offset_of!(ConnRecord, opened_ns) == 80);
    assert!(offset_of!(ConnRecord, established_ns) == 88);
    assert!(offset_of!(ConnRecord, bytes_sent) == 96);
    assert!(offset_of!(ConnRecord, bytes_received) == 104);
    assert!(offset_of!(ConnRecord, retransmits) == 112);
    assert!(offset_of!(ConnRecord, srtt_us) == 116);
    assert!(offset_of!(ConnRecord, error) == 120);
    assert!(offset_of!(ConnRecord, family) == 124);
    assert!(offset_of!(ConnRecord, sport) == 126);
    assert!(offset_of!(ConnRecord, dport) == 128);
    assert!(offset_of!(ConnRecord, direction) == 130);
    assert!(offset_of!(ConnRecord, flags) == 131);
    assert!(offset_of!(ConnRecord, old_state) == 132);
    assert!(offset_of!(ConnRecord, saddr) == 136);
    assert!(offset_of!(ConnRecord, daddr) == 152);
    assert!(size_of::<CgroupRecord>() == 32 + CGROUP_PATH_LEN);
    assert!(offset_of!(CgroupRecord, id) == 16);
    assert!(offset_of!(CgroupRecord, level) == 24);
    assert!(offset_of!(CgroupRecord, path_len) == 28);
    assert!(offset_of!(CgroupRecord, path) == 32);
    // Ring buffer records are 8-byte aligned by the kernel; none may need more.
    assert!(core::mem::align_of::<ExecRecord>() <= 8);
    assert!(core::mem::align_of::<ConnRecord>() <= 8);
};

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)], made only of integers and byte arrays, with explicit
    // padding fields, so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::Header {}
    unsafe impl aya::Pod for super::TaskIdentity {}
    unsafe impl aya::Pod for super::ExecRecord {}
    unsafe impl aya::Pod for super::ForkRecord {}
    unsafe impl aya::Pod for super::ExitRecord {}
    unsafe impl aya::Pod for super::ConnRecord {}
    unsafe impl aya::Pod for super::CgroupRecord {}
}
