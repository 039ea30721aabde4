//! Loading: embedded defaults < file < env < flags, merged as a JSON value tree with the
//! provenance of every key, then deserialized into the typed [`Config`] and validated.

use std::{ffi::OsString, path::Path};

use serde_json::Value;

use super::{
    Config,
    error::{ConfigError, Source},
    schema::{self, KEYS, Key},
    yaml::{self, Node},
};

/// Values given on the command line, applied last (in the order given).
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    entries: Vec<Override>,
}

#[derive(Clone, Debug)]
enum Override {
    /// A dedicated flag, already parsed by the command line.
    Flag {
        path: &'static str,
        flag: &'static str,
        value: Value,
    },
    /// `--set KEY=VALUE`, parsed here.
    Set(String),
}

impl Overrides {
    /// A dedicated flag's value for the key `path` (`value` in the tree's JSON form: numbers
    /// for integers and byte counts, strings for durations, paths and words).
    pub fn flag(&mut self, path: &'static str, flag: &'static str, value: impl Into<Value>) {
        self.entries.push(Override::Flag {
            path,
            flag,
            value: value.into(),
        });
    }

    /// `--set KEY=VALUE`.
    pub fn set(&mut self, arg: impl Into<String>) {
        self.entries.push(Override::Set(arg.into()));
    }
}

/// The effective configuration and where each key's value came from.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub config: Config,
    /// The file read, if any.
    pub file: Option<std::path::PathBuf>,
    /// One per [`KEYS`] entry, same order.
    pub sources: Vec<Source>,
}

impl Loaded {
    pub fn source(&self, path: &str) -> Option<&Source> {
        KEYS.iter()
            .position(|k| k.path == path)
            .and_then(|i| self.sources.get(i))
    }
}

/// Merges the layers. `file` is the file's path and text; `env` reads an environment variable.
pub fn merge(
    file: Option<(&Path, &str)>,
    env: &dyn Fn(&str) -> Option<OsString>,
    overrides: &Overrides,
) -> Result<Loaded, ConfigError> {
    let mut tree = serde_json::to_value(Config::default()).unwrap_or(Value::Null);
    let mut sources = vec![Source::Default; KEYS.len()];
    let mut set = |tree: &mut Value, key: &'static Key, value: Value, source: Source| {
        set_path(tree, key.path, value);
        if let Some(i) = KEYS.iter().position(|k| k.path == key.path) {
            sources[i] = source;
        }
    };

    if let Some((path, text)) = file {
        let root = yaml::parse(text).map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            line: e.pos.line,
            col: e.pos.col,
            message: e.message,
        })?;
        let mut leaves = Vec::new();
        if let Some(root) = &root {
            walk(path, root, "", &mut leaves)?;
        }
        for (key, node) in leaves {
            let pos = node.pos();
            let source = Source::File {
                path: path.to_path_buf(),
                line: pos.line,
                col: pos.col,
            };
            set(&mut tree, key, node.to_value(), source);
        }
    }

    for key in KEYS {
        let names = key.env_alias.into_iter().map(String::from);
        for var in names.chain(std::iter::once(key.env())) {
            let Some(raw) = env(&var) else { continue };
            let text = raw
                .into_string()
                .map_err(|_| ConfigError::NotUnicode { var: var.clone() })?;
            let value = key
                .parse_text(&text)
                .map_err(|reason| ConfigError::Invalid {
                    at: Source::Env(var.clone()).location(),
                    key: key.path.into(),
                    reason,
                    expected: expected(key),
                })?;
            set(&mut tree, key, value, Source::Env(var));
        }
    }

    for o in &overrides.entries {
        match o {
            Override::Flag { path, flag, value } => {
                let Some(key) = schema::find(path) else {
                    continue;
                };
                set(&mut tree, key, value.clone(), Source::Flag((*flag).into()));
            }
            Override::Set(arg) => {
                let (name, text) = arg
                    .split_once('=')
                    .ok_or_else(|| ConfigError::BadSet { arg: arg.clone() })?;
                let name = name.trim();
                let at = Source::Flag(format!("--set {name}"));
                let key = schema::find(name).ok_or_else(|| ConfigError::UnknownKey {
                    at: at.location(),
                    key: name.into(),
                    allowed: KEYS.iter().map(|k| k.path).collect::<Vec<_>>().join(", "),
                })?;
                let value = key
                    .parse_text(text)
                    .map_err(|reason| ConfigError::Invalid {
                        at: at.location(),
                        key: key.path.into(),
                        reason,
                        expected: expected(key),
                    })?;
                set(&mut tree, key, value, at);
            }
        }
    }

    let invalid = |path: &str, reason: String, sources: &[Source]| {
        let (key, source) = KEYS
            .iter()
            .zip(sources)
            .filter(|(k, _)| path == k.path || path.starts_with(&format!("{}.", k.path)))
            .max_by_key(|(k, _)| k.path.len())
            .map(|(k, s)| (Some(k), s.clone()))
            .unwrap_or((None, Source::Default));
        ConfigError::Invalid {
            at: source.location(),
            key: key.map_or(path, |k| k.path).to_string(),
            reason,
            expected: key.map_or_else(|| "a valid value".into(), expected),
        }
    };
    let tree_copy = tree.clone();
    let config: Config = serde_path_to_error::deserialize(tree).map_err(|e| {
        let path: Vec<String> = e
            .path()
            .iter()
            .map_while(|seg| match seg {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                _ => None,
            })
            .collect();
        let path = path.join(".");
        let message = e.inner().to_string();
        // Serde's messages do not always show the value ("invalid socket address syntax").
        let given = lookup(&tree_copy, &path);
        let reason = match given {
            Some(v) if !v.is_array() && !message.contains(&v.to_string()) => {
                format!("{v}: {message}")
            }
            _ => message,
        };
        invalid(&path, reason, &sources)
    })?;
    if let Err((path, reason)) = config.validate() {
        return Err(invalid(path, reason, &sources));
    }
    Ok(Loaded {
        config,
        file: file.map(|(p, _)| p.to_path_buf()),
        sources,
    })
}

