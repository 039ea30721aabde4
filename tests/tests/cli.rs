//! `sonde run` fails clearly, with the cause, the fix and a distinct exit code, when the node
//! lacks what it needs; and its output formats are what the README says.

use std::{
    os::unix::process::CommandExt,
    process::{Command, Stdio},
};

use sonde_tests::agent::sonde_bin;

#[test]
fn not_root_exits_77_naming_the_capabilities_and_the_fix() {
    sonde_tests::require_root();
    let out = unsafe {
        Command::new(sonde_bin())
            .args(["run", "--duration", "1s"])
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
    let out = Command::new(sonde_bin())
        .args([
            "run",
            "--duration",
            "1s",
            "--btf-path",
            "/nonexistent/vmlinux",
        ])
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
    let agent = Command::new(sonde_bin())
        .args([
            "run",
            "--output",
            "text",
            "--duration",
            "3s",
            "--api-listen",
            "off",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sonde");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let child = Command::new("/bin/true").status().expect("true");
    assert!(child.success());
    let out = agent.wait_with_output().expect("wait");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("EXEC") && l.contains("comm=true"))
        .unwrap_or_else(|| panic!("no EXEC line for /bin/true in:\n{text}"));
    assert!(line.contains("/bin/true"), "{line}");
    assert!(
        text.lines()
            .any(|l| l.contains("EXIT") && l.contains("comm=true") && l.contains("code=0")),
        "{text}"
    );
}
