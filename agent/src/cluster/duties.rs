//! The leader's duties, started and stopped on the leadership signal.
//!
//! When this agent becomes leader a term starts (today: the Kubernetes events collector); when it
//! stops leading (it could not renew the Lease by the renew deadline, before any other agent can
//! take it) the term's task is aborted at once and writes nothing. A graceful stop (the run ends,
//! SIGTERM) lets the term hand over: its last events reach the stream and its token is written,
//! then the caller frees the Lease.

use std::time::Duration;

use tokio::{sync::watch, task::JoinHandle};

use super::{
    events::collect::{Collector, DELIVERY_WAIT, KubeEventsState},
    leader::ElectionState,
};

/// How long a graceful stop waits for the term to finish (delivery, then one token write).
const STOP_WAIT: Duration = Duration::from_secs(2);

/// Builds a term's collector for a term number.
pub type MakeCollector = Box<dyn Fn(u64) -> Collector + Send + Sync>;

/// The running duties.
pub struct Duties {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    events: watch::Receiver<KubeEventsState>,
}

impl Duties {
    /// Follows `leader`; `events` builds each term's collector, `state` is where it reports.
    pub fn spawn(
        leader: watch::Receiver<ElectionState>,
        events: MakeCollector,
        state: watch::Receiver<KubeEventsState>,
    ) -> Self {
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(follow(leader, stop_rx, events));
        Self {
            stop,
            task,
            events: state,
        }
    }

    pub fn events(&self) -> watch::Receiver<KubeEventsState> {
        self.events.clone()
    }

    /// Ends a running term gracefully (bounded by [`STOP_WAIT`]).
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(STOP_WAIT, &mut self.task)
            .await
            .is_err()
        {
            tracing::warn!("the leader's duties did not stop within {STOP_WAIT:?}");
            self.task.abort();
        }
    }
}

impl Drop for Duties {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn follow(
    mut leader: watch::Receiver<ElectionState>,
    mut stop: watch::Receiver<bool>,
    make: MakeCollector,
) {
    loop {
        tokio::select! {
            led = async { leader.wait_for(|s| s.leader).await.is_ok() } => if !led { return },
            _ = async { stop.wait_for(|s| *s).await.is_ok() } => return,
        }
        let term = leader.borrow().terms;
        let (term_stop, term_stop_rx) = watch::channel(false);
        let mut task = tokio::spawn(make(term).run(term_stop_rx));
        tracing::info!(term, "leading: the cluster's duties start");
        let mut ended = false;
        loop {
            tokio::select! {
                _ = async { leader.wait_for(|s| !s.leader).await.is_ok() } => {
                    // Stood down (or the election ended): stop at once, write nothing.
                    task.abort();
                    tracing::warn!(term, "no longer leading: the cluster's duties stopped");
                    break;
                }
                _ = async { stop.wait_for(|s| *s).await.is_ok() } => {
                    let _ = term_stop.send(true);
                    let wait = DELIVERY_WAIT + Duration::from_millis(500);
                    if !ended && tokio::time::timeout(wait, &mut task).await.is_err() {
                        task.abort();
                    }
                    return;
                }
                _ = &mut task, if !ended => ended = true,
            }
        }
    }
}
