//! `--output-file`: NDJSON to a file with size-based rotation, written by the output thread.
//!
//! When writing the next line would take the file past `max_bytes`, the file is rotated first:
//! `PATH.N` is removed, `PATH.i` becomes `PATH.i+1`, `PATH` becomes `PATH.1`, and a new `PATH` is
//! started. Rotation happens only between lines, so a line is never split across files and none
//! is lost; a single line longer than `max_bytes` gets a file of its own.
//!
//! The writer relies on what the pipeline hands it: whole lines (each batch ends with `\n`).
//! Bytes without a newline are written as they come (the rest of the line follows).

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RotateOptions {
    pub path: PathBuf,
    /// Rotate before the file would exceed this many bytes (at least 1).
    pub max_bytes: u64,
    /// Rotated files kept: `PATH.1` (newest) … `PATH.keep` (oldest). 0 keeps none.
    pub keep: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error(
        "cannot open the output file {path}: {source}. Fix: create its directory, or give \
         --output-file a writable path"
    )]
    Open { path: PathBuf, source: io::Error },
    #[error(
        "cannot rotate the output file {from} to {to}: {source}. Fix: make the directory \
         writable and leave the rotated files to Sonde (--output-rotate-keep)"
    )]
    Rename {
        from: PathBuf,
        to: PathBuf,
        source: io::Error,
    },
    #[error("cannot remove the oldest rotated output file {path}: {source}. Fix: make it writable")]
    Remove { path: PathBuf, source: io::Error },
}

impl From<RotateError> for io::Error {
    fn from(err: RotateError) -> Self {
        io::Error::other(err)
    }
}

/// An append-only file that rotates by size at line boundaries.
pub struct RotatingFile {
    opts: RotateOptions,
    file: File,
    /// Bytes in the current file.
    size: u64,
    /// Whether the last byte written ended a line (rotation is allowed only then).
    at_line_start: bool,
    /// Rotations done.
    pub rotations: u64,
}

fn open_append(path: &Path) -> Result<(File, u64), RotateError> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| RotateError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    let size = file
        .metadata()
        .map_err(|source| RotateError::Open {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    Ok((file, size))
}

/// `PATH.n`
pub fn rotated_path(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

impl RotatingFile {
    /// Opens (appending to) `opts.path`.
    pub fn open(mut opts: RotateOptions) -> Result<Self, RotateError> {
        opts.max_bytes = opts.max_bytes.max(1);
        let (file, size) = open_append(&opts.path)?;
        Ok(Self {
            opts,
            file,
            size,
            at_line_start: true,
            rotations: 0,
        })
    }

    /// Shifts the rotated files by one and starts a new, empty `PATH`.
    fn rotate(&mut self) -> Result<(), RotateError> {
        let path = &self.opts.path;
        if self.opts.keep == 0 {
            std::fs::remove_file(path).map_err(|source| RotateError::Remove {
                path: path.clone(),
                source,
            })?;
        } else {
            let oldest = rotated_path(path, self.opts.keep);
            match std::fs::remove_file(&oldest) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(RotateError::Remove {
                        path: oldest,
                        source,
                    });
                }
            }
            for n in (1..self.opts.keep).rev() {
                let from = rotated_path(path, n);
                let to = rotated_path(path, n + 1);
                match std::fs::rename(&from, &to) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(source) => return Err(RotateError::Rename { from, to, source }),
                }
            }
            let to = rotated_path(path, 1);
            std::fs::rename(path, &to).map_err(|source| RotateError::Rename {
                from: path.clone(),
                to,
                source,
            })?;
        }
        let (file, size) = open_append(path)?;
        self.file = file;
        self.size = size;
        self.rotations += 1;
        tracing::debug!(path = %path.display(), rotations = self.rotations, "output file rotated");
        Ok(())
    }

    /// How many bytes of `buf` to write now without splitting a line or passing the limit
    /// (after a rotation if needed). Never 0 for a non-empty `buf`.
    fn next_chunk(&mut self, buf: &[u8]) -> Result<usize, RotateError> {
        let room = self.opts.max_bytes.saturating_sub(self.size);
        if !self.at_line_start || buf.len() as u64 <= room {
            // Finishing a line, or everything fits.
            return Ok(match (self.at_line_start, memchr_newline(buf)) {
                (false, Some(end)) => end + 1,
                _ => buf.len(),
            });
        }
        // Whole lines that fit in the room left.
        let fit = &buf[..(room as usize).min(buf.len())];
        if let Some(last) = fit.iter().rposition(|&b| b == b'\n') {
            return Ok(last + 1);
        }
        // Not even the next line fits: rotate, unless the file is empty already (a line longer
        // than the limit gets a file of its own).
        if self.size > 0 {
            self.rotate()?;
            return self.next_chunk(buf);
        }
        Ok(memchr_newline(buf).map_or(buf.len(), |end| end + 1))
    }
}

