//! One configuration model for the agent: embedded defaults < YAML file < environment
//! (`SONDE_*`) < flags of `sonde run`.
//!
//! - [`schema`]: every key with its type, flag, env variable and description;
//! - [`yaml`]: the file, parsed with the position of every key and value;
//! - [`load`]: the layers merged as a value tree with per-key provenance, then deserialized
//!   into [`Config`] (unknown keys and bad values are errors naming file:line:column, the
//!   variable or the flag);
//! - [`show`]: `sonde config show` and the reference in `docs/configuration.md`.
//!
//! Other parts of the agent read the typed sections: [`Config::metrics`], [`Config::api`],
//! [`Config::events`], [`Config::kubernetes`], [`Config::kubelet`], [`Config::output`],
//! [`Config::log`].

pub mod error;
pub mod flags;
pub mod load;
pub mod schema;
pub mod show;
pub mod types;
pub mod yaml;

use std::{
    ffi::OsString,
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use serde::{Deserialize, Serialize};

pub use error::{ConfigError, Source};
pub use load::{Loaded, Overrides};
pub use types::{Cidr, OutputFormatSetting};

use crate::{
    capture::CaptureOptions, kube::kubelet::KubeletConfig, logging::LogFormat, node::NodeOptions,
};

/// The configuration file read when neither `--config` nor `SONDE_CONFIG` names one.
pub const DEFAULT_PATH: &str = "/etc/sonde/sonde.yaml";
/// Environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "SONDE_CONFIG";

/// The whole configuration. Every field is documented in `docs/configuration.md`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub log: LogConfig,
    pub output: OutputConfig,
    pub capture: CaptureConfig,
    pub node: NodeConfig,
    /// `node_name` (env `SONDE_NODE_NAME` or the downward API's `NODE_NAME`); `None`: the
    /// kubelet kubeconfig's user, else the hostname (`kube::node::resolve_node_name`).
    pub node_name: Option<String>,
    pub kubelet: KubeletConfig,
    pub kubernetes: KubernetesConfig,
    pub metrics: MetricsConfig,
    pub api: ApiConfig,
    pub events: EventsConfig,
}

/// `log.*`: the agent's own logs on stderr.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter: `info`, `debug`, `sonde=debug,aya=info`, ...
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// `output.*`: the event stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutputConfig {
    pub format: OutputFormatSetting,
    /// NDJSON/text to this file (appended) instead of stdout.
    pub file: Option<PathBuf>,
    /// Rotate `file` at this size in bytes; 0: never.
    #[serde(with = "types::size")]
    pub rotate_size: u64,
    /// Rotated files kept (`FILE.1` … `FILE.N`).
    pub rotate_keep: usize,
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self {
            format: OutputFormatSetting::Auto,
            file: None,
            rotate_size: 100 << 20,
            rotate_keep: 5,
        }
    }
}

/// `capture.*`: kernel capture sizes and timings (becomes [`CaptureOptions`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaptureConfig {
    #[serde(with = "types::size")]
    pub ring_buffer_size: u64,
    pub max_connections: u32,
    #[serde(with = "types::size")]
    pub wakeup_bytes: u64,
    #[serde(with = "humantime_serde")]
    pub drain_interval: Duration,
    pub btf_path: Option<PathBuf>,
    pub disabled_probes: Vec<String>,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        let d = CaptureOptions::default();
        Self {
            ring_buffer_size: u64::from(d.ring_buffer_bytes),
            max_connections: d.max_connections,
            wakeup_bytes: d.wakeup_bytes,
            drain_interval: d.drain_interval,
            btf_path: d.btf_path,
            disabled_probes: d.disabled_probes,
        }
    }
}

/// `node.*`: the node model (becomes [`NodeOptions`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    pub host_root: PathBuf,
    pub max_processes: usize,
    pub max_cgroups: usize,
}

impl Default for NodeConfig {
    fn default() -> Self {
        let d = NodeOptions::default();
        Self {
            host_root: d.host.root().to_path_buf(),
            max_processes: d.max_processes,
            max_cgroups: d.max_cgroups,
        }
    }
}

pub use crate::kube::KubernetesConfig;

/// `metrics.*`: the Prometheus endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    pub max_series: usize,
    /// Remote addresses kept as labels; others are aggregated.
    pub remote_ip_allowlist: Vec<Cidr>,
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 9464)),
            max_series: 10_000,
            remote_ip_allowlist: Vec::new(),
            header_timeout: crate::http::server::DEFAULT_HEADER_TIMEOUT,
        }
    }
}

