//! TCP connection lifecycles, IPv4 and IPv6.
//!
//! `inet_sock_set_state` fires on every TCP state change (`tcp_set_state()`,
//! `inet_sk_set_state()`). It is attached as a raw tracepoint,
//! `TP_PROTO(const struct sock *sk, const int oldstate, const int newstate)` (the agent checks
//! the prototype in BTF before attaching): the states come as arguments, so the transitions we
//! ignore cost no memory read, and the kernel builds no trace record. We act on four:
//!
//! | transition              | context        | action                                          |
//! |-------------------------|----------------|-------------------------------------------------|
//! | `* -> SYN_SENT`         | connecting task| state created, owner = current (outbound)       |
//! | `LISTEN -> SYN_RECV`    | softirq        | child socket: state created, owner unknown      |
//! | `* -> ESTABLISHED`      | either         | open record if the owner is known               |
//! | `* -> CLOSE`            | either         | close record (or fail, if never established)    |
//!
//! Inbound connections are established in softirq context, where `current` is whatever task was
//! interrupted (on loopback, usually the client). Their owner is the process that accepts them:
//! `syscalls/sys_exit_accept{,4}` follows the returned fd to its socket
//! (`current->files->fdt->fd[fd]->private_data->sk`) and emits the open record then.
//!
//! Bytes, retransmits and RTT are aggregated by the kernel itself in `tcp_sock` and read once at
//! close: no per-packet or per-syscall hook. `bytes_sent` excludes retransmitted bytes and the
//! SYN/FIN sequence numbers; `bytes_received` excludes the peer's FIN, so both equal what the
//! applications wrote and read.

use aya_ebpf::{
    helpers::bpf_ktime_get_boot_ns,
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use core::ptr::addr_of_mut;
use sonde_common::{
    AF_INET, AF_INET6, IPPROTO_TCP,
    conn::{ConnState, state_flags},
    counter,
    layout::ABSENT,
    record::{ConnRecord, RecordKind, TaskIdentity, conn_flags, direction},
    tcp_state,
};

use crate::{
    emit,
    kernel::{Window, offset, read},
    maps::{CONNS, count},
    task,
};

/// Map update flag: create or replace.
const BPF_ANY: u64 = 0;

#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn sonde_tcp_state(ctx: RawTracePointContext) -> i32 {
    let sk: u64 = ctx.arg(0);
    let old = ctx.arg::<u64>(1) as i32;
    let new = ctx.arg::<u64>(2) as i32;
    let interesting = matches!(
        new,
        tcp_state::SYN_SENT | tcp_state::SYN_RECV | tcp_state::ESTABLISHED | tcp_state::CLOSE
    );
    if !interesting || (new == tcp_state::CLOSE && old == tcp_state::LISTEN) {
        return 0;
    }
    // Where the kernel has sk_protocol as a plain field, skip MPTCP/SCTP sockets (their
    // subflows, which are TCP, come through on their own).
    let protocol_off = offset!(sock_protocol);
    if protocol_off != ABSENT && read::<u16>(sk, protocol_off) != Some(IPPROTO_TCP) {
        return 0;
    }
    match new {
        tcp_state::SYN_SENT => start(sk, direction::OUTBOUND, true),
        tcp_state::SYN_RECV => start(sk, direction::INBOUND, false),
        tcp_state::ESTABLISHED => established(sk, old),
        _ => close(sk, old),
    }
    0
}

/// A connection starts opening. The 4-tuple is not final yet (the local port of a `connect()`
/// is chosen after `SYN_SENT`), so it is taken when the handshake ends.
#[inline(always)]
fn start(sk: u64, dir: u8, owner_is_current: bool) {
    let mut state = ConnState {
        owner: TaskIdentity::UNKNOWN,
        opened_ns: unsafe { bpf_ktime_get_boot_ns() },
        established_ns: 0,
        family: 0,
        sport: 0,
        dport: 0,
        direction: dir,
        flags: 0,
        saddr: [0; 16],
        daddr: [0; 16],
    };
    if owner_is_current {
        task::write_current(&mut state.owner);
        state.flags = state_flags::OWNER_KNOWN;
    }
    if CONNS.insert(sk, state, BPF_ANY).is_err() {
        count(counter::CONN_MAP_FULL);
    }
}

#[inline(always)]
fn established(sk: u64, old: i32) {
    let state = match CONNS.get_ptr_mut(sk) {
        Some(state) => state,
        None => {
            // The start was missed (it happened before Sonde attached, or the entry was
            // evicted): track it from here with what the transition tells.
            let dir = match old {
                tcp_state::SYN_SENT => direction::OUTBOUND,
                tcp_state::SYN_RECV => direction::INBOUND,
                _ => direction::UNKNOWN,
            };
            start(sk, dir, false);
            match CONNS.get_ptr_mut(sk) {
                Some(state) => state,
                None => return,
            }
        }
    };
    unsafe {
        (*state).established_ns = bpf_ktime_get_boot_ns();
        (*state).flags |= state_flags::ESTABLISHED;
        read_tuple(
            sk,
            &mut (*state).family,
            &mut (*state).sport,
            &mut (*state).dport,
            &mut (*state).saddr,
            &mut (*state).daddr,
        );
        // Inbound connections wait for accept() to know their owner (TCP Fast Open children
        // can be accepted before this point: then the owner is already known).
        if (*state).direction != direction::INBOUND
            || (*state).flags & state_flags::OWNER_KNOWN != 0
        {
            emit_open(sk, state, old);
        }
    }
}

