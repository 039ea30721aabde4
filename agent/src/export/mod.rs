//! Sinks for events: NDJSON and readable text on stdout (the event stream), written by a
//! dedicated thread; Prometheus metrics ([`metrics`]). The status API plugs in here.

pub mod fanout;
pub mod filter;
pub mod json;
pub mod metrics;
pub mod output;
pub mod rotate;
pub mod status;
pub mod summary;
pub mod text;
pub mod workloads;
pub mod writer;

use std::hash::{BuildHasher, RandomState};

use sonde_common::record::ConnRecord;

use crate::{
    clock::Clock,
    enrich::Attribution,
    event::Event,
    node::{FoundConn, process::ProcessInfo},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// One line per event, for people.
    Text,
    /// One JSON object per line (NDJSON), for programs.
    Json,
}

/// What formatting needs besides the event.
pub struct Context {
    pub clock: Clock,
    ids: RandomState,
    time_format: json::TimeFormat,
    /// Pod label keys shown on events (`kubernetes.pod_labels`); others never are.
    pub pod_labels: Vec<String>,
}

impl Default for Context {
    fn default() -> Self {
        Self::new()
    }
}

impl Context {
    pub fn new() -> Self {
        Self {
            clock: Clock::now(),
            ids: RandomState::new(),
            time_format: json::TimeFormat::default(),
            pod_labels: Vec::new(),
        }
    }

    /// Identifier of a connection found at start-up (by socket inode).
    pub fn found_conn_id(&self, inode: u64) -> u64 {
        self.ids.hash_one(("found", inode))
    }

    pub fn write_process_found(
        &mut self,
        format: OutputFormat,
        out: &mut Vec<u8>,
        p: &ProcessInfo,
        attr: &Attribution,
    ) {
        match format {
            OutputFormat::Text => text::write_process_found(out, p, attr),
            OutputFormat::Json => json::write_process_found(out, p, attr, self),
        }
    }

    pub fn write_conn_found(
        &mut self,
        format: OutputFormat,
        out: &mut Vec<u8>,
        c: &FoundConn,
        attr: &Attribution,
    ) {
        match format {
            OutputFormat::Text => text::write_conn_found(out, c, attr),
            OutputFormat::Json => json::write_conn_found(out, c, attr, self),
        }
    }

    /// Identifier of a connection, the same on its open and close records: a keyed hash of the
    /// socket address and open time, so no kernel address is ever printed.
    pub fn conn_id(&self, r: &ConnRecord) -> u64 {
        self.ids.hash_one((r.sock_id, r.opened_ns))
    }

    pub fn write(
        &mut self,
        format: OutputFormat,
        out: &mut Vec<u8>,
        ev: &Event,
        attr: &Attribution,
    ) {
        match format {
            OutputFormat::Text => text::write_event(out, ev, attr, self),
            OutputFormat::Json => json::write_event(out, ev, attr, self),
        }
    }
}
