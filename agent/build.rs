//! Builds the eBPF object (`sonde-ebpf`, for bpfel with nightly and bpf-linker) and leaves it in
//! OUT_DIR, where `capture::object` embeds it into the binary.
//!
//! bpf-linker is looked up on PATH, then in the tools directory `cargo xtask setup` installs it
//! to (`$SONDE_TOOLS_DIR`, default `~/.cache/sonde-tools`), so plain `cargo build` works after
//! one `cargo xtask setup`.

use std::{env, path::PathBuf};

use anyhow::{Context as _, anyhow};

fn tools_bin_dir() -> Option<PathBuf> {
    let root = match env::var_os("SONDE_TOOLS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env::var_os("HOME")?).join(".cache/sonde-tools"),
    };
    Some(root.join("bin"))
}

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=SONDE_TOOLS_DIR");
    if let Some(bin) = tools_bin_dir()
        && bin.join("bpf-linker").exists()
    {
        let path = env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![bin];
        dirs.extend(env::split_paths(&path));
        let joined = env::join_paths(dirs).context("joining PATH")?;
        // SAFETY: build scripts are single-threaded; this only affects the cargo/rustc children
        // that aya-build spawns.
        unsafe { env::set_var("PATH", joined) };
    }
    if which_bpf_linker().is_none() {
        return Err(anyhow!(
            "bpf-linker is not installed: the eBPF programs cannot be linked. \
             Run `cargo xtask setup` (it builds bpf-linker against nightly's LLVM)."
        ));
    }
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?)
        .parent()
        .context("agent crate has no parent directory")?
        .join("agent-ebpf");
    let root = root.to_str().context("non-UTF-8 path to agent-ebpf")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "sonde-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .context("building the eBPF programs (sonde-ebpf); `cargo xtask setup` installs what it needs")
}

fn which_bpf_linker() -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join("bpf-linker"))
        .find(|candidate| candidate.is_file())
}
