//! Three agents contend while 1,000 Kubernetes events (and their repeats) are created; the
//! leader is SIGKILLed twice and the events watch is compacted once. Across the agents' combined
//! output every event and every repeat appears, none is lost, and the only duplicates are the
//! ones the delivery guarantee allows: events a killed leader delivered after its last token
//! write (docs/kube-events.md).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::Value;
use sonde_tests::{
    agent::Agent,
    api,
    cluster::{
        LEASE_DURATION_SECS, RETRY_PERIOD_SECS, event_key, kube_events, lease_holder,
        start_contender, token,
    },
    kube_standin::ApiserverStandin,
    poll::poll_until,
};

const EVENTS: usize = 1000;
/// Between two events created: ~12 s for all of them.
const PACE: Duration = Duration::from_millis(12);

struct Contender {
    name: String,
    agent: Agent,
    api: SocketAddr,
    killed: bool,
}

/// What the producer made: every `(uid, count)` and the resourceVersion of each.
type Made = BTreeMap<(String, u64), u64>;

/// Creates the events; event i repeats (count 2) 100 events later and, for every tenth, again
/// (count 3) 100 after that: repeats of one event are over a second apart.
fn produce(apiserver: &ApiserverStandin, done: &AtomicBool) -> Made {
    let mut made = Made::new();
    let name = |i: usize| format!("pod-{i}.ev");
    let record = |i: usize, count: u32, made: &mut Made| {
        let pod = format!("pod-{i}");
        let rv = apiserver.apply_event("load", &name(i), "Pod", &pod, "BackOff", count);
        made.insert((format!("ev-load-{}", name(i)), u64::from(count)), rv);
    };
    for i in 0..EVENTS + 200 {
        if i < EVENTS {
            record(i, 1, &mut made);
        }
        if let Some(j) = i.checked_sub(100).filter(|j| j % 5 == 0 && *j < EVENTS) {
            record(j, 2, &mut made);
        }
        if let Some(j) = i.checked_sub(200).filter(|j| j % 10 == 0 && *j < EVENTS) {
            record(j, 3, &mut made);
        }
        std::thread::sleep(PACE);
    }
    done.store(true, Ordering::Release);
    made
}

/// `410 Gone` relists the running agents' collectors report.
fn relists_after_gone(contenders: &[Contender]) -> u64 {
    contenders
        .iter()
        .filter(|c| !c.killed)
        .map(|c| {
            api::status(c.api)["agent"]["kube_events"]["expired"]
                .as_u64()
                .unwrap_or(0)
        })
        .sum()
}

fn leader_of(contenders: &[Contender]) -> Option<usize> {
    contenders
        .iter()
        .position(|c| !c.killed && api::status(c.api)["agent"]["leader"]["leader"] == true)
}