fn expected(key: &Key) -> String {
    let kind = key.kind.expected();
    if key.nullable {
        format!("{kind}, or null for none")
    } else {
        kind
    }
}

/// Collects the file's keys, rejecting unknown ones at their position.
fn walk<'n>(
    file: &Path,
    node: &'n Node,
    prefix: &str,
    leaves: &mut Vec<(&'static Key, &'n Node)>,
) -> Result<(), ConfigError> {
    let at = |pos: yaml::Pos| format!("{}:{}:{}", file.display(), pos.line, pos.col);
    let allowed = || schema::children(prefix).join(", ");
    let Node::Map(entries, _) = node else {
        return Err(if prefix.is_empty() {
            ConfigError::Invalid {
                at: at(node.pos()),
                key: "(top level)".into(),
                reason: "the file is not a mapping of keys".into(),
                expected: format!("sections and keys: {}", allowed()),
            }
        } else {
            ConfigError::NotASection {
                at: at(node.pos()),
                key: prefix.into(),
                allowed: allowed(),
            }
        });
    };
    for (name, key_pos, value) in entries {
        let full = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        if let Some(key) = schema::find(&full) {
            leaves.push((key, value));
        } else if schema::is_section(&full) {
            // `metrics:` with nothing under it is an empty section.
            if !matches!(value, Node::Scalar(Value::Null, _)) {
                walk(file, value, &full, leaves)?;
            }
        } else {
            return Err(ConfigError::UnknownKey {
                at: at(*key_pos),
                key: full,
                allowed: allowed(),
            });
        }
    }
    Ok(())
}

fn set_path(tree: &mut Value, path: &str, value: Value) {
    let mut node = tree;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        if !node.is_object() {
            *node = Value::Object(Default::default());
        }
        let Value::Object(map) = node else { return };
        if parts.peek().is_none() {
            map.insert(part.to_string(), value);
            return;
        }
        node = map
            .entry(part)
            .or_insert_with(|| Value::Object(Default::default()));
    }
}

fn lookup<'v>(tree: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(tree, |v, part| v.get(part))
}
