//! Logs through `tracing` to stderr, as text or JSON. `log` records (from aya, and the eBPF
//! programs' aya-log output) are bridged into it.

use tracing_subscriber::{EnvFilter, fmt};

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// `log.*`: the agent's own logs on stderr.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
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

/// Installs the global subscriber. `level` is a tracing filter (`info`, `debug`,
/// `sonde=debug,aya=info`, ...); aya's own chatter stays at warn unless asked for.
pub fn init(level: &str, format: LogFormat) -> Result<(), String> {
    let filter = filter(level)?;
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|e| format!("cannot install the logger: {e}"))
}

fn filter(level: &str) -> Result<EnvFilter, String> {
    let directives = if level.contains("aya") {
        level.to_string()
    } else {
        format!("{level},aya=warn,aya_obj=warn")
    };
    EnvFilter::try_new(&directives).map_err(|e| format!("invalid log level {level:?}: {e}"))
}

/// Checks a log level / tracing filter without installing anything.
pub fn check_level(level: &str) -> Result<(), String> {
    filter(level).map(drop)
}
