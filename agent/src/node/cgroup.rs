//! The cgroup v2 hierarchy: an index from cgroup id (the inode of the directory, what the kernel
//! records) to path and parsed identity.
//!
//! Filled three ways: a walk of the hierarchy at start-up (cgroups that already existed), the
//! kernel's `cgroup_mkdir` records (cgroups created while running, even if gone before anyone
//! looks), and a rate-limited re-walk when an event names an id the index does not know.
//! Removed cgroups stay for a grace period (events about them may still be in flight), then go;
//! the index is bounded and counts what it evicts.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use crate::aging::AgingMap;

use super::{
    cgroup_path::{self, CgroupIdentity},
    hostfs::HostRoot,
};

/// How long a removed cgroup's entry is kept.
const REMOVED_GRACE: Duration = Duration::from_secs(60);
/// At most one re-walk per this interval, however many misses.
const REWALK_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error(
        "no cgroup v2 hierarchy under {root}: looked at {root}/sys/fs/cgroup (pure v2) and \
         {root}/sys/fs/cgroup/unified (hybrid). Sonde names containers and services by their \
         cgroup v2 path. Fix: mount cgroup2 (`mount -t cgroup2 none /sys/fs/cgroup/unified` on a \
         hybrid host); in a container, mount the host's /sys/fs/cgroup under the host root"
    )]
    NoCgroup2 { root: String },
}

/// What the index knows about one cgroup.
#[derive(Debug)]
pub struct CgroupInfo {
    pub id: u64,
    /// Path relative to the v2 root, e.g. `/kubepods.slice/.../cri-containerd-<id>.scope`.
    pub path: Box<str>,
    pub identity: CgroupIdentity,
}

/// Counters for status and metrics.
#[derive(Clone, Copy, Debug, Default)]
pub struct CgroupIndexStats {
    pub entries: usize,
    pub walks: u64,
    pub misses: u64,
    pub evicted: u64,
}

pub struct CgroupIndex {
    root: PathBuf,
    /// Removed cgroups are retired entries: kept for [`REMOVED_GRACE`], evicted first.
    by_id: AgingMap<u64, Arc<CgroupInfo>>,
    last_walk: Option<Instant>,
    stats: CgroupIndexStats,
}

/// The cgroup v2 mount under `host`: pure v2 at /sys/fs/cgroup, or hybrid at .../unified.
pub fn find_v2_root(host: &HostRoot) -> Result<PathBuf, CgroupError> {
    for candidate in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        let path = host.join(candidate);
        if nix::sys::statfs::statfs(&path)
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        {
            return Ok(path);
        }
    }
    Err(CgroupError::NoCgroup2 {
        root: host.root().display().to_string(),
    })
}