/// SIGKILLs the leader; returns (token, resourceVersion) at the kill, and the time until the
/// Lease named another holder.
fn kill_leader(
    apiserver: &ApiserverStandin,
    contenders: &mut [Contender],
) -> ((u64, u64), Duration) {
    let i = poll_until("a leader", Duration::from_secs(15), || {
        leader_of(contenders).ok_or("none")
    });
    let c = &mut contenders[i];
    let at = (token(apiserver).unwrap_or(0), apiserver.resource_version());
    let pid = nix::unistd::Pid::from_raw(c.agent.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("SIGKILL");
    c.killed = true;
    let killed_at = Instant::now();
    let name = c.name.clone();
    poll_until(
        "another agent holds the Lease",
        Duration::from_secs(LEASE_DURATION_SECS + 5),
        || match lease_holder(apiserver) {
            Some(h) if h != name => Ok(h),
            other => Err(other),
        },
    );
    (at, killed_at.elapsed())
}

#[test]
fn a_thousand_events_survive_two_killed_leaders_and_a_compaction() {
    sonde_tests::require_root();
    let apiserver = Arc::new(ApiserverStandin::start());
    let mut contenders: Vec<Contender> = ["agent-a", "agent-b", "agent-c"]
        .iter()
        .map(|name| {
            let (agent, api) = start_contender(&apiserver, name, &[]);
            Contender {
                name: name.to_string(),
                agent,
                api,
                killed: false,
            }
        })
        .collect();
    poll_until("a leader", Duration::from_secs(15), || {
        leader_of(&contenders).ok_or("none")
    });

    let done = Arc::new(AtomicBool::new(false));
    let producer = {
        let (apiserver, done) = (Arc::clone(&apiserver), Arc::clone(&done));
        std::thread::spawn(move || produce(&apiserver, &done))
    };
    let mut kills = Vec::new();
    let mut takeovers = Vec::new();

    std::thread::sleep(Duration::from_millis(2500));
    let (at, took) = kill_leader(&apiserver, &mut contenders);
    kills.push(at);
    takeovers.push(took);

    // The compaction, while the new leader watches: its resume gets 410 Gone and it relists.
    // (The status snapshot is a second old at most: the count is read before anything moves.)
    let expired_before = relists_after_gone(&contenders);
    // (held back for a moment first, so the leader's version is older than the compaction)
    std::thread::sleep(Duration::from_millis(1000));
    apiserver.pause_watches(true);
    std::thread::sleep(Duration::from_millis(200));
    let compacted = apiserver.resource_version();
    apiserver.compact();
    apiserver.cut_watches();
    apiserver.pause_watches(false);
    poll_until("the relist after 410 Gone", Duration::from_secs(10), || {
        let expired = relists_after_gone(&contenders);
        if expired > expired_before {
            Ok(())
        } else {
            Err(expired)
        }
    });
    // Killed again once the token has passed the compaction (a resume from before it would
    // relist, which collapses repeats made while no one leads).
    poll_until(
        "the token passes the compaction",
        Duration::from_secs(10),
        || match token(&apiserver) {
            Some(t) if t > compacted => Ok(t),
            other => Err(other),
        },
    );
    assert!(
        !done.load(Ordering::Acquire),
        "the producer finished before the second kill"
    );
    let (at, took) = kill_leader(&apiserver, &mut contenders);
    kills.push(at);
    takeovers.push(took);

    let made = producer.join().expect("the producer");
    let wanted: BTreeSet<(String, u64)> = made.keys().cloned().collect();
    let survivor = contenders
        .iter()
        .position(|c| !c.killed)
        .expect("one agent left");
    // The combined output of the three agents.
    let combined = || -> Vec<Value> { contenders.iter().flat_map(|c| c.agent.events()).collect() };
    let combined = poll_until("every event and repeat", Duration::from_secs(30), || {
        let all = combined();
        let seen: BTreeSet<(String, u64)> = kube_events(&all).into_iter().map(event_key).collect();
        let missing = wanted.iter().filter(|k| !seen.contains(*k)).count();
        if missing == 0 { Ok(all) } else { Err(missing) }
    });
    let mut copies: BTreeMap<(String, u64), Vec<u64>> = BTreeMap::new();
    for e in kube_events(&combined) {
        let rv = e["resource_version"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .unwrap_or(0);
        copies.entry(event_key(e)).or_default().push(rv);
    }
    let missing: Vec<_> = wanted.iter().filter(|k| !copies.contains_key(*k)).collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    let unexpected: Vec<_> = copies.keys().filter(|k| !wanted.contains(*k)).collect();
    assert!(unexpected.is_empty(), "never made: {unexpected:?}");
    // A duplicate must be something a killed leader delivered after its last token write.
    let in_a_kill_window = |rv: u64| kills.iter().any(|&(token, at)| rv > token && rv <= at);
    let bad: Vec<_> = copies
        .iter()
        .filter(|(_, rvs)| rvs.len() > 1)
        .filter(|(_, rvs)| !rvs.iter().all(|&rv| in_a_kill_window(rv)))
        .collect();
    assert!(
        bad.is_empty(),
        "duplicated outside a kill window {kills:?}: {bad:?}"
    );
    let duplicates = copies.values().filter(|r| r.len() > 1).count();
    let repeats = wanted.iter().filter(|(_, c)| *c > 1).count();
    eprintln!(
        "{} events, {repeats} repeats, {} copies in the combined output, {duplicates} duplicated \
         after a SIGKILL; take-overs after SIGKILL: {takeovers:?}",
        EVENTS,
        copies.values().map(Vec::len).sum::<usize>(),
    );
    for took in &takeovers {
        assert!(
            *took <= Duration::from_secs(LEASE_DURATION_SECS + RETRY_PERIOD_SECS),
            "another agent led {took:?} after the leader was killed (lease {LEASE_DURATION_SECS} s)"
        );
    }
    contenders.swap_remove(survivor).agent.stop();
}
