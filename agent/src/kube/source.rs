//! The Kubernetes source kit: what every metadata source (the kubelet refresher, each apiserver
//! watch, and the sources later issues add) shares — one handle to a running source, one
//! retry backoff, one sync-health record, one change counter for what they fill.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime},
};

use serde::Serialize;
use tokio::{sync::watch, task::JoinHandle};

/// A running source: its task and the state it publishes. Dropping the handle stops the task
/// (what the source filled keeps its data).
pub struct SourceHandle<S> {
    state: watch::Receiver<S>,
    task: JoinHandle<()>,
}

impl<S: Clone> SourceHandle<S> {
    pub fn new(state: watch::Receiver<S>, task: JoinHandle<()>) -> Self {
        Self { state, task }
    }

    /// The current state.
    pub fn state(&self) -> S {
        self.state.borrow().clone()
    }

    /// Follows state changes.
    pub fn subscribe(&self) -> watch::Receiver<S> {
        self.state.clone()
    }

    /// Waits until the state satisfies `pred` (checked at once, then on every change); when the
    /// task is gone, the last state is all there will be and is returned as it is.
    pub async fn wait_for(&self, mut pred: impl FnMut(&S) -> bool) -> S {
        let mut rx = self.state.clone();
        if let Ok(state) = rx.wait_for(|s| pred(s)).await {
            return state.clone();
        }
        rx.borrow().clone()
    }
}

impl<S> Drop for SourceHandle<S> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A change counter of a shared index (the pod store, the owner and label indexes): bumped
/// after every change, read by whoever memoises lookups in it (the join, per cgroup), so a
/// memo is known stale with one atomic load, no lock.
#[derive(Debug, Default)]
pub struct Generation(AtomicU64);

impl Generation {
    /// Call after a change, once the change is visible to readers.
    pub fn bump(&self) {
        self.0.fetch_add(1, Ordering::Release);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// Doubling retry delays from `first` up to `max`; [`Backoff::reset`] after any success. Also
/// kube-rs's backoff for the apiserver watches, so every source retries the same way.
#[derive(Clone, Debug)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        let first = first.min(max);
        Self {
            first,
            max,
            next: first,
        }
    }

    /// The delay before the next retry (the one after it doubles, up to the maximum).
    pub fn next_delay(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    /// The delay the next failure will wait, without using it up (for a log line).
    pub fn peek(&self) -> Duration {
        self.next
    }

    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

impl Iterator for Backoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(self.next_delay())
    }
}

impl kube::runtime::utils::Backoff for Backoff {
    fn reset(&mut self) {
        Backoff::reset(self);
    }
}

/// A source's success and failure record (the kubelet's, each apiserver watch's). Serialised
/// flat into the source's own state, so `/v1/status` names the fields the same for all.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SyncHealth {
    /// The last success (a fetch, a list, an event).
    pub last_success: Option<SystemTime>,
    /// The latest failure's message (cause and fix); kept after a recovery, see
    /// `consecutive_failures` for the current health.
    pub last_error: Option<String>,
    pub last_error_at: Option<SystemTime>,
    /// Failures since the last success; 0 when healthy.
    pub consecutive_failures: u32,
    /// Failures since start.
    pub failures: u64,
}

impl SyncHealth {
    /// Records a success; returns how many failures in a row it ends (0: it was healthy).
    pub fn succeeded(&mut self) -> u32 {
        self.last_success = Some(SystemTime::now());
        std::mem::take(&mut self.consecutive_failures)
    }

    /// Records a failure (its message names cause and fix); returns the failures in a row.
    pub fn failed(&mut self, message: String) -> u32 {
        self.last_error = Some(message);
        self.last_error_at = Some(SystemTime::now());
        self.consecutive_failures += 1;
        self.failures += 1;
        self.consecutive_failures
    }

    /// No failure since the last success.
    pub fn ok(&self) -> bool {
        self.consecutive_failures == 0
    }
}

/// Logs a source's failure at warn level once per distinct message, then at debug while the
/// same message repeats (a source down for an hour logs one warning, not one per retry).
#[derive(Debug, Default)]
pub struct FailureLog {
    last: Option<String>,
}

impl FailureLog {
    /// Whether `message` is new (log it at warn) or a repeat (debug).
    pub fn is_new(&mut self, message: &str) -> bool {
        if self.last.as_deref() == Some(message) {
            return false;
        }
        self.last = Some(message.to_string());
        true
    }

    /// A success: the next failure is news again.
    pub fn clear(&mut self) {
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_maximum_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(3));
        let waits: Vec<Duration> = (0..5).map(|_| b.next_delay()).collect();
        assert_eq!(
            waits,
            [500, 1000, 2000, 3000, 3000].map(Duration::from_millis)
        );
        b.reset();
        assert_eq!(b.peek(), Duration::from_millis(500));
        // A first delay above the maximum is the maximum.
        let mut b = Backoff::new(Duration::from_secs(5), Duration::from_secs(1));
        assert_eq!(b.next_delay(), Duration::from_secs(1));
    }

    #[test]
    fn health_counts_failures_in_a_row_and_since_start() {
        let mut h = SyncHealth::default();
        assert_eq!(h.failed("401: fix the token".into()), 1);
        assert_eq!(h.failed("401: fix the token".into()), 2);
        assert!(!h.ok());
        assert_eq!(h.succeeded(), 2);
        assert!(h.ok() && h.last_success.is_some());
        assert_eq!(h.failures, 2);
        assert_eq!(h.last_error.as_deref(), Some("401: fix the token"));
        let json = serde_json::to_value(&h).expect("serialises");
        assert_eq!(json["consecutive_failures"], 0);
        assert_eq!(json["failures"], 2);
    }

    #[test]
    fn a_repeated_failure_is_news_once() {
        let mut log = FailureLog::default();
        assert!(log.is_new("a"));
        assert!(!log.is_new("a"));
        assert!(log.is_new("b"));
        log.clear();
        assert!(log.is_new("b"));
    }
}
