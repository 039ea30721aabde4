//! TLS to the kubelet: rustls with the ring provider, trusting a CA file (or, on request,
//! anything), and the translation of handshake failures into [`KubeletError`]s.

use std::{io, path::PathBuf, sync::Arc};

use rustls::{CertificateError, ClientConfig, RootCertStore, pki_types::ServerName};

use super::error::KubeletError;

/// What the client trusts.
#[derive(Clone, Debug)]
pub(super) enum Trust {
    /// Certificates signed by a CA in this PEM file.
    CaFile(PathBuf),
    /// Any certificate (`kubelet.tls_verify: false`); the handshake is still checked.
    Anything,
}

fn load_roots(path: &std::path::Path) -> Result<RootCertStore, KubeletError> {
    crate::tls::load_roots(path).map_err(|e| KubeletError::CaFile {
        path: path.to_path_buf(),
        reason: e.reason,
    })
}

pub(super) fn client_config(
    trust: &Trust,
    client: Option<&crate::tls::TlsFiles>,
) -> Result<Arc<ClientConfig>, KubeletError> {
    let roots = match trust {
        Trust::CaFile(path) => Some(load_roots(path)?),
        Trust::Anything => None,
    };
    let client = client
        .map(|client| {
            let fail = |reason: String| KubeletError::ClientCert {
                cert: client.cert.clone(),
                key: client.key.clone(),
                reason,
            };
            let chain = crate::tls::load_certs(&client.cert).map_err(|e| fail(e.to_string()))?;
            let key = crate::tls::load_key(&client.key).map_err(|e| fail(e.to_string()))?;
            Ok::<_, KubeletError>((chain, key))
        })
        .transpose()?;
    crate::tls::client::config(roots, client)
        .map_err(|e| KubeletError::Internal(format!("TLS setup: {e}")))
}

/// The server name to verify the certificate against: the URL's host (an IP or a DNS name).
pub(super) fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_string())
        .map_err(|e| format!("{host} is not a valid TLS name: {e}"))
}

/// Turns a failed handshake into the error that names its cause.
pub(super) fn diagnose(err: io::Error, addr: &str, name: &str, trust: &Trust) -> KubeletError {
    let addr = addr.to_string();
    let Some(tls) = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    else {
        let (detail, fix) = match err.kind() {
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => (
                format!("the kubelet closed the connection during the handshake ({err})"),
                "check that kubelet.url names the kubelet's HTTPS port (10250), and the \
                 kubelet's logs for the rejected handshake",
            ),
            _ => (
                err.to_string(),
                "check kubelet.url and the network path to the node",
            ),
        };
        return KubeletError::Tls { addr, detail, fix };
    };
    match tls {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::NotValidForName => KubeletError::CertificateNameMismatch {
                addr,
                name: name.to_string(),
                presented: "names not reported".into(),
            },
            CertificateError::NotValidForNameContext { presented, .. } => {
                KubeletError::CertificateNameMismatch {
                    addr,
                    name: name.to_string(),
                    presented: if presented.is_empty() {
                        "no names".into()
                    } else {
                        presented
                            .iter()
                            .map(|n| plain_name(n))
                            .collect::<Vec<_>>()
                            .join(", ")
                    },
                }
            }
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => KubeletError::CertificateExpired {
                addr,
                detail: tls.to_string(),
            },
            _ => match trust {
                Trust::CaFile(ca_file) => KubeletError::CertificateUntrusted {
                    addr,
                    ca_file: ca_file.clone(),
                    detail: tls.to_string(),
                },
                Trust::Anything => KubeletError::Tls {
                    addr,
                    detail: tls.to_string(),
                    fix: "the kubelet's certificate is unusable even unverified; renew it",
                },
            },
        },
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            KubeletError::Tls {
                addr,
                detail: format!("the peer does not speak TLS ({tls})"),
                fix: "the port may serve plain HTTP (as the read-only port 10255 does): use an \
                      http:// kubelet.url for it, or the HTTPS port 10250",
            }
        }
        rustls::Error::AlertReceived(_) => KubeletError::Tls {
            addr,
            detail: format!("the kubelet rejected the handshake ({tls})"),
            fix: "check the kubelet's logs (tls-min-version, tls-cipher-suites, client \
                  certificate requirements)",
        },
        _ => KubeletError::Tls {
            addr,
            detail: tls.to_string(),
            fix: "check the kubelet's TLS settings and logs",
        },
    }
}

/// rustls reports presented names in their Debug form (`DnsName("node-a")`,
/// `IpAddress(10.0.0.1)`); a person wants `node-a`, `10.0.0.1`.
fn plain_name(presented: &str) -> &str {
    match presented.split_once('(') {
        Some((_, rest)) => rest.trim_end_matches(')').trim_matches('"'),
        None => presented,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn plain_names() {
        assert_eq!(super::plain_name("DnsName(\"node-a\")"), "node-a");
        assert_eq!(super::plain_name("IpAddress(10.0.0.1)"), "10.0.0.1");
        assert_eq!(super::plain_name("node-b"), "node-b");
    }
}
