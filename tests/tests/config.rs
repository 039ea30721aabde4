//! The configuration model through the real binary: precedence (defaults < file < env < flags)
//! as `sonde config show` reports it, and every kind of bad input rejected with its position
//! and exit code 78 (EX_CONFIG), by `sonde config show` and by `sonde run` alike.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use serde_json::Value;
use sonde_tests::agent::sonde_bin;

/// `sonde` with no configuration from the test's own environment.
fn sonde(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(sonde_bin());
    for (name, _) in std::env::vars_os() {
        let n = name.to_string_lossy();
        if (n.starts_with("SONDE_") && n != "SONDE_BIN") || n == "NODE_NAME" {
            cmd.env_remove(&name);
        }
    }
    cmd.args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run sonde")
}

struct ConfigDir {
    dir: tempfile::TempDir,
}

impl ConfigDir {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write config");
        path
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

fn show_json(args: &[&str], env: &[(&str, &str)]) -> Value {
    let mut all = vec!["config", "show", "--output", "json"];
    all.extend_from_slice(args);
    let out = sonde(&all, env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "config show failed: {stderr}");
    serde_json::from_slice(&out.stdout).expect("config show --output json prints JSON")
}

/// Runs the command and returns stderr, asserting exit code 78. `sonde run` gets a
/// `--duration`, so a configuration wrongly accepted ends the run instead of hanging the test.
fn rejected(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut args = args.to_vec();
    if args.first() == Some(&"run") {
        args.extend(["--duration", "1s"]);
    }
    let out = sonde(&args, env);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(78), "stderr: {stderr}");
    assert!(out.stdout.is_empty(), "nothing on stdout when rejected");
    stderr
}

#[test]
fn precedence_is_default_then_file_then_env_then_flag() {
    let dir = ConfigDir::new();
    let file = dir.file(
        "sonde.yaml",
        "# comment\nmetrics:\n  listen: 0.0.0.0:1111\n  max_series: 5\ncapture:\n  max_connections: 10\n  wakeup_bytes: 64KiB\n",
    );
    let env = [
        ("SONDE_METRICS_MAX_SERIES", "7"),
        ("SONDE_CAPTURE_MAX_CONNECTIONS", "20"),
    ];
    let show = show_json(&["--config", s(&file), "--max-connections", "30"], &env);
    let c = &show["config"];
    let src = &show["sources"];
    // Default only.
    assert_eq!(c["api"]["listen"], "127.0.0.1:9465");
    assert_eq!(src["api.listen"], "default");
    // File over default.
    assert_eq!(c["metrics"]["listen"], "0.0.0.0:1111");
    assert_eq!(src["metrics.listen"], format!("file {}:3", file.display()));
    assert_eq!(c["capture"]["wakeup_bytes"], "64KiB");
    assert_eq!(
        src["capture.wakeup_bytes"],
        format!("file {}:7", file.display())
    );
    // Env over file.
    assert_eq!(c["metrics"]["max_series"], 7);
    assert_eq!(src["metrics.max_series"], "env SONDE_METRICS_MAX_SERIES");
    // Flag over env over file.
    assert_eq!(c["capture"]["max_connections"], 30);
    assert_eq!(src["capture.max_connections"], "flag --max-connections");
    assert_eq!(show["file"], s(&file));

    // The same file through SONDE_CONFIG, and --set for a key without a dedicated flag.
    let show = show_json(
        &["--set", "metrics.max_series=9"],
        &[
            ("SONDE_CONFIG", s(&file)),
            ("SONDE_METRICS_MAX_SERIES", "7"),
        ],
    );
    assert_eq!(show["config"]["metrics"]["max_series"], 9);
    assert_eq!(
        show["sources"]["metrics.max_series"],
        "flag --set metrics.max_series"
    );
    assert_eq!(show["config"]["metrics"]["listen"], "0.0.0.0:1111");
}

#[test]
fn no_file_is_needed_and_defaults_are_documented() {
    let show = show_json(&[], &[]);
    if !Path::new("/etc/sonde/sonde.yaml").exists() {
        assert_eq!(show["file"], Value::Null);
        let sources = show["sources"].as_object().expect("sources");
        assert!(sources.values().all(|v| v == "default"), "{sources:?}");
    }
    assert_eq!(show["config"]["metrics"]["listen"], "127.0.0.1:9464");
    assert_eq!(show["config"]["metrics"]["max_series"], 10000);
    assert_eq!(show["config"]["kubernetes"]["enabled"], true);
    // Every key appears in the reference.
    let out = sonde(&["config", "reference"], &[]);
    assert!(out.status.success());
    let reference = String::from_utf8_lossy(&out.stdout);
    for key in show["sources"].as_object().expect("sources").keys() {
        assert!(
            reference.contains(&format!("| `{key}` |")),
            "{key} undocumented"
        );
    }
}

#[test]
fn show_yaml_is_a_config_file_with_the_same_values() {
    let dir = ConfigDir::new();
    let show = sonde(
        &["config", "show", "--set", "kubernetes.pod_labels=app,team"],
        &[("SONDE_OUTPUT_ROTATE_SIZE", "1GiB"), ("NODE_NAME", "n1")],
    );
    assert!(show.status.success());
    let yaml = String::from_utf8_lossy(&show.stdout);
    assert!(
        yaml.contains("rotate_size: \"1GiB\"  # env SONDE_OUTPUT_ROTATE_SIZE"),
        "{yaml}"
    );
    assert!(
        yaml.contains("node_name: \"n1\"  # env NODE_NAME"),
        "{yaml}"
    );
    let file = dir.file("again.yaml", &yaml);
    let again = show_json(&["--config", s(&file)], &[]);
    assert_eq!(
        again["config"]["kubernetes"]["pod_labels"],
        serde_json::json!(["app", "team"])
    );
    assert_eq!(again["config"]["output"]["rotate_size"], "1GiB");
    assert_eq!(again["config"]["node_name"], "n1");
}

