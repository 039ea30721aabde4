//! Shared helpers and the build/run/test/lint tasks.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

/// Where setup installs tools (bpf-linker and the LLVM prefix it links against). Outside the
/// repository so fresh clones on one machine share it; `SONDE_TOOLS_DIR` overrides. The agent's
/// build script looks here too.
pub fn tools_dir() -> PathBuf {
    match env::var_os("SONDE_TOOLS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env::var_os("HOME").unwrap_or_else(|| "/root".into()))
            .join(".cache/sonde-tools"),
    }
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// PATH with the tools directory first.
fn path_with_tools() -> Result<std::ffi::OsString> {
    let mut dirs = vec![tools_dir().join("bin")];
    dirs.extend(env::split_paths(&env::var_os("PATH").unwrap_or_default()));
    Ok(env::join_paths(dirs)?)
}

/// A cargo command in the workspace with the tools on PATH.
pub fn cargo() -> Result<Command> {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root())
        .env("PATH", path_with_tools()?);
    Ok(cmd)
}

/// Runs a command and returns its stdout; fails with its stderr.
pub fn capture(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn status(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

pub fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

pub fn agent_binary(release: bool) -> PathBuf {
    target_dir()
        .join(if release { "release" } else { "debug" })
        .join("sonde")
}

pub fn build_agent(release: bool) -> Result<()> {
    let mut cmd = cargo()?;
    cmd.args(["build", "-p", "sonde", "--bins"]);
    if release {
        cmd.arg("--release");
    }
    // stdout is the agent's under `cargo xtask run` (NDJSON into `jq`): the build writes to stderr.
    cmd.stdout(std::io::stderr());
    status(&mut cmd, "building the agent")
}

pub fn run_agent(args: &[String]) -> Result<()> {
    let bin = agent_binary(true);
    let mut cmd = Command::new(&bin);
    cmd.arg("run").args(args);
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    if !status.success() {
        bail!("sonde run exited with {status}");
    }
    Ok(())
}

/// Builds the agent, its image and the tests' helpers, then runs every test with `SONDE_BIN`
/// pointing at the agent and `SONDE_IMAGE` at the image.
pub fn test(args: &[String]) -> Result<()> {
    build_agent(false)?;
    // The DaemonSet test runs the real image (tests/tests/daemonset.rs).
    let image = crate::package::image()?;
    let mut cmd = cargo()?;
    cmd.args([
        "test",
        "--workspace",
        "--exclude",
        "sonde-ebpf",
        "--no-fail-fast",
    ])
    .env("SONDE_BIN", agent_binary(false))
    .env("SONDE_PYTHONPATH", crate::setup::python_dir())
    .env("SONDE_IMAGE", image)
    // Tests run agents side by side on one kernel; tests/tests/one_agent.rs turns the
    // one-agent-per-kernel check back on for itself.
    .env("SONDE_CAPTURE_ALLOW_OTHER_AGENTS", "true")
    .env("RUST_BACKTRACE", "1");
    cmd.args(args);
    status(&mut cmd, "the test suite")
}

/// rustls must use the ring provider only: aws-lc-rs needs cmake, which build machines lack,
/// and a second provider makes rustls' process default ambiguous.
fn no_aws_lc() -> Result<()> {
    let output = cargo()?
        .args([
            "tree",
            "--workspace",
            "--exclude",
            "sonde-ebpf",
            "--edges",
            "normal,build,dev",
            "--prefix",
            "none",
        ])
        .output()
        .context("running cargo tree")?;
    if !output.status.success() {
        bail!(
            "cargo tree failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let tree = String::from_utf8_lossy(&output.stdout);
    if let Some(line) = tree.lines().find(|l| l.starts_with("aws-lc")) {
        bail!(
            "{line} is in the dependency tree (see `cargo tree -i {}`): use rustls with the \
             ring provider only (default-features = false, features = [\"ring\"])",
            line.split_whitespace().next().unwrap_or("aws-lc-rs")
        );
    }
    Ok(())
}

pub fn lint() -> Result<()> {
    status(
        cargo()?.args(["fmt", "--all", "--", "--check"]),
        "cargo fmt --check",
    )?;
    status(
        cargo()?.args([
            "clippy",
            "--workspace",
            "--exclude",
            "sonde-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
        "cargo clippy -D warnings",
    )?;
    no_aws_lc()?;
    // The eBPF crate only compiles for the bpf target, with nightly (as agent/build.rs builds it).
    let mut nightly = Command::new("rustup");
    nightly
        .current_dir(workspace_root())
        .env("PATH", path_with_tools()?)
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            "--cfg=bpf_target_arch=\"x86_64\"",
        )
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .args(["run", "nightly", "cargo"]);
    status(
        nightly
            .args([
                "clippy",
                "-p",
                "sonde-ebpf",
                "--release",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--target-dir",
            ])
            .arg(target_dir().join("ebpf-lint"))
            .args(["--", "-D", "warnings"]),
        "cargo clippy -D warnings (sonde-ebpf, bpf target)",
    )
}
