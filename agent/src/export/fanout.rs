//! Fan-out of the NDJSON event stream to live subscribers (`GET /v1/events`), off the capture
//! path.
//!
//! The pipeline appends each event's JSON line to a [`StreamBatch`] together with its filter
//! keys (type index + two `Arc`s), and publishes the batch, shared (`Arc`), at the end of each
//! drain or when it reaches [`STREAM_BATCH_BYTES`]. Each subscriber has its own bounded queue of
//! batches, fed with `try_send`: publishing never waits. A subscriber whose queue is full — a
//! slow or stalled reader — is dropped on the spot and counted (`events_subscribers_dropped`);
//! its connection is told to close ([`SubscriberState::kill`]). Memory is bounded: every queue
//! ends at the newest batch, so all the queued batches together are at most `queue` distinct
//! batches of ≤ [`STREAM_BATCH_BYTES`], plus one being written per subscriber.
//!
//! With no subscriber the pipeline does no stream work at all ([`StreamHub::wanted`]).

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};

use super::filter::{Filter, FilterKeys, type_index};

/// A batch is published once it holds this much, or at the end of a drain.
pub const STREAM_BATCH_BYTES: usize = 128 << 10;
/// Default batches queued per subscriber before it is dropped as too slow.
pub const DEFAULT_QUEUE: usize = 64;
/// Default limit of concurrent subscribers.
pub const DEFAULT_MAX_SUBSCRIBERS: usize = 16;

/// `events.*`: the event stream's fan-out to `/v1/events` readers.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// Concurrent readers; more get 503.
    pub max_subscribers: usize,
    /// Batches (≤ 128 KiB) queued per reader before it is disconnected as too slow (counted).
    pub subscriber_buffer: usize,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            max_subscribers: DEFAULT_MAX_SUBSCRIBERS,
            subscriber_buffer: DEFAULT_QUEUE,
        }
    }
}

/// Lines and, for each, its end offset, type and filter keys.
#[derive(Default)]
pub struct StreamBatch {
    pub bytes: Vec<u8>,
    pub entries: Vec<Entry>,
}

pub struct Entry {
    /// End of the line in `bytes` (exclusive); it starts where the previous one ends.
    pub end: u32,
    pub type_index: u8,
    pub keys: FilterKeys,
}

impl StreamBatch {
    /// Each line with its type and keys.
    pub fn lines(&self) -> impl Iterator<Item = (&[u8], &Entry)> {
        let mut start = 0usize;
        self.entries.iter().map(move |e| {
            let end = e.end as usize;
            let line = &self.bytes[start..end];
            start = end;
            (line, e)
        })
    }
}

/// One subscriber, as both sides see it.
pub struct SubscriberState {
    /// Set when the publisher dropped it for falling behind.
    dropped: AtomicBool,
    /// Woken when dropped, so the connection can be closed even if it never reads again.
    pub kill: Arc<Notify>,
}

impl SubscriberState {
    pub fn dropped(&self) -> bool {
        self.dropped.load(Ordering::Acquire)
    }
}

struct Sub {
    tx: mpsc::Sender<Arc<StreamBatch>>,
    state: Arc<SubscriberState>,
}

struct Shared {
    pending: Mutex<Vec<Sub>>,
    has_pending: AtomicBool,
    active: AtomicUsize,
    dropped: AtomicU64,
    published: AtomicU64,
    max_subscribers: usize,
    queue: usize,
}

/// Counters for the status API and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Subscribers connected now.
    pub subscribers: usize,
    /// Subscribers dropped because they fell `queue` batches behind.
    pub subscribers_dropped: u64,
    /// Events published to at least one subscriber.
    pub events_published: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubscribeError {
    #[error(
        "too many event stream subscribers: {max} are connected (api max subscribers). Fix: \
         close an idle stream, filter one stream instead of opening several, or raise \
         --api-max-subscribers"
    )]
    Full { max: usize },
}

/// The publishing side, owned by the pipeline.
pub struct StreamHub {
    shared: Arc<Shared>,
    subs: Vec<Sub>,
    batch: StreamBatch,
}

