//! The leader's events collector: one term of list + watch of core/v1 `events` in every
//! namespace, resumed from the token, with the token written every `token_interval`.
//!
//! Not kube-rs's `watcher` (which every metadata kind uses): a term must start its watch from
//! the token's resourceVersion, which the watcher cannot (it always lists first), and must tell
//! a relisted event it already emitted from a new one.
//!
//! A term:
//! 1. Reads the token. With one, watches from its resourceVersion: everything after it is new
//!    to this term. Without one (the first leader of a cluster), lists: every event held is
//!    emitted once.
//! 2. `410 Gone` (the version was compacted, at start or later) re-lists: an event is emitted
//!    if it is unknown — and, when unknown and the term started from a token, only if its
//!    resourceVersion is above the token's (below it, a previous leader emitted it) — or if its
//!    count rose; an unchanged one is not. The watch resumes from the list.
//! 3. A watch that ends (the apiserver's timeout) or breaks resumes from the last version seen
//!    (events and bookmarks move it).
//! 4. Every `token_interval`, the last checkpoint every sink has taken is written as the token
//!    when it moved; once more when the term is stopped gracefully (SIGTERM), before the Lease
//!    is released. A term ended by losing the Lease writes nothing (another leader may run).

use std::{collections::HashSet, sync::Arc, time::Duration};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Event as CoreEvent;
use kube::{
    Api, Client,
    api::{ListParams, WatchEvent, WatchParams},
};
use serde::{Deserialize, Serialize};
use tokio::{sync::watch, time::Instant};

use super::{
    KubeEvent, KubeEventsConfig, Seen, Verdict,
    feed::{Checkpoint, FeedClosed, FeedItem, FeedSender},
    revision,
    token::TokenStore,
};
use crate::kube::{
    WatchKind,
    apiserver::error::{Context, client_error},
    source::{Backoff, FailureLog},
};

/// Events per list page.
const PAGE: u32 = 500;
/// The watch's server-side timeout (as kube-rs's watcher: below the client's read timeout).
const WATCH_TIMEOUT_SECS: u32 = 290;
/// How long a graceful stop waits for the pipeline to take what was sent.
pub const DELIVERY_WAIT: Duration = Duration::from_secs(1);

/// The collector's state, in the health model (`/v1/status` `agent.kube_events`, metrics).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubeEventsState {
    /// A term is running on this agent (it leads).
    pub collecting: bool,
    /// Terms run on this agent.
    pub terms: u64,
    /// The token the current (or last) term started from; `None`: there was none.
    pub resumed_from: Option<String>,
    /// The last token written.
    pub token: Option<String>,
    pub token_writes: u64,
    pub token_write_failures: u64,
    /// Events handed to the stream: new ones, and repeats (a risen count).
    pub emitted: u64,
    pub repeats: u64,
    /// Seen again with an unchanged count (a relist, a change other than the count): skipped.
    pub unchanged: u64,
    /// Left out by `kube_events.kinds` / `kube_events.reasons`.
    pub filtered: u64,
    /// Full lists (the first of a cluster, and each after `410 Gone`).
    pub lists: u64,
    /// `410 Gone` answers: the watch's version had been compacted, so the events were relisted.
    pub expired: u64,
    /// Events whose count is remembered now, and those that could not be (the cap).
    pub tracked: usize,
    pub untracked: u64,
    /// The last failure (cause and fix); cleared by the next success.
    pub error: Option<String>,
    pub consecutive_failures: u32,
    pub failures: u64,
}

/// Where the apiserver is, for error messages.
#[derive(Clone, Debug, Default)]
pub struct Endpoint {
    pub server: String,
    pub credentials: String,
}

/// What every term's collector is made from.
#[derive(Clone)]
pub struct Setup {
    pub client: Client,
    pub config: KubeEventsConfig,
    pub feed: FeedSender,
    pub tokens: TokenStore,
    pub endpoint: Endpoint,
    pub state: watch::Sender<KubeEventsState>,
    /// `kubernetes.max_backoff`.
    pub max_backoff: Duration,
}

impl crate::cluster::duties::Duty for Setup {
    fn start(&self, term: u64, stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(Collector::new(self, term).run(stop))
    }
}

