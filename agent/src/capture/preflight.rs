//! Checks made before loading anything, so that a node without what Sonde needs gets one clear
//! message naming the cause and the fix, not a raw `EPERM` from deep inside a loader.

use std::io;

// Capability numbers (include/uapi/linux/capability.h).
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error(
        "Sonde needs root, or the capabilities CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN), to \
         load its eBPF programs; this process runs as uid {uid} with {caps}. Fix: run it as root \
         (`sudo sonde run`); in Kubernetes use the DaemonSet of manifests/ (it adds BPF, PERFMON, SYS_ADMIN, …)"
    )]
    NotPrivileged { uid: u32, caps: String },
    #[error("the kernel refused the bpf() system call: {reason}. Fix: {fix}")]
    BpfUnavailable { reason: String, fix: &'static str },
    #[error(
        "this kernel has no BPF ring buffer (BPF_MAP_TYPE_RINGBUF, Linux 5.8+), which Sonde \
         streams its events through. Fix: run a kernel 5.8 or newer"
    )]
    NoRingBuffer,
}

/// Effective capabilities of this process, from /proc/self/status.
fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

fn has(caps: u64, cap: u32) -> bool {
    caps & (1u64 << cap) != 0
}

/// Root, or enough capabilities to load tracing programs.
pub fn check_privileges() -> Result<(), PreflightError> {
    let uid = nix::unistd::geteuid().as_raw();
    let caps = effective_caps().unwrap_or(0);
    let enough = has(caps, CAP_SYS_ADMIN) || (has(caps, CAP_BPF) && has(caps, CAP_PERFMON));
    if enough {
        return Ok(());
    }
    let names: Vec<&str> = [
        (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
        (CAP_PERFMON, "CAP_PERFMON"),
        (CAP_BPF, "CAP_BPF"),
    ]
    .iter()
    .filter(|(cap, _)| has(caps, *cap))
    .map(|(_, name)| *name)
    .collect();
    Err(PreflightError::NotPrivileged {
        uid,
        caps: if names.is_empty() {
            "none of CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN".into()
        } else {
            format!("only {}", names.join(", "))
        },
    })
}

/// Creates (and closes) a one-entry array map: the cheapest proof that bpf() works here.
pub fn check_bpf_syscall() -> Result<(), PreflightError> {
    // union bpf_attr for BPF_MAP_CREATE: map_type, key_size, value_size, max_entries, ...
    let mut attr = [0u32; 32];
    attr[0] = 2; // BPF_MAP_TYPE_ARRAY
    attr[1] = 4;
    attr[2] = 4;
    attr[3] = 1;
    // SAFETY: BPF_MAP_CREATE (0) reads `size_of_val(&attr)` bytes from a valid buffer.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            0,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if fd >= 0 {
        // SAFETY: the syscall returned a new fd that nothing else owns.
        unsafe { libc::close(fd as i32) };
        return Ok(());
    }
    let err = io::Error::last_os_error();
    let (reason, fix) = match err.raw_os_error() {
        Some(libc::ENOSYS) => (
            "the kernel was built without CONFIG_BPF_SYSCALL".to_string(),
            "run a kernel with BPF support (CONFIG_BPF_SYSCALL=y)",
        ),
        Some(libc::EPERM) => (
            "operation not permitted (a seccomp profile or an LSM blocks bpf())".to_string(),
            "in a container, run privileged or with seccompProfile Unconfined; check \
             SELinux/AppArmor policy for bpf",
        ),
        _ => (
            err.to_string(),
            "check `dmesg` and the kernel's BPF configuration",
        ),
    };
    Err(PreflightError::BpfUnavailable { reason, fix })
}

pub fn check_ring_buffer() -> Result<(), PreflightError> {
    match aya::sys::is_map_supported(aya::maps::MapType::RingBuf) {
        Ok(true) => Ok(()),
        Ok(false) => Err(PreflightError::NoRingBuffer),
        // The probe itself failing is reported by the loader with more context.
        Err(_) => Ok(()),
    }
}

/// All checks, in the order a user would fix them.
pub fn check() -> Result<(), PreflightError> {
    check_privileges()?;
    check_bpf_syscall()?;
    check_ring_buffer()
}
