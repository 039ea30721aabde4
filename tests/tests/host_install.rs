//! `manifests/host/`: the systemd unit passes `systemd-analyze verify` with no warning (a typo
//! in a directive is only a warning there, so warnings fail the test), its exposure stays low
//! (`systemd-analyze security`), it grants exactly the capabilities the DaemonSet does, and the
//! agent accepts the host's default `sonde.yaml`.

use std::{collections::BTreeSet, path::PathBuf, process::Command};

use sonde_tests::{
    agent::{config_show, sonde_bin},
    yaml,
};

fn host(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../manifests/host")
        .join(file)
}

/// The unit with `ExecStart` pointing at the binary under test (verify checks it exists).
fn unit_under_test(dir: &std::path::Path) -> PathBuf {
    let text = std::fs::read_to_string(host("sonde.service")).expect("unit file");
    assert!(
        text.contains("ExecStart=/usr/local/bin/sonde run"),
        "{text}"
    );
    let text = text.replace("/usr/local/bin/sonde", &sonde_bin().display().to_string());
    let path = dir.join("sonde.service");
    std::fs::write(&path, text).expect("write unit");
    path
}

fn analyze(args: &[&str], unit: &std::path::Path) -> (bool, String) {
    let out = Command::new("systemd-analyze")
        .args(args)
        .arg(unit)
        .output()
        .unwrap_or_else(|e| panic!("cannot run systemd-analyze (Debian's systemd): {e}"));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

#[test]
fn the_unit_verifies_without_warnings_and_is_hardened() {
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = unit_under_test(dir.path());
    let (ok, said) = analyze(&["verify"], &unit);
    assert!(ok && !said.contains("sonde.service"), "{said}");

    // The check can fail: a misspelt value is reported (as a warning, with the file's name).
    let bad = dir.path().join("bad.service");
    let text = std::fs::read_to_string(&unit).expect("unit");
    std::fs::write(
        &bad,
        text.replace("RestrictNamespaces=net", "RestrictNamespaces=nett"),
    )
    .expect("write");
    let (_, said) = analyze(&["verify"], &bad);
    assert!(
        said.contains("bad.service"),
        "a bad value went unnoticed: {said}"
    );

    let (_, said) = analyze(&["security", "--offline=true"], &unit);
    let exposure: f64 = said
        .lines()
        .find_map(|l| l.split("Overall exposure level for sonde.service:").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {said}"));
    assert!(exposure <= 5.0, "exposure {exposure}: {said}");
    for directive in [
        "Type=notify",
        "LimitMEMLOCK=infinity",
        "ProtectSystem=strict",
    ] {
        assert!(text.contains(directive), "{directive} missing");
    }
}

#[test]
fn the_unit_and_the_daemonset_grant_the_same_capabilities() {
    let text = std::fs::read_to_string(host("sonde.service")).expect("unit file");
    let unit: BTreeSet<String> = text
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("CapabilityBoundingSet")
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_string())
        .collect();
    let ds = yaml::file(&host("../base/daemonset.yaml"));
    let added = &ds[0]["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]
        ["add"];
    let daemonset: BTreeSet<String> = added
        .as_array()
        .expect("capabilities.add")
        .iter()
        .filter_map(|c| c.as_str().map(str::to_string))
        .collect();
    assert_eq!(unit, daemonset);
}

#[test]
fn the_host_configuration_is_accepted() {
    let text = config_show(&host("sonde.yaml")).to_string();
    assert!(text.contains("/var/log/sonde/events.ndjson"), "{text}");
}