#[inline(always)]
fn close(sk: u64, old: i32) {
    let state = CONNS.get_ptr(sk);
    let established = match state {
        Some(state) => unsafe { (*state).flags & state_flags::ESTABLISHED != 0 },
        None => old != tcp_state::SYN_SENT && old != tcp_state::SYN_RECV,
    };
    let kind = if established {
        RecordKind::ConnClose
    } else {
        RecordKind::ConnFail
    };
    if let Some(mut entry) = emit::reserve::<ConnRecord>(kind) {
        let rec = entry.as_mut_ptr();
        unsafe {
            (*rec).header = emit::header(kind);
            match state {
                Some(state) => {
                    (*rec).owner = (*state).owner;
                    (*rec).opened_ns = (*state).opened_ns;
                    (*rec).established_ns = (*state).established_ns;
                    (*rec).direction = (*state).direction;
                    let flags = (*state).flags;
                    let mut out = 0;
                    if flags & state_flags::OWNER_KNOWN != 0 {
                        out |= conn_flags::OWNER_KNOWN;
                    }
                    if (*state).direction == direction::INBOUND
                        && established
                        && flags & state_flags::OPEN_EMITTED == 0
                    {
                        out |= conn_flags::NOT_ACCEPTED;
                    }
                    (*rec).flags = out;
                }
                None => {
                    count(counter::CONN_NO_STATE);
                    (*rec).owner = TaskIdentity::UNKNOWN;
                    (*rec).opened_ns = 0;
                    (*rec).established_ns = 0;
                    (*rec).direction = direction::UNKNOWN;
                    (*rec).flags = conn_flags::NO_STATE;
                }
            }
            match state {
                // Taken when the handshake completed; it does not change afterwards.
                Some(state) if established => {
                    (*rec).family = (*state).family;
                    (*rec).sport = (*state).sport;
                    (*rec).dport = (*state).dport;
                    (*rec).saddr = (*state).saddr;
                    (*rec).daddr = (*state).daddr;
                }
                _ => read_tuple(
                    sk,
                    &mut (*rec).family,
                    &mut (*rec).sport,
                    &mut (*rec).dport,
                    &mut (*rec).saddr,
                    &mut (*rec).daddr,
                ),
            }
            (*rec).sock_id = sk;
            (*rec).sock_cgroup_id = if (*rec).flags & conn_flags::OWNER_KNOWN != 0 {
                0
            } else {
                sock_cgroup_id(sk)
            };
            (*rec).old_state = old as u8;
            (*rec)._pad0 = [0; 3];
            (*rec).error = read::<i32>(sk, offset!(sock_err)).unwrap_or(0);
            let sent = read_counter::<u64>(sk, offset!(tcp_bytes_sent));
            let retrans = read_counter::<u64>(sk, offset!(tcp_bytes_retrans));
            (*rec).bytes_sent = sent.saturating_sub(retrans);
            (*rec).bytes_received = read_counter::<u64>(sk, offset!(tcp_bytes_received))
                .saturating_sub(fin_received(sk));
            (*rec).retransmits = read_counter::<u32>(sk, offset!(tcp_total_retrans));
            (*rec).srtt_us = read_counter::<u32>(sk, offset!(tcp_srtt_us)) >> 3;
        }
        emit::submit(entry);
    }
    let _ = CONNS.remove(sk);
}

/// Emits the open record of a tracked connection and marks it emitted.
#[inline(always)]
fn emit_open(sk: u64, state: *mut ConnState, old: i32) {
    let Some(mut entry) = emit::reserve::<ConnRecord>(RecordKind::ConnOpen) else {
        return;
    };
    let rec = entry.as_mut_ptr();
    unsafe {
        (*rec).header = emit::header(RecordKind::ConnOpen);
        (*rec).owner = (*state).owner;
        (*rec).sock_id = sk;
        (*rec).sock_cgroup_id = if (*state).flags & state_flags::OWNER_KNOWN != 0 {
            0
        } else {
            sock_cgroup_id(sk)
        };
        (*rec).opened_ns = (*state).opened_ns;
        (*rec).established_ns = (*state).established_ns;
        (*rec).bytes_sent = 0;
        (*rec).bytes_received = 0;
        (*rec).retransmits = 0;
        (*rec).srtt_us = 0;
        (*rec).error = 0;
        (*rec).family = (*state).family;
        (*rec).sport = (*state).sport;
        (*rec).dport = (*state).dport;
        (*rec).direction = (*state).direction;
        (*rec).flags = if (*state).flags & state_flags::OWNER_KNOWN != 0 {
            conn_flags::OWNER_KNOWN
        } else {
            0
        };
        (*rec).old_state = old as u8;
        (*rec)._pad0 = [0; 3];
        (*rec).saddr = (*state).saddr;
        (*rec).daddr = (*state).daddr;
        (*state).flags |= state_flags::OPEN_EMITTED;
    }
    emit::submit(entry);
}

