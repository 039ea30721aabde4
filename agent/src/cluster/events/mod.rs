//! The cluster's Kubernetes events, collected by the leader: a list + watch of core/v1 `events`
//! in all namespaces ([`collect`]), each emitted once into the event stream as a `kube_event`
//! and again whenever its `count` rises, with a resume token in the ConfigMap
//! `sonde-events-token` ([`token`]) so the next leader starts where this one stopped.
//!
//! The collector hands events to the pipeline through a bounded [`feed`]; the pipeline tells it
//! what every sink has taken (a checkpoint: the resourceVersion up to which everything was
//! delivered), and only that is ever written as the token. The delivery guarantee is in
//! `docs/kube-events.md`.

pub mod collect;
pub mod feed;
pub mod token;

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    time::Duration,
};

use k8s_openapi::api::core::v1::Event as CoreEvent;
use serde::{Deserialize, Serialize};

pub use feed::{EventFeed, FeedSender, feed};

/// The fields the apiserver can select events by (`kube_events.exclude`).
pub const SELECTABLE_FIELDS: [&str; 13] = [
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
    "metadata.name",
    "metadata.namespace",
];

/// Longest message kept; a longer one is cut at a character boundary and flagged.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// `kube_events.*`: what the leader collects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubeEventsConfig {
    /// Collect the cluster's events on the leader.
    pub enabled: bool,
    /// How often the resume token is written (when it moved).
    #[serde(with = "humantime_serde")]
    pub token_interval: Duration,
    /// Events to leave out, as `field=value` terms the apiserver filters on
    /// (sent as `field!=value`).
    pub exclude: Vec<String>,
    /// Only events about these kinds of object (empty: all).
    pub kinds: Vec<String>,
    /// Only events with these reasons (empty: all).
    pub reasons: Vec<String>,
    /// Events whose last count is remembered at most (to emit repeats and skip unchanged ones).
    pub max_tracked: usize,
}

impl Default for KubeEventsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            token_interval: Duration::from_secs(5),
            exclude: Vec::new(),
            kinds: Vec::new(),
            reasons: Vec::new(),
            max_tracked: 100_000,
        }
    }
}

impl KubeEventsConfig {
    /// The failing key and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.token_interval < Duration::from_secs(1) {
            return Err((
                "kube_events.token_interval",
                format!(
                    "{:?} is below 1s: the token is written every few seconds, not per event",
                    self.token_interval
                ),
            ));
        }
        for term in &self.exclude {
            exclude_term(term).map_err(|reason| ("kube_events.exclude", reason))?;
        }
        if self.max_tracked == 0 {
            return Err((
                "kube_events.max_tracked",
                "must be above 0: repeats are found by the counts remembered".into(),
            ));
        }
        Ok(())
    }

    /// The field selector sent with the list and the watch (`None`: no exclusion).
    pub fn field_selector(&self) -> Option<String> {
        let terms: Vec<String> = self
            .exclude
            .iter()
            .filter_map(|t| exclude_term(t).ok())
            .map(|(field, value)| format!("{field}!={value}"))
            .collect();
        (!terms.is_empty()).then(|| terms.join(","))
    }

    /// Whether an event passes the allow-lists.
    pub fn allows(&self, event: &KubeEvent) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&event.involved_kind))
            && (self.reasons.is_empty() || self.reasons.contains(&event.reason))
    }
}

/// `field=value` (or `field!=value`) → `(field, value)`, the field one the apiserver selects
/// events by.
fn exclude_term(term: &str) -> Result<(&str, &str), String> {
    let (field, value) = term
        .split_once("!=")
        .or_else(|| term.split_once('='))
        .map(|(f, v)| (f.trim(), v.trim()))
        .filter(|(f, v)| !f.is_empty() && !v.is_empty())
        .ok_or_else(|| {
            format!(
                "{term:?} is not a field=value term. Fix: write e.g. reason=BackOff or \
                 involvedObject.kind=Node (events matching it are left out)"
            )
        })?;
    if !SELECTABLE_FIELDS.contains(&field) {
        return Err(format!(
            "{field:?} is not a field the apiserver selects events by. Fix: use one of {}",
            SELECTABLE_FIELDS.join(", ")
        ));
    }
    if value.contains(',') {
        return Err(format!(
            "{term:?} holds a comma. Fix: give one term per list item"
        ));
    }
    Ok((field, value))
}

/// One Kubernetes event, as the stream shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KubeEvent {
    pub uid: String,
    /// The Event object's own namespace and name.
    pub namespace: String,
    pub name: String,
    /// `Normal` or `Warning`.
    pub event_type: String,
    pub reason: String,
    pub message: String,
    pub message_truncated: bool,
    /// Times it happened (a repeat raises it; the new-style `series.count` when present).
    pub count: u32,
    pub involved_kind: String,
    pub involved_namespace: String,
    pub involved_name: String,
    pub involved_uid: String,
    pub involved_field_path: String,
    /// Who reported it (`source.component`, else `reportingComponent`).
    pub source_component: String,
    pub source_host: String,
    /// RFC 3339; empty when the event carries no such time.
    pub first_seen: String,
    pub last_seen: String,
    /// The Event object's resourceVersion.
    pub resource_version: String,
}

