//! `cargo xtask setup`: everything a fresh machine needs, each step checked first and only done
//! when missing, each failure naming what is missing and the command that fixes it.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::cmd::{capture, tools_dir};

/// bpf-linker release whose LLVM features match the nightly toolchain (see docs/TOOLCHAIN.md).
const BPF_LINKER_VERSION: &str = "0.13.0";
/// LLVM majors that bpf-linker 0.13 can be built against.
const BPF_LINKER_LLVM: [u32; 3] = [21, 22, 23];

/// Debian packages the tests and benchmarks use: runc and busybox-static for real containers,
/// libbpf-tools for the peer tracers (execsnoop, tcplife), iproute2 for `ss`/`ip`, prometheus
/// for `promtool check metrics` and a real Prometheus server scraping the agent; and what
/// `cargo xtask image` / `dist` build with: musl-tools (the static binary's C parts), binutils
/// (objcopy: debug info to a separate file), umoci and skopeo (an OCI image with no registry);
/// curl, a real HTTPS client of the agent's API; containerd (and its `ctr`), the runtime the
/// image is imported into as the README says; etcd-server, the real etcd (TLS client
/// certificates) whose health the control-plane checks read.
const PACKAGES: [&str; 12] = [
    "runc",
    "busybox-static",
    "libbpf-tools",
    "iproute2",
    "prometheus",
    "musl-tools",
    "binutils",
    "umoci",
    "skopeo",
    "curl",
    "containerd",
    "etcd-server",
];

/// The target of the self-contained binary (`cargo xtask image`, `dist`).
pub const STATIC_TARGET: &str = "x86_64-unknown-linux-musl";

/// PyPI packages the tests use, pinned (their behaviour is what the tests assert):
/// kubernetes-validate checks the rendered manifests against the Kubernetes schemas, offline
/// (the schemas ship inside the package).
const PYTHON_PACKAGES: [&str; 1] = ["kubernetes-validate==1.37.0"];

pub fn run() -> Result<()> {
    let root = is_root();
    nightly_rust_src()?;
    static_target()?;
    bpf_linker()?;
    python_packages()?;
    if root {
        debian_packages()?;
        mounts()?;
    } else {
        report_unprivileged()?;
    }
    kernel_btf();
    eprintln!("setup: ok");
    Ok(())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The stable toolchain's musl standard library, for the static binary.
fn static_target() -> Result<()> {
    let installed = capture(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if installed.lines().any(|l| l.trim() == STATIC_TARGET) {
        return Ok(());
    }
    eprintln!("setup: adding the {STATIC_TARGET} target (the self-contained binary)");
    run_checked(
        Command::new("rustup").args(["target", "add", STATIC_TARGET]),
        &format!("rustup target add {STATIC_TARGET}"),
    )
}

fn nightly_rust_src() -> Result<()> {
    let toolchains = capture(Command::new("rustup").args(["toolchain", "list"])).context(
        "rustup is not installed or not on PATH: Sonde's eBPF programs build with rustup's \
         nightly toolchain. Fix: install rustup (https://rustup.rs)",
    )?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        eprintln!("setup: installing the nightly toolchain (eBPF programs need it)");
        run_checked(
            Command::new("rustup").args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
                "--component",
                "rust-src",
            ]),
            "rustup toolchain install nightly --profile minimal --component rust-src",
        )?;
    }
    let installed = capture(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))?;
    if !installed.lines().any(|l| l.trim().starts_with("rust-src")) {
        eprintln!("setup: adding rust-src to nightly (needed by -Z build-std=core)");
        run_checked(
            Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]),
            "rustup component add rust-src --toolchain nightly",
        )?;
    }
    Ok(())
}

/// nightly's own libLLVM and its major version: bpf-linker must link the same LLVM that
/// produced the bitcode it links.
fn nightly_llvm() -> Result<(PathBuf, u32)> {
    let version = capture(Command::new("rustc").args(["+nightly", "-vV"]))?;
    let major = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.trim().parse::<u32>().ok())
        .context("`rustc +nightly -vV` does not report an LLVM version")?;
    let sysroot = capture(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
    let lib_dir = Path::new(sysroot.trim()).join("lib");
    let lib = fs::read_dir(&lib_dir)
        .with_context(|| format!("reading {}", lib_dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so.") || n.starts_with("libLLVM-"))
        })
        .with_context(|| {
            format!(
                "nightly has no libLLVM shared library in {}; bpf-linker cannot be built \
                 against it. Fix: `rustup toolchain install nightly` (a full, not minimal, \
                 toolchain ships it)",
                lib_dir.display()
            )
        })?;
    Ok((lib, major))
}