/// One term's collector.
pub struct Collector {
    api: Api<CoreEvent>,
    config: KubeEventsConfig,
    feed: FeedSender,
    tokens: TokenStore,
    endpoint: Endpoint,
    term: u64,
    state: watch::Sender<KubeEventsState>,
    seen: Seen,
    /// The token's revision at the start of the term: unknown events at or below it were
    /// emitted by a previous leader.
    boundary: Option<u64>,
    /// The last checkpoint sent, and the last token written.
    sent: Option<Checkpoint>,
    written: Option<String>,
    backoff: Backoff,
    failures: FailureLog,
    next_token: Instant,
}

/// Turns `collecting` off when the term's task ends or is aborted.
struct Collecting(watch::Sender<KubeEventsState>);

impl Drop for Collecting {
    fn drop(&mut self) {
        self.0.send_modify(|s| s.collecting = false);
    }
}

/// Why a watch ended.
enum WatchEnd {
    /// The term is to stop.
    Stopped,
    /// `410 Gone`: relist.
    Expired,
    /// Ended or broke: resume from the last version.
    Resume(Option<kube::Error>),
}

#[derive(Debug)]
enum Stop {
    Requested,
    Feed,
}

impl From<FeedClosed> for Stop {
    fn from(_: FeedClosed) -> Self {
        Stop::Feed
    }
}

impl Collector {
    /// The collector of term number `term`.
    pub fn new(setup: &Setup, term: u64) -> Self {
        let config = setup.config.clone();
        Self {
            api: Api::all(setup.client.clone()),
            next_token: Instant::now() + config.token_interval,
            seen: Seen::new(config.max_tracked),
            config,
            feed: setup.feed.clone(),
            tokens: setup.tokens.clone(),
            endpoint: setup.endpoint.clone(),
            term,
            state: setup.state.clone(),
            boundary: None,
            sent: None,
            written: None,
            backoff: Backoff::new(Duration::from_millis(500), setup.max_backoff),
            failures: FailureLog::default(),
        }
    }

    fn failed(&mut self, message: String) {
        let new = self.failures.is_new(&message);
        let mut in_a_row = 0;
        self.state.send_modify(|s| {
            s.error = Some(message.clone());
            s.consecutive_failures += 1;
            s.failures += 1;
            in_a_row = s.consecutive_failures;
        });
        if new {
            tracing::warn!(error = %message, failures = in_a_row, "Kubernetes events: retrying");
        } else {
            tracing::debug!(error = %message, failures = in_a_row, "Kubernetes events: still failing");
        }
    }

    fn succeeded(&mut self) {
        self.backoff.reset();
        self.failures.clear();
        self.state.send_if_modified(|s| {
            let changed = s.error.is_some() || s.consecutive_failures > 0;
            s.error = None;
            s.consecutive_failures = 0;
            changed
        });
    }

    fn request_error(&self, err: &kube::Error, verb: &'static str) -> String {
        let cx = Context {
            server: &self.endpoint.server,
            credentials: &self.endpoint.credentials,
            kind: WatchKind::Events,
        };
        client_error(err, verb, &cx).to_string()
    }

