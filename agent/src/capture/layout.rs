//! Builds the [`KernelLayout`] the programs read at run time: classic tracepoint field offsets
//! from tracefs `format` files, struct member offsets and raw tracepoint prototypes from the
//! kernel's BTF (architecture rule 9). A field this kernel lacks stays `ABSENT`;
//! [`Layout::missing`] says which, and the probes that cannot work without it are not attached
//! (see `probes`).

use sonde_common::layout::{ABSENT, KernelLayout, WINDOW_MAX};

use super::{
    btf::Btf,
    tracefs::{Format, Tracefs},
};

type Slot = fn(&mut KernelLayout) -> &mut u32;

/// Kernel struct members: (struct, member path, expected size, slot).
const BTF_FIELDS: &[(&str, &str, u32, Slot)] = &[
    ("task_struct", "pid", 4, |l| &mut l.task_pid),
    ("task_struct", "tgid", 4, |l| &mut l.task_tgid),
    ("task_struct", "real_parent", 8, |l| &mut l.task_real_parent),
    ("task_struct", "group_leader", 8, |l| {
        &mut l.task_group_leader
    }),
    ("task_struct", "start_boottime", 8, |l| {
        &mut l.task_start_boottime
    }),
    ("task_struct", "exit_code", 4, |l| &mut l.task_exit_code),
    ("task_struct", "signal", 8, |l| &mut l.task_signal),
    ("task_struct", "files", 8, |l| &mut l.task_files),
    ("task_struct", "mm", 8, |l| &mut l.task_mm),
    ("task_struct", "cgroups", 8, |l| &mut l.task_cgroups),
    ("signal_struct", "live", 4, |l| &mut l.signal_live),
    ("mm_struct", "arg_start", 8, |l| &mut l.mm_arg_start),
    ("mm_struct", "arg_end", 8, |l| &mut l.mm_arg_end),
    ("files_struct", "fdt", 8, |l| &mut l.files_fdt),
    ("fdtable", "max_fds", 4, |l| &mut l.fdtable_max_fds),
    ("fdtable", "fd", 8, |l| &mut l.fdtable_fd),
    ("file", "private_data", 8, |l| &mut l.file_private_data),
    ("socket", "sk", 8, |l| &mut l.socket_sk),
    ("sock", "__sk_common.skc_family", 2, |l| &mut l.sock_family),
    ("sock", "__sk_common.skc_daddr", 4, |l| &mut l.sock_daddr),
    ("sock", "__sk_common.skc_rcv_saddr", 4, |l| {
        &mut l.sock_rcv_saddr
    }),
    ("sock", "__sk_common.skc_dport", 2, |l| &mut l.sock_dport),
    ("sock", "__sk_common.skc_num", 2, |l| &mut l.sock_num),
    ("sock", "__sk_common.skc_v6_daddr", 16, |l| {
        &mut l.sock_v6_daddr
    }),
    ("sock", "__sk_common.skc_v6_rcv_saddr", 16, |l| {
        &mut l.sock_v6_rcv_saddr
    }),
    ("inet_sock", "inet_sport", 2, |l| &mut l.sock_inet_sport),
    ("sock", "sk_protocol", 2, |l| &mut l.sock_protocol),
    ("sock", "sk_err", 4, |l| &mut l.sock_err),
    ("sock", "sk_cgrp_data.cgroup", 8, |l| &mut l.sock_cgroup),
    ("tcp_sock", "bytes_received", 8, |l| {
        &mut l.tcp_bytes_received
    }),
    ("tcp_sock", "bytes_sent", 8, |l| &mut l.tcp_bytes_sent),
    ("tcp_sock", "bytes_retrans", 8, |l| &mut l.tcp_bytes_retrans),
    ("sock", "__sk_common.skc_flags", 8, |l| &mut l.sock_flags),
    ("tcp_sock", "total_retrans", 4, |l| &mut l.tcp_total_retrans),
    ("tcp_sock", "srtt_us", 4, |l| &mut l.tcp_srtt_us),
    ("css_set", "dfl_cgrp", 8, |l| &mut l.css_set_dfl_cgrp),
    ("cgroup", "kn", 8, |l| &mut l.cgroup_kn),
    ("kernfs_node", "id", 8, |l| &mut l.kernfs_node_id),
];

/// Members of `struct sock` read together as one window: (slot, size).
const SOCK_WINDOW: &[(Slot, u32)] = &[
    (|l| &mut l.sock_family, 2),
    (|l| &mut l.sock_daddr, 4),
    (|l| &mut l.sock_rcv_saddr, 4),
    (|l| &mut l.sock_dport, 2),
    (|l| &mut l.sock_num, 2),
    (|l| &mut l.sock_v6_daddr, 16),
    (|l| &mut l.sock_v6_rcv_saddr, 16),
];

/// Raw tracepoints and the prototype the programs expect (`TP_PROTO`, after the `void *`
/// context), checked against `btf_trace_<name>`.
pub const RAW_TRACEPOINTS: &[(&str, &[&str])] = &[
    (
        "inet_sock_set_state",
        &["*void", "*struct sock", "int", "int"],
    ),
    (
        "sched_process_fork",
        &["*void", "*struct task_struct", "*struct task_struct"],
    ),
];

