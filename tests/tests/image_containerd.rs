//! The image as the README installs it: imported into containerd (a private instance) with
//! the README's `ctr … images import` command, under the name the DaemonSet in `manifests/`
//! uses, and run by containerd (runc shim): the static binary starts from the image alone.

use std::path::PathBuf;

use sonde_tests::{containerd::Containerd, yaml};

fn manifests() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/base")
}

/// The import command of the README's "Install in a cluster", as written there.
fn readme_import_command() -> Vec<String> {
    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("README.md");
    let line = readme
        .lines()
        .map(|l| l.trim_start_matches(['#', ' ']))
        .find(|l| l.starts_with("ctr ") && l.contains("images import"))
        .expect("the README shows a `ctr … images import` command");
    line.split_whitespace().map(str::to_string).collect()
}

#[test]
fn the_image_imports_into_containerd_as_the_readme_says_and_runs() {
    let archive = std::env::var("SONDE_IMAGE").expect(
        "SONDE_IMAGE is not set: run the tests with `cargo xtask test` (it builds the image)",
    );
    let daemonset = &yaml::file(&manifests().join("daemonset.yaml"))[0];
    let image = daemonset["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .expect("the DaemonSet names an image")
        .to_string();
    let containerd = Containerd::start();

    let mut command = readme_import_command();
    assert_eq!(command[0], "ctr");
    let archive_arg = command
        .iter_mut()
        .find(|a| a.ends_with(".oci.tar"))
        .expect("the README's command names the archive");
    assert!(
        archive.ends_with(archive_arg.trim_start_matches("target/package/")),
        "the README names {archive_arg}, the build wrote {archive}"
    );
    *archive_arg = archive.clone();
    let args: Vec<&str> = command[1..].iter().map(String::as_str).collect();
    containerd.ctr_ok(&args);

    let namespace = command
        .windows(2)
        .find(|w| w[0] == "-n" || w[0] == "--namespace")
        .map_or("default".to_string(), |w| w[1].clone());
    assert_eq!(namespace, "k8s.io", "the kubelet's CRI namespace");
    let images = containerd.ctr_ok(&["-n", &namespace, "images", "ls", "-q"]);
    assert!(
        images.lines().any(|l| l == image),
        "the DaemonSet's image {image} is not among the imported: {images}"
    );

    let id = format!("sonde-image-{}", std::process::id());
    let out = containerd.ctr_ok(&[
        "-n",
        &namespace,
        "run",
        "--rm",
        &image,
        &id,
        "/usr/local/bin/sonde",
        "--version",
    ]);
    assert_eq!(out.trim(), format!("sonde {}", env!("CARGO_PKG_VERSION")));
}