/// The subscribing side, cloned into the API server.
#[derive(Clone)]
pub struct StreamHandle {
    shared: Arc<Shared>,
}

impl StreamHub {
    /// `queue`: batches buffered per subscriber; `max_subscribers`: concurrent subscribers.
    pub fn new(queue: usize, max_subscribers: usize) -> (Self, StreamHandle) {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Vec::new()),
            has_pending: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
            published: AtomicU64::new(0),
            max_subscribers,
            queue: queue.max(1),
        });
        let handle = StreamHandle {
            shared: Arc::clone(&shared),
        };
        let hub = Self {
            shared,
            subs: Vec::new(),
            batch: StreamBatch::default(),
        };
        (hub, handle)
    }

    /// Whether anyone listens: when false, callers skip formatting lines for the stream.
    #[inline]
    pub fn wanted(&self) -> bool {
        !self.subs.is_empty() || self.shared.has_pending.load(Ordering::Relaxed)
    }

    /// The buffer to format the next line into; finish with [`Self::commit_line`].
    pub fn line_buffer(&mut self) -> &mut Vec<u8> {
        &mut self.batch.bytes
    }

    /// Records the line formatted since the previous commit (an empty line is ignored).
    pub fn commit_line(&mut self, type_name: &str, keys: FilterKeys) {
        let start = self.batch.entries.last().map_or(0, |e| e.end as usize);
        if self.batch.bytes.len() == start {
            return;
        }
        self.batch.entries.push(Entry {
            end: self.batch.bytes.len() as u32,
            type_index: type_index(type_name),
            keys,
        });
        if self.batch.bytes.len() >= STREAM_BATCH_BYTES {
            self.publish();
        }
    }

    /// Appends a line already formatted elsewhere (e.g. in the stdout batch).
    pub fn push_line(&mut self, type_name: &str, line: &[u8], keys: FilterKeys) {
        self.batch.bytes.extend_from_slice(line);
        self.commit_line(type_name, keys);
    }

    /// Hands the current batch to every subscriber; drops those whose queue is full. Called at
    /// the end of each drain.
    pub fn publish(&mut self) {
        if self.shared.has_pending.load(Ordering::Acquire) {
            let mut pending = match self.shared.pending.lock() {
                Ok(p) => p,
                Err(poisoned) => poisoned.into_inner(),
            };
            self.shared.has_pending.store(false, Ordering::Release);
            self.subs.append(&mut pending);
        }
        if self.batch.entries.is_empty() {
            self.batch.bytes.clear();
            return;
        }
        if self.subs.is_empty() {
            self.batch.bytes.clear();
            self.batch.entries.clear();
            return;
        }
        let capacity = self.batch.bytes.capacity().max(STREAM_BATCH_BYTES + 4096);
        let events = self.batch.entries.len() as u64;
        let batch = Arc::new(std::mem::replace(
            &mut self.batch,
            StreamBatch {
                bytes: Vec::with_capacity(capacity),
                entries: Vec::with_capacity(events as usize),
            },
        ));
        let shared = &self.shared;
        self.subs
            .retain(|sub| match sub.tx.try_send(Arc::clone(&batch)) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    sub.state.dropped.store(true, Ordering::Release);
                    sub.state.kill.notify_one();
                    let total = shared.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::warn!(
                        queued_batches = shared.queue,
                        events_subscribers_dropped = total,
                        "event stream subscriber dropped: it fell behind (a slow or stalled reader)"
                    );
                    false
                }
                // The reader went away.
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
        self.shared.published.fetch_add(events, Ordering::Relaxed);
    }

    pub fn stats(&self) -> StreamStats {
        self.shared.stats()
    }
}

impl Shared {
    fn stats(&self) -> StreamStats {
        StreamStats {
            subscribers: self.active.load(Ordering::Acquire),
            subscribers_dropped: self.dropped.load(Ordering::Relaxed),
            events_published: self.published.load(Ordering::Relaxed),
        }
    }
}

