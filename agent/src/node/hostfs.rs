//! Where the host's filesystems are. On a host install they are at `/`; as a privileged
//! DaemonSet the host's `/proc` and `/sys` are mounted under a host root (`--host-root /host`),
//! and every path Sonde reads about the node goes through it.

use std::path::{Path, PathBuf};

/// The host's root directory as this process sees it.
#[derive(Clone, Debug)]
pub struct HostRoot {
    root: PathBuf,
}

impl Default for HostRoot {
    fn default() -> Self {
        Self::new("/")
    }
}

impl HostRoot {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// `path` (absolute on the host) as seen from here.
    pub fn join(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    /// The host's procfs (its pids are host pids, like the kernel's records).
    pub fn proc(&self) -> PathBuf {
        self.join("/proc")
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}
