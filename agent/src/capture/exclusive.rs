//! One Sonde per kernel. Two agents on one node (a second DaemonSet pod, a host install next to
//! the DaemonSet, an old pod stuck terminating) would both count every event. The kernel is
//! what they share, so it is what is asked: the BPF programs loaded in it (`bpf(BPF_PROG_GET_NEXT_ID)`),
//! those named like ours (`sonde_…`), and the process holding them (a `bpf-prog` descriptor
//! with that `prog_id` in `/proc/PID/fdinfo`). Nothing is written anywhere, so a crashed agent
//! leaves nothing stale: its programs go with its last descriptor.
//!
//! Checked before loading (the common case: refuse at once, naming the other), and again once
//! our programs are attached, for two agents starting at the same moment: program ids grow
//! monotonically, so the agent whose programs were loaded first keeps running and the other
//! stops.

use std::{
    collections::BTreeSet,
    fs,
    path::Path,
    time::{Duration, Instant},
};

/// The prefix of every program of ours (kernel program names are cut at 15 characters).
pub const PROGRAM_PREFIX: &str = "sonde_";

/// Another Sonde running on this kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtherAgent {
    /// Its programs' ids, lowest first.
    pub program_ids: Vec<u32>,
    /// The process holding them, when found.
    pub pid: Option<u32>,
    /// Who it is: `pod NAMESPACE/NAME`, `unit NAME.service`, or its command line.
    pub identity: Option<String>,
}

impl std::fmt::Display for OtherAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.pid, &self.identity) {
            (Some(pid), Some(who)) => write!(f, "pid {pid}, {who}")?,
            (Some(pid), None) => write!(f, "pid {pid}")?,
            (None, _) => f.write_str("holder not found")?,
        }
        let ids: Vec<String> = self.program_ids.iter().map(u32::to_string).collect();
        write!(f, "; its BPF programs: {}", ids.join(", "))
    }
}

