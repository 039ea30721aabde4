//! The metrics as a sink of the pipeline: each attributed event counted into the local
//! [`Accumulator`], published into the shared registry at the end of every drain.

use super::{Accumulator, Metrics};
use crate::{
    node::NodeModel,
    pipeline::{
        health::Health,
        sink::{Attributed, BatchEnd, Formatter, Sink, Subject},
    },
};

pub struct PipelineMetrics {
    pub acc: Accumulator,
}

impl PipelineMetrics {
    pub fn new(metrics: &Metrics) -> Self {
        Self {
            acc: metrics.accumulator(),
        }
    }
}

impl Sink for PipelineMetrics {
    fn event(&mut self, ev: &Attributed<'_>, _fmt: &mut Formatter) {
        match ev.subject {
            Subject::Kernel(e) => self.acc.record(e, ev.attr),
            Subject::ConnFound(c) => self.acc.found_conn(c, ev.attr),
            Subject::ProcessFound(_) | Subject::KubeEvent(_) => {}
        }
    }

    fn end_batch(&mut self, _end: &BatchEnd<'_>) {
        self.acc.publish();
    }

    fn health(&mut self, _node: &NodeModel, health: &mut Health) {
        health.metrics_publish_deferred = Some(self.acc.deferred);
    }
}
