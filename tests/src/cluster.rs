//! Agents as the DaemonSet's pods that contend for the leadership (`POD_NAME`, `POD_NAMESPACE`)
//! against the test apiserver, with short election timings, and what the leader's Kubernetes
//! events look like in their output.

use std::{collections::BTreeMap, net::SocketAddr};

use serde_json::Value;

use crate::{
    agent::Agent,
    api::free_loopback_addr,
    kube_standin::{ApiserverStandin, Resource, apiserver::FIXTURE_NODE},
};

/// The agents' namespace.
pub const NAMESPACE: &str = "sonde";
/// The events' resume token.
pub const TOKEN_CONFIGMAP: &str = "sonde-events-token";
/// The election's timings in these tests (lease duration, renew deadline, retry period).
pub const LEASE_DURATION_SECS: u64 = 4;
pub const RETRY_PERIOD_SECS: u64 = 1;

/// Starts an agent running as pod `name` that contends (lease 4 s, renew deadline 3 s, retry
/// 1 s; the events token every second), its API on a free loopback address.
pub fn start_contender(
    apiserver: &ApiserverStandin,
    name: &str,
    extra: &[&str],
) -> (Agent, SocketAddr) {
    let addr = free_loopback_addr();
    let listen = addr.to_string();
    let kubeconfig = apiserver.kubeconfig().display().to_string();
    let lease = format!("leader_election.lease_duration={LEASE_DURATION_SECS}s");
    let retry = format!("leader_election.retry_period={RETRY_PERIOD_SECS}s");
    let mut args = vec![
        "--api-listen",
        listen.as_str(),
        "--kubeconfig",
        kubeconfig.as_str(),
        "--node-name",
        FIXTURE_NODE,
        "--set",
        lease.as_str(),
        "--set",
        "leader_election.renew_deadline=3s",
        "--set",
        retry.as_str(),
        "--set",
        "kube_events.token_interval=1s",
    ];
    args.extend_from_slice(extra);
    let agent = Agent::start_with_env(&args, &[("POD_NAME", name), ("POD_NAMESPACE", NAMESPACE)]);
    (agent, addr)
}

/// The `kube_event`s of an output.
pub fn kube_events(events: &[Value]) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| e["type"] == "kube_event")
        .collect()
}

/// `(event_uid, count)` of every kube_event, with how often each was emitted.
pub fn emitted(events: &[Value]) -> BTreeMap<(String, u64), usize> {
    let mut out = BTreeMap::new();
    for e in kube_events(events) {
        *out.entry(event_key(e)).or_default() += 1;
    }
    out
}

/// `(event_uid, count)` of one kube_event.
pub fn event_key(e: &Value) -> (String, u64) {
    (
        e["event_uid"].as_str().unwrap_or_default().to_string(),
        e["count"].as_u64().unwrap_or_default(),
    )
}

/// The key of the event [`crate::kube_standin::apiserver::kube_event`] makes.
pub fn key(namespace: &str, name: &str, count: u64) -> (String, u64) {
    (format!("ev-{namespace}-{name}"), count)
}

/// The resume token's resourceVersion, when written.
pub fn token(apiserver: &ApiserverStandin) -> Option<u64> {
    let cm = apiserver.get(Resource::ConfigMaps, NAMESPACE, TOKEN_CONFIGMAP)?;
    cm["data"]["event.tokenKey"].as_str()?.parse().ok()
}

/// The Lease's holder in the apiserver.
pub fn lease_holder(apiserver: &ApiserverStandin) -> Option<String> {
    let lease = apiserver.get(Resource::Leases, NAMESPACE, "sonde-leader-election")?;
    lease["spec"]["holderIdentity"].as_str().map(str::to_string)
}

/// A line of the agent's log: its time and its text without the terminal colour codes.
pub fn log_line(line: &str) -> Option<(k8s_openapi::jiff::Timestamp, String)> {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    let at = plain.split_whitespace().next()?.parse().ok()?;
    Some((at, plain))
}
