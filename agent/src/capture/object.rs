//! The eBPF object, built by `build.rs` and embedded in the binary: one self-contained file.

/// ELF bytes of `sonde-ebpf`, 8-byte aligned as the loader needs.
pub static BYTES: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sonde-ebpf"));

/// A loader that has not parsed the kernel's BTF. aya's `EbpfLoader::new()` always parses
/// `/sys/kernel/btf/vmlinux` (about 19 MiB of heap for a 6 MiB file) for CO-RE relocations, which
/// our programs do not use (offsets come from our own small index, [`super::btf`]): it was the
/// agent's start-up memory peak. The loader is created on a thread of its own with a private
/// filesystem root (`unshare(CLONE_FS)` then `chroot` to an empty directory — the rest of the
/// process is unaffected), where that file does not exist, so aya finds no BTF and parses
/// nothing. Where that is refused (no `CAP_SYS_CHROOT`), the usual loader is made and its BTF
/// dropped: the same programs load, with the higher peak.
pub fn loader() -> aya::EbpfLoader<'static> {
    match loader_without_kernel_btf() {
        Ok(loader) => loader,
        Err(err) => {
            tracing::debug!(%err, "loader without kernel BTF refused; parsing it once");
            let mut loader = aya::EbpfLoader::new();
            loader.btf(None);
            loader
        }
    }
}

/// The loader made where `/sys/kernel/btf/vmlinux` does not exist (see [`loader`]).
fn loader_without_kernel_btf() -> Result<aya::EbpfLoader<'static>, std::io::Error> {
    in_private_empty_root(aya::EbpfLoader::new)
}

/// Runs `f` on a thread whose filesystem root is an empty directory.
fn in_private_empty_root<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, std::io::Error> {
    use nix::sched::{CloneFlags, unshare};
    std::thread::Builder::new()
        .name("sonde-loader".into())
        .spawn(|| {
            unshare(CloneFlags::CLONE_FS)
                .and_then(|()| nix::unistd::chroot(EMPTY_DIR))
                .map(|()| f())
                .map_err(std::io::Error::from)
        })?
        .join()
        .map_err(|_| std::io::Error::other("the loader thread panicked"))?
}

/// A directory with no entries on every Linux host (a fresh process's `fdinfo` lists files, not
/// directories, so `sys/kernel/btf/vmlinux` cannot exist under it).
const EMPTY_DIR: &str = "/proc/self/fdinfo";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loader_is_made_without_kernel_btf_and_the_process_root_is_untouched() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root (chroot): run it with sudo"
        );
        let kernel_btf_seen = in_private_empty_root(|| aya::Btf::from_sys_fs().is_ok())
            .expect("a root process can make the loader in a private root");
        assert!(
            !kernel_btf_seen,
            "the loader's thread still saw the kernel's BTF"
        );
        loader_without_kernel_btf().expect("the loader is made");
        // Only the loader's thread had the private root.
        assert!(std::path::Path::new("/sys/kernel/btf/vmlinux").exists());
        assert!(std::path::Path::new("/proc/self/status").exists());
    }
}
