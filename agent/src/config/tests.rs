use std::{collections::HashMap, ffi::OsString, path::Path, time::Duration};

use serde_json::{Value, json};

use super::{schema::KEYS, *};
use crate::run::RunOptions;

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> + use<> {
    let map: HashMap<String, OsString> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), OsString::from(v)))
        .collect();
    move |name| map.get(name).cloned()
}

fn merge(file: &str, env: &[(&str, &str)], overrides: &Overrides) -> Result<Loaded, ConfigError> {
    load::merge(
        Some((Path::new("/etc/sonde/sonde.yaml"), file)),
        &env_of(env),
        overrides,
    )
}

fn err(file: &str, env: &[(&str, &str)], overrides: &Overrides) -> String {
    merge(file, env, overrides)
        .expect_err("should be rejected")
        .to_string()
}

/// The leaf paths of a value tree (objects are sections; anything else is a key).
fn leaves(prefix: &str, v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(&p, v, out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

#[test]
fn schema_lists_exactly_the_config_fields() {
    let mut from_struct = Vec::new();
    leaves(
        "",
        &serde_json::to_value(Config::default()).expect("serializes"),
        &mut from_struct,
    );
    from_struct.sort();
    let mut from_schema: Vec<String> = KEYS.iter().map(|k| k.path.to_string()).collect();
    from_schema.sort();
    assert_eq!(
        from_struct, from_schema,
        "a Config field is missing from config::schema::KEYS, or the reverse"
    );
}

#[test]
fn defaults_need_no_file() {
    let loaded = load::merge(None, &env_of(&[]), &Overrides::default()).expect("defaults load");
    assert_eq!(loaded.config, Config::default());
    assert!(loaded.sources.iter().all(|s| *s == Source::Default));
    assert_eq!(loaded.config.metrics.listen.to_string(), "127.0.0.1:9464");
    assert_eq!(loaded.config.api.listen.to_string(), "127.0.0.1:9465");
    assert_eq!(loaded.config.metrics.max_series, 10_000);
    assert!(loaded.config.kubernetes.enabled);
    assert!(Config::default().validate().is_ok());
}

#[test]
fn precedence_default_file_env_flag() {
    let file = "metrics:\n  listen: 0.0.0.0:1111\n  max_series: 5\ncapture:\n  max_connections: 10\n  ring_buffer_size: 8MiB\n";
    let mut flags = Overrides::default();
    flags.flag("capture.max_connections", "--max-connections", 30);
    let loaded = merge(
        file,
        &[
            ("SONDE_METRICS_MAX_SERIES", "7"),
            ("SONDE_CAPTURE_MAX_CONNECTIONS", "20"),
        ],
        &flags,
    )
    .expect("loads");
    let c = &loaded.config;
    assert_eq!(c.metrics.listen.to_string(), "0.0.0.0:1111");
    assert_eq!(c.metrics.max_series, 7);
    assert_eq!(c.capture.max_connections, 30);
    assert_eq!(c.capture.ring_buffer_size, 8 << 20);
    assert_eq!(c.api.listen.to_string(), "127.0.0.1:9465");
    let src = |k| loaded.source(k).expect("known key").to_string();
    assert_eq!(src("metrics.listen"), "file /etc/sonde/sonde.yaml:2");
    assert_eq!(src("metrics.max_series"), "env SONDE_METRICS_MAX_SERIES");
    assert_eq!(src("capture.max_connections"), "flag --max-connections");
    assert_eq!(
        src("capture.ring_buffer_size"),
        "file /etc/sonde/sonde.yaml:6"
    );
    assert_eq!(src("api.listen"), "default");
}

#[test]
fn set_flag_env_lists_and_aliases() {
    let mut flags = Overrides::default();
    flags.set("kubernetes.pod_labels=app, team");
    flags.set("kubelet.timeout=2s");
    let loaded = merge(
        "",
        &[
            ("SONDE_METRICS_REMOTE_IP_ALLOWLIST", "10.0.0.0/8,fd00::/8"),
            ("NODE_NAME", "from-downward-api"),
            ("SONDE_OUTPUT", "json"),
            ("SONDE_KUBELET_TLS_VERIFY", "false"),
            ("SONDE_CAPTURE_BTF_PATH", ""),
        ],
        &flags,
    )
    .expect("loads");
    let c = &loaded.config;
    assert_eq!(c.kubernetes.pod_labels, ["app", "team"]);
    assert_eq!(c.metrics.remote_ip_allowlist.len(), 2);
    assert_eq!(c.node_name.as_deref(), Some("from-downward-api"));
    assert_eq!(
        c.output.format,
        crate::export::output::OutputFormatSetting::Json
    );
    assert!(!c.kubelet.tls_verify);
    assert_eq!(c.kubelet.timeout, Duration::from_secs(2));
    assert_eq!(c.capture.btf_path, None);
    assert_eq!(
        loaded.source("kubelet.timeout").map(ToString::to_string),
        Some("flag --set kubelet.timeout".into())
    );
    assert_eq!(
        loaded.source("node_name").map(ToString::to_string),
        Some("env NODE_NAME".into())
    );
    // The SONDE_ name wins over the alias.
    let loaded = merge(
        "",
        &[("NODE_NAME", "a"), ("SONDE_NODE_NAME", "b")],
        &Overrides::default(),
    )
    .expect("loads");
    assert_eq!(loaded.config.node_name.as_deref(), Some("b"));
}

#[test]
fn unknown_keys_name_the_position_and_the_allowed_keys() {
    let file = "log:\n  level: debug\n\nmetrics:\n  enabled: true\n\n  lisen: 0.0.0.0:9464\n";
    assert_eq!(
        err(file, &[], &Overrides::default()),
        "/etc/sonde/sonde.yaml:7:3: unknown key \"metrics.lisen\" (allowed: enabled, listen, \
         max_series, remote_ip_allowlist, header_timeout)"
    );
    let e = err("metrix:\n  listen: x\n", &[], &Overrides::default());
    assert!(
        e.starts_with("/etc/sonde/sonde.yaml:1:1: unknown key \"metrix\" (allowed: log, output,"),
        "{e}"
    );
    let e = err("kubelet:\n  tls_verfy: false\n", &[], &Overrides::default());
    assert!(e.contains(":2:3: unknown key \"kubelet.tls_verfy\""), "{e}");
    assert!(e.contains("tls_verify"), "{e}");
    let e = err("metrics: 5\n", &[], &Overrides::default());
    assert!(e.contains(":1:10: \"metrics\" is a section"), "{e}");
    let mut flags = Overrides::default();
    flags.set("metrics.lisen=1");
    let e = err("", &[], &flags);
    assert!(
        e.starts_with("flag --set metrics.lisen: unknown key \"metrics.lisen\""),
        "{e}"
    );
}

#[test]
fn bad_values_name_the_position_and_the_expected_type() {
    let e = err(
        "capture:\n  max_connections: many\n",
        &[],
        &Overrides::default(),
    );
    assert!(
        e.starts_with("/etc/sonde/sonde.yaml:2:20: invalid value for \"capture.max_connections\""),
        "{e}"
    );
    assert!(e.contains("expected a non-negative integer"), "{e}");

    let e = err(
        "capture:\n  wakeup_bytes: 12 parsecs\n",
        &[],
        &Overrides::default(),
    );
    assert!(e.starts_with("/etc/sonde/sonde.yaml:2:17:"), "{e}");
    assert!(e.contains("KiB, MiB or GiB"), "{e}");

    let e = err(
        "capture:\n  ring_buffer_size: 3MiB\n",
        &[],
        &Overrides::default(),
    );
    assert!(
        e.starts_with("/etc/sonde/sonde.yaml:2:21: invalid value for \"capture.ring_buffer_size\""),
        "{e}"
    );
    assert!(e.contains("power of two"), "{e}");

    let e = err("log:\n  format: xml\n", &[], &Overrides::default());
    assert!(e.contains(":2:11:"), "{e}");
    assert!(e.contains("expected one of: text, json"), "{e}");

    let e = err(
        "metrics:\n  remote_ip_allowlist: [10.0.0.0/8, 300.1.1.1/8]\n",
        &[],
        &Overrides::default(),
    );
    assert!(e.contains("\"metrics.remote_ip_allowlist\""), "{e}");
    assert!(e.contains("300.1.1.1/8"), "{e}");
    assert!(e.starts_with("/etc/sonde/sonde.yaml:2:24:"), "{e}");

    let e = err("metrics:\n  listen: 9464\n", &[], &Overrides::default());
    assert!(e.contains("address:port"), "{e}");
}

#[test]
fn bad_env_values_name_the_variable() {
    let e = err(
        "",
        &[("SONDE_METRICS_MAX_SERIES", "lots")],
        &Overrides::default(),
    );
    assert!(
        e.starts_with(
            "environment variable SONDE_METRICS_MAX_SERIES: invalid value for \
             \"metrics.max_series\""
        ),
        "{e}"
    );
    let e = err(
        "",
        &[("SONDE_METRICS_LISTEN", "nowhere")],
        &Overrides::default(),
    );
    assert!(
        e.starts_with("environment variable SONDE_METRICS_LISTEN: invalid value"),
        "{e}"
    );
    let e = err(
        "",
        &[("SONDE_KUBELET_TLS_VERIFY", "maybe")],
        &Overrides::default(),
    );
    assert!(e.contains("expected true or false"), "{e}");
}

#[test]
fn yaml_syntax_errors_have_the_position() {
    let e = err("metrics:\n  listen: [1, 2\n", &[], &Overrides::default());
    assert!(e.starts_with("/etc/sonde/sonde.yaml:"), "{e}");
    assert!(e.contains("invalid YAML"), "{e}");
    let e = err("a: 1\n b: 2\n", &[], &Overrides::default());
    assert!(e.starts_with("/etc/sonde/sonde.yaml:2:"), "{e}");
    let e = err("- 1\n- 2\n", &[], &Overrides::default());
    assert!(e.contains("not a mapping"), "{e}");
}

#[test]
fn missing_files() {
    let missing = ConfigFile {
        path: "/nonexistent/sonde.yaml".into(),
        explicit: false,
    };
    assert!(Config::load_with_env(&missing, &env_of(&[]), &Overrides::default()).is_ok());
    let explicit = ConfigFile {
        explicit: true,
        ..missing
    };
    let e = Config::load_with_env(&explicit, &env_of(&[]), &Overrides::default())
        .expect_err("explicit file must exist");
    assert!(matches!(e, ConfigError::NotFound { .. }));
    assert!(
        e.to_string()
            .starts_with("/nonexistent/sonde.yaml: configuration file not found")
    );
    assert_eq!(e.exit_code(), 78);
}

#[test]
fn show_yaml_is_a_config_file_that_loads_to_the_same() {
    let file = "metrics:\n  listen: 0.0.0.0:1111\nkubernetes:\n  pod_labels: [app]\noutput:\n  rotate_size: 1GiB\nnode_name: n1\n";
    let loaded = merge(
        file,
        &[("SONDE_API_ENABLED", "false")],
        &Overrides::default(),
    )
    .expect("loads");
    let yaml = show::to_yaml(&loaded);
    assert!(
        yaml.contains("  listen: \"0.0.0.0:1111\"  # file /etc/sonde/sonde.yaml:2"),
        "{yaml}"
    );
    assert!(
        yaml.contains("  enabled: false  # env SONDE_API_ENABLED"),
        "{yaml}"
    );
    assert!(yaml.contains("node_name: \"n1\"  # file"), "{yaml}");
    let again = merge(&yaml, &[], &Overrides::default()).expect("show output loads");
    assert_eq!(again.config, loaded.config);

    let j = show::to_json(&loaded);
    assert_eq!(j["config"]["metrics"]["listen"], json!("0.0.0.0:1111"));
    assert_eq!(j["config"]["output"]["rotate_size"], json!("1GiB"));
    assert_eq!(j["sources"]["api.enabled"], json!("env SONDE_API_ENABLED"));
    assert_eq!(j["sources"]["log.level"], json!("default"));
}

#[test]
fn run_options_follow_the_config() {
    let loaded = merge(
        "capture:\n  ring_buffer_size: 8MiB\n  disabled_probes: [sonde_accept]\nnode:\n  host_root: /host\n  max_cgroups: 5\noutput:\n  format: text\n",
        &[],
        &Overrides::default(),
    )
    .expect("loads");
    let run = RunOptions::from_config(&loaded.config, false);
    assert_eq!(run.capture.ring_buffer_bytes().expect("valid"), 8 << 20);
    assert_eq!(run.capture.disabled_probes, ["sonde_accept"]);
    assert_eq!(run.node.host().root(), Path::new("/host"));
    assert_eq!(run.node.max_cgroups, 5);
    assert_eq!(run.output, crate::export::OutputFormat::Text);
    let metrics = run.metrics.expect("metrics on by default");
    assert_eq!(metrics.listen, loaded.config.metrics.listen);
    assert_eq!(metrics.max_series, loaded.config.metrics.max_series);
    assert!(run.api.is_some(), "the API is on by default");
    assert!(run.output_file.is_none());
    let off_config = merge(
        "metrics:\n  enabled: false\napi:\n  enabled: false\nkubelet:\n  enabled: false\n",
        &[],
        &Overrides::default(),
    )
    .expect("loads")
    .config;
    let off = RunOptions::from_config(&off_config, false);
    assert!(off.metrics.is_none() && off.api.is_none() && off.kubelet.is_none());
    let on_config = merge(
        "kubelet:\n  url: https://k:10250\noutput:\n  file: /tmp/ev\n  rotate_keep: 3\n",
        &[],
        &Overrides::default(),
    )
    .expect("loads")
    .config;
    let on = RunOptions::from_config(&on_config, false);
    assert_eq!(
        on.kubelet.and_then(|k| k.url).as_deref(),
        Some("https://k:10250"),
        "a kubelet URL turns the source on"
    );
    assert_eq!(on.output_file.map(|f| f.keep), Some(3));
    let auto = Config::default();
    assert_eq!(
        RunOptions::from_config(&auto, true).output,
        crate::export::OutputFormat::Text
    );
    assert_eq!(
        RunOptions::from_config(&auto, false).output,
        crate::export::OutputFormat::Json
    );
}

#[test]
fn docs_configuration_md_is_generated_from_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");
    let on_disk = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        on_disk == show::reference(),
        "docs/configuration.md differs from what the code generates. Fix: \
         cargo run -p sonde -- config reference > docs/configuration.md"
    );
}

#[test]
fn disabled_probes_are_known_programs_and_documented() {
    let doc = schema::find("capture.disabled_probes").expect("key").doc;
    for probe in crate::capture::probes::PROBES {
        assert!(
            doc.contains(probe.program),
            "{} undocumented",
            probe.program
        );
    }
    let e = err(
        "capture:\n  disabled_probes: [sonde_exec, sonde_exek]\n",
        &[],
        &Overrides::default(),
    );
    assert!(
        e.starts_with("/etc/sonde/sonde.yaml:2:20: invalid value for \"capture.disabled_probes\""),
        "{e}"
    );
    assert!(
        e.contains("\"sonde_exek\" (programs: sonde_exec, sonde_fork"),
        "{e}"
    );
}

#[test]
fn misspelt_sonde_variables_are_reported() {
    let names = [
        "SONDE_METRICS_LISEN",
        "SONDE_METRICS_LISTEN",
        "SONDE_OUTPUT",
        "SONDE_CONFIG",
        "SONDE_BIN",
        "NODE_NAME",
        "PATH",
    ]
    .map(OsString::from);
    assert_eq!(unknown_env_vars(names.into_iter()), ["SONDE_METRICS_LISEN"]);
}
