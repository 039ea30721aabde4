//! What Sonde hooks, what each hook needs from the kernel, and attaching whatever this kernel
//! offers: a missing tracepoint or field costs its feature, reported, not the agent (rule 7).

use std::collections::HashSet;

use aya::{
    Ebpf,
    programs::{RawTracePoint, TracePoint},
};
use serde::Serialize;
use sonde_common::layout::{ABSENT, KernelLayout};

use super::{layout::Layout, tracefs::Tracefs};

#[derive(Clone, Copy, Debug)]
pub enum Hook {
    Tracepoint {
        category: &'static str,
        name: &'static str,
    },
    RawTracepoint {
        name: &'static str,
    },
}

impl std::fmt::Display for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hook::Tracepoint { category, name } => write!(f, "tracepoint/{category}/{name}"),
            Hook::RawTracepoint { name } => write!(f, "raw_tracepoint/{name}"),
        }
    }
}

/// A program of the eBPF object and the hook it goes on.
pub struct Probe {
    pub program: &'static str,
    pub hook: Hook,
    /// What the user loses without it.
    pub provides: &'static str,
    /// Layout fields the program cannot work without.
    pub requires: fn(&KernelLayout) -> Vec<&'static str>,
}

fn absent(fields: &[(&'static str, u32)]) -> Vec<&'static str> {
    fields
        .iter()
        .filter(|(_, off)| *off == ABSENT)
        .map(|(name, _)| *name)
        .collect()
}

fn identity_fields(l: &KernelLayout) -> [(&'static str, u32); 2] {
    [
        ("task_struct.group_leader", l.task_group_leader),
        ("task_struct.start_boottime", l.task_start_boottime),
    ]
}

pub const PROBES: &[Probe] = &[
    Probe {
        program: "sonde_exec",
        hook: Hook::Tracepoint {
            category: "sched",
            name: "sched_process_exec",
        },
        provides: "process exec events",
        requires: |l| absent(&identity_fields(l)),
    },
    Probe {
        program: "sonde_fork",
        hook: Hook::RawTracepoint {
            name: "sched_process_fork",
        },
        provides: "process fork events",
        requires: |l| {
            let mut fields = identity_fields(l).to_vec();
            fields.push(("task_struct.tgid", l.task_tgid));
            absent(&fields)
        },
    },
    Probe {
        program: "sonde_exit",
        hook: Hook::Tracepoint {
            category: "sched",
            name: "sched_process_exit",
        },
        provides: "process exit events",
        requires: |l| {
            let mut missing = absent(&identity_fields(l));
            if l.tp_exit_group_dead == ABSENT
                && (l.task_signal == ABSENT || l.signal_live == ABSENT)
            {
                missing.push("sched_process_exit.group_dead or signal_struct.live");
            }
            missing
        },
    },
    Probe {
        program: "sonde_cgroup_mkdir",
        hook: Hook::Tracepoint {
            category: "cgroup",
            name: "cgroup_mkdir",
        },
        provides: "names of cgroups created while running (short-lived containers)",
        requires: cgroup_fields,
    },
    Probe {
        program: "sonde_cgroup_rmdir",
        hook: Hook::Tracepoint {
            category: "cgroup",
            name: "cgroup_rmdir",
        },
        provides: "removal of cgroups (keeps the cgroup index bounded)",
        requires: cgroup_fields,
    },
    Probe {
        program: "sonde_tcp_state",
        hook: Hook::RawTracepoint {
            name: "inet_sock_set_state",
        },
        provides: "TCP connection open/close/fail events",
        requires: |l| {
            let mut fields = identity_fields(l).to_vec();
            fields.extend([
                ("sock.__sk_common.skc_family", l.sock_family),
                ("sock.__sk_common.skc_num", l.sock_num),
                ("sock.__sk_common.skc_dport", l.sock_dport),
            ]);
            absent(&fields)
        },
    },
    Probe {
        program: "sonde_accept",
        hook: Hook::Tracepoint {
            category: "syscalls",
            name: "sys_exit_accept4",
        },
        provides: "owner process of inbound TCP connections (accept4)",
        requires: accept_fields,
    },
    Probe {
        program: "sonde_accept",
        hook: Hook::Tracepoint {
            category: "syscalls",
            name: "sys_exit_accept",
        },
        provides: "owner process of inbound TCP connections (accept)",
        requires: accept_fields,
    },
];

fn cgroup_fields(l: &KernelLayout) -> Vec<&'static str> {
    absent(&[
        ("cgroup_mkdir.root", l.tp_cgroup_root),
        ("cgroup_mkdir.id", l.tp_cgroup_id),
        ("cgroup_mkdir.path", l.tp_cgroup_path),
    ])
}

fn accept_fields(l: &KernelLayout) -> Vec<&'static str> {
    absent(&[
        ("sys_exit_accept.ret", l.tp_sys_exit_ret),
        ("task_struct.files", l.task_files),
        ("files_struct.fdt", l.files_fdt),
        ("fdtable.max_fds", l.fdtable_max_fds),
        ("fdtable.fd", l.fdtable_fd),
        ("file.private_data", l.file_private_data),
        ("socket.sk", l.socket_sk),
    ])
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(tag = "state", content = "reason", rename_all = "snake_case")]
pub enum ProbeState {
    Attached,
    /// Turned off by configuration (`--disable-probe`).
    Disabled,
    /// The kernel lacks the hook or a field the program needs.
    Unavailable(String),
    /// The kernel has it but loading or attaching failed.
    Failed(String),
}

impl ProbeState {
    /// `attached`, `disabled`, `unavailable` or `failed`.
    pub fn name(&self) -> &'static str {
        match self {
            ProbeState::Attached => "attached",
            ProbeState::Disabled => "disabled",
            ProbeState::Unavailable(_) => "unavailable",
            ProbeState::Failed(_) => "failed",
        }
    }

    /// Why it is not running, when it is not.
    pub fn reason(&self) -> Option<&str> {
        match self {
            ProbeState::Unavailable(r) | ProbeState::Failed(r) => Some(r),
            ProbeState::Attached | ProbeState::Disabled => None,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ProbeStatus {
    pub program: &'static str,
    pub hook: String,
    pub provides: &'static str,
    #[serde(flatten)]
    pub state: ProbeState,
}

/// Loads and attaches every probe this kernel supports; never fails as a whole.
pub fn attach_all(
    ebpf: &mut Ebpf,
    tracefs: &Tracefs,
    layout: &Layout,
    disabled: &[String],
) -> Vec<ProbeStatus> {
    let mut loaded = HashSet::new();
    PROBES
        .iter()
        .map(|probe| ProbeStatus {
            program: probe.program,
            hook: probe.hook.to_string(),
            provides: probe.provides,
            state: if disabled.iter().any(|d| d == probe.program) {
                ProbeState::Disabled
            } else {
                attach_one(ebpf, tracefs, layout, probe, &mut loaded)
            },
        })
        .collect()
}

fn attach_one(
    ebpf: &mut Ebpf,
    tracefs: &Tracefs,
    layout: &Layout,
    probe: &Probe,
    loaded: &mut HashSet<&'static str>,
) -> ProbeState {
    if let Hook::Tracepoint { category, name } = probe.hook
        && !tracefs.has_event(category, name)
    {
        return ProbeState::Unavailable(format!("this kernel has no tracepoint {category}/{name}"));
    }
    if let Hook::RawTracepoint { name } = probe.hook
        && let Some((_, found)) = layout.bad_prototypes.iter().find(|(n, _)| *n == name)
    {
        return ProbeState::Unavailable(format!(
            "raw tracepoint {name} has an unexpected prototype in this kernel ({found})"
        ));
    }
    let missing = (probe.requires)(&layout.abi);
    if !missing.is_empty() {
        return ProbeState::Unavailable(format!(
            "this kernel lacks {} (from BTF/tracefs)",
            missing.join(", ")
        ));
    }
    let Some(program) = ebpf.program_mut(probe.program) else {
        return ProbeState::Failed(format!(
            "program {} is missing from the eBPF object (build bug)",
            probe.program
        ));
    };
    let first_load = loaded.insert(probe.program);
    let result = match probe.hook {
        Hook::Tracepoint { category, name } => {
            let tp: Result<&mut TracePoint, _> = program.try_into();
            tp.map_err(|e| e.to_string()).and_then(|tp| {
                if first_load {
                    tp.load().map_err(verifier_error)?;
                }
                tp.attach(category, name)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
        }
        Hook::RawTracepoint { name } => {
            let tp: Result<&mut RawTracePoint, _> = program.try_into();
            tp.map_err(|e| e.to_string()).and_then(|tp| {
                if first_load {
                    tp.load().map_err(verifier_error)?;
                }
                tp.attach(name).map(|_| ()).map_err(|e| e.to_string())
            })
        }
    };
    match result {
        Ok(()) => ProbeState::Attached,
        Err(err) => ProbeState::Failed(err),
    }
}

/// The verifier's log is long; keep its end, where the reason is.
fn verifier_error(err: aya::programs::ProgramError) -> String {
    let text = match &err {
        aya::programs::ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            let tail: Vec<&str> = log.lines().rev().take(12).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            format!(
                "the kernel verifier rejected the program ({io_error}): {}",
                tail.join(" | ")
            )
        }
        other => other.to_string(),
    };
    tracing::debug!(error = ?err, "program load failed");
    text
}
