//! The workload table as a sink: per-workload counters for `GET /v1/status` (rows in the health
//! model) and, with `--summary`, the live table drawn instead of the event stream.

use std::sync::Arc;

use super::{output::Batcher, summary::Summary};
use crate::{
    kube::PodStore,
    node::NodeModel,
    pipeline::{
        health::{Health, TableStats},
        sink::{Attributed, BatchEnd, Formatter, Sink, SinkError, Subject},
    },
};

/// `--summary`: where the table is drawn, and whether in place (a terminal).
pub struct SummaryOutput {
    pub out: Batcher,
    pub clear: bool,
}

pub struct WorkloadTable {
    table: Summary,
    render: Option<SummaryOutput>,
}

impl WorkloadTable {
    /// A table whose containers are named from `pods` when read; `render` draws it.
    pub fn new(pods: Arc<PodStore>, render: Option<SummaryOutput>) -> Self {
        Self {
            table: Summary::with_pods(pods),
            render,
        }
    }
}

impl Sink for WorkloadTable {
    fn event(&mut self, ev: &Attributed<'_>, _fmt: &mut Formatter) {
        match ev.subject {
            Subject::Kernel(e) => self.table.record(e, ev.attr),
            Subject::ConnFound(_) => self.table.found_conn(ev.attr.cgroup.as_ref()),
            Subject::ProcessFound(_) | Subject::KubeEvent(_) => {}
        }
    }

    fn end_batch(&mut self, end: &BatchEnd<'_>) {
        self.table.set_now(end.now);
        if let Some(r) = &mut self.render {
            // A table is not an event: a dropped one is not counted as a lost event.
            self.table.render_due(end.node, r.out.buffer(), r.clear);
            r.out.flush();
        }
    }

    fn health(&mut self, node: &NodeModel, health: &mut Health) {
        self.table.expire(node);
        health.workloads = self.table.workloads(node);
        health.workload_table = Some(TableStats {
            entries: self.table.len(),
            evicted: self.table.evicted(),
        });
        if let Some(r) = &self.render {
            health.output_dropped = r.out.dropped();
        }
    }

    fn finish(self: Box<Self>) -> Result<(), SinkError> {
        match self.render {
            Some(r) => r.out.finish(),
            None => Ok(()),
        }
    }
}
