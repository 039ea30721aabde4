//! The leader's duties, started and stopped on the leadership signal.
//!
//! When this agent becomes leader a term starts: every [`Duty`] starts a task (the Kubernetes
//! events collector, the apiserver's health checks). When it stops leading (it could not renew
//! the Lease by the renew deadline, before any other agent can take it) the term's tasks are
//! aborted at once and write nothing. A graceful stop (the run ends, SIGTERM) lets them hand
//! over — the events' last deliveries and their token — then the caller frees the Lease.

use std::time::Duration;

use tokio::{sync::watch, task::JoinHandle};

use super::{events::collect::DELIVERY_WAIT, leader::ElectionState};

/// How long a graceful stop waits for the term to finish (delivery, then one token write).
const STOP_WAIT: Duration = Duration::from_secs(2);

/// Something the leader does during its term.
pub trait Duty: Send + Sync + 'static {
    /// Starts the duty's task for term `term`; it ends soon after `stop` turns true.
    fn start(&self, term: u64, stop: watch::Receiver<bool>) -> JoinHandle<()>;
}

/// The running duties.
pub struct Duties {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Duties {
    /// Follows `leader`, running `duties` in each term.
    pub fn spawn(leader: watch::Receiver<ElectionState>, duties: Vec<Box<dyn Duty>>) -> Self {
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(follow(leader, stop_rx, duties));
        Self { stop, task }
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
    duties: Vec<Box<dyn Duty>>,
) {
    loop {
        tokio::select! {
            led = async { leader.wait_for(|s| s.leader).await.is_ok() } => if !led { return },
            _ = async { stop.wait_for(|s| *s).await.is_ok() } => return,
        }
        let term = leader.borrow().terms;
        let (term_stop, term_stop_rx) = watch::channel(false);
        let mut tasks: Vec<JoinHandle<()>> = duties
            .iter()
            .map(|d| d.start(term, term_stop_rx.clone()))
            .collect();
        tracing::info!(term, "leading: the cluster's duties start");
        tokio::select! {
            _ = async { leader.wait_for(|s| !s.leader).await.is_ok() } => {
                // Stood down (or the election ended): stop at once, write nothing.
                for task in &tasks {
                    task.abort();
                }
                tracing::warn!(term, "no longer leading: the cluster's duties stopped");
            }
            _ = async { stop.wait_for(|s| *s).await.is_ok() } => {
                let _ = term_stop.send(true);
                let wait = DELIVERY_WAIT + Duration::from_millis(500);
                let all = futures_util::future::join_all(tasks.iter_mut());
                if tokio::time::timeout(wait, all).await.is_err() {
                    for task in &tasks {
                        task.abort();
                    }
                }
                return;
            }
        }
    }
}
