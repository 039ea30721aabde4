//! TLS pieces shared by every endpoint that speaks it: the one crypto provider (ring; no
//! aws-lc), PEM files read with errors that name the file and what is wrong with it, and the
//! API's serving certificate, re-read when its files change ([`server`]).

pub mod client;
pub mod server;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{
    RootCertStore,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
};

/// The crypto provider of every TLS client and server in the agent.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What identifies a version of a file: a rewrite, a rename over it or a swapped symlink
/// (a Secret update, a rotated kubelet certificate) changes one of these.
pub type FileStamp = Option<(std::time::SystemTime, u64, u64)>;

/// The file's [`FileStamp`] now (`None` when it cannot be read).
pub fn file_stamp(path: &Path) -> FileStamp {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.ino(), meta.len()))
}

/// A certificate chain (PEM, the end-entity certificate first) and its private key (PEM; may
/// be the same file): a server's (`api.tls_*`) or a client's (`kubelet.client_*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// The versions of both files now: when they change, the pair is read again.
    pub fn stamps(&self) -> [FileStamp; 2] {
        [file_stamp(&self.cert), file_stamp(&self.key)]
    }
}

/// A PEM file that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct PemError {
    pub path: PathBuf,
    pub reason: String,
}

fn read(path: &Path) -> Result<Vec<u8>, PemError> {
    // Read first, so that a missing or unreadable file says so plainly.
    std::fs::read(path).map_err(|e| PemError {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn pem_error(path: &Path, reason: impl Into<String>) -> PemError {
    PemError {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Every certificate of a PEM file, in order; at least one.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, format!("not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(pem_error(path, "it holds no PEM certificate"));
    }
    Ok(certs)
}

/// The CAs of a PEM bundle, as trust anchors.
pub fn load_roots(path: &Path) -> Result<RootCertStore, PemError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| pem_error(path, format!("a certificate in it is unusable: {e}")))?;
    }
    Ok(roots)
}

/// The first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        pem_error(
            path,
            format!("no usable PEM private key in it ({e}); expected a PRIVATE KEY block"),
        )
    })
}