/// The layout handed to the programs, and what this kernel could not provide.
#[derive(Clone, Debug)]
pub struct Layout {
    pub abi: KernelLayout,
    /// Human names of fields that are absent (e.g. `tcp_sock.bytes_sent`,
    /// `sched_process_exec.filename`).
    pub missing: Vec<String>,
    /// Raw tracepoints whose prototype is not the expected one, with what BTF says.
    pub bad_prototypes: Vec<(&'static str, String)>,
}

impl Layout {
    /// Reads every offset from `btf` and the formats in `tracefs`.
    pub fn compute(btf: &Btf, tracefs: &Tracefs, wakeup_bytes: u64) -> Self {
        let mut abi = KernelLayout::ABSENT;
        let mut missing = Vec::new();
        abi.wakeup_bytes = wakeup_bytes;

        for &(strukt, path, size, slot) in BTF_FIELDS {
            match btf.member(strukt, path) {
                Some(m) if m.size == size => *slot(&mut abi) = m.offset,
                Some(m) => missing.push(format!(
                    "{strukt}.{path} (size {} where {size} was expected)",
                    m.size
                )),
                None => missing.push(format!("{strukt}.{path}")),
            }
        }

        abi.sock_done_bit = match btf.enum_value("sock_flags", "SOCK_DONE") {
            Some(bit) if (0..64).contains(&bit) => bit as u32,
            _ => {
                missing.push("enum sock_flags.SOCK_DONE".into());
                ABSENT
            }
        };

        // The address window must cover every member read from it.
        let window_end = SOCK_WINDOW
            .iter()
            .map(|&(slot, size)| (*slot(&mut abi), size))
            .filter(|&(off, _)| off != ABSENT)
            .map(|(off, size)| off + size)
            .max()
            .unwrap_or(0);
        if window_end > WINDOW_MAX {
            missing.push(format!(
                "sock address fields within {WINDOW_MAX} bytes (they end at {window_end})"
            ));
            for &(slot, _) in SOCK_WINDOW {
                *slot(&mut abi) = ABSENT;
            }
        } else {
            abi.sock_window = window_end;
        }

        let mut bad_prototypes = Vec::new();
        for &(name, expected) in RAW_TRACEPOINTS {
            match btf.raw_tracepoint_params(name) {
                Some(found) if found == expected => {}
                Some(found) => bad_prototypes.push((name, found.join(", "))),
                None => bad_prototypes.push((name, "not in BTF".into())),
            }
        }

        let tp_field =
            |format: &Format, event: &str, name: &str, size: u32, missing: &mut Vec<String>| {
                match format.field(name) {
                    Some(f) if f.size == size => f.offset,
                    _ => {
                        missing.push(format!("{event}.{name}"));
                        ABSENT
                    }
                }
            };

        let exec = tracefs
            .format("sched", "sched_process_exec")
            .unwrap_or_default();
        abi.tp_exec_filename = tp_field(&exec, "sched_process_exec", "filename", 4, &mut missing);

        // `group_dead` is recent (6.16); older kernels use signal->live instead, so its absence
        // is not reported as missing unless the fallback is missing too.
        let exit = tracefs
            .format("sched", "sched_process_exit")
            .unwrap_or_default();
        abi.tp_exit_group_dead = match exit.field("group_dead") {
            Some(f) if f.size == 1 => f.offset,
            _ => ABSENT,
        };

        let mkdir = tracefs.format("cgroup", "cgroup_mkdir").unwrap_or_default();
        abi.tp_cgroup_root = tp_field(&mkdir, "cgroup_mkdir", "root", 4, &mut missing);
        abi.tp_cgroup_id = tp_field(&mkdir, "cgroup_mkdir", "id", 8, &mut missing);
        abi.tp_cgroup_level = tp_field(&mkdir, "cgroup_mkdir", "level", 4, &mut missing);
        abi.tp_cgroup_path = tp_field(&mkdir, "cgroup_mkdir", "path", 4, &mut missing);
        let rmdir = tracefs.format("cgroup", "cgroup_rmdir").unwrap_or_default();
        if ["root", "id", "level", "path"]
            .iter()
            .any(|f| rmdir.field(f) != mkdir.field(f))
        {
            // One program serves both, so they must share the layout.
            missing.push("cgroup_rmdir layout (differs from cgroup_mkdir)".into());
        }

        let accept4 = tracefs
            .format("syscalls", "sys_exit_accept4")
            .unwrap_or_default();
        let accept = tracefs
            .format("syscalls", "sys_exit_accept")
            .unwrap_or_default();
        abi.tp_sys_exit_ret = tp_field(&accept4, "sys_exit_accept4", "ret", 8, &mut missing);
        if let Some(other) = accept.field("ret")
            && other.offset != abi.tp_sys_exit_ret
        {
            // Both syscalls share one program, so they must share the layout.
            missing.push("sys_exit_accept.ret (differs from sys_exit_accept4.ret)".into());
        }

        Self {
            abi,
            missing,
            bad_prototypes,
        }
    }

    /// Whether `sched_process_exit` can tell the last thread of a process.
    pub fn knows_group_exit(&self) -> bool {
        self.abi.tp_exit_group_dead != ABSENT
            || (self.abi.task_signal != ABSENT && self.abi.signal_live != ABSENT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_kernel_provides_every_field() {
        // The test machine's kernel (6.18, BTF, tracefs) has all of them; a missing one means
        // the lookup is wrong, not the kernel.
        let btf = Btf::from_kernel().expect("kernel BTF");
        let tracefs = Tracefs::find_or_mount().expect("tracefs");
        let layout = Layout::compute(&btf, &tracefs, 1);
        assert!(layout.missing.is_empty(), "missing: {:?}", layout.missing);
        assert!(
            layout.bad_prototypes.is_empty(),
            "{:?}",
            layout.bad_prototypes
        );
        assert!(layout.knows_group_exit());
        // Cross-check well-known layouts: sock_common starts with the address pair.
        assert_eq!(layout.abi.sock_daddr, 0);
        assert_eq!(layout.abi.sock_rcv_saddr, 4);
        assert!(layout.abi.sock_window >= 20 && layout.abi.sock_window <= WINDOW_MAX);
        assert_eq!(layout.abi.tp_sys_exit_ret, 16);
    }
}
