//! One clock (architecture rule 10): the kernel stamps events with `CLOCK_BOOTTIME`, the same
//! base as process start times; wall-clock time is derived only at the edge, for output.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::time::{ClockId, clock_gettime};

/// Converts `CLOCK_BOOTTIME` nanoseconds to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// `CLOCK_REALTIME - CLOCK_BOOTTIME`, in nanoseconds.
    offset_ns: i128,
}

fn ns(clock: ClockId) -> i128 {
    match clock_gettime(clock) {
        Ok(ts) => ts.tv_sec() as i128 * 1_000_000_000 + ts.tv_nsec() as i128,
        // Both clocks exist on every Linux since 2.6.39; a failure would be a broken vDSO.
        Err(_) => 0,
    }
}

impl Clock {
    /// Reads both clocks now. Call again from time to time to follow NTP adjustments.
    pub fn now() -> Self {
        let boot = ns(ClockId::CLOCK_BOOTTIME);
        let real = ns(ClockId::CLOCK_REALTIME);
        Self {
            offset_ns: real - boot,
        }
    }

    /// Current `CLOCK_BOOTTIME` in nanoseconds.
    pub fn boot_now_ns() -> u64 {
        ns(ClockId::CLOCK_BOOTTIME).max(0) as u64
    }

    pub fn wall(&self, boot_ns: u64) -> SystemTime {
        let t = (boot_ns as i128 + self.offset_ns).max(0);
        UNIX_EPOCH + Duration::from_nanos(t.min(u64::MAX as i128) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_time_maps_to_now() {
        let clock = Clock::now();
        let wall = clock.wall(Clock::boot_now_ns());
        let delta = SystemTime::now()
            .duration_since(wall)
            .unwrap_or_else(|e| e.duration());
        assert!(delta < Duration::from_secs(1), "delta {delta:?}");
    }
}
