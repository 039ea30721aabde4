//! The API's bearer token (`api.token_file`): required where the API listens beyond loopback,
//! since the event stream and the status show every process's arguments and connections.
//! The file is re-read when it changes (a rotated Secret), checked with a constant-time
//! comparison, and never logged.

use std::{
    path::{Path, PathBuf},
    sync::Mutex,
    time::SystemTime,
};

use http::{HeaderMap, header};

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(
        "cannot read the API token file {path} (api.token_file): {source}. Fix: point \
         api.token_file at a readable file holding the token (a mounted Secret)"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the API token file {path} (api.token_file) is empty. Fix: write the token into it")]
    Empty { path: PathBuf },
}

/// The token's text, read from `path` (surrounding whitespace dropped).
pub fn read_token(path: &Path) -> Result<String, TokenError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let token = text.trim().to_string();
    if token.is_empty() {
        return Err(TokenError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(token)
}

struct Loaded {
    token: String,
    modified: Option<SystemTime>,
}

/// A token file, re-read when its modification time changes.
pub struct BearerToken {
    path: PathBuf,
    loaded: Mutex<Loaded>,
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerToken")
            .field("path", &self.path)
            .finish()
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Equal in time independent of where they differ (the length is not secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl BearerToken {
    /// Reads the file once (so a bad file stops the agent at start, naming it).
    pub fn load(path: &Path) -> Result<Self, TokenError> {
        let token = read_token(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            loaded: Mutex::new(Loaded {
                token,
                modified: modified(path),
            }),
        })
    }

    /// Whether `headers` carry `Authorization: Bearer <the token>`. A file that changed is
    /// re-read; one that became unreadable keeps the last good token (and is logged).
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        let now = modified(&self.path);
        if now != loaded.modified {
            match read_token(&self.path) {
                Ok(token) => {
                    loaded.token = token;
                    loaded.modified = now;
                }
                Err(err) => tracing::warn!(%err, "keeping the previous API token"),
            }
        }
        constant_time_eq(given.trim().as_bytes(), loaded.token.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {token}").parse().expect("header"),
        );
        h
    }

    #[test]
    fn the_token_is_checked_and_re_read_when_the_file_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret\n").expect("write");
        let token = BearerToken::load(&path).expect("loads");
        assert!(token.allows(&bearer("s3cret")));
        assert!(!token.allows(&bearer("s3cre")));
        assert!(!token.allows(&bearer("s3cret2")));
        assert!(!token.allows(&HeaderMap::new()));
        // Rotated (a Secret's new value): a different mtime, the new token.
        std::fs::write(&path, "rotated").expect("write");
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(later))
            .expect("set mtime");
        assert!(token.allows(&bearer("rotated")));
        assert!(!token.allows(&bearer("s3cret")));
        std::fs::write(&path, "").expect("write");
        assert!(matches!(
            BearerToken::load(&path),
            Err(TokenError::Empty { .. })
        ));
    }
}