#[test]
fn unknown_key_names_file_line_column_and_allowed_keys() {
    let dir = ConfigDir::new();
    let file = dir.file(
        "sonde.yaml",
        "log:\n  level: debug\n\nmetrics:\n  enabled: true\n\n  lisen: 0.0.0.0:9464\n",
    );
    let expected = format!(
        "sonde: {}:7:3: unknown key \"metrics.lisen\" (allowed: enabled, listen, max_series, \
         remote_ip_allowlist, header_timeout)\n",
        file.display()
    );
    assert_eq!(
        rejected(&["config", "show", "--config", s(&file)], &[]),
        expected
    );
    // `sonde run` checks its configuration before anything else (no root needed to see it).
    assert_eq!(rejected(&["run", "--config", s(&file)], &[]), expected);
}

#[test]
fn bad_type_names_the_position_and_the_expected_type() {
    let dir = ConfigDir::new();
    let file = dir.file("sonde.yaml", "capture:\n  max_connections: lots\n");
    let err = rejected(&["run", "--config", s(&file)], &[]);
    assert!(
        err.starts_with(&format!(
            "sonde: {}:2:20: invalid value for \"capture.max_connections\"",
            file.display()
        )),
        "{err}"
    );
    assert!(err.contains("expected a non-negative integer"), "{err}");

    let file = dir.file("enum.yaml", "output:\n  format: xml\n");
    let err = rejected(&["config", "show", "--config", s(&file)], &[]);
    assert!(
        err.contains(":2:11: invalid value for \"output.format\""),
        "{err}"
    );
    assert!(err.contains("one of: auto, text, json"), "{err}");
}

#[test]
fn bad_size_names_the_position_and_the_units() {
    let dir = ConfigDir::new();
    let file = dir.file("sonde.yaml", "capture:\n  wakeup_bytes: 12 parsecs\n");
    let err = rejected(&["run", "--config", s(&file)], &[]);
    assert!(
        err.starts_with(&format!(
            "sonde: {}:2:17: invalid value for \"capture.wakeup_bytes\"",
            file.display()
        )),
        "{err}"
    );
    assert!(err.contains("KiB, MiB or GiB"), "{err}");

    let file = dir.file("ring.yaml", "capture:\n  ring_buffer_size: 3MiB\n");
    let err = rejected(&["run", "--config", s(&file)], &[]);
    assert!(
        err.contains(":2:21: invalid value for \"capture.ring_buffer_size\""),
        "{err}"
    );
    assert!(err.contains("power of two"), "{err}");
}

#[test]
fn bad_env_value_names_the_variable() {
    let err = rejected(&["config", "show"], &[("SONDE_METRICS_MAX_SERIES", "lots")]);
    assert!(
        err.starts_with(
            "sonde: environment variable SONDE_METRICS_MAX_SERIES: invalid value for \
             \"metrics.max_series\""
        ),
        "{err}"
    );
    let err = rejected(&["run"], &[("SONDE_METRICS_LISTEN", "nowhere")]);
    assert!(
        err.starts_with("sonde: environment variable SONDE_METRICS_LISTEN: invalid value"),
        "{err}"
    );
    assert!(err.contains("\"nowhere\""), "{err}");
    assert!(err.contains("address:port"), "{err}");
}

#[test]
fn missing_explicit_file_is_an_error() {
    let err = rejected(
        &["config", "show", "--config", "/nonexistent/sonde.yaml"],
        &[],
    );
    assert!(
        err.starts_with("sonde: /nonexistent/sonde.yaml: configuration file not found"),
        "{err}"
    );
    assert!(err.contains("Fix:"), "{err}");
    let err = rejected(&["run"], &[("SONDE_CONFIG", "/nonexistent/sonde.yaml")]);
    assert!(
        err.contains("/nonexistent/sonde.yaml: configuration file not found"),
        "{err}"
    );
}

#[test]
fn yaml_syntax_error_names_the_line() {
    let dir = ConfigDir::new();
    let file = dir.file(
        "sonde.yaml",
        "metrics:\n  listen: 0.0.0.0:1\n   max_series: 3\n",
    );
    let err = rejected(&["run", "--config", s(&file)], &[]);
    assert!(
        err.starts_with(&format!("sonde: {}:3:", file.display())),
        "{err}"
    );
    assert!(err.contains("invalid YAML"), "{err}");
}

#[test]
fn flags_keep_their_usage_errors() {
    // A bad flag value is still a command-line error (2), found by the parser.
    let out = sonde(&["run", "--ring-buffer-size", "3MiB"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = rejected(&["run", "--set", "metrics.lisen=1"], &[]);
    assert!(
        err.starts_with("sonde: flag --set metrics.lisen: unknown key \"metrics.lisen\""),
        "{err}"
    );
}

#[test]
fn output_file_receives_the_event_stream() {
    sonde_tests::require_root();
    let dir = ConfigDir::new();
    let events = dir.dir.path().join("events.ndjson");
    let file = dir.file(
        "sonde.yaml",
        &format!("output:\n  file: {}\n  format: json\n", events.display()),
    );
    let out = sonde(&["run", "--config", s(&file), "--duration", "2s"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(out.stdout.is_empty(), "events went to stdout");
    let text = std::fs::read_to_string(&events).expect("events file");
    let first = text
        .lines()
        .next()
        .expect("at least one event (start-up scan)");
    let event: Value = serde_json::from_str(first).expect("NDJSON");
    assert!(event["type"].is_string(), "{first}");
}