    /// Runs the term until `stop` turns true (then writes the delivered token) or the pipeline
    /// is gone. Aborting the task instead (the Lease was lost) writes nothing.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        self.state.send_modify(|s| {
            s.collecting = true;
            s.terms += 1;
        });
        // Dropped however the term ends, aborted included.
        let _collecting = Collecting(self.state.clone());
        let ended = self.term_loop(&mut stop).await;
        if matches!(ended, Stop::Requested) {
            self.finish().await;
        }
    }

    async fn term_loop(&mut self, stop: &mut watch::Receiver<bool>) -> Stop {
        let token = loop {
            if *stop.borrow() {
                return Stop::Requested;
            }
            match self.tokens.read().await {
                Ok(token) => break token,
                Err(err) => {
                    self.failed(err.to_string());
                    if self.pause(stop).await {
                        return Stop::Requested;
                    }
                }
            }
        };
        self.succeeded();
        self.boundary = token.as_ref().and_then(|t| revision(&t.resource_version));
        let resumed_from = token.as_ref().map(|t| t.resource_version.clone());
        self.written.clone_from(&resumed_from);
        tracing::info!(
            term = self.term,
            token = resumed_from.as_deref().unwrap_or("none"),
            "collecting the cluster's Kubernetes events"
        );
        self.state
            .send_modify(|s| s.resumed_from.clone_from(&resumed_from));
        let mut resume = resumed_from;
        loop {
            let from = match resume.take() {
                Some(rv) => rv,
                None => match self.list(stop).await {
                    Ok(Some(rv)) => rv,
                    Ok(None) => return Stop::Requested,
                    Err(stopped) => return stopped,
                },
            };
            let mut last = from;
            match self.watch(&mut last, stop).await {
                Ok(WatchEnd::Stopped) => return Stop::Requested,
                Ok(WatchEnd::Expired) => {
                    tracing::info!(from = %last, "Kubernetes events: watch expired (410 Gone); relisting");
                    self.state.send_modify(|s| s.expired += 1);
                }
                Ok(WatchEnd::Resume(None)) => resume = Some(last),
                Ok(WatchEnd::Resume(Some(err))) => {
                    let message = self.request_error(&err, "watch");
                    self.failed(message);
                    if self.pause(stop).await {
                        return Stop::Requested;
                    }
                    resume = Some(last);
                }
                Err(stopped) => return stopped,
            }
        }
    }

    /// Waits one backoff step (writing the token when due); `true` if told to stop.
    async fn pause(&mut self, stop: &mut watch::Receiver<bool>) -> bool {
        let until = Instant::now() + self.backoff.next_delay();
        loop {
            let wake = until.min(self.next_token);
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {
                    if Instant::now() >= self.next_token {
                        self.write_token().await;
                    }
                    if Instant::now() >= until {
                        return *stop.borrow();
                    }
                }
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        return true;
                    }
                }
            }
        }
    }

    /// Writes the delivered checkpoint of this term when it moved.
    async fn write_token(&mut self) {
        self.next_token = Instant::now() + self.config.token_interval;
        let Some(delivered) = self.feed.delivered().filter(|c| c.term == self.term) else {
            return;
        };
        if self.written.as_deref() == Some(delivered.resource_version.as_str()) {
            return;
        }
        match self.tokens.write(&delivered.resource_version).await {
            Ok(()) => {
                tracing::debug!(token = %delivered.resource_version, "Kubernetes events token written");
                self.written = Some(delivered.resource_version.clone());
                self.state.send_modify(|s| {
                    s.token = Some(delivered.resource_version);
                    s.token_writes += 1;
                });
            }
            Err(err) => {
                self.state.send_modify(|s| s.token_write_failures += 1);
                self.failed(err.to_string());
            }
        }
    }

    /// A graceful end: waits (bounded) for the pipeline to take what was sent, then writes it.
    async fn finish(&mut self) {
        if let Some(sent) = self.sent.clone()
            && tokio::time::timeout(DELIVERY_WAIT, self.feed.wait_delivered(&sent))
                .await
                .is_err()
        {
            tracing::warn!(
                "Kubernetes events: the stream did not take every event within {DELIVERY_WAIT:?}; \
                 the next leader emits those again"
            );
        }
        self.write_token().await;
    }

    async fn checkpoint(&mut self, resource_version: &str) -> Result<(), FeedClosed> {
        if resource_version.is_empty() {
            return Ok(());
        }
        let c = Checkpoint {
            term: self.term,
            resource_version: resource_version.to_string(),
        };
        self.feed.send(FeedItem::Checkpoint(c.clone())).await?;
        self.sent = Some(c);
        Ok(())
    }

    /// Emits `event` if the verdict and the allow-lists say so, and remembers its count.
    async fn offer(&mut self, event: KubeEvent, verdict: Verdict) -> Result<(), FeedClosed> {
        self.seen.record(&event.uid, event.count);
        let tracked = self.seen.len();
        let untracked = self.seen.untracked;
        match verdict {
            Verdict::Unchanged => {
                self.state.send_modify(|s| s.unchanged += 1);
                return Ok(());
            }
            _ if !self.config.allows(&event) => {
                self.state.send_modify(|s| s.filtered += 1);
                return Ok(());
            }
            _ => {}
        }
        self.feed.send(FeedItem::Event(Arc::new(event))).await?;
        self.state.send_modify(|s| {
            s.emitted += 1;
            s.repeats += u64::from(verdict == Verdict::Repeat);
            s.tracked = tracked;
            s.untracked = untracked;
        });
        Ok(())
    }

    /// A full, paginated list; `Ok(Some(rv))`: the list's version to watch from, `Ok(None)`:
    /// told to stop.
    async fn list(&mut self, stop: &mut watch::Receiver<bool>) -> Result<Option<String>, Stop> {
        'again: loop {
            let mut listed = HashSet::new();
            let mut list_rv: Option<String> = None;
            let mut next: Option<String> = None;
            loop {
                if *stop.borrow() {
                    return Ok(None);
                }
                let mut params = ListParams::default().limit(PAGE);
                if let Some(selector) = self.config.field_selector() {
                    params = params.fields(&selector);
                }
                if let Some(token) = &next {
                    params = params.continue_token(token);
                }
                let page = match self.api.list(&params).await {
                    Ok(page) => page,
                    Err(err) => {
                        let message = self.request_error(&err, "list");
                        self.failed(message);
                        if self.pause(stop).await {
                            return Ok(None);
                        }
                        continue 'again;
                    }
                };
                if list_rv.is_none() {
                    list_rv = page.metadata.resource_version.clone();
                }
                for item in &page.items {
                    let event = KubeEvent::from_core(item);
                    listed.insert(Seen::key(&event.uid));
                    let verdict = match self.seen.verdict(&event.uid, event.count) {
                        Verdict::New
                            if self.boundary.is_some_and(|b| {
                                revision(&event.resource_version).is_some_and(|r| r <= b)
                            }) =>
                        {
                            Verdict::Unchanged
                        }
                        v => v,
                    };
                    self.offer(event, verdict).await?;
                }
                next = page.metadata.continue_.filter(|c| !c.is_empty());
                if next.is_none() {
                    break;
                }
            }
            self.seen.retain_listed(&listed);
            let Some(rv) = list_rv.filter(|rv| !rv.is_empty()) else {
                self.failed(format!(
                    "the apiserver at {} answered an events list without metadata.resourceVersion",
                    self.endpoint.server
                ));
                if self.pause(stop).await {
                    return Ok(None);
                }
                continue;
            };
            self.checkpoint(&rv).await?;
            self.succeeded();
            let tracked = self.seen.len();
            self.state.send_modify(|s| {
                s.lists += 1;
                s.tracked = tracked;
            });
            tracing::debug!(events = listed.len(), resource_version = %rv, "Kubernetes events listed");
            return Ok(Some(rv));
        }
    }

    /// Watches from `*last`, moving it with every event and bookmark.
    async fn watch(
        &mut self,
        last: &mut String,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<WatchEnd, Stop> {
        let mut params = WatchParams::default().timeout(WATCH_TIMEOUT_SECS);
        if let Some(selector) = self.config.field_selector() {
            params = params.fields(&selector);
        }
        let stream = match self.api.watch(&params, last).await {
            Ok(stream) => stream,
            Err(kube::Error::Api(status)) if status.code == 410 => return Ok(WatchEnd::Expired),
            Err(err) => return Ok(WatchEnd::Resume(Some(err))),
        };
        let mut stream = std::pin::pin!(stream);
        loop {
            tokio::select! {
                item = stream.next() => {
                    let event = match item {
                        None => return Ok(WatchEnd::Resume(None)),
                        Some(Err(err)) => return Ok(WatchEnd::Resume(Some(err))),
                        Some(Ok(event)) => event,
                    };
                    match event {
                        WatchEvent::Added(e) | WatchEvent::Modified(e) => {
                            let event = KubeEvent::from_core(&e);
                            let rv = event.resource_version.clone();
                            let verdict = self.seen.verdict(&event.uid, event.count);
                            self.offer(event, verdict).await?;
                            self.checkpoint(&rv).await?;
                            last.clone_from(&rv);
                        }
                        WatchEvent::Deleted(e) => {
                            if let Some(uid) = &e.metadata.uid {
                                self.seen.forget(uid);
                            }
                            if let Some(rv) = &e.metadata.resource_version {
                                self.checkpoint(rv).await?;
                                last.clone_from(rv);
                            }
                        }
                        WatchEvent::Bookmark(b) => {
                            self.checkpoint(&b.metadata.resource_version).await?;
                            last.clone_from(&b.metadata.resource_version);
                        }
                        WatchEvent::Error(status) if status.code == 410 => {
                            return Ok(WatchEnd::Expired);
                        }
                        WatchEvent::Error(status) => {
                            return Ok(WatchEnd::Resume(Some(kube::Error::Api(status))));
                        }
                    }
                    self.succeeded();
                }
                _ = tokio::time::sleep_until(self.next_token) => self.write_token().await,
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        return Ok(WatchEnd::Stopped);
                    }
                }
            }
        }
    }
}
