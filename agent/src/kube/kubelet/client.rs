//! One `GET /pods` to the kubelet: connect, TLS, request, body, parse — each step under the
//! same deadline and with its own diagnosis.
//!
//! Every fetch opens a fresh connection (hyper's HTTP/1 connection API, no pool): a fetch every
//! few seconds at most makes the handshake cost negligible, and each failure is attributed to
//! the exact step that failed.

use std::{path::PathBuf, time::Duration};

use bytes::Bytes;
use http::{
    Request, Response, StatusCode,
    header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, HOST, USER_AGENT},
};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
    time::{Instant, timeout_at},
};
use tokio_rustls::TlsConnector;

use super::{
    DEFAULT_CA_FILE, KUBELET_PORT, KubeletConfig, READ_ONLY_PORT,
    error::{KubeletError, snippet},
    tls::{self, Trust},
    token::TokenFile,
};
use crate::kube::pods::{ParsedPods, parse_pod_list};

const USER_AGENT_VALUE: &str = concat!("sonde/", env!("CARGO_PKG_VERSION"));
/// How much of an error answer's body is read and quoted.
const ERROR_BODY_QUOTE: usize = 300;

/// Where the request goes.
#[derive(Clone, Debug)]
struct Target {
    https: bool,
    /// Host as used for DNS / TLS (IPv6 without brackets).
    host: String,
    port: u16,
    /// `Host` header value (IPv6 in brackets).
    authority: String,
    path: String,
    /// Full URL of the pod list, for messages.
    url: String,
}

impl Target {
    fn parse(url: &str) -> Result<Self, KubeletError> {
        let invalid = |reason: &str| KubeletError::InvalidUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let uri: http::Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            Some(_) => return Err(invalid("the scheme must be https or http")),
            None => return Err(invalid("it has no scheme (https://)")),
        };
        let raw_host = uri.host().ok_or_else(|| invalid("it has no host"))?;
        let host = raw_host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri
            .port_u16()
            .unwrap_or(if https { KUBELET_PORT } else { READ_ONLY_PORT });
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let base = uri.path().trim_end_matches('/');
        let path = if base.ends_with("/pods") {
            base.to_string()
        } else {
            format!("{base}/pods")
        };
        let scheme = if https { "https" } else { "http" };
        Ok(Target {
            url: format!("{scheme}://{authority}{path}"),
            https,
            host,
            port,
            authority,
            path,
        })
    }
}

struct TlsSetup {
    connector: TlsConnector,
    server_name: rustls::pki_types::ServerName<'static>,
    trust: Trust,
    /// The client certificate presented (`kubelet.client_cert_file`) and the versions of its
    /// files the connector was built with: rebuilt when they change (the kubelet rotates
    /// its own client certificate).
    client: Option<(crate::tls::TlsFiles, [crate::tls::FileStamp; 2])>,
}

impl TlsSetup {
    /// Rebuilds the connector if the client certificate's files changed; an unusable new
    /// version is logged and the previous one kept.
    fn refresh_client_cert(&mut self) {
        let Some((client, stamps)) = &mut self.client else {
            return;
        };
        let now = client.stamps();
        if now == *stamps {
            return;
        }
        *stamps = now;
        match tls::client_config(&self.trust, Some(client)) {
            Ok(config) => {
                tracing::info!(cert = %client.cert.display(), "kubelet client certificate reloaded");
                self.connector = TlsConnector::from(config);
            }
            Err(err) => {
                tracing::warn!(%err, "kubelet client certificate changed but cannot be used; keeping the previous one")
            }
        }
    }
}

/// The TLS alert in an HTTP error's sources: with TLS 1.3 a server that refuses the client's
/// certificate says so after the client's side of the handshake is done, on the first read.
fn alert_in(err: &hyper::Error) -> Option<rustls::AlertDescription> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        let tls = e.downcast_ref::<rustls::Error>().or_else(|| {
            e.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(rustls::Error::AlertReceived(alert)) = tls {
            return Some(*alert);
        }
        next = e.source();
    }
    None
}

