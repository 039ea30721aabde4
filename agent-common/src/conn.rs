//! Per-socket state kept by the kernel in the `CONNS` LRU hash (key: the socket's kernel address).
//!
//! An entry is created when a connection starts opening (first SYN sent, or child socket created
//! by a listener) and removed when the socket reaches `TCP_CLOSE`. Between those points it holds
//! what the close record needs and the kernel cannot give later: who opened it and when.

use crate::record::TaskIdentity;

/// Bits of [`ConnState::flags`].
pub mod state_flags {
    /// `owner` holds the connecting or accepting process.
    pub const OWNER_KNOWN: u8 = 1;
    /// The open record was emitted (established and, when inbound, accepted).
    pub const OPEN_EMITTED: u8 = 2;
    /// The handshake completed.
    pub const ESTABLISHED: u8 = 4;
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnState {
    pub owner: TaskIdentity,
    pub opened_ns: u64,
    pub established_ns: u64,
    pub family: u16,
    pub sport: u16,
    pub dport: u16,
    /// One of `record::direction`.
    pub direction: u8,
    /// Bits of [`state_flags`].
    pub flags: u8,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<ConnState>() == 104);
    assert!(offset_of!(ConnState, owner) == 0);
    assert!(offset_of!(ConnState, opened_ns) == 48);
    assert!(offset_of!(ConnState, established_ns) == 56);
    assert!(offset_of!(ConnState, family) == 64);
    assert!(offset_of!(ConnState, direction) == 70);
    assert!(offset_of!(ConnState, flags) == 71);
    assert!(offset_of!(ConnState, saddr) == 72);
    assert!(offset_of!(ConnState, daddr) == 88);
};

#[cfg(feature = "user")]
// SAFETY: #[repr(C)], integers and byte arrays only, no implicit padding (asserted above).
unsafe impl aya::Pod for ConnState {}
