//! Test certificates: a CA made at run time and server certificates it signs, for the SANs a
//! test wants (IP addresses and DNS names), so TLS verification is exercised for real.

use std::{path::Path, sync::Arc};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A certificate authority that exists only for a test.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    cert: CertificateDer<'static>,
    pem: String,
}

/// A server certificate chain and its key.
pub struct ServerCert {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// The chain (server certificate, then the CA) and the key, PEM.
    pub chain_pem: String,
    pub key_pem: String,
}

impl TestCa {
    /// A new CA with a fresh ECDSA P-256 key and this common name.
    pub fn new(common_name: &str) -> Self {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("generate CA key");
        let cert = params.self_signed(&key).expect("self-sign CA");
        TestCa {
            pem: cert.pem(),
            cert: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    pub fn write_pem(&self, path: &Path) {
        std::fs::write(path, &self.pem)
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }

    /// A server certificate for `sans` (each an IP address or a DNS name), signed by this CA.
    pub fn issue_server_cert(&self, sans: &[&str]) -> ServerCert {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans.clone()).expect("SANs");
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            sans.first().map_or("kubelet", String::as_str),
        );
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate().expect("generate server key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign server certificate");
        ServerCert {
            chain: vec![cert.der().clone(), self.cert.clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            chain_pem: format!("{}{}", cert.pem(), self.pem),
            key_pem: key.serialize_pem(),
        }
    }
}

impl TestCa {
    /// A client certificate for `common_name` (TLS client authentication), signed by this CA.
    pub fn issue_client_cert(&self, common_name: &str) -> ServerCert {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().expect("generate client key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign client certificate");
        ServerCert {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            chain_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

impl ServerCert {
    /// A rustls server configuration like [`Self::server_config`] that requires a client
    /// certificate signed by `clients` (as a kubelet with `--client-ca-file` does, minus the
    /// anonymous fallback).
    pub fn server_config_requiring_clients(&self, clients: &TestCa) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(clients.cert_der().clone()).expect("client CA");
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::clone(&provider),
        )
        .build()
        .expect("client verifier");
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .expect("server certificate");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// Writes the PEM chain and key to these files, each replaced at once (written aside,
    /// then renamed over), as a renewal or a Secret update does.
    pub fn write_pem(&self, cert: &Path, key: &Path) {
        for (path, text) in [(cert, &self.chain_pem), (key, &self.key_pem)] {
            let aside = path.with_extension("new");
            std::fs::write(&aside, text)
                .unwrap_or_else(|e| panic!("writing {}: {e}", aside.display()));
            std::fs::rename(&aside, path)
                .unwrap_or_else(|e| panic!("renaming to {}: {e}", path.display()));
        }
    }

    /// A rustls server configuration (ring provider, HTTP/1.1) presenting this certificate.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .expect("server certificate");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}
