//! Queries over the agent's NDJSON events (serde_json values with the documented field names).

use serde_json::Value;

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
