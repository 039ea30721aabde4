//! Side by side with a peer: libbpf-tools `execsnoop` and Sonde watch the same exec workload
//! and must count the same execs.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use sonde_tests::{
    agent::Agent,
    events::matching,
    poll::{Shown, poll_until},
};

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
    let out = Arc::new(Mutex::new(String::new()));
    let reader = {
        let (stdout, out) = (snoop.stdout.take().expect("stdout"), Arc::clone(&out));
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let mut out = out.lock().expect("lock");
                out.push_str(&line);
                out.push('\n');
            }
        })
    };
    // Lines of `comm` execs with parent `ppid` and success, in execsnoop's columns (PCOMM PID
    // PPID RET ARGS).
    let reported = |comm: &str, ppid: u64| {
        out.lock()
            .expect("lock")
            .lines()
            .filter(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.len() >= 5 && cols[0] == comm && cols[2] == ppid.to_string() && cols[3] == "0"
            })
            .count()
    };
    // execsnoop says nothing when it has attached (its header comes before its buffers are
    // open): it is ready once it reports an exec of ours.
    let me = u64::from(std::process::id());
    poll_until(
        "execsnoop to report an exec",
        Duration::from_secs(30),
        || {
            let status = Command::new("/bin/true").status().expect("/bin/true");
            assert!(status.success());
            if reported("true", me) > 0 {
                Ok(())
            } else {
                Err(Shown(out.lock().expect("lock").clone()))
            }
        },
    );

    let script = format!("i=0; while [ $i -lt {EXECS} ]; do /bin/true; i=$((i+1)); done");
    let mut parent = Command::new("/bin/sh")
        .args(["-c", &script])
        .spawn()
        .expect("workload");
    assert!(parent.wait().expect("wait").success());
    let parent_pid = parent.id() as u64;
    poll_until(
        format!("execsnoop to report the {EXECS} execs"),
        Duration::from_secs(10),
        || match reported("true", parent_pid) {
            EXECS => Ok(()),
            n => Err(n),
        },
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(snoop.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("stop execsnoop");
    let _ = snoop.wait();
    reader.join().expect("execsnoop reader");

    agent.wait_for(
        format!("Sonde to report the {EXECS} execs"),
        Duration::from_secs(10),
        |ev| matching(ev, "process_exec", "ppid", parent_pid).len() >= EXECS,
    );
    let stopped = agent.stop();
    stopped.assert_nothing_lost();

    let peer_count = reported("true", parent_pid);
    let out = out.lock().expect("lock").clone();
    let sonde_count = matching(&stopped.events, "process_exec", "ppid", parent_pid)
        .iter()
        .filter(|e| e["filename"] == "/bin/true")
        .count();
    assert_eq!(peer_count, EXECS, "execsnoop saw {peer_count}:\n{out}");
    assert_eq!(sonde_count, peer_count, "Sonde and execsnoop disagree");
}
