//! Linker settings for the eBPF object, and a rebuild when bpf-linker changes (a new nightly's
//! LLVM means a new linker).
use which::which;

fn main() {
    // The linker is only needed for the bpf target; a host build (as a build-dependency of the
    // agent, to track changes) compiles the empty lib and needs nothing.
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() != Ok("bpf") {
        return;
    }
    // bpf-linker asks LLVM to expand memcpy "in order" by default, which also stops LLVM from
    // inlining memset and memmove: every struct initialisation or copy then becomes a call to an
    // out-of-line byte loop (several hundred ns per record). Let LLVM inline them.
    println!("cargo:rustc-link-arg-bins=--disable-expand-memcpy-in-order");
    match which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(err) => {
            println!("cargo:warning=bpf-linker not found on PATH ({err}); run `cargo xtask setup`")
        }
    }
}
