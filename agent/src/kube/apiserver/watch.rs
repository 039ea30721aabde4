//! One watch: drives a kube-rs watcher stream for one kind into a [`Sink`], and records its
//! health in the shared [`ApiserverSyncState`].
//!
//! The kube-rs watcher does the protocol: a paginated list, then a watch from the list's
//! resourceVersion with bookmarks (`allowWatchBookmarks=true`) keeping that version current;
//! a broken stream is resumed from the last version; `410 Gone` (the version was compacted)
//! restarts with a full list. Errors come out of the stream; the default backoff (0.8 s
//! doubling to 30 s, with jitter, reset after 2 quiet minutes) spaces the retries. Nothing
//! here ends the task.

use futures_util::{Stream, StreamExt};
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;

use crate::kube::source::FailureLog;

use super::{
    error::{Context, Diagnosis, diagnose},
    kind::WatchKind,
    sync::ApiserverSyncState,
};

/// Where a kind's objects go. A full list arrives as `begin`, `listed`…, `commit` (the sink
/// swaps its whole view at `commit`); then single changes as `apply` and `delete`.
pub(super) trait Sink<K>: Send + 'static {
    fn begin(&mut self);
    fn listed(&mut self, object: K);
    fn commit(&mut self);
    fn apply(&mut self, object: K);
    fn delete(&mut self, object: K);
    /// Objects held now.
    fn count(&self) -> usize;
}

pub(super) struct WatchContext {
    pub kind: WatchKind,
    pub server: String,
    pub credentials: String,
    pub state: watch::Sender<ApiserverSyncState>,
}

/// Runs until the stream ends (it does not: the watcher retries forever) or the task is
/// aborted.
pub(super) async fn run<K, S>(
    stream: impl Stream<Item = Result<Event<K>, watcher::Error>> + Send,
    mut sink: S,
    cx: WatchContext,
) where
    S: Sink<K>,
{
    let mut stream = std::pin::pin!(stream);
    let kind = cx.kind;
    // The error last logged at warn level, to log a repeating one only at debug.
    let mut failures = FailureLog::default();
    while let Some(item) = stream.next().await {
        match item {
            Ok(Event::Init) => sink.begin(),
            Ok(Event::InitApply(object)) => sink.listed(object),
            Ok(Event::InitDone) => {
                sink.commit();
                // The list's full objects (decoded whole, then stripped) are freed: give the
                // memory back, or a large cluster's first list stays in the agent's RSS.
                crate::memory::trim_heap();
                let objects = sink.count();
                let first = cx.state.borrow().kind(kind).is_none_or(|k| k.lists == 0);
                let recovered = record_success(&cx, objects, |k| k.lists += 1);
                if first {
                    tracing::info!(%kind, objects, "apiserver watch listed");
                } else if recovered > 0 {
                    tracing::info!(%kind, objects, failures = recovered,
                        "apiserver watch working again (re-listed)");
                } else {
                    tracing::debug!(%kind, objects, "apiserver watch re-listed");
                }
                failures.clear();
            }
            Ok(Event::Apply(object)) => {
                sink.apply(object);
                record_success(&cx, sink.count(), |k| k.events += 1);
            }
            Ok(Event::Delete(object)) => {
                sink.delete(object);
                record_success(&cx, sink.count(), |k| k.events += 1);
            }
            Err(err) => {
                let context = Context {
                    server: &cx.server,
                    credentials: &cx.credentials,
                    kind,
                };
                match diagnose(&err, &context) {
                    Diagnosis::Expired => {
                        tracing::debug!(%kind, "apiserver watch expired (410 Gone); re-listing");
                        cx.state
                            .send_modify(|s| s.kinds.entry(kind).or_default().expired += 1);
                    }
                    Diagnosis::StreamBroken(detail) => {
                        tracing::debug!(%kind, %detail,
                            "apiserver watch stream broke; resuming from the last version");
                        cx.state
                            .send_modify(|s| s.kinds.entry(kind).or_default().stream_errors += 1);
                    }
                    Diagnosis::Failure(error) => {
                        let message = error.to_string();
                        let new = failures.is_new(&message);
                        let mut in_a_row = 0;
                        cx.state.send_modify(|s| {
                            in_a_row = s
                                .kinds
                                .entry(kind)
                                .or_default()
                                .sync
                                .failed(message.clone());
                        });
                        if new {
                            tracing::warn!(%kind, error = %message, failures = in_a_row,
                                "apiserver watch failed; keeping what it had, retrying");
                        } else {
                            tracing::debug!(%kind, error = %message, failures = in_a_row,
                                "apiserver watch still failing");
                        }
                    }
                }
            }
        }
    }
}

/// Records a list or an event; returns the failures in a row it ends.
fn record_success(
    cx: &WatchContext,
    objects: usize,
    count: impl FnOnce(&mut super::sync::KindSyncState),
) -> u32 {
    let mut recovered = 0;
    cx.state.send_modify(|s| {
        let k = s.kinds.entry(cx.kind).or_default();
        k.synced = true;
        recovered = k.sync.succeeded();
        k.objects = objects;
        count(k);
    });
    recovered
}
