//! Sonde's eBPF programs. Tracepoints only: they exist on hardened kernels without kprobes or
//! fentry. One file per hook family:
//!
//! - [`process`]: `sched/sched_process_exec`, `sched_process_fork` (raw tracepoint, for the
//!   child's task), `sched/sched_process_exit`;
//! - [`cgroup`]: `cgroup/cgroup_mkdir`, `cgroup/cgroup_rmdir` (ids and paths of new cgroups);
//! - [`tcp`]: `inet_sock_set_state` (raw tracepoint: open, establish, close, fail) and
//!   `syscalls/sys_exit_accept{,4}` (the process that accepted an inbound connection).
//!
//! Shared pieces: [`maps`] (the maps and drop counters), [`kernel`] (offsets handed over by
//! userspace and reads of kernel memory), [`task`] (who is running), [`emit`] (ring buffer
//! reservation with batched wake-ups).
#![no_std]
#![no_main]

mod cgroup;
mod emit;
mod kernel;
mod maps;
mod process;
mod task;
mod tcp;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects unbounded loops, so a program that can reach a panic does not load:
    // panics are compile-time bugs here, never a runtime path.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
