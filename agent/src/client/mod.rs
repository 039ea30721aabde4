//! `sonde status`: a client of the agent's `GET /v1/status` (HTTP/1.1, hyper client; HTTPS when
//! the agent serves it) that prints a `kubectl get`-like table, or the JSON document.

pub mod table;

use std::{io::Write, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::export::status::Status;

/// A status document larger than this is refused (a node has thousands of workloads at most).
const MAX_STATUS_BYTES: usize = 64 << 20;
/// `--watch` refreshes this often.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusFormat {
    /// Health header and one row per container / host service.
    Table,
    /// The /v1/status document (pretty; one compact line per refresh with --watch).
    Json,
}

#[derive(Clone, Debug)]
pub struct StatusOptions {
    pub api: SocketAddr,
    /// The bearer token to send (the agent's `api.token_file`), if it needs one.
    pub token: Option<String>,
    /// Speak HTTPS (the agent's `api.tls_cert_file` is set).
    pub tls: Option<ClientTls>,
    pub watch: bool,
    pub format: StatusFormat,
    /// Redraw in place (ANSI clear) with --watch.
    pub clear: bool,
    pub timeout: Duration,
}

/// How `sonde status` verifies an agent that serves HTTPS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientTls {
    /// PEM certificates trusted as issuers of the agent's certificate.
    pub ca_file: PathBuf,
    /// The name the certificate must carry; `None`: the address's IP.
    pub server_name: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no Sonde agent answers on {addr}: is `sonde run` running? (api.listen) ({source})")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "the Sonde agent on {addr} did not answer within {timeout:?}. Fix: check the agent's logs \
         (it may be overloaded or stopping), or raise --timeout"
    )]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error(
        "HTTP exchange with {addr} failed: {source}. Fix: is {addr} a Sonde agent's api.listen? \
         An agent with api.tls_cert_file serves HTTPS: give its configuration (--config) or \
         --ca-file"
    )]
    Http {
        addr: SocketAddr,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("TLS with the Sonde agent on {addr} failed: {detail}. Fix: {fix}")]
    Tls {
        addr: SocketAddr,
        detail: String,
        fix: String,
    },
    #[error(
        "cannot use the CA file {0}. Fix: give --ca-file a PEM file with the CA that signed the agent's api.tls_cert_file"
    )]
    CaFile(crate::tls::PemError),
    #[error("{addr} answered {status} to GET /v1/status: {body}")]
    Refused {
        addr: SocketAddr,
        status: StatusCode,
        body: String,
    },
    #[error(
        "{addr} sent a status document this sonde cannot read ({source}). Fix: use the sonde \
         binary of the same version as the agent"
    )]
    Decode {
        addr: SocketAddr,
        source: serde_json::Error,
    },
    #[error(
        "the agent's API is off in this configuration (api.enabled: false, from {origin}), so \
         there is no status to ask for. Fix: turn it on (api.listen), or name an agent with \
         --api HOST:PORT"
    )]
    ApiOff { origin: String },
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

/// Where `sonde status` finds the agent: `--api` / `SONDE_API` when given, else the API
/// address that the same configuration gives `sonde run` (`api.listen` from the file,
/// `SONDE_API_LISTEN`, `--set api.listen=…`), an unspecified address (`0.0.0.0`, `::`) meaning
/// this host's loopback.
pub fn api_address(
    explicit: Option<SocketAddr>,
    loaded: &crate::config::Loaded,
) -> Result<SocketAddr, ClientError> {
    if let Some(addr) = explicit {
        return Ok(addr);
    }
    let api = &loaded.config.api;
    if !api.enabled {
        return Err(ClientError::ApiOff {
            origin: loaded
                .source("api.enabled")
                .map_or_else(|| "default".into(), ToString::to_string),
        });
    }
    let mut addr = api.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    Ok(addr)
}

impl ClientError {
    /// 69 (EX_UNAVAILABLE) when no agent answers, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Connect { .. } | ClientError::Timeout { .. } => 69,
            _ => 1,
        }
    }
}

/// One `GET /v1/status`: the raw document.
pub async fn fetch_raw(
    addr: SocketAddr,
    token: Option<&str>,
    tls: Option<&ClientTls>,
    timeout: Duration,
) -> Result<Bytes, ClientError> {
    tokio::time::timeout(timeout, fetch_inner(addr, token, tls))
        .await
        .map_err(|_| ClientError::Timeout { addr, timeout })?
}

async fn fetch_inner(
    addr: SocketAddr,
    token: Option<&str>,
    tls: Option<&ClientTls>,
) -> Result<Bytes, ClientError> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|source| ClientError::Connect { addr, source })?;
    match tls {
        None => exchange(TokioIo::new(stream), addr, token).await,
        Some(tls) => {
            let stream = handshake(stream, addr, tls).await?;
            exchange(TokioIo::new(stream), addr, token).await
        }
    }
}

