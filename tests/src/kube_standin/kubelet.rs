//! A test kubelet: `GET /pods` over real HTTPS, as a kubelet answers it.
//!
//! - The pod list is served byte for byte from a file (the vendored fixtures) or from bytes a
//!   test gives, switchable while running.
//! - Authentication like a kubelet with webhook token authentication: a request without a
//!   valid bearer token gets `401 Unauthorized`; a token can be "expired" by rotating to a
//!   new one.
//! - Authorization: in [`Fault::Forbidden`] the kubelet's own 403 text is returned
//!   (`Forbidden (user=…, verb=get, resource=nodes, subresource(s)=[proxy])`).
//! - Faults: slow answers, a body cut mid-way, any status.
//! - TLS: a certificate from a test CA with the SANs the test chooses; a second, unrelated CA
//!   is there for "wrong CA" tests. Or plain HTTP, as the read-only port 10255 serves.
//!
//! Every request is recorded (path and bearer token) so tests can check what the client sent.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use bytes::Bytes;
use http::{
    Method, Request, Response, StatusCode,
    header::{CONTENT_LENGTH, CONTENT_TYPE},
};
use hyper::body::Incoming;

use super::rbac::{KUBELET_PODS, Policy};
use super::{
    payloads,
    pki::TestCa,
    server::{Body, Handler, Router, TestServer, bearer, cut_body, json, text},
};

/// What the next requests run into.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Fault {
    #[default]
    None,
    /// Answer after this delay (the client's timeout is what is tested).
    Delay(Duration),
    /// Send the headers (with the full Content-Length) and half the body, then drop the
    /// connection.
    CutMidBody,
    /// The kubelet's authorizer says no (RBAC without `nodes/proxy`).
    Forbidden,
    /// Any other status, with a plain-text body.
    Status(u16),
}

/// How the stand-in starts.
#[derive(Clone, Debug)]
pub struct KubeletOptions {
    /// SANs of the serving certificate: IP addresses or DNS names.
    pub sans: Vec<String>,
    /// Serve HTTPS (the kubelet's port 10250); `false` serves plain HTTP like the read-only
    /// port 10255, which has no authentication.
    pub tls: bool,
    /// The valid bearer token at start.
    pub token: String,
    /// The pod list at start.
    pub pods_fixture: String,
    /// Require a client certificate signed by the stand-in's client CA (see
    /// [`KubeletStandin::write_client_cert`]); a request on such a connection is authenticated
    /// by it, with no token.
    pub client_certs: bool,
}

impl Default for KubeletOptions {
    fn default() -> Self {
        Self {
            sans: vec!["127.0.0.1".into(), "localhost".into()],
            tls: true,
            token: "sonde-test-token-1".into(),
            pods_fixture: payloads::TEMPLATE_FIXTURE.into(),
            client_certs: false,
        }
    }
}

/// A request as the stand-in saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenRequest {
    pub method: String,
    pub path: String,
    /// The bearer token sent, if any.
    pub bearer: Option<String>,
}

struct State {
    pods: Bytes,
    valid_tokens: Vec<String>,
    auth: bool,
    fault: Fault,
    /// With a policy, `GET /pods` needs one of [`KUBELET_PODS`] ([`KubeletStandin::enforce`]).
    policy: Option<Policy>,
    seen: Vec<SeenRequest>,
}

type Shared = Arc<Mutex<State>>;

fn lock(state: &Shared) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct KubeletStandin {
    /// `None` while stopped ([`KubeletStandin::stop_serving`]): connections are refused.
    server: Option<TestServer>,
    addr: std::net::SocketAddr,
    url: String,
    tls: Option<Arc<rustls::ServerConfig>>,
    state: Shared,
    ca: TestCa,
    other_ca: TestCa,
    client_ca: TestCa,
    dir: tempfile::TempDir,
}

