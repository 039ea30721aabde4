//! The apiserver as a metadata source: kube-rs watchers, one per kind, each feeding a view.
//!
//! - [`config`]: the `kubernetes.*` keys ([`KubernetesConfig`]);
//! - [`kind`]: what is watched, and the RBAC rule each watch needs;
//! - [`source`]: [`spawn_apiserver_source`] and its [`ApiserverHandle`];
//! - [`watch`]: one watch's loop (kube-rs watcher → sink, health recorded);
//! - [`sinks`]: where each kind goes; [`strip`]: the objects reduced to what the join keeps;
//!   [`slim`]: Services and EndpointSlices decoded straight into what the join keeps;
//! - [`owners`]: ReplicaSet → Deployment and Job → CronJob ([`OwnerIndex::workload`]);
//! - [`labels`]: node and namespace labels;
//! - [`sync`]: health per kind ([`ApiserverSyncState`]); [`error`]: failures with cause and
//!   fix ([`ApiserverError`]).
//!
//! TLS is rustls with the ring provider (kube's `rustls-tls` + `ring` features, no aws-lc).
//! Tokens are never logged: kube-rs keeps them out of its `Debug` output and so do we.

pub mod config;
pub mod error;
pub mod kind;
pub mod labels;
pub mod owners;
mod sinks;
pub mod slim;
pub mod source;
pub mod strip;
pub mod sync;
mod watch;

pub use config::KubernetesConfig;
pub use error::ApiserverError;
pub use kind::WatchKind;
pub use labels::LabelIndex;
pub use owners::{OwnerIndex, OwnerLink};
pub use source::{ApiserverHandle, spawn_apiserver_source};
pub use sync::{ApiserverSyncState, KindSyncState};
