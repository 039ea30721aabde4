//! Indexes of the per-CPU `COUNTERS` array: every place the kernel side can lose or degrade a
//! record counts it here (rule 3: nothing is lost silently). Userspace sums the CPUs.

/// A ring buffer reservation failed and a record of this kind was lost. Indexed by
/// `RecordKind as u32` (1..=8), so index 0 is unused.
pub const fn ringbuf_full(kind: u16) -> u32 {
    kind as u32
}

/// Highest record kind: indexes 1..=LAST_KIND count ring buffer losses.
const LAST_KIND: u32 = 8;

/// Inserting into `CONNS` failed: the connection will close without open-time state.
pub const CONN_MAP_FULL: u32 = 16;
/// A connection closed that the kernel held no state for (opened before Sonde started, or its
/// state was evicted from the LRU map). It is still reported, flagged `NO_STATE`.
pub const CONN_NO_STATE: u32 = 17;
/// `accept()` returned a socket the kernel held no state for (its child socket was created
/// before Sonde started, or evicted): the connection's owner stays unknown.
pub const ACCEPT_NO_STATE: u32 = 18;
/// A kernel memory read failed; the record was sent with the field zeroed.
pub const READ_FAILED: u32 = 19;

/// Size of the `COUNTERS` array.
pub const COUNT: u32 = 24;

/// Human names, indexed like the array; empty for unused slots.
pub const NAMES: [&str; COUNT as usize] = [
    "",
    "ringbuf_full_exec",
    "ringbuf_full_fork",
    "ringbuf_full_exit",
    "ringbuf_full_conn_open",
    "ringbuf_full_conn_close",
    "ringbuf_full_conn_fail",
    "ringbuf_full_cgroup_mkdir",
    "ringbuf_full_cgroup_rmdir",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "conn_map_full",
    "conn_no_state",
    "accept_no_state",
    "read_failed",
    "",
    "",
    "",
    "",
];

/// Counters that mean a record was lost (as opposed to recorded with less detail).
pub const fn is_loss(index: u32) -> bool {
    index >= 1 && index <= LAST_KIND
}
