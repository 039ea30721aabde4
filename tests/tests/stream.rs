//! `GET /v1/events`: the live NDJSON stream of the real agent, filtered by container, unit and
//! type; a reader that never reads is dropped and counted while capture goes on, with the
//! agent's memory bounded; readers beyond `--api-max-subscribers` get 503.

use std::{net::SocketAddr, process::Command, time::Duration};

use serde_json::Value;
use sonde_tests::{
    agent::Agent,
    api::{self, EventStream, StalledReader},
    cgroup::{TestCgroup, remove_everywhere},
    poll::{Shown, poll_until},
    runc::{Bundle, container_id, unique_id},
};

/// Waits until `GET /v1/status` holds `done`, and returns that status document.
fn status_until(addr: SocketAddr, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    poll_until(what, Duration::from_secs(10), || {
        let status = api::status(addr);
        if done(&status) {
            Ok(status)
        } else {
            Err(Shown(status))
        }
    })
}

/// Waits until the agent counts `n` stream subscribers (readers join at the pipeline's next
/// drain, and leave at the one after they close).
fn wait_subscribers(addr: SocketAddr, n: u64) -> Value {
    status_until(addr, &format!("{n} stream subscribers"), |s| {
        s["agent"]["stream"]["subscribers"] == n
    })
}

const LOAD: &str = env!("CARGO_BIN_EXE_bench-load");

/// Runs `/bin/true` `n` times from a shell placed in `cgroup` (a systemd-like unit).
fn run_in_unit(cgroup: &TestCgroup, n: usize) -> u32 {
    let script = format!(
        "echo $$ > {}/cgroup.procs && for i in $(seq {n}); do /bin/true; done",
        cgroup.dir.display()
    );
    let mut child = Command::new("/bin/sh")
        .args(["-c", &script])
        .spawn()
        .expect("spawn");
    assert!(child.wait().expect("wait").success());
    child.id()
}

fn true_execs(events: &[Value]) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| e["type"] == "process_exec" && e["filename"] == "/bin/true")
        .collect()
}

#[test]
fn events_are_filtered_by_container_unit_and_type() {
    let top = format!("sonde-test-{}", unique_id("stream"));
    let id = container_id();
    let ctr_path = format!("/{top}/system.slice/docker-{id}.scope");
    let unit = format!("{}.service", unique_id("sonde-test-stream"));
    let unit_cg = TestCgroup::create(&format!("{top}/system.slice/{unit}"));
    let agent = Agent::start_with_api(&[]);
    let addr = agent.api();

    let by_container = EventStream::open(addr, &format!("container={}", &id[..12]));
    let by_unit = EventStream::open(addr, &format!("unit={unit}"));
    let execs = EventStream::open(addr, "type=exec");
    let everything = EventStream::open(addr, "");
    wait_subscribers(addr, 4);

    let bundle = Bundle::new(
        &["/bin/sh", "-c", "for i in 1 2 3 4; do /bin/true; done"],
        &ctr_path,
    );
    assert!(bundle.run(&unique_id("ctr")).success());
    run_in_unit(&unit_cg, 3);

    // (other tests run concurrently: count only this test's workloads)
    let mine = |ev: &[Value]| {
        let execs = true_execs(ev);
        let ctr = execs.iter().filter(|e| e["container_id"] == id.as_str());
        let unit = execs.iter().filter(|e| e["systemd_unit"] == unit.as_str());
        (ctr.count(), unit.count())
    };
    let t = Duration::from_secs(10);
    let ctr_events = by_container.wait_for("the container's 4 execs", t, |ev| mine(ev).0 >= 4);
    let unit_events = by_unit.wait_for("the unit's 3 execs", t, |ev| mine(ev).1 >= 3);
    let exec_events = execs.wait_for("the 4 + 3 execs", t, |ev| mine(ev) == (4, 3));
    let all_events = everything.wait_for("the 4 + 3 execs", t, |ev| mine(ev) == (4, 3));
    let stopped = agent.stop();
    drop(unit_cg);
    remove_everywhere(&format!("{top}/system.slice/x"), "");
    stopped.assert_nothing_lost();

    // Only the container's events, and all of its execs.
    assert_eq!(true_execs(&ctr_events).len(), 4, "{ctr_events:#?}");
    for e in &ctr_events {
        assert_eq!(e["container_id"], id.as_str(), "{e}");
    }
    assert!(
        ctr_events.iter().any(|e| e["type"] == "process_exit"),
        "{ctr_events:#?}"
    );
    // Only the unit's.
    assert_eq!(true_execs(&unit_events).len(), 3, "{unit_events:#?}");
    for e in &unit_events {
        assert_eq!(e["systemd_unit"], unit.as_str(), "{e}");
    }
    // Only execs, from both workloads.
    assert!(!exec_events.is_empty());
    for e in &exec_events {
        assert_eq!(e["type"], "process_exec", "{e}");
    }
    let in_ctr = |ev: &[Value]| {
        true_execs(ev)
            .iter()
            .filter(|e| e["container_id"] == id.as_str())
            .count()
    };
    assert_eq!(in_ctr(&exec_events), 4);
    assert_eq!(
        true_execs(&exec_events)
            .iter()
            .filter(|e| e["systemd_unit"] == unit.as_str())
            .count(),
        3
    );
    // The unfiltered stream carries the same lines as stdout: every one of the workloads'
    // events the stream saw is on stdout too, byte for byte the same object.
    assert!(all_events.iter().any(|e| e["type"] != "process_exec"));
    for e in all_events
        .iter()
        .filter(|e| e["container_id"] == id.as_str())
    {
        assert!(stopped.events.contains(e), "not on stdout: {e}");
    }
    by_container.close();
}

