//! Configuration errors: each names where the bad input is (file:line:column, environment
//! variable or flag), what was expected, and how to fix it. All exit with 78 (EX_CONFIG).

use std::{fmt, path::PathBuf};

/// Where a value came from: the provenance `sonde config show` prints for every key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The embedded default.
    Default,
    /// The configuration file, at the value's position.
    File {
        path: PathBuf,
        line: usize,
        col: usize,
    },
    /// An environment variable.
    Env(String),
    /// A `sonde run` flag (`--max-connections`, or `--set KEY=VALUE`).
    Flag(String),
}

impl Source {
    /// The position for an error message: `FILE:LINE:COL`, `environment variable X`,
    /// `flag --x`.
    pub fn location(&self) -> String {
        match self {
            Source::Default => "built-in default".into(),
            Source::File { path, line, col } => format!("{}:{line}:{col}", path.display()),
            Source::Env(var) => format!("environment variable {var}"),
            Source::Flag(flag) => format!("flag {flag}"),
        }
    }
}

/// The provenance as `sonde config show` prints it: `default`, `file PATH:LINE`,
/// `env SONDE_X`, `flag --x`.
impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File { path, line, .. } => write!(f, "file {}:{line}", path.display()),
            Source::Env(var) => write!(f, "env {var}"),
            Source::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "{}: configuration file not found (given by --config or SONDE_CONFIG). Fix: give the \
         path of an existing file, or leave --config and SONDE_CONFIG unset to use {} if it \
         exists and the built-in defaults otherwise",
        path.display(), super::DEFAULT_PATH
    )]
    NotFound { path: PathBuf },
    #[error(
        "{}: cannot read the configuration file: {source}. Fix: make it readable by the agent, \
         or point --config / SONDE_CONFIG elsewhere",
        path.display()
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{}:{line}:{col}: invalid YAML: {message}. Fix: correct the syntax there (`key: value`, \
         nested keys indented with spaces)",
        path.display()
    )]
    Syntax {
        path: PathBuf,
        line: usize,
        col: usize,
        message: String,
    },
    #[error("{at}: unknown key \"{key}\" (allowed: {allowed})")]
    UnknownKey {
        at: String,
        key: String,
        allowed: String,
    },
    #[error("{at}: \"{key}\" is a section: give a mapping of its keys (allowed: {allowed})")]
    NotASection {
        at: String,
        key: String,
        allowed: String,
    },
    #[error("{at}: invalid value for \"{key}\": {reason} (expected {expected})")]
    Invalid {
        at: String,
        key: String,
        reason: String,
        expected: String,
    },
    #[error("environment variable {var}: the value is not valid UTF-8")]
    NotUnicode { var: String },
    #[error("flag --set {arg:?}: expected KEY=VALUE, e.g. --set metrics.listen=0.0.0.0:9464")]
    BadSet { arg: String },
}

impl ConfigError {
    /// EX_CONFIG from sysexits.h.
    pub const EXIT_CODE: u8 = 78;

    pub fn exit_code(&self) -> u8 {
        Self::EXIT_CODE
    }
}
