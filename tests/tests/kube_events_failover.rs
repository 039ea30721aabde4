//! Three agents contend while 1,000 Kubernetes events (and their repeats) are created; the
//! leader is SIGKILLed twice and the events watch is compacted once. Across the agents' combined
//! output every event and every repeat appears, none is lost, and the only duplicates are the
//! ones the delivery guarantee allows: events a killed leader delivered after its last token
//! write (docs/kube-events.md). Each SIGKILL is taken over within the lease duration (plus one
//! retry period); a SIGTERM at the end hands over within 2 s; and over the whole run the agents'
//! terms as leader, read from their logs, never overlap.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;
use sonde_tests::{
    agent::Agent,
    api,
    cluster::{
        LEASE_DURATION_SECS, RETRY_PERIOD_SECS, event_key, kube_events, lease_holder, log_line,
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
    /// When it was SIGKILLed.
    killed: Option<Timestamp>,
}

impl Contender {
    fn start(apiserver: &ApiserverStandin, name: &str) -> Self {
        let (agent, api) = start_contender(apiserver, name, &[]);
        Contender {
            name: name.to_string(),
            agent,
            api,
            killed: None,
        }
    }

    /// Its terms as leader, from its log: `leading: …` starts one; `Lease released` or `no
    /// longer leading` ends it, and so does being killed. `None`: still leading.
    fn terms(&self, log: &str) -> Vec<(Timestamp, Option<Timestamp>)> {
        let mut terms: Vec<(Timestamp, Option<Timestamp>)> = Vec::new();
        for line in log.lines() {
            let Some((at, plain)) = log_line(line) else {
                continue;
            };
            if plain.contains("leading: the cluster's duties start") {
                terms.push((at, None));
            } else if (plain.contains("Lease released") || plain.contains("no longer leading"))
                && let Some(open) = terms.last_mut().filter(|t| t.1.is_none())
            {
                open.1 = Some(at);
            }
        }
        if let (Some(killed), Some(open)) = (self.killed, terms.last_mut())
            && open.1.is_none()
        {
            open.1 = Some(killed);
        }
        terms
    }
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
        .filter(|c| c.killed.is_none())
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
        .position(|c| c.killed.is_none() && api::status(c.api)["agent"]["leader"]["leader"] == true)
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
    c.killed = Some(Timestamp::now());
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
        .map(|name| Contender::start(&apiserver, name))
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
        .position(|c| c.killed.is_none())
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

    // SIGTERM: with a fresh stand-by beside the survivor, the survivor hands over within 2 s.
    contenders.push(Contender::start(&apiserver, "agent-d"));
    let standby = contenders.len() - 1;
    poll_until("agent-d stands by", Duration::from_secs(10), || {
        let s = api::status(contenders[standby].api)["agent"]["leader"].clone();
        if s["holder"] == contenders[survivor].name.as_str() {
            Ok(())
        } else {
            Err(s)
        }
    });
    let pid = nix::unistd::Pid::from_raw(contenders[survivor].agent.pid() as i32);
    let stopping = Instant::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    poll_until(
        "agent-d holds the Lease",
        Duration::from_secs(5),
        || match lease_holder(&apiserver) {
            Some(h) if h == "agent-d" => Ok(()),
            other => Err(other),
        },
    );
    let handover = stopping.elapsed();
    assert!(
        handover < Duration::from_secs(2),
        "SIGTERM hand-over took {handover:?}"
    );

    // Over the whole run, one leader at a time: every term (from each agent's log) ends before
    // the next one starts.
    let mut logs = Vec::new();
    for (i, c) in contenders.iter().enumerate() {
        if i == survivor {
            poll_until("the survivor exits", Duration::from_secs(10), || {
                let log = c.agent.stderr();
                if log.contains("Lease released") {
                    Ok(())
                } else {
                    Err(log.len())
                }
            });
        }
        logs.push(c.agent.stderr());
    }
    let mut terms: Vec<(Timestamp, Option<Timestamp>, &str)> = contenders
        .iter()
        .zip(&logs)
        .flat_map(|(c, log)| {
            c.terms(log)
                .into_iter()
                .map(|(start, end)| (start, end, c.name.as_str()))
        })
        .collect();
    terms.sort();
    assert!(terms.len() >= 4, "four terms at least: {terms:?}");
    for pair in terms.windows(2) {
        let ((_, end, who), (next, _, next_who)) = (pair[0], pair[1]);
        assert!(
            end.is_some_and(|end| end <= next),
            "{who}'s term ({end:?}) overlaps {next_who}'s from {next}: {terms:?}"
        );
    }
    eprintln!("terms: {terms:?}; SIGTERM hand-over {handover:?}");
    contenders.pop().expect("agent-d").agent.stop();
}
