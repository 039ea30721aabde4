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
//! Each section of [`Config`] is the type of the layer it configures, defined in that layer
//! with its defaults; this module only merges, checks and shows them.

pub mod error;
pub mod flags;
pub mod load;
pub mod schema;
pub mod show;
pub mod yaml;

use std::{ffi::OsString, path::PathBuf};

use serde::{Deserialize, Serialize};

pub use error::{ConfigError, Source};
pub use load::{Loaded, Overrides};

use crate::{
    api::ApiConfig,
    capture::CaptureConfig,
    export::{fanout::EventsConfig, metrics::MetricsConfig, output::OutputConfig},
    kube::{KubernetesConfig, kubelet::KubeletConfig},
    logging::LogConfig,
    node::NodeConfig,
};

/// The configuration file read when neither `--config` nor `SONDE_CONFIG` names one.
pub const DEFAULT_PATH: &str = "/etc/sonde/sonde.yaml";
/// Environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "SONDE_CONFIG";

/// The whole configuration: one section per layer, each section the layer's own type (its
/// defaults are the layer's). Every field is documented in `docs/configuration.md`.
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
    pub leader_election: crate::cluster::leader::LeaderElectionConfig,
    pub kube_events: crate::cluster::events::KubeEventsConfig,
    pub controlplane: crate::cluster::controlplane::ControlPlaneConfig,
    pub metrics: MetricsConfig,
    pub api: ApiConfig,
    pub events: EventsConfig,
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
        schema::ring_buffer_size(&crate::units::format_size(self.capture.ring_buffer_size))
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
        if self.api.enabled && !self.api.listen.ip().is_loopback() && self.api.token_file.is_none()
        {
            return Err((
                "api.listen",
                format!(
                    "{} is reachable beyond this host, and the API shows every process's \
                     arguments and connections: set api.token_file to a file holding a bearer \
                     token (a mounted Secret), or listen on 127.0.0.1",
                    self.api.listen
                ),
            ));
        }
        if self.kubelet.client_key_file.is_some() && self.kubelet.client_cert_file.is_none() {
            return Err((
                "kubelet.client_key_file",
                "set without kubelet.client_cert_file: set the certificate too (the key alone \
                 authenticates nothing)"
                    .into(),
            ));
        }
        self.leader_election.validate()?;
        self.kube_events.validate()?;
        self.controlplane.validate()?;
        match (&self.api.tls_cert_file, &self.api.tls_key_file) {
            (Some(_), None) => {
                return Err((
                    "api.tls_key_file",
                    "api.tls_cert_file is set but its key is not: set both, or neither".into(),
                ));
            }
            (None, Some(_)) => {
                return Err((
                    "api.tls_cert_file",
                    "api.tls_key_file is set but the certificate is not: set both, or neither"
                        .into(),
                ));
            }
            _ => {}
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
    const OTHERS: &[&str] = &[
        CONFIG_ENV,
        "SONDE_BIN",
        "SONDE_TOOLS_DIR",
        "SONDE_PYTHONPATH",
        "SONDE_IMAGE",
    ];
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
