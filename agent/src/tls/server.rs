//! The API's serving certificate (`api.tls_cert_file`, `api.tls_key_file`). Read at start (a
//! bad file stops the agent, naming it) and re-read when either file changes — a renewed
//! certificate, or a Secret whose mounted files the kubelet swaps — checked at most once a
//! second, on a handshake. A renewal that cannot be used (half-written, key and certificate
//! from different pairs) is logged and the previous certificate kept.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rustls::{
    ServerConfig,
    crypto::CryptoProvider,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use tokio_rustls::TlsAcceptor;

pub use super::TlsFiles;
use super::{FileStamp, PemError, load_certs, load_key, provider};

/// The files are looked at again at most this often.
const RECHECK: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ServerTlsError {
    #[error(
        "cannot use the API's TLS certificate (api.tls_cert_file) {0}. Fix: point \
         api.tls_cert_file at a PEM file holding the server certificate, then its intermediates"
    )]
    Cert(PemError),
    #[error(
        "cannot use the API's TLS key (api.tls_key_file) {0}. Fix: point api.tls_key_file at \
         the PEM private key of api.tls_cert_file (tls.key of a kubernetes.io/tls Secret)"
    )]
    Key(PemError),
    #[error(
        "the API's TLS key {} does not fit the certificate {} ({reason}). Fix: use the key the \
         certificate was issued for (api.tls_key_file, api.tls_cert_file)",
        key.display(), cert.display()
    )]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("TLS setup failed: {0}")]
    Setup(String),
}

fn certified_key(
    files: &TlsFiles,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, ServerTlsError> {
    let chain = load_certs(&files.cert).map_err(ServerTlsError::Cert)?;
    let key = load_key(&files.key).map_err(ServerTlsError::Key)?;
    let mismatch = |reason: String| ServerTlsError::Mismatch {
        cert: files.cert.clone(),
        key: files.key.clone(),
        reason,
    };
    let certified =
        CertifiedKey::from_der(chain, key, provider).map_err(|e| mismatch(e.to_string()))?;
    Ok(Arc::new(certified))
}

struct Current {
    key: Arc<CertifiedKey>,
    stamps: [FileStamp; 2],
    checked: Instant,
    /// The stamps of a change that could not be loaded, so it is reported once.
    failed: Option<[FileStamp; 2]>,
}

struct Reloading {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: Mutex<Current>,
}

impl std::fmt::Debug for Reloading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloading")
            .field("files", &self.files)
            .finish()
    }
}

impl Reloading {
    fn current(&self) -> Option<Arc<CertifiedKey>> {
        let mut current = self.current.lock().ok()?;
        if current.checked.elapsed() >= RECHECK {
            current.checked = Instant::now();
            let stamps = self.files.stamps();
            if stamps != current.stamps && current.failed != Some(stamps) {
                match certified_key(&self.files, &self.provider) {
                    Ok(key) => {
                        tracing::info!(cert = %self.files.cert.display(), "API TLS certificate reloaded");
                        current.key = key;
                        current.stamps = stamps;
                        current.failed = None;
                    }
                    Err(err) => {
                        tracing::warn!(%err, "API TLS certificate changed but cannot be used; serving the previous one");
                        current.failed = Some(stamps);
                    }
                }
            }
        }
        Some(Arc::clone(&current.key))
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

/// A TLS acceptor presenting the current certificate of [`TlsFiles`].
#[derive(Clone)]
pub struct ServerTls {
    acceptor: TlsAcceptor,
    files: Arc<TlsFiles>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.files)
            .finish()
    }
}

impl PartialEq for ServerTls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.files, &other.files)
    }
}

impl Eq for ServerTls {}

impl ServerTls {
    /// Reads both files now (so a bad one stops the agent at start).
    pub fn load(files: TlsFiles) -> Result<Self, ServerTlsError> {
        let provider = provider();
        let key = certified_key(&files, &provider)?;
        let reloading = Reloading {
            provider: Arc::clone(&provider),
            current: Mutex::new(Current {
                key,
                stamps: files.stamps(),
                checked: Instant::now(),
                failed: None,
            }),
            files: files.clone(),
        };
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ServerTlsError::Setup(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(reloading));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            files: Arc::new(files),
        })
    }

    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &std::path::Path) -> TlsFiles {
        TlsFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        }
    }

    #[test]
    fn a_missing_certificate_names_the_file_and_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = ServerTls::load(files(dir.path())).expect_err("no files");
        let text = err.to_string();
        assert!(matches!(err, ServerTlsError::Cert(_)), "{text}");
        assert!(
            text.contains("tls.crt") && text.contains("api.tls_cert_file"),
            "{text}"
        );
    }

    #[test]
    fn a_file_without_pem_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = files(dir.path());
        std::fs::write(&f.cert, "not a certificate\n").expect("write");
        let text = ServerTls::load(f).expect_err("no PEM").to_string();
        assert!(text.contains("holds no PEM certificate"), "{text}");
    }
}
