//! Queries over the agent's NDJSON events (serde_json values with the documented field names).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::Value;

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

    /// Waits until `done` holds over the events received (or `timeout`); returns them.
    pub fn wait_for(&self, timeout: Duration, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let events = self.snapshot();
            if done(&events) || Instant::now() > deadline {
                return events;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
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
