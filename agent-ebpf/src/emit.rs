//! Ring buffer output with batched wake-ups: a record only wakes the agent once
//! `LAYOUT.wakeup_bytes` are waiting; below that the agent finds it on its next timed drain.

use aya_ebpf::{
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_boot_ns},
    maps::ring_buf::RingBufEntry,
};
use sonde_common::{
    counter,
    record::{Header, RecordKind},
};

use crate::{kernel::offset, maps};

// bpf_ringbuf_query / bpf_ringbuf_submit flags (include/uapi/linux/bpf.h).
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;

/// Reserves room for one record, counting the loss when the ring buffer is full.
#[inline(always)]
pub fn reserve<T: 'static>(kind: RecordKind) -> Option<RingBufEntry<T>> {
    let entry = maps::EVENTS.reserve::<T>(0);
    if entry.is_none() {
        maps::count(counter::ringbuf_full(kind as u16));
    }
    entry
}

#[inline(always)]
pub fn submit<T>(entry: RingBufEntry<T>) {
    let waiting = maps::EVENTS.query(BPF_RB_AVAIL_DATA);
    let flags = if waiting >= offset!(wakeup_bytes) {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    entry.submit(flags);
}

#[inline(always)]
pub fn header(kind: RecordKind) -> Header {
    Header {
        kind: kind as u16,
        _pad0: 0,
        cpu: unsafe { bpf_get_smp_processor_id() },
        ts_ns: unsafe { bpf_ktime_get_boot_ns() },
    }
}
