//! The event stream to a file (`output.file`), rotated by size: `FILE` is current, `FILE.1`
//! the newest rotated one, up to `FILE.<keep>`; older ones are deleted.
//!
//! Rotation happens between writes, and the output thread writes whole batches of whole lines,
//! so no line is split across files.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
};

pub struct RotatingFile {
    path: PathBuf,
    file: File,
    written: u64,
    /// Rotate before a write that would pass this size; 0: never.
    max_bytes: u64,
    keep: usize,
}

impl RotatingFile {
    /// Opens (appends to) `path`.
    pub fn open(path: &Path, max_bytes: u64, keep: usize) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let written = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            file,
            written,
            max_bytes,
            keep,
        })
    }

    fn rotated(&self, n: usize) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        let _ = std::fs::remove_file(self.rotated(self.keep));
        for n in (1..self.keep).rev() {
            let from = self.rotated(n);
            if from.exists() {
                std::fs::rename(&from, self.rotated(n + 1))?;
            }
        }
        if self.keep > 0 {
            std::fs::rename(&self.path, self.rotated(1))?;
        } else {
            std::fs::remove_file(&self.path)?;
        }
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.written = 0;
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.max_bytes > 0
            && self.written > 0
            && self.written + buf.len() as u64 > self.max_bytes
        {
            self.rotate()?;
        }
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size_and_keeps_n() {
        let dir = std::env::temp_dir().join(format!("sonde-rotate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("events.ndjson");
        let mut f = RotatingFile::open(&path, 10, 2).expect("open");
        for line in ["aaaaaa\n", "bbbbbb\n", "cccccc\n", "dddddd\n"] {
            f.write_all(line.as_bytes()).expect("write");
        }
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        assert_eq!(read(path.clone()), "dddddd\n");
        assert_eq!(read(dir.join("events.ndjson.1")), "cccccc\n");
        assert_eq!(read(dir.join("events.ndjson.2")), "bbbbbb\n");
        assert!(!dir.join("events.ndjson.3").exists());
        // Re-opening appends and counts what is there.
        drop(f);
        let mut f = RotatingFile::open(&path, 10, 2).expect("reopen");
        f.write_all(b"eeeeee\n").expect("write");
        assert_eq!(read(path.clone()), "eeeeee\n");
        assert_eq!(read(dir.join("events.ndjson.1")), "dddddd\n");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
