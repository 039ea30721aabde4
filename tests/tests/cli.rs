//! `sonde run` fails clearly, with the cause, the fix and a distinct exit code, when the node
//! lacks what it needs; and its output formats are what the README says.

use std::{
    io::Read,
    os::unix::process::CommandExt,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use sonde_tests::{
    agent::{NotifySocket, sonde_bin, sonde_run},
    poll::{Shown, poll_until},
};

#[test]
fn not_root_exits_77_naming_the_capabilities_and_the_fix() {
    sonde_tests::require_root();
    let out = unsafe {
        sonde_run()
            .args(["--duration", "1s"])
            .stdout(Stdio::null())
            .pre_exec(|| {
                // Drop to nobody: no capabilities left.
                nix::unistd::setgroups(&[]).map_err(std::io::Error::from)?;
                nix::unistd::setgid(nix::unistd::Gid::from_raw(65534))
                    .map_err(std::io::Error::from)?;
                nix::unistd::setuid(nix::unistd::Uid::from_raw(65534)).map_err(std::io::Error::from)
            })
            .output()
            .expect("run sonde as nobody")
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(77), "stderr: {stderr}");
    assert!(
        stderr.contains("CAP_BPF") && stderr.contains("CAP_PERFMON"),
        "{stderr}"
    );
    assert!(stderr.contains("uid 65534"), "{stderr}");
    assert!(
        stderr.contains("Fix:") && stderr.contains("sudo sonde run"),
        "{stderr}"
    );
}

#[test]
fn missing_btf_exits_69_naming_the_kernel_option() {
    sonde_tests::require_root();
    let out = sonde_run()
        .args(["--duration", "1s", "--btf-path", "/nonexistent/vmlinux"])
        .stdout(Stdio::null())
        .output()
        .expect("run sonde");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "stderr: {stderr}");
    assert!(stderr.contains("CONFIG_DEBUG_INFO_BTF"), "{stderr}");
    assert!(stderr.contains("/nonexistent/vmlinux"), "{stderr}");
}

#[test]
fn bad_ring_buffer_size_is_a_usage_error() {
    let out = Command::new(sonde_bin())
        // Metrics on a free port: concurrent tests never collide on the default one.
        .env("SONDE_METRICS_LISTEN", "127.0.0.1:0")
        .args(["run", "--ring-buffer-size", "3MiB"])
        .output()
        .expect("run sonde");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("power of two"), "{stderr}");
}

#[test]
fn text_output_is_one_readable_line_per_event() {
    sonde_tests::require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let notify = NotifySocket::bind(dir.path());
    let mut agent = sonde_run()
        .args(["--output", "text"])
        .env("NOTIFY_SOCKET", notify.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sonde");
    let out = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let (mut stdout, out) = (agent.stdout.take().expect("stdout"), Arc::clone(&out));
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                out.lock().expect("lock").extend_from_slice(&buf[..n]);
            }
        })
    };
    let text = || String::from_utf8_lossy(&out.lock().expect("lock")).into_owned();
    if let Err(status) = notify.wait_ready(&mut agent, text) {
        panic!("sonde exited ({status}) before it was ready");
    }
    let mut child = Command::new("/bin/true").spawn().expect("true");
    assert!(child.wait().expect("wait").success());
    let pid = format!(" pid={} ", child.id());
    // (its events, by pid: other tests run /bin/true too)
    let exit_line = |text: &str| text.lines().any(|l| l.contains("EXIT") && l.contains(&pid));
    poll_until(
        "the EXIT line of /bin/true",
        Duration::from_secs(10),
        || {
            let text = text();
            if exit_line(&text) {
                Ok(())
            } else {
                Err(Shown(text))
            }
        },
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("stop sonde");
    assert!(agent.wait().expect("wait").success());
    reader.join().expect("stdout reader");
    let text = text();
    let line = text
        .lines()
        .find(|l| l.contains("EXEC") && l.contains(&pid) && l.contains("comm=true"))
        .unwrap_or_else(|| panic!("no EXEC line for /bin/true in:\n{text}"));
    assert!(line.contains("/bin/true"), "{line}");
    assert!(
        text.lines().any(|l| l.contains("EXIT")
            && l.contains(&pid)
            && l.contains("comm=true")
            && l.contains("code=0")),
        "{text}"
    );
}
