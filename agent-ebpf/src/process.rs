//! Process lifecycle: exec, fork, exit.
//!
//! - `sched/sched_process_exec` (classic tracepoint, fired in `exec_binprm()` once the new image
//!   is in place: `current` is the process, `comm` and `mm` are the new ones);
//! - `sched_process_fork` as a raw tracepoint (`TP_PROTO(struct task_struct *parent,
//!   struct task_struct *child)`): the classic record has only the child's pid, and the child's
//!   start time is needed for its identity;
//! - `sched/sched_process_exit` (classic, fired in `do_exit()` of every thread): only the last
//!   thread of a process produces a record.

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_current_cgroup_id, generated},
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use core::{ffi::c_void, ptr::addr_of_mut};
use sonde_common::{
    layout::ABSENT,
    record::{ARGS_LEN, ExecRecord, ExitRecord, FILENAME_LEN, ForkRecord, RecordKind},
};

use crate::{
    emit,
    kernel::{offset, read},
    task,
};

#[tracepoint]
pub fn sonde_exec(ctx: TracePointContext) -> u32 {
    let Some(mut entry) = emit::reserve::<ExecRecord>(RecordKind::Exec) else {
        return 0;
    };
    let rec = entry.as_mut_ptr();
    let current = task::current();
    unsafe {
        (*rec).header = emit::header(RecordKind::Exec);
        task::write_current(addr_of_mut!((*rec).task));

        let parent: u64 = read(current, offset!(task_real_parent)).unwrap_or(0);
        (*rec).ppid = read::<u32>(parent, offset!(task_tgid)).unwrap_or(0);
        (*rec).parent_start_ns = if parent == 0 {
            0
        } else {
            task::start_ns(parent)
        };
        (*rec)._pad0 = 0;

        // filename: a __data_loc field (low 16 bits: offset in the record, high: length).
        (*rec).filename_len = 0;
        let loc_off = offset!(tp_exec_filename);
        if loc_off != ABSENT
            && let Ok(loc) = ctx.read_at::<u32>(loc_off as usize)
        {
            let src = (ctx.as_ptr() as *const u8).add((loc & 0xffff) as usize);
            let n = generated::bpf_probe_read_kernel_str(
                addr_of_mut!((*rec).filename).cast::<c_void>(),
                FILENAME_LEN as u32,
                src.cast::<c_void>(),
            );
            // n counts the trailing NUL.
            if n > 1 && n <= FILENAME_LEN as i64 {
                (*rec).filename_len = (n - 1) as u16;
            }
        }

        // The argument vector, as laid out on the new stack by execve.
        (*rec).args_len = 0;
        (*rec).args_size = 0;
        let mm: u64 = read(current, offset!(task_mm)).unwrap_or(0);
        let arg_start: u64 = read(mm, offset!(mm_arg_start)).unwrap_or(0);
        let arg_end: u64 = read(mm, offset!(mm_arg_end)).unwrap_or(0);
        if arg_start != 0 && arg_end > arg_start {
            let size = arg_end - arg_start;
            (*rec).args_size = size as u32;
            let n = if size > ARGS_LEN as u64 {
                ARGS_LEN as u32
            } else {
                size as u32
            };
            if n > 0
                && generated::bpf_probe_read_user(
                    addr_of_mut!((*rec).args).cast::<c_void>(),
                    n,
                    arg_start as *const c_void,
                ) == 0
            {
                (*rec).args_len = n as u16;
            }
        }
    }
    emit::submit(entry);
    0
}

#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn sonde_fork(ctx: RawTracePointContext) -> i32 {
    let child: u64 = ctx.arg(1);
    let Some(child_pid) = read::<u32>(child, offset!(task_tgid)) else {
        return 0;
    };
    if child_pid == task::current_pid() {
        // A new thread of the same process: not a process lifecycle event.
        return 0;
    }
    let Some(mut entry) = emit::reserve::<ForkRecord>(RecordKind::Fork) else {
        return 0;
    };
    let rec = entry.as_mut_ptr();
    unsafe {
        (*rec).header = emit::header(RecordKind::Fork);
        task::write_current(addr_of_mut!((*rec).parent));
        (*rec).child_pid = child_pid;
        (*rec)._pad0 = 0;
        // Not CLONE_THREAD: the child leads its own thread group.
        (*rec).child_start_ns = read(child, offset!(task_start_boottime)).unwrap_or(0);
        (*rec).child_cgroup_id =
            task::cgroup_id(child).unwrap_or_else(|| bpf_get_current_cgroup_id());
    }
    emit::submit(entry);
    0
}

#[tracepoint]
pub fn sonde_exit(ctx: TracePointContext) -> u32 {
    let current = task::current();
    // Only the last thread of the group ends the process: the record's `group_dead` field where
    // the kernel has it (6.16+), else `signal->live`, already decremented at this point.
    let group_dead_off = offset!(tp_exit_group_dead);
    let group_dead = if group_dead_off != ABSENT {
        matches!(unsafe { ctx.read_at::<u8>(group_dead_off as usize) }, Ok(v) if v != 0)
    } else {
        let signal: u64 = read(current, offset!(task_signal)).unwrap_or(0);
        matches!(read::<i32>(signal, offset!(signal_live)), Some(0))
    };
    if !group_dead {
        return 0;
    }
    let Some(mut entry) = emit::reserve::<ExitRecord>(RecordKind::Exit) else {
        return 0;
    };
    let rec = entry.as_mut_ptr();
    unsafe {
        (*rec).header = emit::header(RecordKind::Exit);
        task::write_current(addr_of_mut!((*rec).task));
        (*rec).exit_code = read::<u32>(current, offset!(task_exit_code)).unwrap_or(0);
        (*rec)._pad0 = 0;
    }
    emit::submit(entry);
    0
}
