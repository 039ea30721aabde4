//! The kernel ↔ userspace ABI of Sonde.
//!
//! Everything the eBPF programs (`sonde-ebpf`) and the agent (`sonde`) exchange is defined here
//! exactly once, as `#[repr(C)]` types with explicit padding. Each type carries compile-time size
//! and offset assertions, so both sides fail to build if the layout drifts.
//!
//! - [`record`]: records on the `EVENTS` ring buffer (process and connection lifecycles).
//! - [`conn`]: the per-socket state kept in the `CONNS` LRU hash.
//! - [`layout`]: the offsets of kernel fields the programs read, computed by userspace at load
//!   time from tracefs `format` files and the kernel's BTF, handed over as a global.
//! - [`counter`]: indexes of the per-CPU `COUNTERS` array (drops and anomalies).
#![no_std]

pub mod conn;
pub mod counter;
pub mod layout;
pub mod record;

/// Names of the maps and programs in the eBPF object, shared so neither side spells them twice.
pub mod names {
    pub const EVENTS_MAP: &str = "EVENTS";
    pub const CONNS_MAP: &str = "CONNS";
    pub const COUNTERS_MAP: &str = "COUNTERS";
    pub const LAYOUT_GLOBAL: &str = "LAYOUT";
}

/// Length of `task_struct.comm`.
pub const COMM_LEN: usize = 16;

/// TCP states as in `include/net/tcp_states.h` (a stable UAPI-like enumeration).
pub mod tcp_state {
    pub const ESTABLISHED: i32 = 1;
    pub const SYN_SENT: i32 = 2;
    pub const SYN_RECV: i32 = 3;
    pub const FIN_WAIT1: i32 = 4;
    pub const FIN_WAIT2: i32 = 5;
    pub const TIME_WAIT: i32 = 6;
    pub const CLOSE: i32 = 7;
    pub const CLOSE_WAIT: i32 = 8;
    pub const LAST_ACK: i32 = 9;
    pub const LISTEN: i32 = 10;
    pub const CLOSING: i32 = 11;
    pub const NEW_SYN_RECV: i32 = 12;
}

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const IPPROTO_TCP: u16 = 6;