impl KubeletStandin {
    /// An HTTPS kubelet on 127.0.0.1 with a certificate for 127.0.0.1 and localhost.
    pub fn start() -> Self {
        Self::start_with(KubeletOptions::default())
    }

    pub fn start_with(options: KubeletOptions) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = TestCa::new("sonde-test-kubelet-ca");
        let other_ca = TestCa::new("sonde-test-unrelated-ca");
        let client_ca = TestCa::new("sonde-test-kubelet-client-ca");
        ca.write_pem(&dir.path().join("ca.crt"));
        other_ca.write_pem(&dir.path().join("other-ca.crt"));
        let state: Shared = Arc::new(Mutex::new(State {
            pods: Bytes::from(payloads::fixture(&options.pods_fixture)),
            valid_tokens: vec![options.token.clone()],
            auth: options.tls && !options.client_certs,
            fault: Fault::None,
            policy: None,
            seen: Vec::new(),
        }));
        let tls = options.tls.then(|| {
            let sans: Vec<&str> = options.sans.iter().map(String::as_str).collect();
            let cert = ca.issue_server_cert(&sans);
            if options.client_certs {
                cert.server_config_requiring_clients(&client_ca)
            } else {
                cert.server_config()
            }
        });
        let server = TestServer::start(tls.clone(), routes(Arc::clone(&state)));
        let standin = KubeletStandin {
            addr: server.addr(),
            url: server.url(),
            server: Some(server),
            tls,
            state,
            ca,
            other_ca,
            client_ca,
            dir,
        };
        standin.write_token_file(&options.token);
        standin
    }

    /// Writes a client certificate for `common_name` and its key into one PEM file (as kubeadm's
    /// `kubelet-client-current.pem` holds both), signed by the client CA when `trusted`, else by
    /// an unrelated CA; returns the file.
    pub fn write_client_cert(&self, common_name: &str, trusted: bool) -> PathBuf {
        let cert = if trusted {
            self.client_ca.issue_client_cert(common_name)
        } else {
            self.other_ca.issue_client_cert(common_name)
        };
        let path = self.dir.path().join(format!("{common_name}.pem"));
        std::fs::write(&path, format!("{}{}", cert.chain_pem, cert.key_pem))
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }

    /// The `sonde run` flags that point the agent at this kubelet: URL, CA file, token file.
    pub fn agent_flags(&self) -> Vec<String> {
        vec![
            "--kubelet-url".into(),
            self.url(),
            "--kubelet-ca-file".into(),
            self.ca_file().display().to_string(),
            "--kubelet-token-file".into(),
            self.token_file().display().to_string(),
        ]
    }

    /// Base URL, e.g. `https://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Stops listening (like a kubelet that is not running yet): connections are refused.
    pub fn stop_serving(&mut self) {
        self.server = None;
    }

    /// Serves again on the same port, with the same certificate, tokens and pods.
    pub fn resume_serving(&mut self) {
        if self.server.is_none() {
            self.server = Some(TestServer::start_at(
                self.addr,
                self.tls.clone(),
                routes(Arc::clone(&self.state)),
            ));
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// PEM file of the CA that signed the serving certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// PEM file of a CA that signed nothing here ("wrong CA").
    pub fn other_ca_file(&self) -> PathBuf {
        self.dir.path().join("other-ca.crt")
    }

    pub fn ca(&self) -> &TestCa {
        &self.ca
    }

    pub fn other_ca(&self) -> &TestCa {
        &self.other_ca
    }

    /// A token file holding the currently valid token (as a projected service-account token).
    pub fn token_file(&self) -> PathBuf {
        self.dir.path().join("token")
    }

    /// A scratch directory that lives as long as the stand-in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `token` to [`Self::token_file`] the way the kubelet rotates projected tokens:
    /// a new file renamed over the old one.
    pub fn write_token_file(&self, token: &str) {
        let tmp = self.dir.path().join("token.tmp");
        std::fs::write(&tmp, token).expect("write token");
        std::fs::rename(&tmp, self.token_file()).expect("rename token");
    }

    /// Only these tokens are accepted from now on (the others are "expired").
    pub fn set_valid_tokens(&self, tokens: &[&str]) {
        lock(&self.state).valid_tokens = tokens.iter().map(|t| t.to_string()).collect();
    }

    /// Rotation: `token` becomes the only valid one, and the token file holds it.
    pub fn rotate_token(&self, token: &str) {
        self.set_valid_tokens(&[token]);
        self.write_token_file(token);
    }

    /// Serves this file's bytes from now on.
    pub fn set_pods_file(&self, path: &Path) {
        let bytes =
            std::fs::read(path).unwrap_or_else(|e| panic!("pods file {}: {e}", path.display()));
        self.set_pods_bytes(bytes);
    }

    /// Serves a vendored fixture (tests/fixtures/kubelet/<name>) from now on.
    pub fn set_pods_fixture(&self, name: &str) {
        self.set_pods_file(&payloads::fixture_path(name));
    }

    pub fn set_pods_bytes(&self, bytes: impl Into<Bytes>) {
        lock(&self.state).pods = bytes.into();
    }

    /// From now on `GET /pods` is authorized as a kubelet does it (a SubjectAccessReview for
    /// `nodes/proxy` or, with fine-grained authorization, `nodes/pods`): only when `policy`
    /// grants one of [`KUBELET_PODS`]; else the kubelet's 403.
    pub fn enforce(&self, policy: Policy) {
        lock(&self.state).policy = Some(policy);
    }

    pub fn set_fault(&self, fault: Fault) {
        lock(&self.state).fault = fault;
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<SeenRequest> {
        lock(&self.state).seen.clone()
    }

    /// How many requests reached `/pods`.
    pub fn pods_requests(&self) -> usize {
        lock(&self.state)
            .seen
            .iter()
            .filter(|r| r.path == "/pods")
            .count()
    }
}

fn routes(state: Shared) -> Router {
    let pods: Handler = {
        let state = Arc::clone(&state);
        Arc::new(move |request| Box::pin(pods(Arc::clone(&state), request)))
    };
    Router::new().route(Method::GET, "/pods", pods)
}

async fn pods(state: Shared, request: Request<Incoming>) -> Response<Body> {
    let token = bearer(&request);
    let (pods, fault, authorized) = {
        let mut s = lock(&state);
        s.seen.push(SeenRequest {
            method: request.method().to_string(),
            path: request.uri().path().to_string(),
            bearer: token.clone(),
        });
        let authorized = !s.auth || token.as_ref().is_some_and(|t| s.valid_tokens.contains(t));
        let permitted = s.policy.as_ref().is_none_or(|p| {
            KUBELET_PODS
                .iter()
                .any(|(group, resource, verb)| p.allows(group, resource, verb))
        });
        let fault = if permitted {
            s.fault.clone()
        } else {
            Fault::Forbidden
        };
        (s.pods.clone(), fault, authorized)
    };
    // The kubelet authenticates, then authorizes, then serves.
    if !authorized {
        return text(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    match fault {
        Fault::None => json(pods),
        Fault::Delay(delay) => {
            tokio::time::sleep(delay).await;
            json(pods)
        }
        Fault::Forbidden => text(
            StatusCode::FORBIDDEN,
            "Forbidden (user=system:serviceaccount:sonde:sonde, verb=get, resource=nodes, \
             subresource(s)=[proxy])",
        ),
        Fault::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            text(status, status.canonical_reason().unwrap_or("error"))
        }
        Fault::CutMidBody => {
            let total = pods.len();
            let mut response = Response::new(cut_body(pods.slice(..total / 2)));
            let headers = response.headers_mut();
            headers.insert(
                CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            headers.insert(CONTENT_LENGTH, http::HeaderValue::from(total));
            response
        }
    }
}
