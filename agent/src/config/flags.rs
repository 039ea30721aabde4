//! The command-line flags of the configuration, generated from [`schema::KEYS`]: every key
//! that names a flag gets it, with the key's documentation as its help and its kind's parser
//! (a bad value is a usage error, exit 2). A key, its flag, its variable and its text are
//! written once, in the schema.
//!
//! `log.*` flags are global (they go before or after the subcommand); the others belong to
//! `sonde run` and `sonde config show` (where `--output` is the show format, so the event
//! format is `--event-output`).

use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};
use serde_json::Value;

use super::{
    Overrides,
    schema::{KEYS, Key, Kind},
};

/// Which keys a flag set holds, and the flag each is given there.
trait Selection {
    const GLOBAL: bool;
    fn flag(key: &Key) -> Option<&'static str>;
}

/// Flags of the keys under `log.`: global.
pub enum GlobalKeys {}
/// Every other key's flag, for `sonde run`.
pub enum RunKeys {}
/// As [`RunKeys`], but `output.format` is `--event-output` (`config show --output` is taken).
pub enum ShowKeys {}

impl Selection for GlobalKeys {
    const GLOBAL: bool = true;
    fn flag(key: &Key) -> Option<&'static str> {
        key.flag.filter(|_| key.path.starts_with("log."))
    }
}

impl Selection for RunKeys {
    const GLOBAL: bool = false;
    fn flag(key: &Key) -> Option<&'static str> {
        key.flag.filter(|_| !key.path.starts_with("log."))
    }
}

impl Selection for ShowKeys {
    const GLOBAL: bool = false;
    fn flag(key: &Key) -> Option<&'static str> {
        match RunKeys::flag(key) {
            Some("--output") => Some("--event-output"),
            other => other,
        }
    }
}

/// The flags of one selection, and what was given: `KeyFlags::<RunKeys>` is flattened into a
/// clap command; [`KeyFlags::add_to`] adds what the user gave to the overrides.
pub struct KeyFlags<S> {
    given: Vec<(&'static Key, &'static str, Vec<Value>)>,
    _keys: std::marker::PhantomData<S>,
}

impl<S> std::fmt::Debug for KeyFlags<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.given.iter().map(|(k, flag, _)| (k.path, flag)))
            .finish()
    }
}

impl<S> KeyFlags<S> {
    /// Adds each given flag as the top layer: `off` on an address flag turns its section off.
    pub fn add_to(&self, o: &mut Overrides) {
        for (key, flag, values) in &self.given {
            match (key.off_key(), values.as_slice()) {
                (Some(enabled), [Value::String(v)]) if v.eq_ignore_ascii_case("off") => {
                    o.flag(enabled, flag, false)
                }
                (_, [one]) if !matches!(key.kind, Kind::Strings | Kind::Cidrs) => {
                    o.flag(key.path, flag, one.clone())
                }
                (_, many) => {
                    let items: Vec<Value> = many
                        .iter()
                        .flat_map(|v| match v {
                            Value::Array(items) => items.clone(),
                            other => vec![other.clone()],
                        })
                        .collect();
                    o.flag(key.path, flag, Value::Array(items))
                }
            }
        }
    }
}

fn arg(key: &'static Key, flag: &'static str, global: bool) -> Arg {
    let list = matches!(key.kind, Kind::Strings | Kind::Cidrs);
    let mut help = format!("{} [key {}, env {}]", key.doc, key.path, key.env());
    if list {
        help.push_str(" (repeatable, or comma-separated)");
    }
    Arg::new(key.path)
        .long(flag.trim_start_matches("--"))
        .value_name(key.value_name())
        .help(help)
        .global(global)
        .action(if list {
            ArgAction::Append
        } else {
            ArgAction::Set
        })
        .value_parser(clap::builder::ValueParser::new(move |text: &str| {
            if key.off_key().is_some() && text.trim().eq_ignore_ascii_case("off") {
                return Ok(Value::String("off".into()));
            }
            key.parse_flag(text)
        }))
}

impl<S: Selection> Args for KeyFlags<S> {
    fn augment_args(cmd: Command) -> Command {
        KEYS.iter().fold(cmd, |cmd, key| match S::flag(key) {
            Some(flag) => cmd.arg(arg(key, flag, S::GLOBAL)),
            None => cmd,
        })
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl<S: Selection> FromArgMatches for KeyFlags<S> {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut given = Vec::new();
        for key in KEYS {
            let Some(flag) = S::flag(key) else { continue };
            if let Ok(Some(values)) = m.try_get_many::<Value>(key.path) {
                given.push((key, flag, values.cloned().collect()));
            }
        }
        Ok(Self {
            given,
            _keys: std::marker::PhantomData,
        })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}
