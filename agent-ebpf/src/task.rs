//! Identity of tasks: the running one (helpers) and others reached through `task_struct`.

use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_task,
    bpf_get_current_uid_gid, generated,
};
use core::ffi::c_void;
use sonde_common::{COMM_LEN, record::TaskIdentity};

use crate::kernel::{offset, read};

/// Address of the running `task_struct`.
#[inline(always)]
pub fn current() -> u64 {
    unsafe { bpf_get_current_task() }
}

/// Process id (tgid) of the running task.
#[inline(always)]
pub fn current_pid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

/// `start_boottime` of the thread-group leader of `task`: with the pid, the process identity.
#[inline(always)]
pub fn start_ns(task: u64) -> u64 {
    let leader: u64 = read(task, offset!(task_group_leader)).unwrap_or(task);
    read(leader, offset!(task_start_boottime)).unwrap_or(0)
}

/// cgroup v2 id of `task`: `task->cgroups->dfl_cgrp->kn->id`.
#[inline(always)]
pub fn cgroup_id(task: u64) -> Option<u64> {
    let css_set: u64 = read(task, offset!(task_cgroups))?;
    let cgroup: u64 = read(css_set, offset!(css_set_dfl_cgrp))?;
    let kn: u64 = read(cgroup, offset!(cgroup_kn))?;
    read(kn, offset!(kernfs_node_id))
}

/// Writes the identity of the running task to `out` (which may be ring buffer memory).
#[inline(always)]
pub fn write_current(out: *mut TaskIdentity) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    unsafe {
        (*out).pid = (pid_tgid >> 32) as u32;
        (*out).tid = pid_tgid as u32;
        (*out).start_ns = start_ns(current());
        (*out).cgroup_id = bpf_get_current_cgroup_id();
        (*out).uid = uid_gid as u32;
        (*out)._pad0 = 0;
        let comm = core::ptr::addr_of_mut!((*out).comm);
        if generated::bpf_get_current_comm(comm.cast::<c_void>(), COMM_LEN as u32) != 0 {
            (*out).comm = [0; COMM_LEN];
        }
    }
}