/// A kubelet `/pods` client. Fetches take `&mut self`: the token cache is updated in place.
pub struct KubeletClient {
    target: Target,
    tls: Option<TlsSetup>,
    token: Option<TokenFile>,
    timeout: Duration,
    max_body_bytes: u64,
}

impl std::fmt::Debug for KubeletClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeletClient")
            .field("url", &self.target.url)
            .field("trust", &self.tls.as_ref().map(|t| &t.trust))
            .field("token", &self.token)
            .field("timeout", &self.timeout)
            .finish()
    }
}

static INSECURE_WARNING: std::sync::Once = std::sync::Once::new();

impl KubeletClient {
    /// Checks the configuration and prepares TLS; connects nothing yet.
    pub fn new(config: &KubeletConfig) -> Result<Self, KubeletError> {
        let target = Target::parse(&config.resolved_url())?;
        let tls = if target.https {
            let trust = if !config.tls_verify {
                INSECURE_WARNING.call_once(|| {
                    tracing::warn!(
                        url = %target.url,
                        "kubelet.tls_verify is false: the kubelet's certificate is not verified"
                    );
                });
                Trust::Anything
            } else if let Some(ca) = &config.ca_file {
                Trust::CaFile(ca.clone())
            } else if std::path::Path::new(DEFAULT_CA_FILE).exists() {
                Trust::CaFile(PathBuf::from(DEFAULT_CA_FILE))
            } else {
                return Err(KubeletError::NoCa {
                    default: PathBuf::from(DEFAULT_CA_FILE),
                });
            };
            let server_name =
                tls::server_name(&target.host).map_err(|reason| KubeletError::InvalidUrl {
                    url: target.url.clone(),
                    reason,
                })?;
            let client = match (&config.client_cert_file, &config.client_key_file) {
                (Some(cert), key) => Some(crate::tls::TlsFiles {
                    cert: cert.clone(),
                    key: key.clone().unwrap_or_else(|| cert.clone()),
                }),
                (None, Some(key)) => {
                    return Err(KubeletError::ClientCert {
                        cert: PathBuf::new(),
                        key: key.clone(),
                        reason: "kubelet.client_key_file is set without kubelet.client_cert_file"
                            .into(),
                    });
                }
                (None, None) => None,
            };
            Some(TlsSetup {
                connector: TlsConnector::from(tls::client_config(&trust, client.as_ref())?),
                server_name,
                trust,
                client: client.map(|c| {
                    let stamps = c.stamps();
                    (c, stamps)
                }),
            })
        } else {
            None
        };
        Ok(KubeletClient {
            // The token is for the kubelet's authenticated port only: never sent in clear.
            // With a client certificate, the default service-account token is sent only where
            // it exists (a host install has none).
            token: if target.https {
                config
                    .token_file
                    .clone()
                    .filter(|p| {
                        config.client_cert_file.is_none()
                            || p != std::path::Path::new(super::DEFAULT_TOKEN_FILE)
                            || p.exists()
                    })
                    .map(TokenFile::new)
            } else {
                None
            },
            target,
            tls,
            timeout: config.timeout,
            max_body_bytes: config.max_body_bytes,
        })
    }

    /// The URL of the pod list, e.g. `https://10.0.0.5:10250/pods`.
    pub fn url(&self) -> &str {
        &self.target.url
    }

    /// Fetches and parses the pod list.
    pub async fn fetch_pods(&mut self) -> Result<ParsedPods, KubeletError> {
        let body = self.fetch_pods_body().await?;
        let url = self.target.url.clone();
        // Parsing a large list takes a while; keep it off the async workers.
        tokio::task::spawn_blocking(move || {
            parse_pod_list(&body).map_err(|source| KubeletError::Malformed {
                url,
                len: body.len(),
                start: snippet(&body[..body.len().min(40)], 40),
                source,
            })
        })
        .await
        .map_err(|e| KubeletError::Internal(format!("pod list parser task: {e}")))?
    }