impl CgroupIndex {
    /// An index of the hierarchy mounted at `root`, filled by a first walk.
    pub fn new(root: PathBuf, max_entries: usize) -> Self {
        let mut index = Self {
            root,
            by_id: AgingMap::new(max_entries, REMOVED_GRACE),
            last_walk: None,
            stats: CgroupIndexStats::default(),
        };
        index.walk();
        index
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn stats(&self) -> CgroupIndexStats {
        CgroupIndexStats {
            entries: self.by_id.len(),
            evicted: self.by_id.evicted(),
            ..self.stats
        }
    }

    /// The cgroup with this id, if known.
    pub fn get(&self, id: u64) -> Option<&Arc<CgroupInfo>> {
        self.by_id.get(&id)
    }

    /// The cgroup with this id; on a miss, re-walks the hierarchy (at most once a second).
    pub fn resolve(&mut self, id: u64) -> Option<Arc<CgroupInfo>> {
        if let Some(info) = self.by_id.get(&id) {
            return Some(Arc::clone(info));
        }
        self.stats.misses += 1;
        if self
            .last_walk
            .is_none_or(|t| t.elapsed() >= REWALK_INTERVAL)
        {
            self.walk();
        }
        self.by_id.get(&id).cloned()
    }

    /// Id of the cgroup at `path` (relative to the root), from the index or the filesystem.
    pub fn id_of_path(&mut self, path: &str) -> Option<u64> {
        let dir = self.root.join(path.trim_start_matches('/'));
        let ino = std::fs::metadata(&dir).ok()?.ino();
        if !self.by_id.contains_key(&ino) {
            self.insert(ino, normalize(path));
        }
        Some(ino)
    }

    /// A cgroup the kernel reports created.
    pub fn created(&mut self, id: u64, path: &str) {
        self.insert(id, normalize(path));
    }

    /// A cgroup the kernel reports removed: kept for a grace period.
    pub fn removed(&mut self, id: u64) {
        self.by_id.retire(&id);
        self.by_id.expire(|_, _| {});
    }

    fn insert(&mut self, id: u64, path: String) {
        if self.by_id.contains_key(&id) {
            // The same directory (a re-walk, or mkdir racing the start-up walk): live again.
            if self.by_id.retired_at(&id).is_some()
                && let Some(info) = self.by_id.get(&id).cloned()
            {
                self.by_id.insert(id, info, |_, _| {});
            }
            return;
        }
        let identity = cgroup_path::parse(&path);
        let info = Arc::new(CgroupInfo {
            id,
            path: path.into_boxed_str(),
            identity,
        });
        self.by_id.insert(id, info, |_, _| {});
    }

    /// Indexes every directory of the hierarchy.
    fn walk(&mut self) {
        self.last_walk = Some(Instant::now());
        self.stats.walks += 1;
        let mut stack = vec![(self.root.clone(), String::from("/"))];
        while let Some((dir, rel)) = stack.pop() {
            let Ok(meta) = std::fs::metadata(&dir) else {
                continue;
            };
            self.insert(meta.ino(), rel.clone());
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    let name = entry.file_name();
                    let name = name.to_string_lossy();
                    let child_rel = if rel == "/" {
                        format!("/{name}")
                    } else {
                        format!("{rel}/{name}")
                    };
                    stack.push((entry.path(), child_rel));
                }
            }
        }
    }
}

/// Paths as the kernel prints them: absolute, no trailing slash ("/" for the root).
fn normalize(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_string()
    } else if trimmed.starts_with('/') {
        trimmed.to_string()
    } else {
        format!("/{trimmed}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_the_kernel() {
        assert_eq!(normalize(""), "/");
        assert_eq!(normalize("/"), "/");
        assert_eq!(normalize("a/b/"), "/a/b");
        assert_eq!(
            normalize("/system.slice/x.service"),
            "/system.slice/x.service"
        );
    }

    #[test]
    fn indexes_this_hosts_hierarchy_and_learns_new_cgroups() {
        let root = find_v2_root(&HostRoot::default()).expect("cgroup v2 on the test machine");
        let mut index = CgroupIndex::new(root.clone(), 100_000);
        // The root cgroup's id is its inode (1 on current kernels).
        let root_id = std::fs::metadata(&root).expect("stat root").ino();
        assert_eq!(index.get(root_id).expect("root indexed").path.as_ref(), "/");
        // A cgroup created after the walk is found by a rate-limited re-walk...
        let dir = root.join(format!("sonde-index-test-{}", std::process::id()));
        std::fs::create_dir(&dir).expect("create cgroup (tests run as root)");
        let id = std::fs::metadata(&dir).expect("stat").ino();
        index.last_walk = None;
        let found = index.resolve(id).expect("re-walk finds the new cgroup");
        assert!(found.path.starts_with("/sonde-index-test-"));
        std::fs::remove_dir(&dir).expect("rmdir");
        // ...and one reported by the kernel is named even though its directory is gone.
        index.created(424_242, "/kubepods.slice/short.scope/");
        assert_eq!(
            index.get(424_242).expect("from mkdir").path.as_ref(),
            "/kubepods.slice/short.scope"
        );
        index.removed(424_242);
        assert!(index.get(424_242).is_some(), "kept during the grace period");
    }

    #[test]
    fn stays_bounded_and_counts_evictions() {
        let dir = tempfile_dir();
        let mut index = CgroupIndex::new(dir.clone(), 4);
        for id in 1000..1010 {
            index.created(id, &format!("/c{id}"));
        }
        assert!(index.stats().entries <= 4);
        assert!(index.stats().evicted >= 6);
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sonde-cg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp");
        dir
    }
}
