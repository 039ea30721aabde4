//! Queries over the agent's NDJSON events (serde_json values with the documented field names).

use std::{
    fmt::Display,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::Value;

use crate::poll::{Shown, poll_until};

/// How many of the latest events a timeout message shows.
const SHOWN_ON_TIMEOUT: usize = 20;

/// Events collected by a reader thread (the agent's stdout, a `/v1/events` stream), shared
/// with the test that waits on them.
#[derive(Clone, Default)]
pub struct EventLog(Arc<Mutex<Vec<Value>>>);

impl EventLog {
    pub fn push(&self, event: Value) {
        self.0.lock().expect("lock").push(event);
    }

    /// Events received so far.
    pub fn snapshot(&self) -> Vec<Value> {
        self.0.lock().expect("lock").clone()
    }

    /// How many events were received so far.
    pub fn len(&self) -> usize {
        self.0.lock().expect("lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until `done` holds over the events received, and returns them. Fails the test,
    /// showing how many events came and the latest of them, when `timeout` passes first.
    #[track_caller]
    pub fn wait_for(
        &self,
        what: impl Display,
        timeout: Duration,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        poll_until(what, timeout, || {
            let events = self.snapshot();
            if done(&events) {
                Ok(events)
            } else {
                Err(Shown(tail(&events)))
            }
        })
    }
}

/// "N events; the last K:" and those events, one JSON line each.
fn tail(events: &[Value]) -> String {
    let from = events.len().saturating_sub(SHOWN_ON_TIMEOUT);
    let mut text = format!("{} events; the last {}:", events.len(), events.len() - from);
    for e in &events[from..] {
        text.push_str("\n  ");
        text.push_str(&e.to_string());
    }
    text
}

pub fn of_type<'a>(events: &'a [Value], ty: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == ty).collect()
}

pub fn u64_of(e: &Value, key: &str) -> u64 {
    e[key]
        .as_u64()
        .unwrap_or_else(|| panic!("event has no numeric {key}: {e}"))
}

pub fn str_of<'a>(e: &'a Value, key: &str) -> &'a str {
    e[key]
        .as_str()
        .unwrap_or_else(|| panic!("event has no string {key}: {e}"))
}

/// Events of `ty` whose `key` equals `value`.
pub fn matching<'a>(events: &'a [Value], ty: &str, key: &str, value: u64) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["type"] == ty && e[key].as_u64() == Some(value))
        .collect()
}
