//! Faithful stand-ins for the Kubernetes endpoints Sonde talks to, over real HTTPS.
//!
//! - [`pki`]: a test CA and server certificates generated at run time (rcgen), with the SANs a
//!   test asks for;
//! - [`server`]: a small HTTPS (or plain HTTP) server on 127.0.0.1 with a path router, running
//!   on its own thread and runtime, so any test (sync or async) can use it;
//! - [`kubelet`]: the kubelet's `/pods`, serving the vendored payloads from
//!   `tests/fixtures/kubelet` byte for byte, with the kubelet's authentication (bearer token,
//!   401), authorization (403) and fault modes (slow answers, cut bodies);
//! - [`payloads`]: the fixtures and generated pod lists (10,000 pods from real templates).
//!
//! - [`apiserver`]: the apiserver's list + watch (resourceVersion, bookmarks, fieldSelector,
//!   410 Gone, metadata-only answers), token authentication (401), RBAC denials (403) and
//!   stream faults — another set of routes on the same [`server::TestServer`] and
//!   [`pki::TestCa`].

pub mod apiserver;
pub mod kubelet;
pub mod payloads;
pub mod pki;
pub mod rbac;
pub mod server;

pub use apiserver::{ApiserverStandin, Resource, SeenApiRequest};
pub use kubelet::{Fault, KubeletOptions, KubeletStandin, SeenRequest};
pub use pki::{ServerCert, TestCa};
