//! The start-up scan of /proc: every process that exists (identity, parent, uid, name, command
//! line, cgroup v2 path, network namespace) and which sockets each holds. Runs after the probes
//! are attached (rule 5), so anything that starts during the scan is seen by the kernel too and
//! merged by identity.

use std::{collections::HashMap, path::Path};

use procfs::process::{FDTarget, Process};

/// Bytes of command line kept per process.
const CMDLINE_MAX: usize = 512;

/// A process as /proc showed it.
#[derive(Clone, Debug)]
pub struct ScannedProcess {
    pub pid: u32,
    pub ppid: u32,
    /// Start time in clock ticks since boot (`/proc/<pid>/stat` field 22).
    pub start_ticks: u64,
    pub parent_start_ticks: Option<u64>,
    pub uid: u32,
    pub comm: String,
    pub cmdline: String,
    /// Path in the cgroup v2 hierarchy (`0::<path>` in /proc/<pid>/cgroup), if any.
    pub cgroup_path: Option<String>,
    /// Inode of the process's network namespace.
    pub netns: Option<u64>,
}

/// Everything the scan found.
#[derive(Debug, Default)]
pub struct ProcScan {
    pub processes: Vec<ScannedProcess>,
    /// Socket inode -> pid of (one of) the processes holding it.
    pub socket_owner: HashMap<u64, u32>,
    /// Processes that vanished or could not be read during the scan.
    pub unreadable: usize,
}

/// Scans `proc_root` (the host's /proc).
pub fn scan(proc_root: &Path) -> ProcScan {
    let mut out = ProcScan::default();
    let Ok(all) = procfs::process::all_processes_with_root(proc_root) else {
        tracing::warn!(path = %proc_root.display(), "cannot list processes");
        return out;
    };
    let mut start_of: HashMap<u32, u64> = HashMap::new();
    for process in all {
        let Ok(process) = process else {
            out.unreadable += 1;
            continue;
        };
        match scan_one(proc_root, &process, &mut out.socket_owner) {
            Some(p) => {
                start_of.insert(p.pid, p.start_ticks);
                out.processes.push(p);
            }
            None => out.unreadable += 1,
        }
    }
    for p in &mut out.processes {
        p.parent_start_ticks = start_of.get(&p.ppid).copied();
    }
    out
}

fn scan_one(
    proc_root: &Path,
    process: &Process,
    socket_owner: &mut HashMap<u64, u32>,
) -> Option<ScannedProcess> {
    let stat = process.stat().ok()?;
    let pid = u32::try_from(stat.pid).ok()?;
    let uid = process.uid().unwrap_or(0);
    let mut cmdline = process.cmdline().unwrap_or_default().join(" ");
    if cmdline.len() > CMDLINE_MAX {
        let mut cut = CMDLINE_MAX;
        while !cmdline.is_char_boundary(cut) {
            cut -= 1;
        }
        cmdline.truncate(cut);
    }
    let dir = proc_root.join(pid.to_string());
    let cgroup_path = std::fs::read_to_string(dir.join("cgroup"))
        .ok()
        .and_then(|text| v2_path(&text).map(str::to_string));
    let netns = std::fs::read_link(dir.join("ns/net"))
        .ok()
        .and_then(|link| ns_inode(&link.to_string_lossy()));
    if let Ok(fds) = process.fd() {
        for fd in fds.flatten() {
            if let FDTarget::Socket(inode) = fd.target {
                socket_owner.entry(inode).or_insert(pid);
            }
        }
    }
    Some(ScannedProcess {
        pid,
        ppid: u32::try_from(stat.ppid).unwrap_or(0),
        start_ticks: stat.starttime,
        parent_start_ticks: None,
        uid,
        comm: stat.comm,
        cmdline,
        cgroup_path,
        netns,
    })
}

/// The cgroup v2 path from the text of /proc/<pid>/cgroup (the `0::` line).
pub fn v2_path(text: &str) -> Option<&str> {
    text.lines().find_map(|line| line.strip_prefix("0::"))
}

/// The inode in a namespace link such as `net:[4026531840]`.
pub fn ns_inode(link: &str) -> Option<u64> {
    link.rsplit_once('[')?.1.strip_suffix(']')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cgroup_and_namespace_text() {
        assert_eq!(
            v2_path("9:name=systemd:/\n4:memory:/x\n0::/system.slice/a.service\n"),
            Some("/system.slice/a.service")
        );
        assert_eq!(v2_path("4:memory:/x\n"), None);
        assert_eq!(ns_inode("net:[4026531840]"), Some(4_026_531_840));
        assert_eq!(ns_inode("net:"), None);
    }

    #[test]
    fn finds_this_process_and_its_sockets() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let scan = scan(Path::new("/proc"));
        let me = std::process::id();
        let p = scan
            .processes
            .iter()
            .find(|p| p.pid == me)
            .expect("the scan lists this process");
        assert!(p.start_ticks > 0);
        assert!(p.netns.is_some());
        assert!(p.cgroup_path.is_some(), "cgroup v2 path of this process");
        assert!(
            scan.socket_owner.values().any(|&pid| pid == me),
            "the listener's socket belongs to this process"
        );
        drop(listener);
    }
}