fn bpf_linker() -> Result<()> {
    let tools = tools_dir();
    let (lib, major) = nightly_llvm()?;
    let stamp_path = tools.join("bpf-linker.stamp");
    let stamp = format!(
        "bpf-linker {BPF_LINKER_VERSION} llvm-{major} {}\n",
        lib.display()
    );
    let bin = tools.join("bin/bpf-linker");
    if bin.is_file() && fs::read_to_string(&stamp_path).ok().as_deref() == Some(&stamp) {
        return Ok(());
    }
    if !BPF_LINKER_LLVM.contains(&major) {
        bail!(
            "nightly uses LLVM {major}, but bpf-linker {BPF_LINKER_VERSION} supports LLVM \
             {BPF_LINKER_LLVM:?}. Fix: install a nightly with one of those LLVM versions \
             (`rustup toolchain install nightly-YYYY-MM-DD`) or raise BPF_LINKER_VERSION in \
             xtask/src/setup.rs"
        );
    }
    eprintln!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} against nightly's LLVM {major} (~1 min)"
    );
    // bpf-linker's build script finds LLVM through LLVM_PREFIX/lib/libLLVM.so.
    let prefix = tools.join("llvm");
    let prefix_lib = prefix.join("lib");
    fs::create_dir_all(&prefix_lib)?;
    let file_name = lib.file_name().context("libLLVM path has no file name")?;
    for link in [prefix_lib.join(file_name), prefix_lib.join("libLLVM.so")] {
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&lib, &link)
            .with_context(|| format!("linking {} -> {}", link.display(), lib.display()))?;
    }
    run_checked(
        Command::new("cargo")
            .env("LLVM_PREFIX", &prefix)
            .args([
                "install",
                &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                "--no-default-features",
                "--features",
                &format!("llvm-{major}"),
                "--force",
                "--root",
            ])
            .arg(&tools),
        &format!(
            "LLVM_PREFIX={} cargo install bpf-linker@{BPF_LINKER_VERSION} --no-default-features \
             --features llvm-{major} --root {}",
            prefix.display(),
            tools.display()
        ),
    )?;
    fs::write(&stamp_path, stamp)?;
    Ok(())
}

/// Where [`PYTHON_PACKAGES`] are installed (`PYTHONPATH` of the tests that use them).
pub fn python_dir() -> PathBuf {
    tools_dir().join("python")
}

fn python_packages() -> Result<()> {
    let dir = python_dir();
    let stamp_path = dir.join(".sonde-installed");
    let want = PYTHON_PACKAGES.join(" ");
    if fs::read_to_string(&stamp_path).is_ok_and(|s| s == want) {
        return Ok(());
    }
    eprintln!("setup: installing {want} into {}", dir.display());
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    run_checked(
        Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--upgrade",
                "--target",
            ])
            .arg(&dir)
            .args(PYTHON_PACKAGES),
        &format!("python3 -m pip install --target {} {want}", dir.display()),
    )?;
    fs::write(&stamp_path, want)?;
    Ok(())
}

fn package_installed(pkg: &str) -> bool {
    capture(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .is_ok_and(|s| s.trim() == "install ok installed")
}

fn debian_packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|p| !package_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: installing Debian packages {}", missing.join(" "));
    let install = || {
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .stdout(std::io::stderr())
            .status()
    };
    if !install().is_ok_and(|s| s.success()) {
        let _ = Command::new("apt-get")
            .arg("update")
            .stdout(std::io::stderr())
            .status();
        let ok = install().is_ok_and(|s| s.success());
        if !ok {
            bail!(
                "installing {} failed. Fix: `apt-get update && apt-get install -y {}`",
                missing.join(" "),
                missing.join(" ")
            );
        }
    }
    Ok(())
}

fn mounted(target: &str, fstype: &str) -> bool {
    fs::read_to_string("/proc/self/mounts").is_ok_and(|m| {
        m.lines().any(|l| {
            let mut f = l.split_whitespace();
            let (_, t, ty) = (f.next(), f.next(), f.next());
            t == Some(target) && ty == Some(fstype)
        })
    })
}

fn mounts() -> Result<()> {
    for (target, fstype) in [("/sys/kernel/tracing", "tracefs"), ("/sys/fs/bpf", "bpf")] {
        if mounted(target, fstype) {
            continue;
        }
        eprintln!("setup: mounting {fstype} at {target}");
        fs::create_dir_all(target).ok();
        run_checked(
            Command::new("mount").args(["-t", fstype, fstype, target]),
            &format!("mount -t {fstype} {fstype} {target}"),
        )?;
    }
    Ok(())
}

/// Without root, setup cannot install or mount; say what is missing and stop if anything is.
fn report_unprivileged() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|p| !package_installed(p))
        .collect();
    let unmounted: Vec<&str> = [("/sys/kernel/tracing", "tracefs"), ("/sys/fs/bpf", "bpf")]
        .iter()
        .filter(|(t, f)| !mounted(t, f))
        .map(|(t, _)| *t)
        .collect();
    if missing.is_empty() && unmounted.is_empty() {
        return Ok(());
    }
    bail!(
        "setup needs root to install packages {:?} and mount {:?}; the agent and its tests \
         need root too. Fix: run `sudo cargo xtask setup` (or run as root)",
        missing,
        unmounted
    )
}

fn kernel_btf() {
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        eprintln!(
            "setup: warning: /sys/kernel/btf/vmlinux is missing: the agent needs a kernel \
             built with CONFIG_DEBUG_INFO_BTF=y"
        );
    }
}

/// Runs a setup step; its output goes to stderr (stdout is the agent's event stream under
/// `cargo xtask run`, which can be piped into `jq`).
fn run_checked(cmd: &mut Command, shown: &str) -> Result<()> {
    let status = cmd
        .stdout(std::io::stderr())
        .status()
        .with_context(|| format!("cannot start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}
