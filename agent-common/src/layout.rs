//! Offsets of the kernel data the eBPF programs read, computed by userspace at load time
//! (rule 9: nothing kernel-version-specific is hard-coded):
//!
//! - `tp_*`: byte offsets of fields inside classic tracepoint records, from
//!   `/sys/kernel/tracing/events/<category>/<name>/format`;
//! - the others: byte offsets of kernel struct members, from the running kernel's BTF (raw
//!   tracepoints get kernel pointers and read the structs behind them).
//!
//! A field the kernel does not have is [`ABSENT`]; the programs then skip what needs it and the
//! agent reports the lost feature.

/// Marks an offset the running kernel does not provide.
pub const ABSENT: u32 = u32::MAX;

/// Largest window of kernel memory the programs copy in one read (`sock_window`).
pub const WINDOW_MAX: u32 = 128;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelLayout {
    // sched/sched_process_exec
    pub tp_exec_filename: u32,
    // sched/sched_process_exit (`group_dead` exists since Linux 6.16)
    pub tp_exit_group_dead: u32,
    // cgroup/cgroup_mkdir and cgroup_rmdir (same layout)
    pub tp_cgroup_root: u32,
    pub tp_cgroup_id: u32,
    pub tp_cgroup_level: u32,
    pub tp_cgroup_path: u32,
    // syscalls/sys_exit_accept{,4}
    pub tp_sys_exit_ret: u32,

    // struct task_struct
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_real_parent: u32,
    pub task_group_leader: u32,
    pub task_start_boottime: u32,
    pub task_exit_code: u32,
    pub task_signal: u32,
    pub task_files: u32,
    pub task_mm: u32,
    pub task_cgroups: u32,
    // struct signal_struct
    pub signal_live: u32,
    // struct mm_struct
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    // struct files_struct / fdtable / file / socket
    pub files_fdt: u32,
    pub fdtable_max_fds: u32,
    pub fdtable_fd: u32,
    pub file_private_data: u32,
    pub socket_sk: u32,
    // struct sock: the connection's addresses live in its first bytes (`__sk_common`), read as
    // one window of `sock_window` bytes; every `sock_*` offset below `sock_window` is inside it.
    pub sock_window: u32,
    pub sock_family: u32,
    pub sock_daddr: u32,
    pub sock_rcv_saddr: u32,
    /// Remote port, network byte order.
    pub sock_dport: u32,
    /// Local port, host byte order.
    pub sock_num: u32,
    pub sock_v6_daddr: u32,
    pub sock_v6_rcv_saddr: u32,
    // struct sock, outside the window
    /// `inet_sock.inet_sport` (network order): the local port, still set at `TCP_CLOSE`, where
    /// `skc_num` has already been cleared by `inet_put_port()`.
    pub sock_inet_sport: u32,
    pub sock_protocol: u32,
    pub sock_err: u32,
    pub sock_cgroup: u32,
    /// `sock.sk_flags` and the bit of `SOCK_DONE` in it (set when the peer's FIN arrived).
    pub sock_flags: u32,
    pub sock_done_bit: u32,
    pub tcp_bytes_received: u32,
    pub tcp_bytes_sent: u32,
    pub tcp_bytes_retrans: u32,
    pub tcp_total_retrans: u32,
    pub tcp_srtt_us: u32,
    // struct css_set / cgroup / kernfs_node
    pub css_set_dfl_cgrp: u32,
    pub cgroup_kn: u32,
    pub kernfs_node_id: u32,
    pub _pad0: u32,

    /// Records are submitted without waking userspace until this many bytes wait in the ring
    /// buffer (userspace also drains on a timer): batched wake-ups.
    pub wakeup_bytes: u64,
}

impl KernelLayout {
    /// Everything absent: what the object carries until userspace fills it in.
    pub const ABSENT: Self = Self {
        tp_exec_filename: ABSENT,
        tp_exit_group_dead: ABSENT,
        tp_cgroup_root: ABSENT,
        tp_cgroup_id: ABSENT,
        tp_cgroup_level: ABSENT,
        tp_cgroup_path: ABSENT,
        tp_sys_exit_ret: ABSENT,
        task_pid: ABSENT,
        task_tgid: ABSENT,
        task_real_parent: ABSENT,
        task_group_leader: ABSENT,
        task_start_boottime: ABSENT,
        task_exit_code: ABSENT,
        task_signal: ABSENT,
        task_files: ABSENT,
        task_mm: ABSENT,
        task_cgroups: ABSENT,
        signal_live: ABSENT,
        mm_arg_start: ABSENT,
        mm_arg_end: ABSENT,
        files_fdt: ABSENT,
        fdtable_max_fds: ABSENT,
        fdtable_fd: ABSENT,
        file_private_data: ABSENT,
        socket_sk: ABSENT,
        sock_window: 0,
        sock_family: ABSENT,
        sock_daddr: ABSENT,
        sock_rcv_saddr: ABSENT,
        sock_dport: ABSENT,
        sock_num: ABSENT,
        sock_v6_daddr: ABSENT,
        sock_v6_rcv_saddr: ABSENT,
        sock_inet_sport: ABSENT,
        sock_protocol: ABSENT,
        sock_err: ABSENT,
        sock_cgroup: ABSENT,
        sock_flags: ABSENT,
        sock_done_bit: ABSENT,
        tcp_bytes_received: ABSENT,
        tcp_bytes_sent: ABSENT,
        tcp_bytes_retrans: ABSENT,
        tcp_total_retrans: ABSENT,
        tcp_srtt_us: ABSENT,
        css_set_dfl_cgrp: ABSENT,
        cgroup_kn: ABSENT,
        kernfs_node_id: ABSENT,
        _pad0: 0,
        wakeup_bytes: 0,
    };
}

const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<KernelLayout>() == 48 * 4 + 8);
    assert!(offset_of!(KernelLayout, tp_exec_filename) == 0);
    assert!(offset_of!(KernelLayout, tp_cgroup_path) == 5 * 4);
    assert!(offset_of!(KernelLayout, task_pid) == 7 * 4);
    assert!(offset_of!(KernelLayout, sock_window) == 25 * 4);
    assert!(offset_of!(KernelLayout, kernfs_node_id) == 46 * 4);
    assert!(offset_of!(KernelLayout, wakeup_bytes) == 48 * 4);
};

#[cfg(feature = "user")]
// SAFETY: #[repr(C)], u32/u64 fields only, explicit padding (asserted above).
unsafe impl aya::Pod for KernelLayout {}
