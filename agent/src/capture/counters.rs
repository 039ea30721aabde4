//! The kernel's per-CPU drop and anomaly counters (`sonde_common::counter`), summed over CPUs.

use aya::maps::{MapData, PerCpuArray};
use sonde_common::counter;

pub struct KernelCounters {
    map: PerCpuArray<MapData, u64>,
}

/// One reading of every counter, indexed like `sonde_common::counter`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterValues(pub [u64; counter::COUNT as usize]);

impl CounterValues {
    /// Records lost in the kernel (ring buffer full), all kinds together.
    pub fn lost(&self) -> u64 {
        (0..counter::COUNT)
            .filter(|&i| counter::is_loss(i))
            .map(|i| self.0[i as usize])
            .sum()
    }

    /// Non-zero counters with their names.
    pub fn named(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        counter::NAMES
            .iter()
            .zip(self.0.iter())
            .filter(|(name, value)| !name.is_empty() && **value > 0)
            .map(|(name, value)| (*name, *value))
    }
}

impl KernelCounters {
    pub fn new(map: PerCpuArray<MapData, u64>) -> Self {
        Self { map }
    }

    /// Sums each counter over all CPUs. A counter that cannot be read reads as 0 and is logged.
    pub fn read(&self) -> CounterValues {
        let mut out = CounterValues::default();
        for (index, slot) in out.0.iter_mut().enumerate() {
            match self.map.get(&(index as u32), 0) {
                Ok(per_cpu) => *slot = per_cpu.iter().sum(),
                Err(err) => tracing::warn!(index, %err, "cannot read kernel counter"),
            }
        }
        out
    }
}
