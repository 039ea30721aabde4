//! Real containers with runc: a busybox-static root filesystem and an OCI config from
//! `runc spec`, placed at a cgroup path the test chooses.

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

use serde_json::{Value, json};

use crate::poll::poll_until;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A unique container id for this test process.
pub fn unique_id(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Random hex digits (test-unique ids).
pub fn random_hex(len: usize) -> String {
    use std::hash::{BuildHasher, RandomState};
    let mut out = String::new();
    let mut n = 0u64;
    while out.len() < len {
        let v = RandomState::new().hash_one((std::process::id(), n, std::time::Instant::now()));
        out.push_str(&format!("{v:016x}"));
        n += 1;
    }
    out.truncate(len);
    out
}

/// A container id as runtimes make them: 64 hex digits.
pub fn container_id() -> String {
    random_hex(64)
}

/// A pod UID (RFC 4122 layout).
pub fn pod_uid() -> String {
    let h = random_hex(32);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// An OCI bundle: `rootfs/` with busybox and its applets, and `config.json`.
pub struct Bundle {
    dir: tempfile::TempDir,
}

fn busybox() -> PathBuf {
    for candidate in ["/bin/busybox", "/usr/bin/busybox"] {
        if Path::new(candidate).is_file() {
            return PathBuf::from(candidate);
        }
    }
    panic!("busybox not found: `cargo xtask setup` installs busybox-static");
}

impl Bundle {
    /// A bundle whose process runs `args`, in cgroup `cgroups_path` (relative to the cgroup
    /// root, e.g. "/kubepods/pod1/abc"), sharing the host's network namespace so tests can
    /// reach it on loopback.
    pub fn new(args: &[&str], cgroups_path: &str) -> Self {
        crate::require_root();
        let dir = tempfile::tempdir().expect("tempdir");
        let rootfs = dir.path().join("rootfs");
        let bin = rootfs.join("bin");
        for sub in ["bin", "proc", "sys", "dev", "tmp", "etc"] {
            std::fs::create_dir_all(rootfs.join(sub)).expect("mkdir rootfs");
        }
        std::fs::copy(busybox(), bin.join("busybox")).expect("copy busybox");
        let list = Command::new(busybox())
            .arg("--list")
            .output()
            .expect("busybox --list");
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            let applet = applet.trim();
            if !applet.is_empty() && applet != "busybox" {
                let _ = std::os::unix::fs::symlink("busybox", bin.join(applet));
            }
        }
        let status = Command::new("runc")
            .args(["spec", "--bundle"])
            .arg(dir.path())
            .status()
            .expect("runc spec (is runc installed? `cargo xtask setup`)");
        assert!(status.success(), "runc spec failed");
        let config_path = dir.path().join("config.json");
        let mut config: Value =
            serde_json::from_str(&std::fs::read_to_string(&config_path).expect("config.json"))
                .expect("config.json is JSON");
        config["process"]["terminal"] = json!(false);
        config["process"]["args"] = json!(args);
        config["root"]["readonly"] = json!(false);
        config["linux"]["cgroupsPath"] = json!(cgroups_path);
        if let Some(ns) = config["linux"]["namespaces"].as_array_mut() {
            ns.retain(|n| n["type"] != "network");
        }
        std::fs::write(&config_path, config.to_string()).expect("write config.json");
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Starts the container in the background (`runc run`, not detached, so its exit status is
    /// ours to collect); it is killed and deleted when the handle drops.
    pub fn spawn(&self, id: &str) -> Running {
        let child = Command::new("runc")
            .args(["run", "--bundle"])
            .arg(self.path())
            .arg(id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("runc run");
        Running {
            id: id.to_string(),
            child,
        }
    }

    /// Runs the container to completion (`runc run`), returning the process's exit status.
    pub fn run(&self, id: &str) -> ExitStatus {
        let out = Command::new("runc")
            .args(["run", "--bundle"])
            .arg(self.path())
            .arg(id)
            .stdin(Stdio::null())
            .output()
            .expect("runc run");
        if !out.status.success() && out.status.code().is_none() {
            panic!(
                "runc run {id} was killed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("runc run failed"),
            "runc could not start container {id}: {stderr}"
        );
        out.status
    }
}

/// A container started with [`Bundle::spawn`].
pub struct Running {
    id: String,
    child: std::process::Child,
}

impl Running {
    /// Pid (on the host) of the container's first process, once runc reports it.
    pub fn init_pid(&self) -> Option<u32> {
        let out = Command::new("runc")
            .args(["state", &self.id])
            .output()
            .ok()?;
        let state: Value = serde_json::from_slice(&out.stdout).ok()?;
        state["pid"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .filter(|&p| p > 0)
    }

    /// Waits for the container to exit on its own.
    #[track_caller]
    pub fn wait(mut self, timeout: std::time::Duration) -> ExitStatus {
        let what = format!("container {} to exit", self.id);
        poll_until(what, timeout, || match self.child.try_wait() {
            Ok(Some(status)) => Ok(status),
            Ok(None) => Err("running".to_string()),
            Err(e) => Err(format!("wait failed: {e}")),
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("runc")
                .args(["kill", &self.id, "KILL"])
                .status();
            let _ = self.child.wait();
        }
        let _ = Command::new("runc")
            .args(["delete", "-f", &self.id])
            .stderr(Stdio::null())
            .status();
    }
}

/// Waits until something listens on TCP `port` in this network namespace (a server in a
/// container, which prints nothing when it is up).
#[track_caller]
pub fn wait_listening(port: u16) {
    poll_until(
        format!("a listener on port {port}"),
        std::time::Duration::from_secs(10),
        || listening(port).then_some(()).ok_or("nothing listens"),
    )
}

/// Whether something listens on TCP `port` (IPv4 or IPv6) in this network namespace.
pub fn listening(port: u16) -> bool {
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|file| {
        std::fs::read_to_string(file).is_ok_and(|text| {
            text.lines().skip(1).any(|line| {
                let cols: Vec<&str> = line.split_whitespace().collect();
                cols.len() > 3
                    && cols[3] == "0A"
                    && cols[1]
                        .rsplit(':')
                        .next()
                        .and_then(|p| u16::from_str_radix(p, 16).ok())
                        == Some(port)
            })
        })
    })
}
