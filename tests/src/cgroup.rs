//! The cgroup v2 hierarchy of this host: pure v2 at /sys/fs/cgroup, or hybrid with v2 at
//! /sys/fs/cgroup/unified.

use std::{os::unix::fs::MetadataExt, path::PathBuf};

fn is_cgroup2(path: &str) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

/// Mount point of the unified (v2) hierarchy.
pub fn v2_root() -> PathBuf {
    for candidate in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        if is_cgroup2(candidate) {
            return PathBuf::from(candidate);
        }
    }
    panic!("no cgroup v2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified");
}

/// A cgroup v2 directory made by a test and removed when dropped.
pub struct TestCgroup {
    /// Path relative to the v2 root, starting with '/', as runc's cgroupsPath wants it.
    pub rel: String,
    pub dir: PathBuf,
}

impl TestCgroup {
    /// Creates `<v2 root>/<rel>` (and parents).
    pub fn create(rel: &str) -> Self {
        let rel = format!("/{}", rel.trim_start_matches('/'));
        let dir = v2_root().join(rel.trim_start_matches('/'));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("creating cgroup {}: {e}", dir.display()));
        Self { rel, dir }
    }

    /// The cgroup v2 id: the directory's inode number.
    pub fn id(&self) -> u64 {
        std::fs::metadata(&self.dir)
            .unwrap_or_else(|e| panic!("stat {}: {e}", self.dir.display()))
            .ino()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Children first (runc may leave none; a busy cgroup just stays).
        let mut dirs = vec![self.dir.clone()];
        let mut p = self.dir.clone();
        while p.pop() && p != v2_root() {
            dirs.push(p.clone());
        }
        for d in dirs {
            let _ = std::fs::remove_dir(&d);
        }
    }
}

/// Removes the cgroup `rel` (relative to each hierarchy's root) and its now-empty parents up to
/// `stop_at` (exclusive), in every cgroup hierarchy mounted here (v2 and, on hybrid hosts, each
/// v1 controller that runc also populated). Best effort: busy cgroups stay.
pub fn remove_everywhere(rel: &str, stop_at: &str) {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    for line in mounts.lines() {
        let mut f = line.split_whitespace();
        let (_, mnt, ty) = (f.next(), f.next(), f.next());
        let (Some(mnt), Some(ty)) = (mnt, ty) else {
            continue;
        };
        if ty != "cgroup" && ty != "cgroup2" {
            continue;
        }
        let mut path = rel.trim_matches('/').to_string();
        let stop = stop_at.trim_matches('/');
        loop {
            let _ = std::fs::remove_dir(std::path::Path::new(mnt).join(&path));
            match path.rsplit_once('/') {
                Some((parent, _)) if parent != stop && !parent.is_empty() => {
                    path = parent.to_string()
                }
                _ => break,
            }
        }
    }
}
