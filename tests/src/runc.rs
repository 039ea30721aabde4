//! Real containers with runc: a busybox-static root filesystem and an OCI config from
//! `runc spec`, placed at a cgroup path the test chooses.

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

use serde_json::{Value, json};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A unique container id for this test process.
pub fn unique_id(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
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