fn memchr_newline(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n')
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = self.next_chunk(buf)?;
        let written = self.file.write(&buf[..n])?;
        self.size += written as u64;
        if written > 0 {
            self.at_line_start = buf[written - 1] == b'\n';
        }
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(n: usize, from: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for i in from..from + n {
            out.extend_from_slice(format!("{{\"n\":{i:05}}}\n").as_bytes());
        }
        out
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_default()
    }

    #[test]
    fn rotates_at_line_boundaries_and_keeps_the_newest_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.ndjson");
        let mut f = RotatingFile::open(RotateOptions {
            path: path.clone(),
            max_bytes: 100,
            keep: 3,
        })
        .unwrap();
        // 12-byte lines, written in batches of 7: never split, at most 8 per 100-byte file.
        for batch in 0..10 {
            f.write_all(&lines(7, batch * 7)).unwrap();
        }
        f.flush().unwrap();
        let mut all = String::new();
        for n in (1..=3).rev() {
            let text = read(&rotated_path(&path, n));
            assert!(text.len() <= 100 && text.ends_with('\n'), "{n}: {text:?}");
            all.push_str(&text);
        }
        all.push_str(&read(&path));
        assert!(read(&path).len() <= 100);
        assert!(!rotated_path(&path, 4).exists());
        // The newest lines, in order, each whole: the oldest files were removed.
        let got: Vec<u32> = all
            .lines()
            .map(|l| l[5..10].parse().expect("a whole line"))
            .collect();
        let last = *got.last().unwrap();
        assert_eq!(last, 69);
        let expected: Vec<u32> = (last + 1 - got.len() as u32..=last).collect();
        assert_eq!(got, expected);
        // 4 files of 8 lines each (the current one possibly partly filled).
        assert!(got.len() > 3 * 8, "{}", got.len());
        assert_eq!(f.rotations, 70 / 8);
    }

    #[test]
    fn a_line_longer_than_the_limit_gets_its_own_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let mut f = RotatingFile::open(RotateOptions {
            path: path.clone(),
            max_bytes: 10,
            keep: 2,
        })
        .unwrap();
        f.write_all(b"ab\n").unwrap();
        f.write_all(b"0123456789abcdef\ncd\n").unwrap();
        assert_eq!(read(&rotated_path(&path, 2)), "ab\n");
        assert_eq!(read(&rotated_path(&path, 1)), "0123456789abcdef\n");
        assert_eq!(read(&path), "cd\n");
    }

    #[test]
    fn appends_to_an_existing_file_and_counts_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        std::fs::write(&path, b"old line\n").unwrap();
        let mut f = RotatingFile::open(RotateOptions {
            path: path.clone(),
            max_bytes: 12,
            keep: 1,
        })
        .unwrap();
        f.write_all(b"new\n").unwrap();
        assert_eq!(read(&rotated_path(&path, 1)), "old line\n");
        assert_eq!(read(&path), "new\n");
    }

    #[test]
    fn keep_zero_keeps_no_rotated_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let mut f = RotatingFile::open(RotateOptions {
            path: path.clone(),
            max_bytes: 4,
            keep: 0,
        })
        .unwrap();
        f.write_all(b"abc\ndef\n").unwrap();
        assert_eq!(read(&path), "def\n");
        assert!(!rotated_path(&path, 1).exists());
    }

    #[test]
    fn an_unwritable_path_names_the_fix() {
        let err = RotatingFile::open(RotateOptions {
            path: PathBuf::from("/nonexistent-dir/out"),
            max_bytes: 10,
            keep: 1,
        })
        .err()
        .expect("error");
        let text = err.to_string();
        assert!(
            text.contains("/nonexistent-dir/out") && text.contains("Fix:"),
            "{text}"
        );
    }
}
