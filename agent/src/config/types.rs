//! The output format choice of the configuration; the value types it shares with the layers
//! (sizes, CIDRs) live in [`crate::units`].

use serde::{Deserialize, Serialize};

pub use crate::units::{Cidr, format_size, size};

/// `output.format`: `auto` is text on a terminal and NDJSON otherwise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormatSetting {
    #[default]
    Auto,
    Text,
    Json,
}

impl OutputFormatSetting {
    pub fn resolve(self, stdout_is_terminal: bool) -> crate::export::OutputFormat {
        use crate::export::OutputFormat;
        match self {
            Self::Text => OutputFormat::Text,
            Self::Json => OutputFormat::Json,
            Self::Auto if stdout_is_terminal => OutputFormat::Text,
            Self::Auto => OutputFormat::Json,
        }
    }
}
