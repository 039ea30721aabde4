//! The maps shared with userspace. Sizes here are defaults; the agent sets them at load time
//! from its configuration (rule 4: bounded everything).

use aya_ebpf::{
    macros::map,
    maps::{LruHashMap, PerCpuArray, RingBuf},
};
use sonde_common::{conn::ConnState, counter};

/// Lifecycle records (`sonde_common::record`), drained by the agent.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

/// Per-connection state, keyed by the socket's kernel address. LRU: when full, the oldest entry
/// is evicted and that connection later closes flagged `NO_STATE` (counted), never silently.
#[map]
pub static CONNS: LruHashMap<u64, ConnState> = LruHashMap::with_max_entries(65536, 0);

/// Per-CPU drop and anomaly counters, indexed by `sonde_common::counter`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Adds one to a counter of this CPU (per-CPU: no atomics needed).
#[inline(always)]
pub fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        unsafe { *slot += 1 };
    }
}