/// Sonde programs loaded in the kernel, other than `ours`. Programs that vanish while being
/// listed are skipped; an error is returned only when listing is refused altogether.
pub fn sonde_programs(ours: &BTreeSet<u32>) -> Result<Vec<u32>, aya::programs::ProgramError> {
    let mut ids = Vec::new();
    for info in aya::programs::loaded_programs() {
        let info = match info {
            Ok(info) => info,
            // Unloaded between "next id" and "get fd": gone, not ours to worry about.
            Err(aya::programs::ProgramError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
            {
                continue;
            }
            Err(e) if ids.is_empty() => return Err(e),
            Err(_) => continue,
        };
        if info
            .name_as_str()
            .is_some_and(|n| n.starts_with(PROGRAM_PREFIX))
            && !ours.contains(&info.id())
        {
            ids.push(info.id());
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// How long programs with no holder process may linger before they count as another agent's:
/// an agent that just exited leaves its programs for a moment (the kernel releases them after
/// its perf events, asynchronously), and a restart must not be refused for that.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(3);

/// Another agent on this kernel: Sonde programs other than `ours` with an id below `below`
/// (0: any), held by a process, or still there after [`ORPHAN_GRACE`] without one.
pub fn other_agent(
    ours: &BTreeSet<u32>,
    below: u32,
) -> Result<Option<OtherAgent>, aya::programs::ProgramError> {
    let started = Instant::now();
    loop {
        let earlier: Vec<u32> = sonde_programs(ours)?
            .into_iter()
            .filter(|&id| below == 0 || id < below)
            .collect();
        if earlier.is_empty() {
            return Ok(None);
        }
        let other = describe(Path::new("/proc"), earlier);
        if other.pid.is_some() || started.elapsed() >= ORPHAN_GRACE {
            return Ok(Some(other));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The other agent holding `ids`, as far as `/proc` (under `proc`) tells.
pub fn describe(proc: &Path, ids: Vec<u32>) -> OtherAgent {
    let pid = holder(proc, &ids);
    OtherAgent {
        identity: pid.and_then(|p| identity(proc, p)),
        pid,
        program_ids: ids,
    }
}

/// The process with a descriptor of one of `ids`: processes named `sonde` first (cheap: one
/// small read each), then every process.
fn holder(proc: &Path, ids: &[u32]) -> Option<u32> {
    let pids: Vec<u32> = fs::read_dir(proc)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&pid| pid != std::process::id())
        .collect();
    let named_sonde = |pid: &u32| {
        fs::read_to_string(proc.join(pid.to_string()).join("comm"))
            .is_ok_and(|c| c.trim_end() == "sonde")
    };
    let (first, rest): (Vec<u32>, Vec<u32>) = pids.into_iter().partition(named_sonde);
    first
        .into_iter()
        .chain(rest)
        .find(|&pid| holds(proc, pid, ids))
}

fn holds(proc: &Path, pid: u32, ids: &[u32]) -> bool {
    let dir = proc.join(pid.to_string());
    let Ok(fds) = fs::read_dir(dir.join("fd")) else {
        return false;
    };
    fds.filter_map(Result::ok).any(|fd| {
        let is_prog = fs::read_link(fd.path())
            .is_ok_and(|t| t.as_os_str().to_string_lossy() == "anon_inode:bpf-prog");
        is_prog
            && fs::read_to_string(dir.join("fdinfo").join(fd.file_name())).is_ok_and(|info| {
                info.lines()
                    .filter_map(|l| l.strip_prefix("prog_id:"))
                    .filter_map(|v| v.trim().parse::<u32>().ok())
                    .any(|id| ids.contains(&id))
            })
    })
}

/// `pod NAMESPACE/NAME` (the downward API variables the DaemonSet sets), else the systemd unit
/// its cgroup names, else its command line.
fn identity(proc: &Path, pid: u32) -> Option<String> {
    let dir = proc.join(pid.to_string());
    if let Ok(environ) = fs::read(dir.join("environ")) {
        let var = |name: &str| {
            environ.split(|&b| b == 0).find_map(|kv| {
                let kv = std::str::from_utf8(kv).ok()?;
                kv.strip_prefix(name)?.strip_prefix('=').map(str::to_string)
            })
        };
        if let (Some(ns), Some(name)) = (var("POD_NAMESPACE"), var("POD_NAME")) {
            return Some(format!("pod {ns}/{name}"));
        }
    }
    if let Ok(cgroup) = fs::read_to_string(dir.join("cgroup")) {
        let unit = cgroup
            .lines()
            .filter_map(|l| l.rsplit('/').next())
            .find(|last| last.ends_with(".service"));
        if let Some(unit) = unit {
            return Some(format!("unit {unit}"));
        }
    }
    let cmdline = fs::read(dir.join("cmdline")).ok()?;
    let words: Vec<String> = cmdline
        .split(|&b| b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    (!words.is_empty()).then(|| format!("command `{}`", words.join(" ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_and_its_identity_are_read_from_proc() {
        let proc = tempfile::tempdir().expect("tempdir");
        let make = |pid: u32, comm: &str, environ: &str, cgroup: &str, prog: Option<u32>| {
            let dir = proc.path().join(pid.to_string());
            fs::create_dir_all(dir.join("fd")).expect("fd dir");
            fs::create_dir_all(dir.join("fdinfo")).expect("fdinfo dir");
            fs::write(dir.join("comm"), format!("{comm}\n")).expect("comm");
            fs::write(dir.join("environ"), environ.replace(' ', "\0")).expect("environ");
            fs::write(dir.join("cgroup"), cgroup).expect("cgroup");
            fs::write(dir.join("cmdline"), "/usr/bin/sonde\0run\0").expect("cmdline");
            if let Some(id) = prog {
                std::os::unix::fs::symlink("anon_inode:bpf-prog", dir.join("fd/7")).expect("fd");
                fs::write(
                    dir.join("fdinfo/7"),
                    format!("pos:\t0\nflags:\t02000002\nprog_type:\t5\nprog_id:\t{id}\n"),
                )
                .expect("fdinfo");
            }
        };
        make(10, "bash", "HOME=/root", "0::/user.slice\n", None);
        make(
            20,
            "sonde",
            "POD_NAME=sonde-x7k2p POD_NAMESPACE=sonde",
            "0::/kubepods\n",
            Some(41),
        );
        make(
            30,
            "sonde",
            "HOME=/",
            "0::/system.slice/sonde.service\n",
            Some(52),
        );
        let pod = describe(proc.path(), vec![41, 42]);
        assert_eq!(pod.pid, Some(20));
        assert_eq!(pod.identity.as_deref(), Some("pod sonde/sonde-x7k2p"));
        assert_eq!(
            pod.to_string(),
            "pid 20, pod sonde/sonde-x7k2p; its BPF programs: 41, 42"
        );
        let unit = describe(proc.path(), vec![52]);
        assert_eq!(unit.identity.as_deref(), Some("unit sonde.service"));
        let nobody = describe(proc.path(), vec![99]);
        assert_eq!(nobody.pid, None);
        assert!(nobody.to_string().contains("holder not found"));
    }
}
