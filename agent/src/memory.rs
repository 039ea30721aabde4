//! Returning freed heap to the system after large transient allocations (BTF parsing at
//! start, a /metrics scrape, an apiserver list), so the agent's resident size reflects what it
//! keeps rather than its peaks. glibc only; elsewhere a no-op.

/// Releases free heap memory of every malloc arena to the system.
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap memory; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