async fn handshake(
    stream: TcpStream,
    addr: SocketAddr,
    tls: &ClientTls,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ClientError> {
    use rustls::pki_types::ServerName;
    let roots = crate::tls::load_roots(&tls.ca_file).map_err(ClientError::CaFile)?;
    let fail = |detail: String, fix: &str| ClientError::Tls {
        addr,
        detail,
        fix: fix.to_string(),
    };
    let config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(e.to_string(), "report this"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = match &tls.server_name {
        Some(name) => ServerName::try_from(name.clone()).map_err(|e| {
            fail(
                format!("{name} is not a TLS name ({e})"),
                "fix --tls-server-name",
            )
        })?,
        None => ServerName::IpAddress(addr.ip().into()),
    };
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await
        .map_err(|err| fail(err.to_string(), tls_fix(&err)))
}

/// The fix for a failed handshake with the agent.
fn tls_fix(err: &std::io::Error) -> &'static str {
    use rustls::{CertificateError as C, Error as E};
    match err.get_ref().and_then(|e| e.downcast_ref::<E>()) {
        Some(E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. })) => {
            "the agent's certificate does not name this address: add it to the certificate's \
             SANs, or give the name it carries with --tls-server-name"
        }
        Some(E::InvalidCertificate(C::UnknownIssuer)) => {
            "give --ca-file the CA that signed the agent's api.tls_cert_file"
        }
        Some(E::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
        )) => "renew the agent's certificate (api.tls_cert_file; it is re-read when it changes)",
        Some(E::InvalidMessage(_) | E::InappropriateMessage { .. }) | None => {
            "check that the agent serves HTTPS on this address (api.tls_cert_file is set in its \
             configuration)"
        }
        Some(_) => "check the agent's certificate and logs",
    }
}

async fn exchange<I>(io: I, addr: SocketAddr, token: Option<&str>) -> Result<Bytes, ClientError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let http = |e: Box<dyn std::error::Error + Send + Sync>| ClientError::Http { addr, source: e };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| http(e.into()))?;
    let conn = tokio::spawn(conn);
    let mut req = Request::get("/v1/status")
        .header(header::HOST, addr.to_string())
        .header(header::ACCEPT, "application/json");
    if let Some(token) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|e| http(e.into()))?;
    let resp = sender.send_request(req).await.map_err(|e| http(e.into()))?;
    let status = resp.status();
    let body = Limited::new(resp.into_body(), MAX_STATUS_BYTES)
        .collect()
        .await
        .map_err(http)?
        .to_bytes();
    conn.abort();
    if status != StatusCode::OK {
        return Err(ClientError::Refused {
            addr,
            status,
            body: String::from_utf8_lossy(&body).trim().to_string(),
        });
    }
    Ok(body)
}

/// Renders one refresh into `out`.
async fn once(opts: &StatusOptions, out: &mut Vec<u8>) -> Result<(), ClientError> {
    let raw = fetch_raw(
        opts.api,
        opts.token.as_deref(),
        opts.tls.as_ref(),
        opts.timeout,
    )
    .await?;
    let decode = |source| ClientError::Decode {
        addr: opts.api,
        source,
    };
    match opts.format {
        StatusFormat::Json => {
            // Printed as the agent sent it (fields this client does not know included).
            let value: serde_json::Value = serde_json::from_slice(&raw).map_err(decode)?;
            let text = if opts.watch {
                serde_json::to_string(&value)
            } else {
                serde_json::to_string_pretty(&value)
            };
            out.extend_from_slice(text.map_err(decode)?.as_bytes());
            out.push(b'\n');
        }
        StatusFormat::Table => {
            let status: Status = serde_json::from_slice(&raw).map_err(decode)?;
            table::render(&status, out);
        }
    }
    Ok(())
}

/// `sonde status`: prints once, or every second with `watch` (an error is shown and retried
/// then, e.g. while the agent restarts).
pub async fn run(opts: StatusOptions, dest: &mut dyn Write) -> Result<(), ClientError> {
    loop {
        let mut out = Vec::new();
        let result = once(&opts, &mut out).await;
        if !opts.watch {
            result?;
            dest.write_all(&out)?;
            dest.flush()?;
            return Ok(());
        }
        let mut frame = Vec::new();
        if opts.clear {
            frame.extend_from_slice(b"\x1b[H\x1b[2J");
        }
        match result {
            Ok(()) => frame.extend_from_slice(&out),
            Err(err) => {
                let _ = writeln!(frame, "sonde: {err} (retrying every second)");
            }
        }
        if !opts.clear && opts.format == StatusFormat::Table {
            frame.push(b'\n');
        }
        dest.write_all(&frame)?;
        dest.flush()?;
        tokio::time::sleep(WATCH_INTERVAL).await;
    }
}