/// Decrements the subscriber count when a subscription ends, however it ends.
struct ActiveGuard(Arc<Shared>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

impl StreamHandle {
    /// Registers a subscriber; it sees events from the pipeline's next drain on. `kill` is
    /// notified if it is dropped for falling behind.
    pub fn subscribe(
        &self,
        filter: Filter,
        kill: Arc<Notify>,
    ) -> Result<Subscription, SubscribeError> {
        let shared = &self.shared;
        let max = shared.max_subscribers;
        shared
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map_err(|_| SubscribeError::Full { max })?;
        let guard = ActiveGuard(Arc::clone(shared));
        let (tx, rx) = mpsc::channel(shared.queue);
        let state = Arc::new(SubscriberState {
            dropped: AtomicBool::new(false),
            kill,
        });
        {
            let mut pending = match shared.pending.lock() {
                Ok(p) => p,
                Err(poisoned) => poisoned.into_inner(),
            };
            pending.push(Sub {
                tx,
                state: Arc::clone(&state),
            });
            shared.has_pending.store(true, Ordering::Release);
        }
        Ok(Subscription {
            rx,
            state,
            filter,
            finished: false,
            _guard: guard,
        })
    }

    pub fn stats(&self) -> StreamStats {
        self.shared.stats()
    }
}

/// A batch's bytes, shared without copying into the HTTP body.
struct SharedBytes(Arc<StreamBatch>);

impl AsRef<[u8]> for SharedBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0.bytes
    }
}

/// The last line a dropped subscriber reads (if it still reads at all).
pub const DROPPED_LINE: &[u8] = b"{\"type\":\"stream_dropped\",\"reason\":\"this reader fell behind the event stream and was disconnected; read faster, or filter (namespace, pod, container, unit, type)\"}\n";

/// One subscriber's stream of filtered NDJSON chunks.
pub struct Subscription {
    rx: mpsc::Receiver<Arc<StreamBatch>>,
    state: Arc<SubscriberState>,
    filter: Filter,
    finished: bool,
    _guard: ActiveGuard,
}

impl Subscription {
    pub fn state(&self) -> &Arc<SubscriberState> {
        &self.state
    }

    /// The next chunk of lines that pass the filter; `None` at the end (agent stopping, or this
    /// subscriber dropped — then after a last `stream_dropped` line).
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        loop {
            if self.finished {
                return Poll::Ready(None);
            }
            let Some(batch) = std::task::ready!(self.rx.poll_recv(cx)) else {
                self.finished = true;
                if self.state.dropped() {
                    return Poll::Ready(Some(Bytes::from_static(DROPPED_LINE)));
                }
                return Poll::Ready(None);
            };
            if self.filter.is_all() {
                return Poll::Ready(Some(Bytes::from_owner(SharedBytes(batch))));
            }
            let mut out = Vec::new();
            for (line, entry) in batch.lines() {
                if self.filter.matches(entry.type_index, &entry.keys) {
                    out.extend_from_slice(line);
                }
            }
            if !out.is_empty() {
                return Poll::Ready(Some(Bytes::from(out)));
            }
        }
    }

    /// Async form of [`Self::poll_chunk`].
    pub async fn next_chunk(&mut self) -> Option<Bytes> {
        std::future::poll_fn(|cx| self.poll_chunk(cx)).await
    }
}

/// The hub as a sink of the pipeline: each event's NDJSON line (shared with the stdout output
/// when both print JSON), published at the end of each drain.
pub struct HubSink {
    pub hub: StreamHub,
    pub max_subscribers: usize,
}

impl crate::pipeline::sink::Sink for HubSink {
    fn event(
        &mut self,
        ev: &crate::pipeline::sink::Attributed<'_>,
        fmt: &mut crate::pipeline::sink::Formatter,
    ) {
        if !self.hub.wanted() {
            return;
        }
        let keys = FilterKeys {
            cgroup: ev.attr.cgroup.clone(),
            kube: ev.attr.pod.clone(),
            event: match ev.subject {
                crate::pipeline::sink::Subject::KubeEvent(e) => Some(std::sync::Arc::clone(e)),
                _ => None,
            },
        };
        self.hub.push_line(ev.type_name(), fmt.json(ev), keys);
    }

