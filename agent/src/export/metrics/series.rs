//! The values behind the workload series: process counts, per-(direction, remote) connection
//! counts and fixed-bucket histograms. Plain data with `add` (merge) operations, used both by
//! the pipeline's local accumulator and by the shared registry.

use std::borrow::Cow;

/// Connect-duration bucket upper bounds, in seconds: 100 µs (loopback) to 5 s (a SYN
/// retransmitted a few times).
pub const CONNECT_BUCKETS: [f64; 10] =
    [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];
/// Round-trip-time bucket upper bounds, in seconds: decades from 100 µs to 1 s (coarser than
/// connect times: one histogram per connection key is a large share of a scrape).
pub const RTT_BUCKETS: [f64; 5] = [0.0001, 0.001, 0.01, 0.1, 1.0];

pub type ConnectHistogram = Histogram<{ CONNECT_BUCKETS.len() }>;
pub type RttHistogram = Histogram<{ RTT_BUCKETS.len() }>;

/// A histogram over `N` fixed bounds (given at each call): per-bucket (not cumulative) counts;
/// values above the last bound only count in `count` (the `+Inf` bucket).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Histogram<const N: usize> {
    pub buckets: [u64; N],
    pub sum: f64,
    pub count: u64,
}

impl<const N: usize> Default for Histogram<N> {
    fn default() -> Self {
        Self {
            buckets: [0; N],
            sum: 0.0,
            count: 0,
        }
    }
}

impl<const N: usize> Histogram<N> {
    pub fn observe(&mut self, bounds: &[f64; N], seconds: f64) {
        self.sum += seconds;
        self.count += 1;
        if let Some(i) = bounds.iter().position(|&le| seconds <= le) {
            self.buckets[i] += 1;
        }
    }

    pub fn add(&mut self, other: &Self) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *a += b;
        }
        self.sum += other.sum;
        self.count += other.count;
    }

    /// `(upper bound, count in this bucket)`, as the encoder wants them.
    pub fn encoder_buckets(&self, bounds: &[f64; N]) -> [(f64, u64); N] {
        std::array::from_fn(|i| (bounds[i], self.buckets[i]))
    }
}

/// Process lifecycle counts of one workload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcCounts {
    pub execs: u64,
    pub forks: u64,
    pub exits_ok: u64,
    pub exits_error: u64,
    pub exits_signal: u64,
}

impl ProcCounts {
    pub fn add(&mut self, o: &ProcCounts) {
        self.execs += o.execs;
        self.forks += o.forks;
        self.exits_ok += o.exits_ok;
        self.exits_error += o.exits_error;
        self.exits_signal += o.exits_signal;
    }
}

/// Which side opened a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    Inbound,
    Outbound,
    /// Seen only closing (predates Sonde, or its kernel state was evicted).
    Unknown,
}

impl Direction {
    pub const fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
            Direction::Unknown => "unknown",
        }
    }

    /// `direction="…"`, as written in the exposition.
    pub const fn rendered_label(self) -> &'static str {
        match self {
            Direction::Inbound => "direction=\"inbound\"",
            Direction::Outbound => "direction=\"outbound\"",
            Direction::Unknown => "direction=\"unknown\"",
        }
    }

    pub fn from_name(name: &str) -> Self {
        match name {
            "inbound" => Direction::Inbound,
            "outbound" => Direction::Outbound,
            _ => Direction::Unknown,
        }
    }
}

/// Connection counts for one workload, direction and remote.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConnCounts {
    pub opened: u64,
    pub closed: u64,
    /// Failures by reason (`refused`, `timeout`, …): a handful of distinct values.
    pub failed: Vec<(Cow<'static, str>, u64)>,
    pub sent_bytes: u64,
    pub received_bytes: u64,
    pub retransmits: u64,
    pub connect: ConnectHistogram,
    pub rtt: RttHistogram,
}

impl ConnCounts {
    pub fn fail(&mut self, reason: Cow<'static, str>, n: u64) {
        match self.failed.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, count)) => *count += n,
            None => self.failed.push((reason, n)),
        }
    }

    /// Adds `o` except its failures (merged by the caller, which counts new reasons as series).
    pub fn add_counts(&mut self, o: &ConnCounts) {
        self.opened += o.opened;
        self.closed += o.closed;
        self.sent_bytes += o.sent_bytes;
        self.received_bytes += o.received_bytes;
        self.retransmits += o.retransmits;
        self.connect.add(&o.connect);
        self.rtt.add(&o.rtt);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_and_merge() {
        let mut h = ConnectHistogram::default();
        for v in [0.00005, 0.0001, 0.003, 60.0] {
            h.observe(&CONNECT_BUCKETS, v);
        }
        assert_eq!(h.count, 4);
        assert_eq!(h.buckets[0], 2);
        assert_eq!(h.buckets[3], 1);
        assert_eq!(h.buckets.iter().sum::<u64>(), 3, "60 s is only in +Inf");
        let mut total = ConnectHistogram::default();
        total.add(&h);
        total.add(&h);
        assert_eq!(total.count, 8);
        assert_eq!(total.encoder_buckets(&CONNECT_BUCKETS)[0], (0.0001, 4));
    }

    #[test]
    fn failures_merge_by_reason() {
        let mut c = ConnCounts::default();
        c.fail("refused".into(), 1);
        c.fail("timeout".into(), 2);
        c.fail("refused".into(), 3);
        assert_eq!(c.failed, vec![("refused".into(), 4), ("timeout".into(), 2)]);
    }
}
