//! The one attributed event every sink reads, and the one interface every sink implements.
//!
//! The join ([`crate::enrich`]) resolves an event once — identity, cgroup, pod, workload,
//! direction, remote end — into an [`Attribution`]; sinks only read it. Formatting is shared:
//! the NDJSON line of an event is written at most once per event ([`Formatter::json`]), however
//! many sinks print it (stdout and the event hub).

use std::time::SystemTime;

use crate::{
    cluster::events::KubeEvent,
    enrich::Attribution,
    event::Event,
    export::{Context, json, text},
    node::{FoundConn, NodeModel, process::ProcessInfo},
};

use super::health::Health;

/// What an attributed event is about.
#[derive(Clone, Copy)]
pub enum Subject<'a> {
    /// A record from the kernel (never a cgroup record: those only feed the node model).
    Kernel(&'a Event<'a>),
    /// A process running when Sonde started (`process_found`).
    ProcessFound(&'a ProcessInfo),
    /// A connection open when Sonde started (`tcp_open` with `found_at_start`).
    ConnFound(&'a FoundConn),
    /// A Kubernetes event of the cluster, from the leader's collector (`kube_event`).
    KubeEvent(&'a std::sync::Arc<KubeEvent>),
}

/// The stream's type of a Kubernetes event.
pub const KUBE_EVENT: &str = "kube_event";

/// One event, attributed once: what every sink reads.
#[derive(Clone, Copy)]
pub struct Attributed<'a> {
    pub subject: Subject<'a>,
    pub attr: &'a Attribution,
}

impl Attributed<'_> {
    /// The event's `type` as the stream names it.
    pub fn type_name(&self) -> &'static str {
        match self.subject {
            Subject::Kernel(ev) => ev.type_name(),
            Subject::ProcessFound(_) => "process_found",
            Subject::ConnFound(_) => "tcp_open",
            Subject::KubeEvent(_) => KUBE_EVENT,
        }
    }
}

/// Formats events for the sinks that print them; the JSON line of the current event is kept
/// so a second sink copies it instead of formatting it again.
pub struct Formatter {
    pub ctx: Context,
    json: Vec<u8>,
    /// The event `json` holds, as a sequence number of [`Formatter::next`].
    json_of: u64,
    seq: u64,
}

impl Formatter {
    pub fn new(ctx: Context) -> Self {
        Self {
            ctx,
            json: Vec::with_capacity(1024),
            json_of: 0,
            seq: 0,
        }
    }

    /// Starts a new event: what was formatted for the previous one no longer applies.
    pub fn next(&mut self) {
        self.seq += 1;
    }

    /// The event's NDJSON line (with its newline), formatted on the first call per event.
    pub fn json(&mut self, ev: &Attributed<'_>) -> &[u8] {
        if self.json_of != self.seq {
            self.json.clear();
            let ctx = &mut self.ctx;
            match ev.subject {
                Subject::Kernel(e) => json::write_event(&mut self.json, e, ev.attr, ctx),
                Subject::ProcessFound(p) => {
                    json::write_process_found(&mut self.json, p, ev.attr, ctx)
                }
                Subject::ConnFound(c) => json::write_conn_found(&mut self.json, c, ev.attr, ctx),
                Subject::KubeEvent(k) => json::write_kube_event(&mut self.json, k, ctx),
            }
            self.json_of = self.seq;
        }
        &self.json
    }

    /// Appends the event as a readable line (text output is printed by one sink only).
    pub fn text(&self, ev: &Attributed<'_>, out: &mut Vec<u8>) {
        match ev.subject {
            Subject::Kernel(e) => text::write_event(out, e, ev.attr, &self.ctx),
            Subject::ProcessFound(p) => text::write_process_found(out, p, ev.attr),
            Subject::ConnFound(c) => text::write_conn_found(out, c, ev.attr),
            Subject::KubeEvent(k) => text::write_kube_event(out, k),
        }
    }
}

/// The end of a drain: every record of the wake-up has been handed to the sinks.
pub struct BatchEnd<'a> {
    pub node: &'a NodeModel,
    /// Wall-clock time, read once per drain.
    pub now: SystemTime,
}

/// A consumer of attributed events. Sinks are called on the capture task, in order, for every
/// event; they must not block (hand work to a thread or a bounded queue, and count what does
/// not fit).
pub trait Sink: Send {
    /// One attributed event.
    fn event(&mut self, ev: &Attributed<'_>, fmt: &mut Formatter);

    /// Every record of a drain has been delivered: flush, publish.
    fn end_batch(&mut self, _end: &BatchEnd<'_>) {}

    /// Adds this sink's part to the health model (about once a second, and at the end).
    fn health(&mut self, _node: &NodeModel, _health: &mut Health) {}

    /// The run is over: flush what is left. Errors are the run's errors.
    fn finish(self: Box<Self>) -> Result<(), SinkError> {
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("event output failed: {0}")]
    Output(std::io::Error),
}
