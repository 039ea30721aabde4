//! One Sonde per kernel, against the real kernel: a second agent refuses to start while the
//! first runs (exit code 75, naming the first one's pid), and of two started at the same
//! moment exactly one stays. (`cargo xtask test` lets every other test's agents share the
//! kernel; these turn the check back on with the flag, which beats the environment.)

use std::{
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use sonde_tests::{
    agent::{Agent, collect_text, sonde_bin},
    poll::poll_until,
};

const EXCLUSIVE: [&str; 2] = ["--set", "capture.allow_other_agents=false"];

fn spawn_exclusive() -> Child {
    Command::new(sonde_bin())
        .args(["run", "--output", "json", "--duration", "60s"])
        .args(["--api-listen", "off", "--metrics-listen", "off"])
        .args(EXCLUSIVE)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sonde")
}

fn stderr_of(child: Child) -> String {
    let out = child.wait_with_output().expect("sonde output");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Waits until `child` logs "capture running" and is still running (its stderr is read).
#[track_caller]
fn wait_capturing(child: &mut Child, what: &str) {
    let log = Arc::new(Mutex::new(String::new()));
    collect_text(child.stderr.take().expect("stderr"), Arc::clone(&log));
    poll_until(what, Duration::from_secs(30), || {
        let text = log.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match child.try_wait() {
            Ok(None) if text.contains("capture running") => Ok(()),
            state => Err(format!("{state:?}\n{text}")),
        }
    });
}

#[test]
fn a_second_agent_refuses_and_of_two_started_together_one_stays() {
    // A running agent (it may share; what matters is that its programs are loaded).
    let first = Agent::start(&[]);
    let mut second = spawn_exclusive();
    let status: ExitStatus = poll_until(
        "the second agent to exit",
        Duration::from_secs(30),
        || match second.try_wait() {
            Ok(Some(status)) => Ok(status),
            other => Err(format!("{other:?}")),
        },
    );
    let stderr = stderr_of(second);
    assert_eq!(status.code(), Some(75), "{stderr}");
    assert!(
        stderr.contains("another Sonde already runs on this kernel")
            && stderr.contains(&format!("pid {}", first.pid()))
            && stderr.contains("capture.allow_other_agents=true"),
        "{stderr}"
    );
    drop(first);

    // Two at once: both may pass the first check; the later one's programs lose to the
    // earlier one's (lower ids) and it stops, whichever it is.
    let mut a = spawn_exclusive();
    let mut b = spawn_exclusive();
    let (loser, winner) = poll_until(
        "one of two agents to stop",
        Duration::from_secs(30),
        || match (a.try_wait(), b.try_wait()) {
            (Ok(Some(s)), Ok(None)) => Ok((s, "b")),
            (Ok(None), Ok(Some(s))) => Ok((s, "a")),
            other => Err(format!("{other:?}")),
        },
    );
    let (mut winner, loser_child) = if winner == "a" { (a, b) } else { (b, a) };
    let stderr = stderr_of(loser_child);
    assert_eq!(loser.code(), Some(75), "{stderr}");
    assert!(stderr.contains("another Sonde already runs"), "{stderr}");
    // The other one runs on: it reaches "capture running" (its log) and is still there.
    wait_capturing(&mut winner, "the remaining agent to capture");
    // Killed and restarted at once (a crash and a restart): the dead agent's programs linger
    // for a moment without a holder, and must not make the new one refuse.
    let _ = winner.kill();
    let _ = winner.wait();
    let mut restarted = spawn_exclusive();
    wait_capturing(&mut restarted, "the restarted agent to capture");
    let _ = restarted.kill();
    let _ = restarted.wait();
}
