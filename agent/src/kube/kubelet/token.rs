//! The bearer token, read from its file and re-read when the file changes.
//!
//! Projected service-account tokens rotate (hourly by default): the kubelet swaps the file's
//! `..data` symlink. Before each request the file is stat'ed (following the symlink) and its
//! identity (device, inode, size, mtime, ctime) compared with the one the cached token came
//! from: one `stat`, no read, while the token is unchanged. The token itself lives only in a
//! header value marked sensitive, and nothing here formats it.

use std::{
    fmt,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use http::HeaderValue;

use super::error::KubeletError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileIdentity {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileIdentity {
    fn of(meta: &std::fs::Metadata) -> Self {
        FileIdentity {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

pub(super) struct TokenFile {
    path: PathBuf,
    cached: Option<(FileIdentity, HeaderValue)>,
}

impl fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenFile")
            .field("path", &self.path)
            .field("loaded", &self.cached.is_some())
            .finish()
    }
}

impl TokenFile {
    pub(super) fn new(path: PathBuf) -> Self {
        TokenFile { path, cached: None }
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// `Authorization: Bearer <token>`, from the file as it is now.
    pub(super) fn header(&mut self) -> Result<HeaderValue, KubeletError> {
        let io_err = |source| KubeletError::TokenFile {
            path: self.path.clone(),
            source,
        };
        let identity = FileIdentity::of(&std::fs::metadata(&self.path).map_err(io_err)?);
        if let Some((cached, value)) = &self.cached
            && *cached == identity
        {
            return Ok(value.clone());
        }
        let text = std::fs::read(&self.path).map_err(io_err)?;
        let unusable = |reason| KubeletError::TokenUnusable {
            path: self.path.clone(),
            reason,
        };
        let token = text.trim_ascii();
        if token.is_empty() {
            return Err(unusable("is empty"));
        }
        let mut header = Vec::with_capacity(7 + token.len());
        header.extend_from_slice(b"Bearer ");
        header.extend_from_slice(token);
        let mut value = HeaderValue::from_bytes(&header)
            .map_err(|_| unusable("holds characters an HTTP header cannot carry"))?;
        value.set_sensitive(true);
        self.cached = Some((identity, value.clone()));
        Ok(value)
    }

    /// Forgets the cached token (after a 401), so the next request reads the file again even
    /// if its identity looks unchanged.
    pub(super) fn invalidate(&mut self) {
        self.cached = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rereads_on_change_and_never_shows_the_token() {
        let dir = std::env::temp_dir().join(format!("sonde-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tempdir");
        let path = dir.join("token");
        std::fs::write(&path, "first-token\n").expect("write");
        let mut token = TokenFile::new(path.clone());
        assert_eq!(
            token.header().expect("read").as_bytes(),
            b"Bearer first-token"
        );
        // Rotation by atomic rename, as the kubelet does it: a new inode.
        let next = dir.join("token.new");
        std::fs::write(&next, "second-token-longer").expect("write");
        std::fs::rename(&next, &path).expect("rename");
        let value = token.header().expect("reread");
        assert_eq!(value.as_bytes(), b"Bearer second-token-longer");
        assert!(value.is_sensitive());
        assert!(!format!("{token:?} {value:?}").contains("second-token"));

        std::fs::write(&path, "  \n").expect("write");
        let err = token.header().expect_err("empty");
        assert!(err.to_string().contains("is empty"), "{err}");
        std::fs::remove_file(&path).expect("rm");
        let err = token.header().expect_err("missing");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
