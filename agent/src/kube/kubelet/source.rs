//! The kubelet refresher: keeps the store's kubelet view current.
//!
//! It fetches `/pods` on a timer (`kubelet.refresh_interval`) and on demand
//! ([`KubeletHandle::request_refresh`], when an event names a container id nobody knows yet),
//! at most once per `kubelet.min_refresh_interval`. A failed fetch leaves the store as it was
//! (the last good list stays), is recorded in [`KubeletSyncState`], logged once per distinct
//! error, and retried with exponential backoff. Nothing here ends the task but the handle.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use serde::Serialize;
use tokio::{
    sync::{Notify, watch},
    time::Instant,
};

use super::{KubeletClient, KubeletConfig, KubeletError};
use crate::kube::{
    pods::ParsedPods,
    source::{Backoff, FailureLog, SourceHandle, SyncHealth},
    store::{PodSource, PodStore},
};

/// Longest wait between retries of a failing kubelet.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The kubelet source's health, for `sonde status` and metrics.
#[derive(Clone, Debug, Default, Serialize)]
pub struct KubeletSyncState {
    /// The pod list URL (empty until the configuration was accepted).
    pub url: String,
    pub last_attempt: Option<SystemTime>,
    /// Successes and failures of the fetches (the fields every source has).
    #[serde(flatten)]
    pub sync: SyncHealth,
    /// Successful fetches since start.
    pub successes: u64,
    /// Pods and indexed container ids in the store from the last good list.
    pub pods: usize,
    pub containers: usize,
    /// Items of the last good list that were skipped as unusable.
    pub skipped_items: usize,
    /// How long the last successful fetch (request + parse + index) took.
    pub last_duration: Option<Duration>,
}

impl KubeletSyncState {
    pub fn healthy(&self) -> bool {
        self.successes > 0 && self.sync.ok()
    }
}

/// The running refresher: a [`SourceHandle`] (state, subscribe, wait_for; dropping it stops the
/// task, the store keeps its data) that can also be asked for a refresh.
pub struct KubeletHandle {
    refresh: Arc<Notify>,
    source: SourceHandle<KubeletSyncState>,
}

impl std::ops::Deref for KubeletHandle {
    type Target = SourceHandle<KubeletSyncState>;

    fn deref(&self) -> &Self::Target {
        &self.source
    }
}

impl KubeletHandle {
    /// Asks for a fetch soon (rate-limited; requests made meanwhile are coalesced). Cheap and
    /// non-blocking: call it from the event path when a container id is unknown.
    pub fn request_refresh(&self) {
        self.refresh.notify_one();
    }
}

/// Starts the refresher on the current tokio runtime; the first fetch starts at once.
pub fn spawn_kubelet_source(config: KubeletConfig, store: Arc<PodStore>) -> KubeletHandle {
    let refresh = Arc::new(Notify::new());
    let (tx, rx) = watch::channel(KubeletSyncState::default());
    let task = tokio::spawn(Refresher::new(config, store, tx).run(Arc::clone(&refresh)));
    KubeletHandle {
        refresh,
        source: SourceHandle::new(rx, task),
    }
}

struct Refresher {
    config: KubeletConfig,
    store: Arc<PodStore>,
    state: watch::Sender<KubeletSyncState>,
    client: Option<KubeletClient>,
    /// Timer-driven retries of a failing kubelet.
    backoff: Backoff,
    failures: FailureLog,
}

impl Refresher {
    fn new(
        config: KubeletConfig,
        store: Arc<PodStore>,
        state: watch::Sender<KubeletSyncState>,
    ) -> Self {
        let backoff = Backoff::new(
            config.min_refresh_interval.max(Duration::from_millis(50)),
            MAX_BACKOFF.max(config.refresh_interval),
        );
        Refresher {
            config,
            store,
            state,
            client: None,
            backoff,
            failures: FailureLog::default(),
        }
    }

    async fn run(mut self, refresh: Arc<Notify>) {
        let min_gap = self.config.min_refresh_interval;
        let mut next_due = Instant::now();
        let mut last_attempt: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next_due) => {}
                _ = refresh.notified() => {
                    // A container of a pod was seen that the store does not know: fetch now,
                    // at most once per `min_refresh_interval`, even while failing — the kubelet
                    // may just have come up (a node's bootstrap), and its pods' events are
                    // waiting for their tags. Only timer-driven retries back off.
                    let earliest = last_attempt.map_or_else(Instant::now, |t| t + min_gap);
                    tokio::time::sleep_until(earliest.min(next_due)).await;
                }
            }
            last_attempt = Some(Instant::now());
            let ok = self.attempt().await;
            next_due = Instant::now()
                + if ok {
                    self.backoff.reset();
                    self.config.refresh_interval
                } else {
                    self.backoff.next_delay()
                };
        }
    }

    /// One fetch; returns whether it succeeded.
    async fn attempt(&mut self) -> bool {
        let started = Instant::now();
        let attempted_at = SystemTime::now();
        let result = self.fetch().await;
        match result {
            Ok(ParsedPods {
                pods,
                skipped,
                first_skip_reason,
            }) => {
                let counts = self.store.replace(PodSource::Kubelet, pods);
                let first = self.state.borrow().successes == 0;
                let mut recovered_after = 0;
                self.state.send_modify(|s| {
                    s.last_attempt = Some(attempted_at);
                    recovered_after = s.sync.succeeded();
                    s.successes += 1;
                    s.pods = counts.pods;
                    s.containers = counts.containers;
                    s.skipped_items = skipped;
                    s.last_duration = Some(started.elapsed());
                });
                let url = self.state.borrow().url.clone();
                if recovered_after > 0 {
                    tracing::info!(%url, pods = counts.pods, failures = recovered_after,
                        "kubelet pod list available again");
                } else if first {
                    tracing::info!(%url, pods = counts.pods, containers = counts.containers,
                        "kubelet pod list loaded");
                } else {
                    tracing::debug!(pods = counts.pods, "kubelet pod list refreshed");
                }
                if let Some(reason) = first_skip_reason {
                    tracing::debug!(skipped, first = %reason,
                        "kubelet pod list items skipped");
                }
                self.failures.clear();
                true
            }
            Err(err) => {
                if err.is_config()
                    && !matches!(
                        err,
                        KubeletError::TokenFile { .. } | KubeletError::TokenUnusable { .. }
                    )
                {
                    // Rebuilt on the next attempt: a fixed file or mount is picked up.
                    self.client = None;
                }
                let message = err.to_string();
                let new = self.failures.is_new(&message);
                let mut failures = 0;
                self.state.send_modify(|s| {
                    s.last_attempt = Some(attempted_at);
                    failures = s.sync.failed(message.clone());
                });
                if new {
                    tracing::warn!(error = %message, failures, retry_in = ?self.backoff.peek(),
                        "kubelet pod list failed; keeping the last good list");
                } else {
                    tracing::debug!(error = %message, failures, "kubelet pod list still failing");
                }
                false
            }
        }
    }

    async fn fetch(&mut self) -> Result<ParsedPods, KubeletError> {
        if self.client.is_none() {
            let client = KubeletClient::new(&self.config)?;
            let url = client.url().to_string();
            self.state.send_modify(|s| s.url = url);
            self.client = Some(client);
        }
        let Some(client) = self.client.as_mut() else {
            return Err(KubeletError::Internal("no kubelet client".into()));
        };
        client.fetch_pods().await
    }
}