/// `api.*`: the status API and HTTP event stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 9465)),
            header_timeout: crate::http::server::DEFAULT_HEADER_TIMEOUT,
        }
    }
}

/// `events.*`: event stream fan-out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    pub max_subscribers: usize,
    /// Batches (≤ 128 KiB) queued per subscriber before it is disconnected (counted).
    pub subscriber_buffer: usize,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            max_subscribers: crate::export::fanout::DEFAULT_MAX_SUBSCRIBERS,
            subscriber_buffer: crate::export::fanout::DEFAULT_QUEUE,
        }
    }
}

/// Which file to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigFile {
    pub path: PathBuf,
    /// Given by `--config` / `SONDE_CONFIG`: it must exist. The default path may be missing.
    pub explicit: bool,
}

impl ConfigFile {
    /// `--config` / `SONDE_CONFIG` if given, else [`DEFAULT_PATH`].
    pub fn new(given: Option<PathBuf>) -> Self {
        match given {
            Some(path) => Self {
                path,
                explicit: true,
            },
            None => Self {
                path: PathBuf::from(DEFAULT_PATH),
                explicit: false,
            },
        }
    }
}

impl Config {
    /// Loads the configuration: `file` (if it exists or was given explicitly), the process
    /// environment, then `overrides`.
    pub fn load(file: &ConfigFile, overrides: &Overrides) -> Result<Loaded, ConfigError> {
        Self::load_with_env(file, &|name| std::env::var_os(name), overrides)
    }

    /// [`Config::load`] with the environment given (tests).
    pub fn load_with_env(
        file: &ConfigFile,
        env: &dyn Fn(&str) -> Option<OsString>,
        overrides: &Overrides,
    ) -> Result<Loaded, ConfigError> {
        let text = match std::fs::read(&file.path) {
            Ok(bytes) => Some(String::from_utf8(bytes).map_err(|e| ConfigError::Read {
                path: file.path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !file.explicit => None,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ConfigError::NotFound {
                    path: file.path.clone(),
                });
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: file.path.clone(),
                    source,
                });
            }
        };
        let file = text.as_deref().map(|t| (file.path.as_path(), t));
        load::merge(file, env, overrides)
    }

    /// Checks what types alone cannot; the error names the key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        crate::logging::check_level(&self.log.level).map_err(|e| ("log.level", e))?;
        schema::ring_buffer_size(&types::format_size(self.capture.ring_buffer_size))
            .map_err(|e| ("capture.ring_buffer_size", e))?;
        let programs = || {
            let mut names: Vec<&str> = crate::capture::probes::PROBES
                .iter()
                .map(|p| p.program)
                .collect();
            names.dedup();
            names
        };
        if let Some(unknown) = self
            .capture
            .disabled_probes
            .iter()
            .find(|p| !programs().contains(&p.as_str()))
        {
            return Err((
                "capture.disabled_probes",
                format!(
                    "no program is named {unknown:?} (programs: {})",
                    programs().join(", ")
                ),
            ));
        }
        if self.capture.max_connections == 0 {
            return Err(("capture.max_connections", "0 tracks nothing".into()));
        }
        if self.capture.drain_interval.is_zero() {
            return Err((
                "capture.drain_interval",
                "0 would drain in a busy loop".into(),
            ));
        }
        if self.node.max_processes == 0 || self.node.max_cgroups == 0 {
            let key = if self.node.max_processes == 0 {
                "node.max_processes"
            } else {
                "node.max_cgroups"
            };
            return Err((key, "0 leaves no room for anything".into()));
        }
        if self.output.file.is_some() && self.output.rotate_size > 0 && self.output.rotate_keep == 0
        {
            return Err(("output.rotate_keep", "0: rotation needs at least 1".into()));
        }
        Ok(())
    }
}

/// `SONDE_*` variables among `names` that are not configuration keys (likely misspelt), for a
/// warning. The build and test tools' own variables are not counted.
pub fn unknown_env_vars(names: impl Iterator<Item = OsString>) -> Vec<String> {
    const OTHERS: &[&str] = &[CONFIG_ENV, "SONDE_BIN", "SONDE_TOOLS_DIR"];
    names
        .filter_map(|n| n.into_string().ok())
        .filter(|n| n.starts_with("SONDE_") && !OTHERS.contains(&n.as_str()))
        .filter(|n| {
            !schema::KEYS
                .iter()
                .any(|k| k.env() == *n || k.env_alias == Some(n.as_str()))
        })
        .collect()
}

#[cfg(test)]
mod tests;
