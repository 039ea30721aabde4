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
    task::JoinHandle,
    time::Instant,
};

use super::{KubeletClient, KubeletConfig, KubeletError};
use crate::kube::{
    pods::ParsedPods,
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
    pub last_success: Option<SystemTime>,
    /// The latest failure's message (cause and fix); kept after a recovery, see
    /// `consecutive_failures` for the current health.
    pub last_error: Option<String>,
    pub last_error_at: Option<SystemTime>,
    /// Failures since the last success; 0 when healthy.
    pub consecutive_failures: u32,
    /// Successful fetches since start.
    pub successes: u64,
    /// Failed fetches since start.
    pub failures: u64,
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
        self.successes > 0 && self.consecutive_failures == 0
    }
}

/// The running refresher. Dropping it stops the task (the store keeps its data).
pub struct KubeletHandle {
    refresh: Arc<Notify>,
    state: watch::Receiver<KubeletSyncState>,
    task: JoinHandle<()>,
}

impl KubeletHandle {
    /// Asks for a fetch soon (rate-limited; requests made meanwhile are coalesced). Cheap and
    /// non-blocking: call it from the event path when a container id is unknown.
    pub fn request_refresh(&self) {
        self.refresh.notify_one();
    }

    /// The current sync state.
    pub fn state(&self) -> KubeletSyncState {
        self.state.borrow().clone()
    }

    /// Follows sync state changes (each attempt publishes one).
    pub fn subscribe(&self) -> watch::Receiver<KubeletSyncState> {
        self.state.clone()
    }

    /// Waits until the state satisfies `pred` (checked at once, then on every change).
    pub async fn wait_for(
        &self,
        mut pred: impl FnMut(&KubeletSyncState) -> bool,
    ) -> KubeletSyncState {
        let mut rx = self.state.clone();
        if let Ok(state) = rx.wait_for(|s| pred(s)).await {
            return state.clone();
        }
        // The task is gone (aborted): the last state is all there will be.
        rx.borrow().clone()
    }
}

impl Drop for KubeletHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the refresher on the current tokio runtime; the first fetch starts at once.
pub fn spawn_kubelet_source(config: KubeletConfig, store: Arc<PodStore>) -> KubeletHandle {
    let refresh = Arc::new(Notify::new());
    let (tx, rx) = watch::channel(KubeletSyncState::default());
    let task = tokio::spawn(Refresher::new(config, store, tx).run(Arc::clone(&refresh)));
    KubeletHandle {
        refresh,
        state: rx,
        task,
    }
}

struct Refresher {
    config: KubeletConfig,
    store: Arc<PodStore>,
    state: watch::Sender<KubeletSyncState>,
    client: Option<KubeletClient>,
    backoff: Duration,
    /// The error last logged at warn level, to log a repeating one only at debug.
    logged_error: Option<String>,
}

impl Refresher {
    fn new(
        config: KubeletConfig,
        store: Arc<PodStore>,
        state: watch::Sender<KubeletSyncState>,
    ) -> Self {
        let backoff = first_backoff(&config);
        Refresher {
            config,
            store,
            state,
            client: None,
            backoff,
            logged_error: None,
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
                    self.backoff = first_backoff(&self.config);
                    self.config.refresh_interval
                } else {
                    let wait = self.backoff;
                    self.backoff =
                        (self.backoff * 2).min(MAX_BACKOFF.max(self.config.refresh_interval));
                    wait
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
                let recovered_after = self.state.borrow().consecutive_failures;
                let first = self.state.borrow().successes == 0;
                self.state.send_modify(|s| {
                    s.last_attempt = Some(attempted_at);
                    s.last_success = Some(SystemTime::now());
                    s.consecutive_failures = 0;
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
                self.logged_error = None;
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
                let failures = self.state.borrow().consecutive_failures + 1;
                if self.logged_error.as_deref() == Some(message.as_str()) {
                    tracing::debug!(error = %message, failures, "kubelet pod list still failing");
                } else {
                    tracing::warn!(error = %message, failures, retry_in = ?self.backoff,
                        "kubelet pod list failed; keeping the last good list");
                    self.logged_error = Some(message.clone());
                }
                self.state.send_modify(|s| {
                    s.last_attempt = Some(attempted_at);
                    s.last_error = Some(message);
                    s.last_error_at = Some(SystemTime::now());
                    s.consecutive_failures = failures;
                    s.failures += 1;
                });
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

fn first_backoff(config: &KubeletConfig) -> Duration {
    config.min_refresh_interval.max(Duration::from_millis(50))
}
