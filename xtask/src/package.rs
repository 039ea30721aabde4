//! `cargo xtask image` and `cargo xtask dist`: the self-contained binary (static, musl; the
//! eBPF object is embedded) with its debug info split into a separate file, then
//!
//! - `image`: an OCI image holding that one file and nothing else (umoci builds the layout
//!   from scratch, skopeo writes it as an OCI archive named `localhost/sonde:<version>`; no
//!   registry is involved), under `target/package/`;
//! - `dist`: the host install's tarball (binary, systemd unit, `sonde.yaml`, README).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::{
    cmd::{cargo, status, target_dir, workspace_root},
    setup::STATIC_TARGET,
};

/// The image's name as the DaemonSet refers to it (manifests/base/daemonset.yaml).
pub const IMAGE_NAME: &str = "localhost/sonde";
/// The image must stay under this (the target); `image` fails above it.
const IMAGE_MAX_BYTES: u64 = 20 << 20;

/// The agent's version (agent/Cargo.toml).
pub fn version() -> Result<String> {
    let manifest = fs::read_to_string(workspace_root().join("agent/Cargo.toml"))
        .context("reading agent/Cargo.toml")?;
    manifest
        .lines()
        .find_map(|l| {
            let v = l.strip_prefix("version")?.trim_start().strip_prefix('=')?;
            Some(v.trim().trim_matches('"').to_string())
        })
        .context("no version in agent/Cargo.toml")
}

/// Where the packages go.
pub fn package_dir() -> PathBuf {
    target_dir().join("package")
}

/// The static release binary, stripped, and its debug info: `(binary, debug file)`.
pub fn static_binary() -> Result<(PathBuf, PathBuf)> {
    let mut build = cargo()?;
    build
        .args([
            "build",
            "--release",
            "-p",
            "sonde",
            "--bin",
            "sonde",
            "--target",
        ])
        .arg(STATIC_TARGET)
        .stdout(std::io::stderr());
    status(&mut build, "building the static agent")?;
    let built = target_dir()
        .join(STATIC_TARGET)
        .join("release")
        .join("sonde");
    let interp = Command::new("readelf")
        .args(["--program-headers", "--wide"])
        .arg(&built)
        .output()
        .context("running readelf (binutils)")?;
    if String::from_utf8_lossy(&interp.stdout).contains("INTERP") {
        bail!(
            "{} asks for a dynamic loader: the image would need host libraries",
            built.display()
        );
    }
    let dir = package_dir();
    fs::create_dir_all(&dir)?;
    let debug = dir.join("sonde.debug");
    let stripped = dir.join("sonde");
    status(
        Command::new("objcopy")
            .arg("--only-keep-debug")
            .arg(&built)
            .arg(&debug),
        "objcopy --only-keep-debug",
    )?;
    status(
        Command::new("objcopy")
            .arg("--strip-all")
            .arg(format!("--add-gnu-debuglink={}", debug.display()))
            .arg(&built)
            .arg(&stripped),
        "objcopy --strip-all",
    )?;
    Ok((stripped, debug))
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    status(cmd.stdout(std::io::stderr()), what)
}

/// Builds the OCI archive; returns its path.
pub fn image() -> Result<PathBuf> {
    let version = version()?;
    let (binary, debug) = static_binary()?;
    let work = package_dir().join("image");
    if work.exists() {
        fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    fs::create_dir_all(&work)?;
    let layout = work.join("oci");
    let image = format!("{}:{version}", layout.display());
    let bundle = work.join("bundle");
    run(
        Command::new("umoci")
            .args(["init", "--layout"])
            .arg(&layout),
        "umoci init",
    )?;
    run(
        Command::new("umoci").args(["new", "--image", &image]),
        "umoci new",
    )?;
    run(
        Command::new("umoci")
            .args(["unpack", "--image", &image])
            .arg(&bundle),
        "umoci unpack",
    )?;
    let bin_dir = bundle.join("rootfs/usr/local/bin");
    fs::create_dir_all(&bin_dir)?;
    fs::copy(&binary, bin_dir.join("sonde")).context("copying the binary into the image")?;
    run(
        Command::new("umoci")
            .args(["repack", "--image", &image])
            .arg(&bundle),
        "umoci repack",
    )?;
    run(
        Command::new("umoci").args([
            "config",
            "--image",
            &image,
            "--os",
            "linux",
            "--architecture",
            "amd64",
            "--config.user",
            "0:0",
            "--config.entrypoint",
            "/usr/local/bin/sonde",
            "--config.cmd",
            "run",
            "--config.exposedports",
            "9464/tcp",
            "--config.label",
            "org.opencontainers.image.title=sonde",
            "--config.label",
            &format!("org.opencontainers.image.version={version}"),
        ]),
        "umoci config",
    )?;
    let archive = package_dir().join(format!("sonde-{version}.oci.tar"));
    let _ = fs::remove_file(&archive);
    run(
        Command::new("skopeo").args([
            "copy",
            &format!("oci:{image}"),
            &format!("oci-archive:{}:{IMAGE_NAME}:{version}", archive.display()),
        ]),
        "skopeo copy to an OCI archive",
    )?;
    let size = fs::metadata(&archive)?.len();
    println!(
        "image {IMAGE_NAME}:{version}: {} ({:.1} MiB; binary {:.1} MiB, debug info in {})",
        archive.display(),
        size as f64 / (1 << 20) as f64,
        fs::metadata(&binary)?.len() as f64 / (1 << 20) as f64,
        debug.display()
    );
    if size > IMAGE_MAX_BYTES {
        bail!(
            "the image is {size} bytes, over the {IMAGE_MAX_BYTES}-byte target: look at what \
             grew (`cargo bloat --release --target {STATIC_TARGET}`)"
        );
    }
    Ok(archive)
}

/// Builds the host install's tarball; returns its path.
pub fn dist() -> Result<PathBuf> {
    let version = version()?;
    let (binary, debug) = static_binary()?;
    let name = format!("sonde-{version}");
    let stage = package_dir().join("dist").join(&name);
    if stage.exists() {
        fs::remove_dir_all(&stage)?;
    }
    fs::create_dir_all(&stage)?;
    let host = workspace_root().join("manifests/host");
    fs::copy(&binary, stage.join("sonde"))?;
    for file in ["sonde.service", "sonde.yaml", "README.md"] {
        fs::copy(host.join(file), stage.join(file))
            .with_context(|| format!("copying manifests/host/{file}"))?;
    }
    let tarball = package_dir().join(format!("{name}-x86_64-linux.tar.gz"));
    run(
        Command::new("tar")
            .args([
                "--create",
                "--gzip",
                "--owner=0",
                "--group=0",
                "--numeric-owner",
                "--sort=name",
                "--mtime=@0",
                "--file",
            ])
            .arg(&tarball)
            .arg("--directory")
            .arg(stage.parent().unwrap_or(Path::new(".")))
            .arg(&name),
        "tar",
    )?;
    println!(
        "host install: {} ({:.1} MiB; debug info in {})",
        tarball.display(),
        fs::metadata(&tarball)?.len() as f64 / (1 << 20) as f64,
        debug.display()
    );
    Ok(tarball)
}
