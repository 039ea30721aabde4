//! Process lifecycle capture on the real kernel: exec, fork and exit of short-lived processes,
//! with the right parent, names and exit status.

use std::{
    os::unix::process::ExitStatusExt,
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use sonde_tests::{
    agent::Agent,
    events::{matching, str_of, u64_of},
};

/// What the test expects of one process it started.
struct Expect {
    pid: u32,
    filename: &'static str,
    comm: &'static str,
    exit_code: Option<u64>,
    signal: Option<u64>,
}

fn spawn(cmd: &mut Command) -> std::process::Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn workload")
}

#[test]
fn short_lived_processes_give_one_exec_one_fork_and_one_exit_each() {
    let agent = Agent::start(&[]);
    let me = std::process::id() as u64;
    let mut expected = Vec::new();
    for _ in 0..5 {
        let mut child = spawn(&mut Command::new("/bin/true"));
        assert!(child.wait().expect("wait").success());
        expected.push(Expect {
            pid: child.id(),
            filename: "/bin/true",
            comm: "true",
            exit_code: Some(0),
            signal: None,
        });

        let mut child = spawn(Command::new("/bin/sh").args(["-c", "exit 3"]));
        assert_eq!(child.wait().expect("wait").code(), Some(3));
        expected.push(Expect {
            pid: child.id(),
            filename: "/bin/sh",
            comm: "sh",
            exit_code: Some(3),
            signal: None,
        });

        let mut child = spawn(Command::new("/bin/sleep").arg("30"));
        // Let it exec before the signal, so exec and exit are both observable. The agent's own
        // exec event is the signal: /proc/PID/exe changes in begin_new_exec(), before the ELF
        // loader has finished (and before sched_process_exec fires); a SIGKILL in that window
        // (pages of ld.so still being read, cold caches) ends an exec that never completed.
        let pid = child.id() as u64;
        agent.wait_for(
            "the exec of /bin/sleep",
            Duration::from_secs(10),
            |events| !matching(events, "process_exec", "pid", pid).is_empty(),
        );
        child.kill().expect("kill");
        assert_eq!(child.wait().expect("wait").signal(), Some(9));
        expected.push(Expect {
            pid: child.id(),
            filename: "/bin/sleep",
            comm: "sleep",
            exit_code: None,
            signal: Some(9),
        });
    }

    let pids: Vec<u64> = expected.iter().map(|e| e.pid as u64).collect();
    agent.wait_for(
        "the exit of every child",
        Duration::from_secs(10),
        |events| {
            pids.iter()
                .all(|&p| !matching(events, "process_exit", "pid", p).is_empty())
        },
    );
    let stopped = agent.stop();
    stopped.assert_nothing_lost();
    let events = &stopped.events;

    for e in &expected {
        let pid = e.pid as u64;
        let execs = matching(events, "process_exec", "pid", pid);
        let exits = matching(events, "process_exit", "pid", pid);
        let forks = matching(events, "process_fork", "pid", pid);
        assert_eq!(execs.len(), 1, "pid {pid}: exec events {execs:?}");
        assert_eq!(exits.len(), 1, "pid {pid}: exit events {exits:?}");
        assert_eq!(forks.len(), 1, "pid {pid}: fork events {forks:?}");

        let exec = execs[0];
        assert_eq!(u64_of(exec, "ppid"), me, "{exec}");
        assert_eq!(str_of(exec, "filename"), e.filename, "{exec}");
        assert_eq!(str_of(exec, "comm"), e.comm, "{exec}");
        assert_eq!(exec["args"][0], e.filename, "{exec}");
        assert_eq!(u64_of(exec, "uid"), 0);

        let fork = forks[0];
        assert_eq!(u64_of(fork, "ppid"), me, "{fork}");
        // The fork, exec and exit name the same process instance.
        let start = u64_of(fork, "start_time_ns");
        assert_eq!(u64_of(exec, "start_time_ns"), start, "{exec}");

        let exit = exits[0];
        assert_eq!(u64_of(exit, "start_time_ns"), start, "{exit}");
        assert_eq!(str_of(exit, "comm"), e.comm, "{exit}");
        assert_eq!(exit["exit_code"].as_u64(), e.exit_code, "{exit}");
        assert_eq!(exit["signal"].as_u64(), e.signal, "{exit}");
        assert!(u64_of(exit, "lifetime_ns") > 0, "{exit}");
    }
    // Exactly N execs of these programs from this process: none invented, none doubled. (Other
    // tests in this binary run concurrently and start other programs.)
    let n = expected.len();
    let execs_from_me: Vec<&Value> = events
        .iter()
        .filter(|e| {
            e["type"] == "process_exec"
                && e["ppid"].as_u64() == Some(me)
                && ["/bin/true", "/bin/sh", "/bin/sleep"].contains(&str_of(e, "filename"))
        })
        .collect();
    assert_eq!(execs_from_me.len(), n, "{execs_from_me:?}");
}

#[test]
fn exit_of_a_multithreaded_process_is_reported_once() {
    let agent = Agent::start(&[]);
    // Four threads still running when the main thread calls exit(7): five tasks exit, one
    // process ends.
    let mut child = Command::new(env!("CARGO_BIN_EXE_tcp-peer"))
        .args(["threads", "4", "7"])
        .spawn()
        .expect("spawn");
    let pid = child.id() as u64;
    assert_eq!(child.wait().expect("wait").code(), Some(7));
    agent.wait_for("the exit of the child", Duration::from_secs(10), |ev| {
        !matching(ev, "process_exit", "pid", pid).is_empty()
    });
    let stopped = agent.stop();
    let exits = matching(&stopped.events, "process_exit", "pid", pid);
    assert_eq!(exits.len(), 1, "{exits:?}");
    assert_eq!(exits[0]["exit_code"], 7);
    // Threads are not processes: no fork event names a thread of this process.
    let forks: Vec<&Value> = stopped
        .events
        .iter()
        .filter(|e| e["type"] == "process_fork" && e["ppid"].as_u64() == Some(pid))
        .collect();
    assert!(forks.is_empty(), "{forks:?}");
}
