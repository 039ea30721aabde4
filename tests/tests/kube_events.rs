//! The cluster's Kubernetes events, collected by the elected agent from the test apiserver:
//! each event once in the stream (NDJSON, `/v1/events?type=kube_event&namespace=`), again when
//! its count rises and never when unchanged; the allow-lists and the field-selector denylist;
//! `410 Gone` relists without re-emitting; the resume token in the ConfigMap
//! `sonde-events-token`, written every `token_interval` and before the Lease is released on
//! SIGTERM, from which the next leader resumes.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use serde_json::Value;
use sonde_tests::{
    api::{self, EventStream},
    cluster::{emitted, key, kube_events, start_contender as start_agent, token},
    kube_standin::{ApiserverStandin, Resource, apiserver::kube_event},
    poll::poll_until,
};

fn collector(addr: SocketAddr) -> Value {
    api::status(addr)["agent"]["kube_events"].clone()
}

#[test]
fn the_leader_emits_each_event_once_repeats_again_and_resumes_from_its_token() {
    sonde_tests::require_root();
    let apiserver = ApiserverStandin::start();
    // Events from before any leader: the first leader of a cluster emits them once.
    apiserver.apply_event("shop", "web-1.a", "Pod", "web-1", "Scheduled", 1);
    apiserver.apply_event("shop", "web-1.b", "Pod", "web-1", "BackOff", 3);
    apiserver.apply_event("kube-system", "n.c", "Node", "node-a", "Noisy", 1);

    let (mut agent, addr) = start_agent(
        &apiserver,
        "agent-a",
        &[
            "--set",
            "kube_events.exclude=reason=Noisy",
            "--set",
            "kube_events.kinds=Pod,Node",
        ],
    );
    let events = agent.wait_for("the two listed events", Duration::from_secs(15), |ev| {
        emitted(ev).len() >= 2
    });
    let first = kube_events(&events);
    let backoff = first
        .iter()
        .find(|e| e["reason"] == "BackOff")
        .unwrap_or_else(|| panic!("{first:?}"));
    for (field, want) in [
        ("event_uid", "ev-shop-web-1.b"),
        ("event_type", "Warning"),
        ("involved_kind", "Pod"),
        ("involved_namespace", "shop"),
        ("involved_name", "web-1"),
        ("source_component", "kubelet"),
        ("first_seen", "2026-12-03T10:00:00Z"),
        ("last_seen", "2026-12-03T10:03:00Z"),
        ("message", "BackOff of Pod web-1"),
    ] {
        assert_eq!(backoff[field], want, "{field} of {backoff}");
    }
    assert_eq!(backoff["count"], 3);
    // The denylist is the apiserver's field selector: the Noisy event never arrives.
    let selectors: Vec<String> = apiserver
        .requests()
        .iter()
        .filter(|r| r.resource == Resource::Events)
        .filter_map(|r| r.param("fieldSelector"))
        .collect();
    assert!(
        !selectors.is_empty() && selectors.iter().all(|s| s == "reason!=Noisy"),
        "{selectors:?}"
    );

    // A subscriber of Kubernetes events in one namespace.
    let stream = EventStream::open(addr, "type=kube_event&namespace=shop");
    // New, a repeat (count 1 → 2), a change that is not a repeat, an event of a kind not
    // allowed.
    apiserver.apply_event("shop", "web-2.a", "Pod", "web-2", "Pulled", 1);
    apiserver.apply_event("other", "db.a", "Pod", "db-0", "Pulled", 1);
    apiserver.apply_event("shop", "web-1.a", "Pod", "web-1", "Scheduled", 2);
    let mut same = kube_event("shop", "web-1.b", "Pod", "web-1", "BackOff", 3);
    same["message"] = Value::from("edited, same count");
    apiserver.apply(Resource::Events, same);
    apiserver.apply_event(
        "shop",
        "deploy.a",
        "Deployment",
        "web",
        "ScalingReplicaSet",
        1,
    );
    let events = agent.wait_for("the new, the repeat", Duration::from_secs(10), |ev| {
        let e = emitted(ev);
        e.contains_key(&key("shop", "web-2.a", 1))
            && e.contains_key(&key("other", "db.a", 1))
            && e.contains_key(&key("shop", "web-1.a", 2))
    });
    let seen = poll_until(
        "unchanged and filtered counted",
        Duration::from_secs(5),
        || {
            let k = collector(addr);
            if k["unchanged"].as_u64() >= Some(1) && k["filtered"].as_u64() >= Some(1) {
                Ok(k)
            } else {
                Err(k)
            }
        },
    );
    assert_eq!(seen["collecting"], true, "{seen}");
    let all = emitted(&agent.events());
    let expected: BTreeMap<(String, u64), usize> = [
        (key("shop", "web-1.a", 1), 1),
        (key("shop", "web-1.b", 3), 1),
        (key("shop", "web-2.a", 1), 1),
        (key("other", "db.a", 1), 1),
        (key("shop", "web-1.a", 2), 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(all, expected, "{events:?}");
    let in_shop = stream.wait_for("the stream's shop events", Duration::from_secs(5), |ev| {
        ev.len() >= 2
    });
    let uids: Vec<&str> = in_shop
        .iter()
        .map(|e| e["event_uid"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(uids, ["ev-shop-web-2.a", "ev-shop-web-1.a"], "{in_shop:?}");

    // Compaction: while the watch is held back, one event is created and one repeats; the
    // version is compacted and the watch cut. The agent's resume gets 410 Gone, it relists and
    // emits exactly those two — nothing it had already emitted.
    apiserver.pause_watches(true);
    apiserver.apply_event("shop", "web-3.a", "Pod", "web-3", "Created", 1);
    let last = apiserver.apply_event("shop", "web-1.b", "Pod", "web-1", "BackOff", 4);
    apiserver.compact();
    apiserver.cut_watches();
    apiserver.pause_watches(false);
    agent.wait_for("the relisted changes", Duration::from_secs(15), |ev| {
        let e = emitted(ev);
        e.contains_key(&key("shop", "web-3.a", 1)) && e.contains_key(&key("shop", "web-1.b", 4))
    });
    let relisted = poll_until("the relist recorded", Duration::from_secs(5), || {
        let k = collector(addr);
        if k["expired"].as_u64() >= Some(1) && k["lists"].as_u64() >= Some(2) {
            Ok(k)
        } else {
            Err(k)
        }
    });
    let all = emitted(&agent.events());
    assert!(all.values().all(|&n| n == 1), "emitted twice: {all:?}");
    assert_eq!(all.len(), 7, "{all:?} ({relisted})");

    // The token: written every second, up to what was delivered (Lease renewals move the
    // version too: the token is at least the last event's).
    poll_until(
        "the token reaches the last event",
        Duration::from_secs(5),
        || match token(&apiserver) {
            Some(t) if t >= last => Ok(t),
            other => Err(other),
        },
    );
    let (_, metrics) = api::get(agent.metrics_addr(), "/metrics");
    assert!(
        metrics.contains(
            "sonde_kube_events_total{event_type=\"Warning\",reason=\"BackOff\",involved_kind=\"Pod\"} 2"
        ),
        "{}",
        metrics.lines().filter(|l| l.starts_with("sonde_kube_events")).collect::<Vec<_>>().join("\n")
    );

    // SIGTERM: the token is written (with everything delivered) before the Lease is freed.
    let last = apiserver.apply_event("shop", "web-4.a", "Pod", "web-4", "Started", 1);
    agent.wait_for("the last event", Duration::from_secs(5), |ev| {
        emitted(ev).contains_key(&key("shop", "web-4.a", 1))
    });
    let stopped = agent.stop();
    let last = token(&apiserver)
        .filter(|&t| t >= last)
        .unwrap_or_else(|| panic!("the token covers the last event ({last})"));
    let requests = apiserver.object_requests();
    let last_token = requests
        .iter()
        .rposition(|(r, verb, _)| *r == Resource::ConfigMaps && *verb == "patch");
    let release = requests
        .iter()
        .rposition(|(r, verb, _)| *r == Resource::Leases && *verb == "update");
    assert!(
        last_token.is_some() && last_token < release,
        "the token is written before the Lease is released: {requests:?}"
    );
    assert!(
        stopped.stderr.contains("Lease released"),
        "{}",
        stopped.stderr
    );

    // The next leader resumes from the token: nothing old again, the new ones once.
    apiserver.apply_event("shop", "web-5.a", "Pod", "web-5", "Started", 1);
    let (next, next_addr) = start_agent(&apiserver, "agent-b", &[]);
    next.wait_for(
        "the event after the hand-over",
        Duration::from_secs(15),
        |ev| emitted(ev).contains_key(&key("shop", "web-5.a", 1)),
    );
    // (the status snapshot is up to a second old)
    let want = last.to_string();
    poll_until(
        "the next term's start in its status",
        Duration::from_secs(5),
        || {
            let state = collector(next_addr);
            if state["resumed_from"] == want.as_str() {
                Ok(())
            } else {
                Err(state)
            }
        },
    );
    // Give a wrong re-emission the time to show.
    apiserver.apply_event("shop", "web-6.a", "Pod", "web-6", "Started", 1);
    let events = next.wait_for("a later event", Duration::from_secs(10), |ev| {
        emitted(ev).contains_key(&key("shop", "web-6.a", 1))
    });
    let again = emitted(&events);
    assert_eq!(
        again.keys().cloned().collect::<Vec<_>>(),
        [key("shop", "web-5.a", 1), key("shop", "web-6.a", 1)],
        "the next leader emitted only what came after the token"
    );
    next.stop();
}

/// A leader that cannot renew its Lease (every Lease request answers 503) stands down at its
/// renew deadline and stops its duties — by its own log, before its Lease could expire for
/// anyone else — and, once the apiserver answers again, leads a new term that resumes from the
/// token: an event created while no one led is emitted once, and nothing twice.
#[test]
fn a_leader_that_cannot_renew_stops_its_duties_before_its_lease_can_expire() {
    use k8s_openapi::jiff::{SignedDuration, Timestamp};
    sonde_tests::require_root();
    let apiserver = ApiserverStandin::start();
    apiserver.apply_event("shop", "before.a", "Pod", "web-1", "Pulled", 1);
    let (agent, addr) = start_agent(&apiserver, "agent-a", &[]);
    agent.wait_for("the first event", Duration::from_secs(15), |ev| {
        emitted(ev).contains_key(&key("shop", "before.a", 1))
    });
    poll_until("the token written", Duration::from_secs(5), || {
        token(&apiserver).ok_or("none")
    });

    apiserver.set_unavailable(true);
    let lease = apiserver
        .get(Resource::Leases, "sonde", "sonde-leader-election")
        .expect("the Lease");
    let renewed: Timestamp = lease["spec"]["renewTime"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("renewTime in {lease}"));
    let stopped = poll_until("the duties stopped", Duration::from_secs(10), || {
        let log = agent.stderr();
        log.lines()
            .filter_map(sonde_tests::cluster::log_line)
            .find(|(_, l)| l.contains("no longer leading: the cluster's duties stopped"))
            .map(|(at, _)| at)
            .ok_or(())
    });
    let expiry =
        renewed + SignedDuration::from_secs(sonde_tests::cluster::LEASE_DURATION_SECS as i64);
    assert!(
        stopped < expiry,
        "the duties stopped at {stopped}, after the Lease could expire ({expiry})"
    );
    poll_until("the status says so", Duration::from_secs(5), || {
        let k = collector(addr);
        if k["collecting"] == false {
            Ok(())
        } else {
            Err(k)
        }
    });
    // (created while no one leads: the next term emits it)
    apiserver.apply_event("shop", "during.a", "Pod", "web-1", "BackOff", 1);

    apiserver.set_unavailable(false);
    let events = poll_until("the event of the outage", Duration::from_secs(15), || {
        let ev = agent.events();
        if emitted(&ev).contains_key(&key("shop", "during.a", 1)) {
            Ok(ev)
        } else {
            Err(collector(addr))
        }
    });
    let all = emitted(&events);
    assert!(all.values().all(|&n| n == 1), "emitted twice: {all:?}");
    let k = poll_until("a second term", Duration::from_secs(5), || {
        let k = collector(addr);
        if k["terms"].as_u64() >= Some(2) && k["collecting"] == true {
            Ok(k)
        } else {
            Err(k)
        }
    });
    assert!(k["resumed_from"].is_string(), "{k}");
    agent.stop();
}