fn time_text(t: Option<&k8s_openapi::jiff::Timestamp>) -> String {
    t.map(|t| t.to_string()).unwrap_or_default()
}

impl KubeEvent {
    pub fn from_core(e: &CoreEvent) -> Self {
        let meta = &e.metadata;
        let obj = &e.involved_object;
        let text = |s: &Option<String>| s.clone().unwrap_or_default();
        let series = e.series.as_ref();
        let count = series.and_then(|s| s.count).or(e.count).unwrap_or(1).max(1);
        let first = e
            .first_timestamp
            .as_ref()
            .map(|t| &t.0)
            .or(e.event_time.as_ref().map(|t| &t.0))
            .or(meta.creation_timestamp.as_ref().map(|t| &t.0));
        let last = series
            .and_then(|s| s.last_observed_time.as_ref())
            .map(|t| &t.0)
            .or(e.last_timestamp.as_ref().map(|t| &t.0))
            .or(e.event_time.as_ref().map(|t| &t.0))
            .or(first);
        let source = e.source.as_ref();
        let mut message = text(&e.message);
        let message_truncated = message.len() > MAX_MESSAGE_BYTES;
        if message_truncated {
            let mut end = MAX_MESSAGE_BYTES;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        Self {
            uid: text(&meta.uid),
            namespace: text(&meta.namespace),
            name: text(&meta.name),
            event_type: text(&e.type_),
            reason: text(&e.reason),
            message,
            message_truncated,
            count: u32::try_from(count).unwrap_or(1),
            involved_kind: text(&obj.kind),
            involved_namespace: text(&obj.namespace),
            involved_name: text(&obj.name),
            involved_uid: text(&obj.uid),
            involved_field_path: text(&obj.field_path),
            source_component: source
                .and_then(|s| s.component.clone())
                .or_else(|| e.reporting_component.clone())
                .unwrap_or_default(),
            source_host: source.and_then(|s| s.host.clone()).unwrap_or_default(),
            first_seen: time_text(first),
            last_seen: time_text(last),
            resource_version: text(&meta.resource_version),
        }
    }

    /// The namespace a stream filter matches: the involved object's, else the event's own.
    pub fn filter_namespace(&self) -> &str {
        if self.involved_namespace.is_empty() {
            &self.namespace
        } else {
            &self.involved_namespace
        }
    }

    /// The pod it is about, if it is about a pod.
    pub fn pod(&self) -> Option<&str> {
        (self.involved_kind == "Pod").then_some(self.involved_name.as_str())
    }
}

/// A resourceVersion as a number: etcd's revision, what every apiserver backed by etcd sends
/// (compared only to tell what a previous leader already emitted).
pub fn revision(rv: &str) -> Option<u64> {
    rv.parse().ok()
}

/// What the collector does with an event it sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not seen before: emit.
    New,
    /// Seen with a lower count: a repeat, emit with the new count.
    Repeat,
    /// Seen with this count already: skip.
    Unchanged,
}

/// The last count of every event seen, by a 64-bit hash of its UID (12 bytes an entry), at most
/// `max` of them. An event past the cap is not remembered: it is emitted as new if it shows
/// again unchanged after a re-list (counted in `untracked`).
#[derive(Debug)]
pub struct Seen {
    counts: HashMap<u64, u32>,
    max: usize,
    /// Events that could not be remembered (the cap was reached).
    pub untracked: u64,
}

fn uid_key(uid: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    uid.hash(&mut h);
    h.finish()
}

impl Seen {
    pub fn new(max: usize) -> Self {
        Self {
            counts: HashMap::new(),
            max,
            untracked: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.counts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    pub fn verdict(&self, uid: &str, count: u32) -> Verdict {
        match self.counts.get(&uid_key(uid)) {
            None => Verdict::New,
            Some(&seen) if count > seen => Verdict::Repeat,
            Some(_) => Verdict::Unchanged,
        }
    }

    /// Remembers `count` for `uid` (the highest seen).
    pub fn record(&mut self, uid: &str, count: u32) {
        let key = uid_key(uid);
        if let Some(seen) = self.counts.get_mut(&key) {
            *seen = (*seen).max(count);
        } else if self.counts.len() < self.max {
            self.counts.insert(key, count);
        } else {
            self.untracked += 1;
        }
    }

    pub fn forget(&mut self, uid: &str) {
        self.counts.remove(&uid_key(uid));
    }

    /// After a full list: only what it held is remembered (deleted events are forgotten).
    pub fn retain_listed(&mut self, listed: &std::collections::HashSet<u64>) {
        self.counts.retain(|k, _| listed.contains(k));
    }

    pub fn key(uid: &str) -> u64 {
        uid_key(uid)
    }
}

#[cfg(test)]
mod tests;
