//! The bounded hand-off from the events collector to the pipeline, and back the checkpoint of
//! what every sink has taken.
//!
//! The collector sends events and, after the events they cover, checkpoints (a term and a
//! resourceVersion). The pipeline takes them at each drain of the capture loop, hands the events
//! to its sinks, and once the sinks have flushed publishes the last checkpoint it passed as
//! delivered. The collector writes only a delivered checkpoint as the resume token, so an event
//! the agent dies holding was never in a token and the next leader emits it.
//!
//! The channel is bounded: a slow pipeline makes the collector wait (the apiserver holds the
//! watch), it never drops an event.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use super::KubeEvent;

/// Items the channel holds at most.
pub const FEED_CAPACITY: usize = 1024;
/// Items one drain of the capture loop takes at most (the rest wait for the next drain).
pub const DRAIN_MAX: usize = 4096;

/// Everything sent before it in the same `term` is covered by `resource_version`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// The collector's term (the leader's term number).
    pub term: u64,
    pub resource_version: String,
}

#[derive(Debug)]
pub enum FeedItem {
    Event(Arc<KubeEvent>),
    Checkpoint(Checkpoint),
}

/// The collector's end.
#[derive(Clone, Debug)]
pub struct FeedSender {
    tx: mpsc::Sender<FeedItem>,
    delivered: watch::Receiver<Option<Checkpoint>>,
}

/// The pipeline's end.
#[derive(Debug)]
pub struct EventFeed {
    rx: mpsc::Receiver<FeedItem>,
    delivered: watch::Sender<Option<Checkpoint>>,
    /// The last checkpoint passed in this drain, published by [`EventFeed::acknowledge`].
    passed: Option<Checkpoint>,
}

/// A new feed: the collector's end and the pipeline's.
pub fn feed() -> (FeedSender, EventFeed) {
    let (tx, rx) = mpsc::channel(FEED_CAPACITY);
    let (delivered_tx, delivered_rx) = watch::channel(None);
    (
        FeedSender {
            tx,
            delivered: delivered_rx,
        },
        EventFeed {
            rx,
            delivered: delivered_tx,
            passed: None,
        },
    )
}

/// The pipeline is gone (the run is ending).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the pipeline stopped taking Kubernetes events")]
pub struct FeedClosed;

impl FeedSender {
    /// Waits for room, then sends.
    pub async fn send(&self, item: FeedItem) -> Result<(), FeedClosed> {
        self.tx.send(item).await.map_err(|_| FeedClosed)
    }

    /// The last checkpoint every sink has taken.
    pub fn delivered(&self) -> Option<Checkpoint> {
        self.delivered.borrow().clone()
    }

    /// Waits until `checkpoint` is delivered or the pipeline is gone; `false` if it never was.
    pub async fn wait_delivered(&self, checkpoint: &Checkpoint) -> bool {
        let mut rx = self.delivered.clone();
        rx.wait_for(|d| d.as_ref() == Some(checkpoint))
            .await
            .is_ok()
    }
}

impl EventFeed {
    /// Takes what is waiting (at most [`DRAIN_MAX`] items): the events, in order, into
    /// `events`; the checkpoints are remembered for [`EventFeed::acknowledge`].
    pub fn drain(&mut self, events: &mut Vec<Arc<KubeEvent>>) {
        for _ in 0..DRAIN_MAX {
            match self.rx.try_recv() {
                Ok(FeedItem::Event(e)) => events.push(e),
                Ok(FeedItem::Checkpoint(c)) => self.passed = Some(c),
                Err(_) => break,
            }
        }
    }

    /// The events drained so far have reached every sink: publish the last checkpoint.
    pub fn acknowledge(&mut self) {
        if let Some(c) = self.passed.take() {
            self.delivered.send_replace(Some(c));
        }
    }
}
