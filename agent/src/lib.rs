//! Sonde, the node agent: kernel capture (eBPF), typed events, and their export.
//!
//! Layers, each usable without the ones after it:
//! - [`capture`]: load and attach the eBPF programs, read the ring buffer and drop counters;
//! - [`event`]: typed lifecycle events decoded from kernel records;
//! - [`node`]: the node model (cgroups, processes, start-up scan) and [`enrich`], the join that
//!   attributes every event to a container, pod or host service;
//! - [`export`]: sinks (NDJSON / text event stream, Prometheus metrics, status, stream fan-out);
//! - [`kube`]: Kubernetes metadata (kubelet client, apiserver watches, pod store, remote index);
//! - [`http`]: the one HTTP server (cap, timeouts, bodies) that `/metrics` and the API use;
//! - [`api`] / [`client`]: the HTTP API (`/v1/events`, `/v1/status`) and `sonde status`;
//! - [`tls`]: PEM files, the crypto provider, the API's reloading serving certificate;
//! - [`cluster`]: once-per-cluster duties, run by the elected leader;
//! - [`config`]: one configuration model (defaults < file < env < flags);
//! - [`run`]: the `sonde run` pipeline tying them together.

pub mod aging;
pub mod api;
pub mod capture;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod diagnose;
pub mod enrich;
pub mod event;
pub mod export;
pub mod http;
pub mod kube;
pub mod logging;
pub mod memory;
pub mod node;
pub mod pipeline;
pub mod run;
pub mod tls;
pub mod units;
