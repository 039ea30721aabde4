//! What the capture pipeline holds for metrics: the local [`Accumulator`] (published every
//! drain batch) and the health snapshot (published about once a second).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use super::{Accumulator, Health, HealthSnapshot, Metrics};

/// Health is published at most this often.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);

pub struct PipelineMetrics {
    pub acc: Accumulator,
    health: Arc<Health>,
    snapshot: HealthSnapshot,
    last_health: Option<Instant>,
}

impl PipelineMetrics {
    /// `base`: the parts of the health that do not change (probes, ring buffer size).
    pub fn new(metrics: &Metrics, base: HealthSnapshot) -> Self {
        metrics.health.publish(base.clone());
        Self {
            acc: metrics.accumulator(),
            health: Arc::clone(&metrics.health),
            snapshot: base,
            last_health: None,
        }
    }

    /// Publishes the batch's counts, and the health when due (`fill` updates the snapshot).
    pub fn end_batch(&mut self, fill: impl FnOnce(&mut HealthSnapshot)) {
        self.acc.publish();
        if self
            .last_health
            .is_some_and(|t| t.elapsed() < HEALTH_INTERVAL)
        {
            return;
        }
        self.last_health = Some(Instant::now());
        fill(&mut self.snapshot);
        self.snapshot.publish_deferred = self.acc.deferred;
        self.health.publish(self.snapshot.clone());
    }
}
