//! Draining the `EVENTS` ring buffer on the tokio runtime.
//!
//! The kernel wakes us only when `wakeup_bytes` are waiting (see `sonde-ebpf/src/emit.rs`); below
//! that, records wait for the next tick of `interval`. Each wake-up drains everything available
//! and hands the records to a [`RecordSink`] in one batch, then calls [`RecordSink::end_batch`].

use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use tokio::{io::unix::AsyncFd, sync::watch};

/// Receives raw records, borrowed from the ring buffer for the duration of the call.
pub trait RecordSink {
    fn record(&mut self, data: &[u8]);
    /// Called after each drain, with the number of records it delivered.
    fn end_batch(&mut self, records: usize);
}

pub struct EventReader {
    ring: AsyncFd<RingBuf<MapData>>,
    interval: Duration,
}

impl EventReader {
    pub fn new(ring: RingBuf<MapData>, interval: Duration) -> std::io::Result<Self> {
        Ok(Self {
            // SAFETY: the RingBuf owns its map fd, which stays open and unchanged until the
            // AsyncFd (and the RingBuf inside it) is dropped.
            ring: unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
                .map_err(std::io::Error::from)?,
            interval,
        })
    }

    /// Drains until `stop` turns true, then drains once more so nothing already in the buffer
    /// is left behind.
    pub async fn run(
        &mut self,
        sink: &mut impl RecordSink,
        mut stop: watch::Receiver<bool>,
    ) -> std::io::Result<()> {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if *stop.borrow() {
                break;
            }
            tokio::select! {
                guard = self.ring.readable_mut() => {
                    let mut guard = guard?;
                    let n = drain(guard.get_inner_mut(), sink);
                    guard.clear_ready();
                    sink.end_batch(n);
                }
                _ = tick.tick() => {
                    let n = drain(self.ring.get_mut(), sink);
                    sink.end_batch(n);
                }
                changed = stop.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
            }
        }
        let n = drain(self.ring.get_mut(), sink);
        sink.end_batch(n);
        Ok(())
    }
}

fn drain(ring: &mut RingBuf<MapData>, sink: &mut impl RecordSink) -> usize {
    let mut n = 0;
    while let Some(item) = ring.next() {
        sink.record(&item);
        n += 1;
    }
    n
}
