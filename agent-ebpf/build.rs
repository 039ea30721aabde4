//! Rebuild the eBPF object when bpf-linker changes (a new nightly's LLVM means a new linker).
use which::which;

fn main() {
    // The linker is only needed for the bpf target; a host build (as a build-dependency of the
    // agent, to track changes) compiles the empty lib and needs nothing.
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() != Ok("bpf") {
        return;
    }
    match which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(err) => {
            println!("cargo:warning=bpf-linker not found on PATH ({err}); run `cargo xtask setup`")
        }
    }
}