#[test]
fn a_stalled_reader_is_dropped_and_counted_while_capture_goes_on() {
    // A larger ring buffer so the load alone cannot overflow it: any loss would be the stream's.
    let agent = Agent::start_with_api(&["--ring-buffer-size", "16MiB"]);
    let addr = agent.api();
    let live = EventStream::open(addr, "type=exec");
    let stalled = StalledReader::open(addr);
    let before = wait_subscribers(addr, 2);
    assert_eq!(before["agent"]["lost"]["events_subscribers_dropped"], 0);
    let rss_before = agent.rss_kib();

    // fork/exec load: thousands of events per second for a few seconds.
    let out = Command::new(LOAD)
        .args(["exec", "4"])
        .output()
        .expect("bench-load");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rate: f64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("bench-load rate");
    let rss_after = agent.rss_kib();

    // Dropped and counted, and its connection closed by the agent.
    let status = status_until(addr, "the stalled reader to be dropped", |s| {
        s["agent"]["lost"]["events_subscribers_dropped"].as_u64() >= Some(1)
    });
    assert_eq!(
        status["agent"]["stream"]["events_subscribers_dropped"],
        status["agent"]["lost"]["events_subscribers_dropped"]
    );
    poll_until(
        "the agent to close the stalled reader's connection",
        Duration::from_secs(15),
        || {
            if stalled.closed_by_agent() {
                Ok(())
            } else {
                Err(Shown(format!(
                    "still open; stream {}, live reader got {} events",
                    api::status(addr)["agent"]["stream"],
                    live.len()
                )))
            }
        },
    );

    // Capture went on: a process started now is on stdout and on the live stream.
    let child = Command::new("/bin/true").spawn().expect("spawn");
    let pid = child.id() as u64;
    let mut child = child;
    assert!(child.wait().expect("wait").success());
    let is_mine = |e: &Value| e["type"] == "process_exec" && e["pid"] == pid;
    let live_events = live.wait_for(
        "the new exec on the live stream",
        Duration::from_secs(10),
        |ev| ev.iter().any(is_mine),
    );
    agent.wait_for("the new exec on stdout", Duration::from_secs(10), |ev| {
        ev.iter().any(is_mine)
    });
    let execs_seen = live_events.len();
    let stopped = agent.stop();
    assert!(stopped.events.iter().any(is_mine), "capture stopped");
    assert!(
        live_events.iter().any(is_mine),
        "the live reader stopped getting events"
    );
    // The fast reader kept up: it was not dropped, and got every exec of the load.
    assert_eq!(
        stopped.stats["events_subscribers_dropped"], 1,
        "{}",
        stopped.stats
    );
    let stdout_execs = stopped
        .events
        .iter()
        .filter(|e| e["type"] == "process_exec")
        .count();
    // (stdout also has the few execs from before the reader subscribed)
    assert!(
        execs_seen as f64 >= stdout_execs as f64 * 0.9 && execs_seen as f64 >= rate * 4.0 * 0.9,
        "live reader got {execs_seen} execs, stdout {stdout_execs}, load {rate:.0}/s"
    );
    // No kernel loss, no output drop: the stalled reader cost capture nothing.
    stopped.assert_nothing_lost();
    // Memory bounded: generous, the queues are at most a few MiB.
    let grew = rss_after.saturating_sub(rss_before);
    assert!(
        grew < 64 * 1024,
        "agent RSS grew by {grew} KiB ({rss_before} -> {rss_after}) with a stalled reader"
    );
    eprintln!(
        "load {rate:.0} execs/s; agent RSS {rss_before} -> {rss_after} KiB; live reader got \
         {execs_seen} execs (stdout {stdout_execs})"
    );
}

#[test]
fn readers_beyond_the_limit_get_503_and_bad_filters_400() {
    let agent = Agent::start_with_api(&["--api-max-subscribers", "1"]);
    let addr = agent.api();
    let first = EventStream::open(addr, "");
    let (code, body) = api::get(addr, "/v1/events");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("--api-max-subscribers"), "{body}");
    let (code, body) = api::get(addr, "/v1/events?type=nope");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("Fix:") && body.contains("tcp_open"), "{body}");
    let (code, body) = api::get(addr, "/v1/events?containr=1");
    assert_eq!(code, 400, "{body}");
    first.close();
    // The slot is free again once the first reader is gone.
    wait_subscribers(addr, 0);
    let second = EventStream::open(addr, "");
    second.close();
    agent.stop();
}