#[tracepoint]
pub fn sonde_accept(ctx: TracePointContext) -> u32 {
    let _ = accept(&ctx);
    0
}

/// `accept()`/`accept4()` returned `fd`: the caller owns the connection behind it.
#[inline(always)]
fn accept(ctx: &TracePointContext) -> Option<()> {
    let ret: i64 = unsafe { ctx.read_at(offset!(tp_sys_exit_ret) as usize) }.ok()?;
    if ret < 0 {
        return None;
    }
    let fd = ret as u64;
    let files: u64 = read(task::current(), offset!(task_files))?;
    let fdt: u64 = read(files, offset!(files_fdt))?;
    let max_fds: u32 = read(fdt, offset!(fdtable_max_fds))?;
    if fd >= max_fds as u64 {
        return None;
    }
    let fd_array: u64 = read(fdt, offset!(fdtable_fd))?;
    let file: u64 = read(fd_array + fd * 8, 0)?;
    let socket: u64 = read(file, offset!(file_private_data))?;
    let sk: u64 = read(socket, offset!(socket_sk))?;
    let Some(state) = CONNS.get_ptr_mut(sk) else {
        // Unix and other sockets are accepted too; only inet ones are ours.
        let family: u16 = read(sk, offset!(sock_family))?;
        if family == AF_INET || family == AF_INET6 {
            count(counter::ACCEPT_NO_STATE);
        }
        return None;
    };
    unsafe {
        task::write_current(addr_of_mut!((*state).owner));
        (*state).flags |= state_flags::OWNER_KNOWN;
        if (*state).flags & (state_flags::ESTABLISHED | state_flags::OPEN_EMITTED)
            == state_flags::ESTABLISHED
        {
            emit_open(sk, state, tcp_state::ESTABLISHED);
        }
    }
    Some(())
}

/// The 4-tuple, from the socket's `__sk_common` in one read (ports in host order).
#[inline(always)]
fn read_tuple(
    sk: u64,
    family: &mut u16,
    sport: &mut u16,
    dport: &mut u16,
    saddr: &mut [u8; 16],
    daddr: &mut [u8; 16],
) {
    let mut w = Window::new();
    if !w.fill(sk, offset!(sock_window)) {
        count(counter::READ_FAILED);
    }
    let fam = w.get::<u16>(offset!(sock_family)).unwrap_or(0);
    *family = fam;
    *sport = w.get::<u16>(offset!(sock_num)).unwrap_or(0);
    if *sport == 0 {
        // At TCP_CLOSE the port is already released from skc_num; inet_sport keeps it.
        *sport = u16::from_be(read::<u16>(sk, offset!(sock_inet_sport)).unwrap_or(0));
    }
    *dport = u16::from_be(w.get::<u16>(offset!(sock_dport)).unwrap_or(0));
    if fam == AF_INET {
        let s = w.get::<[u8; 4]>(offset!(sock_rcv_saddr)).unwrap_or([0; 4]);
        let d = w.get::<[u8; 4]>(offset!(sock_daddr)).unwrap_or([0; 4]);
        *saddr = [0; 16];
        *daddr = [0; 16];
        saddr[..4].copy_from_slice(&s);
        daddr[..4].copy_from_slice(&d);
    } else {
        *saddr = w
            .get::<[u8; 16]>(offset!(sock_v6_rcv_saddr))
            .unwrap_or([0; 16]);
        *daddr = w.get::<[u8; 16]>(offset!(sock_v6_daddr)).unwrap_or([0; 16]);
    }
}

/// cgroup v2 id of the socket: `sk->sk_cgrp_data.cgroup->kn->id`, inherited from the listener
/// for inbound connections, so even unaccepted ones are attributed to a container.
#[inline(always)]
fn sock_cgroup_id(sk: u64) -> u64 {
    let cgroup: u64 = read(sk, offset!(sock_cgroup)).unwrap_or(0);
    let kn: u64 = read(cgroup, offset!(cgroup_kn)).unwrap_or(0);
    read(kn, offset!(kernfs_node_id)).unwrap_or(0)
}

/// 1 if the peer's FIN arrived (`SOCK_DONE`): `bytes_received` counts it as one byte.
#[inline(always)]
fn fin_received(sk: u64) -> u64 {
    let bit = offset!(sock_done_bit);
    if bit >= 64 {
        return 0;
    }
    match read::<u64>(sk, offset!(sock_flags)) {
        Some(flags) => (flags >> bit) & 1,
        None => 0,
    }
}

/// A `tcp_sock` counter; a failed read is counted, and reported as 0.
#[inline(always)]
fn read_counter<T: Copy + Default>(sk: u64, off: u32) -> T {
    if off == ABSENT {
        // Reported once by the agent as a missing feature, not per connection.
        return T::default();
    }
    match read::<T>(sk, off) {
        Some(v) => v,
        None => {
            count(counter::READ_FAILED);
            T::default()
        }
    }
}
