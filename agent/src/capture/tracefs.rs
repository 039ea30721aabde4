//! tracefs: where it is mounted, whether a tracepoint exists, and the layout of its record
//! (`events/<category>/<name>/format`), so the programs read fields at the offsets of the
//! running kernel rather than compiled-in ones.

use std::{
    collections::HashMap,
    io,
    path::{Path, PathBuf},
};

/// Mount points to look at, preferred first.
const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error(
        "tracefs is not mounted and mounting it at /sys/kernel/tracing failed ({source}): \
         classic tracepoints cannot be attached. Fix: `mount -t tracefs nodev /sys/kernel/tracing` \
         (in a container: mount the host's /sys/kernel/tracing, or run privileged)"
    )]
    NotMounted { source: io::Error },
    #[error("cannot read tracepoint format {path}: {source}")]
    Format { path: PathBuf, source: io::Error },
}

/// A mounted tracefs.
#[derive(Clone, Debug)]
pub struct Tracefs {
    root: PathBuf,
}

/// One field of a tracepoint record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub offset: u32,
    pub size: u32,
}

/// The fields of a tracepoint record, by name, and the record's size.
#[derive(Clone, Debug, Default)]
pub struct Format {
    pub fields: HashMap<String, Field>,
}

impl Format {
    /// Bytes from the start of the record to the end of its last field.
    pub fn size(&self) -> u32 {
        self.fields
            .values()
            .map(|f| f.offset + f.size)
            .max()
            .unwrap_or(0)
    }

    pub fn field(&self, name: &str) -> Option<Field> {
        self.fields.get(name).copied()
    }
}

impl Tracefs {
    /// Finds tracefs; if it is not mounted, mounts it at /sys/kernel/tracing (we run as root).
    pub fn find_or_mount() -> Result<Self, TracefsError> {
        if let Some(found) = Self::find() {
            return Ok(found);
        }
        let target = Path::new(CANDIDATES[0]);
        nix::mount::mount(
            Some("nodev"),
            target,
            Some("tracefs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|errno| TracefsError::NotMounted {
            source: io::Error::from(errno),
        })?;
        tracing::info!(path = %target.display(), "mounted tracefs");
        Self::find().ok_or_else(|| TracefsError::NotMounted {
            source: io::Error::other("mounted, but events/ is still missing"),
        })
    }

    /// A mounted tracefs, if any.
    pub fn find() -> Option<Self> {
        CANDIDATES
            .iter()
            .map(PathBuf::from)
            .find(|root| root.join("events").is_dir())
            .map(|root| Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn event_dir(&self, category: &str, name: &str) -> PathBuf {
        self.root.join("events").join(category).join(name)
    }

    /// Whether the kernel has this tracepoint.
    pub fn has_event(&self, category: &str, name: &str) -> bool {
        self.event_dir(category, name).join("format").is_file()
    }

    /// The record layout of a tracepoint.
    pub fn format(&self, category: &str, name: &str) -> Result<Format, TracefsError> {
        let path = self.event_dir(category, name).join("format");
        let text = std::fs::read_to_string(&path)
            .map_err(|source| TracefsError::Format { path, source })?;
        Ok(parse_format(&text))
    }
}

/// Parses the `field:` lines of a tracefs `format` file, e.g.
/// `field:__u8 saddr[4];<TAB>offset:32;<TAB>size:4;<TAB>signed:0;`.
pub fn parse_format(text: &str) -> Format {
    let mut fields = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("field:") else {
            continue;
        };
        let mut decl = None;
        let mut offset = None;
        let mut size = None;
        for part in rest.split(';') {
            let part = part.trim();
            if let Some(v) = part.strip_prefix("offset:") {
                offset = v.trim().parse::<u32>().ok();
            } else if let Some(v) = part.strip_prefix("size:") {
                size = v.trim().parse::<u32>().ok();
            } else if decl.is_none() && !part.is_empty() && !part.contains(':') {
                decl = Some(part);
            }
        }
        let (Some(decl), Some(offset), Some(size)) = (decl, offset, size) else {
            continue;
        };
        // The name is the last word of the declaration, without an array suffix.
        let Some(last) = decl.split_whitespace().last() else {
            continue;
        };
        let name = last
            .split('[')
            .next()
            .unwrap_or(last)
            .trim_start_matches('*');
        if !name.is_empty() {
            fields.insert(name.to_string(), Field { offset, size });
        }
    }
    Format { fields }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INET: &str = "name: inet_sock_set_state
ID: 1466
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:int oldstate;\toffset:16;\tsize:4;\tsigned:1;
\tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;
\tfield:__data_loc char[] filename;\toffset:72;\tsize:4;\tsigned:0;

print fmt: \"family=%s\", REC->family
";

    #[test]
    fn parses_names_offsets_and_sizes() {
        let f = parse_format(INET);
        assert_eq!(f.field("skaddr"), Some(Field { offset: 8, size: 8 }));
        assert_eq!(
            f.field("oldstate"),
            Some(Field {
                offset: 16,
                size: 4
            })
        );
        assert_eq!(
            f.field("saddr_v6"),
            Some(Field {
                offset: 40,
                size: 16
            })
        );
        assert_eq!(
            f.field("filename"),
            Some(Field {
                offset: 72,
                size: 4
            })
        );
        assert_eq!(f.field("common_type"), Some(Field { offset: 0, size: 2 }));
        assert_eq!(f.size(), 76);
    }

    #[test]
    fn ignores_garbage() {
        let f = parse_format("field:\nfield:int x;\toffset:zz;\tsize:4;\nrandom\n");
        assert!(f.fields.is_empty());
    }
}
