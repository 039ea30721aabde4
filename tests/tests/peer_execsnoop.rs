//! Side by side with a peer: libbpf-tools `execsnoop` and Sonde watch the same exec workload
//! and must count the same execs.

use std::{
    io::Read,
    process::{Command, Stdio},
    time::Duration,
};

use sonde_tests::{agent::Agent, events::matching};

const EXECS: usize = 60;

fn execsnoop() -> &'static str {
    for candidate in ["/usr/sbin/execsnoop", "/usr/bin/execsnoop"] {
        if std::path::Path::new(candidate).is_file() {
            return candidate;
        }
    }
    panic!("execsnoop not found: `cargo xtask setup` installs libbpf-tools");
}

#[test]
fn sonde_counts_the_same_execs_as_execsnoop() {
    sonde_tests::require_root();
    let agent = Agent::start(&[]);
    // Line-buffered so its output is complete when it stops; -u 0 narrows to root's execs.
    let mut snoop = Command::new("stdbuf")
        .args(["-oL", execsnoop(), "-u", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start execsnoop");
    // execsnoop has no readiness signal: give it time to load and attach.
    std::thread::sleep(Duration::from_secs(3));

    let script = format!("i=0; while [ $i -lt {EXECS} ]; do /bin/true; i=$((i+1)); done");
    let mut parent = Command::new("/bin/sh")
        .args(["-c", &script])
        .spawn()
        .expect("workload");
    assert!(parent.wait().expect("wait").success());
    let parent_pid = parent.id() as u64;
    std::thread::sleep(Duration::from_millis(500));

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(snoop.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("stop execsnoop");
    let mut out = String::new();
    snoop
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read execsnoop");
    let _ = snoop.wait();

    agent.wait_for(Duration::from_secs(10), |ev| {
        matching(ev, "process_exec", "ppid", parent_pid).len() >= EXECS
    });
    let stopped = agent.stop();
    stopped.assert_nothing_lost();

    // execsnoop columns: PCOMM PID PPID RET ARGS
    let peer_count = out
        .lines()
        .filter(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.len() >= 5
                && cols[0] == "true"
                && cols[2] == parent_pid.to_string()
                && cols[3] == "0"
        })
        .count();
    let sonde_count = matching(&stopped.events, "process_exec", "ppid", parent_pid)
        .iter()
        .filter(|e| e["filename"] == "/bin/true")
        .count();
    assert_eq!(peer_count, EXECS, "execsnoop saw {peer_count}:\n{out}");
    assert_eq!(sonde_count, peer_count, "Sonde and execsnoop disagree");
}