    /// Fetches the raw `/pods` body.
    pub async fn fetch_pods_body(&mut self) -> Result<Vec<u8>, KubeletError> {
        let deadline = Instant::now() + self.timeout;
        if let Some(tls) = &mut self.tls {
            tls.refresh_client_cert();
        }
        let request = self.request()?;
        let tcp = self.connect(deadline).await?;
        let (response, _conn) = match &self.tls {
            Some(tls) => {
                let addr = self.target.authority.as_str();
                let stream = timeout_at(
                    deadline,
                    tls.connector.connect(tls.server_name.clone(), tcp),
                )
                .await
                .map_err(|_| self.timeout_error("complete the TLS handshake"))?
                .map_err(|e| tls::diagnose(e, addr, &self.target.host, &tls.trust))?;
                self.exchange(stream, request, deadline).await?
            }
            None => self.exchange(tcp, request, deadline).await?,
        };
        let status = response.status();
        if !status.is_success() {
            let said = self.error_body(response, deadline).await;
            return Err(self.status_error(status, said));
        }
        self.read_body(response, deadline).await
    }

    fn request(&mut self) -> Result<Request<Empty<Bytes>>, KubeletError> {
        let mut builder = Request::get(self.target.path.as_str())
            .header(HOST, self.target.authority.as_str())
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, USER_AGENT_VALUE);
        if let Some(token) = &mut self.token {
            builder = builder.header(AUTHORIZATION, token.header()?);
        }
        builder
            .body(Empty::new())
            .map_err(|e| KubeletError::Internal(format!("building the request: {e}")))
    }

    fn timeout_error(&self, stage: &'static str) -> KubeletError {
        KubeletError::Timeout {
            url: self.target.url.clone(),
            stage,
            timeout: self.timeout,
        }
    }

    async fn connect(&self, deadline: Instant) -> Result<TcpStream, KubeletError> {
        let addr = &self.target.authority;
        let connect_timeout = || KubeletError::ConnectTimeout {
            addr: addr.clone(),
            timeout: self.timeout,
        };
        let resolved = timeout_at(
            deadline,
            tokio::net::lookup_host((self.target.host.as_str(), self.target.port)),
        )
        .await
        .map_err(|_| connect_timeout())?
        .map_err(|source| KubeletError::Resolve {
            host: self.target.host.clone(),
            source,
        })?;
        let mut last_err = None;
        for sock_addr in resolved {
            match timeout_at(deadline, TcpStream::connect(sock_addr)).await {
                Err(_) => return Err(connect_timeout()),
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Ok(Err(err)) => last_err = Some(err),
            }
        }
        Err(match last_err {
            Some(err) if err.kind() == std::io::ErrorKind::ConnectionRefused => {
                KubeletError::ConnectRefused { addr: addr.clone() }
            }
            Some(source) => KubeletError::Connect {
                addr: addr.clone(),
                source,
            },
            None => KubeletError::Resolve {
                host: self.target.host.clone(),
                source: std::io::Error::other("the name resolved to no address"),
            },
        })
    }

    /// HTTP/1 over `io`: sends the request and waits for the answer's head. The returned guard
    /// drives the connection until the body is read, and closes it when dropped.
    async fn exchange<T>(
        &self,
        io: T,
        request: Request<Empty<Bytes>>,
        deadline: Instant,
    ) -> Result<(Response<Incoming>, ConnectionGuard), KubeletError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let http_err = |e: hyper::Error| {
            if let Some(alert) = alert_in(&e) {
                let client_cert = self.tls.as_ref().is_some_and(|t| t.client.is_some());
                return KubeletError::Tls {
                    addr: self.target.url.clone(),
                    detail: format!("the kubelet rejected the handshake ({alert:?})"),
                    fix: if client_cert {
                        "the kubelet does not accept the client certificate \
                         (kubelet.client_cert_file): it must be current and signed by the CA of \
                         the kubelet's --client-ca-file (the cluster CA)"
                    } else {
                        "the kubelet may require a client certificate \
                         (kubelet.client_cert_file); check its logs and TLS settings"
                    },
                };
            }
            KubeletError::Http {
                url: self.target.url.clone(),
                detail: if e.is_incomplete_message() {
                    "the kubelet closed the connection before answering".into()
                } else {
                    e.to_string()
                },
            }
        };
        let (mut sender, conn) = timeout_at(
            deadline,
            hyper::client::conn::http1::handshake(TokioIo::new(io)),
        )
        .await
        .map_err(|_| self.timeout_error("accept the HTTP request"))?
        .map_err(http_err)?;
        let guard = ConnectionGuard(tokio::spawn(async move {
            // Its errors surface through the request and the body.
            let _ = conn.await;
        }));
        let response = timeout_at(deadline, sender.send_request(request))
            .await
            .map_err(|_| self.timeout_error("answer GET /pods"))?
            .map_err(http_err)?;
        Ok((response, guard))
    }

    async fn read_body(
        &self,
        response: Response<Incoming>,
        deadline: Instant,
    ) -> Result<Vec<u8>, KubeletError> {
        let limit = self.max_body_bytes;
        let expected: Option<u64> = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        if expected.is_some_and(|len| len > limit) {
            return Err(self.too_large());
        }
        let mut body = response.into_body();
        let mut buf = Vec::with_capacity(expected.unwrap_or(64 << 10) as usize);
        loop {
            let frame = match timeout_at(deadline, body.frame()).await {
                Err(_) => return Err(self.timeout_error("send the whole /pods body")),
                Ok(None) => break,
                Ok(Some(frame)) => frame,
            };
            let frame = frame.map_err(|e| KubeletError::BodyCut {
                url: self.target.url.clone(),
                received: buf.len() as u64,
                expected: expected.map_or_else(|| "an unknown number".into(), |n| n.to_string()),
                detail: e.to_string(),
            })?;
            if let Ok(data) = frame.into_data() {
                if (buf.len() + data.len()) as u64 > limit {
                    return Err(self.too_large());
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(buf)
    }

    fn too_large(&self) -> KubeletError {
        KubeletError::BodyTooLarge {
            url: self.target.url.clone(),
            limit: self.max_body_bytes,
        }
    }

    /// The start of an error answer's body (e.g. the kubelet's "Forbidden (user=…)"), or "".
    async fn error_body(&self, response: Response<Incoming>, deadline: Instant) -> String {
        let mut body = response.into_body();
        let mut buf = Vec::new();
        while buf.len() < ERROR_BODY_QUOTE * 4 {
            match timeout_at(deadline, body.frame()).await {
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        buf.extend_from_slice(&data);
                    }
                }
                _ => break,
            }
        }
        snippet(&buf, ERROR_BODY_QUOTE)
    }

    fn status_error(&mut self, status: StatusCode, said: String) -> KubeletError {
        let url = self.target.url.clone();
        match status {
            StatusCode::UNAUTHORIZED => match &mut self.token {
                Some(token) => {
                    token.invalidate();
                    KubeletError::Unauthorized {
                        url,
                        token_file: token.path().to_path_buf(),
                    }
                }
                None => KubeletError::UnauthorizedNoToken { url },
            },
            StatusCode::FORBIDDEN => KubeletError::Forbidden {
                url,
                said: quoted(&said),
            },
            _ => KubeletError::Status {
                url,
                status,
                said: quoted(&said),
            },
        }
    }
}

fn quoted(said: &str) -> String {
    if said.is_empty() {
        String::new()
    } else {
        format!(": the kubelet said {said:?}")
    }
}

/// Aborts the connection task when the fetch is done (or abandoned on a timeout).
struct ConnectionGuard(tokio::task::JoinHandle<()>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = Target::parse("https://10.0.0.5").expect("parses");
        assert_eq!(t.url, "https://10.0.0.5:10250/pods");
        assert_eq!(t.authority, "10.0.0.5:10250");
        let t = Target::parse("http://node-1/").expect("parses");
        assert_eq!(t.url, "http://node-1:10255/pods");
        let t = Target::parse("https://[fd00::5]:10250").expect("parses");
        assert_eq!(t.host, "fd00::5");
        assert_eq!(t.authority, "[fd00::5]:10250");
        let t = Target::parse("https://api:6443/api/v1/nodes/n1/proxy/pods").expect("parses");
        assert_eq!(t.path, "/api/v1/nodes/n1/proxy/pods");
        for bad in ["node-1:10250", "ftp://node", "https://"] {
            let err = Target::parse(bad).expect_err(bad);
            assert!(err.to_string().contains("invalid kubelet.url"), "{err}");
        }
    }
}