    fn end_batch(&mut self, _end: &crate::pipeline::sink::BatchEnd<'_>) {
        self.hub.publish();
    }

    fn health(
        &mut self,
        _node: &crate::node::NodeModel,
        health: &mut crate::pipeline::health::Health,
    ) {
        let s = self.hub.stats();
        health.stream = Some(crate::pipeline::health::StreamHealth {
            subscribers: s.subscribers,
            max_subscribers: self.max_subscribers,
            subscribers_dropped: s.subscribers_dropped,
            events_published: s.events_published,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(n: u32) -> Vec<u8> {
        format!("{{\"n\":{n}}}\n").into_bytes()
    }

    #[tokio::test]
    async fn subscribers_get_batches_filtered_and_a_full_queue_drops_the_subscriber() {
        let (mut hub, handle) = StreamHub::new(2, 4);
        assert!(!hub.wanted());
        let kill = Arc::new(Notify::new());
        let mut all = handle
            .subscribe(Filter::default(), Arc::new(Notify::new()))
            .unwrap();
        let mut execs = handle
            .subscribe(Filter::parse("type=exec").unwrap(), Arc::clone(&kill))
            .unwrap();
        assert!(hub.wanted());
        assert_eq!(handle.stats().subscribers, 2);
        hub.push_line("process_exec", &line(1), FilterKeys::default());
        hub.push_line("tcp_open", &line(2), FilterKeys::default());
        hub.publish();
        assert_eq!(
            all.next_chunk().await.unwrap(),
            &b"{\"n\":1}\n{\"n\":2}\n"[..]
        );
        assert_eq!(execs.next_chunk().await.unwrap(), &b"{\"n\":1}\n"[..]);

        // `all` reads, `execs` stalls: two batches fit its queue, the third drops it.
        for n in 3..6 {
            hub.push_line("process_exec", &line(n), FilterKeys::default());
            hub.publish();
            assert_eq!(all.next_chunk().await.unwrap(), line(n));
        }
        assert_eq!(handle.stats().subscribers_dropped, 1);
        assert!(execs.state().dropped());
        // The kill notice is waiting for the connection.
        tokio::time::timeout(std::time::Duration::from_secs(1), kill.notified())
            .await
            .expect("kill notified");
        // What was queued is still readable, then the dropped line, then the end.
        assert_eq!(execs.next_chunk().await.unwrap(), line(3));
        assert_eq!(execs.next_chunk().await.unwrap(), line(4));
        assert_eq!(execs.next_chunk().await.unwrap(), DROPPED_LINE);
        assert_eq!(execs.next_chunk().await, None);
        drop(execs);
        assert_eq!(handle.stats().subscribers, 1);
        drop(all);
        hub.push_line("process_exec", &line(9), FilterKeys::default());
        hub.publish();
        assert!(!hub.wanted(), "closed subscribers are removed");
        assert_eq!(handle.stats().subscribers, 0);
    }

    #[test]
    fn subscribers_beyond_the_limit_are_refused() {
        let (_hub, handle) = StreamHub::new(2, 1);
        let first = handle.subscribe(Filter::default(), Arc::new(Notify::new()));
        assert!(first.is_ok());
        let second = handle.subscribe(Filter::default(), Arc::new(Notify::new()));
        assert_eq!(second.err(), Some(SubscribeError::Full { max: 1 }));
        drop(first);
        assert!(
            handle
                .subscribe(Filter::default(), Arc::new(Notify::new()))
                .is_ok()
        );
    }

    #[test]
    fn with_no_subscriber_batches_are_discarded() {
        let (mut hub, handle) = StreamHub::new(2, 1);
        hub.push_line("process_exec", &line(1), FilterKeys::default());
        hub.publish();
        assert_eq!(handle.stats().events_published, 0);
        assert!(hub.batch.bytes.is_empty());
    }
}
