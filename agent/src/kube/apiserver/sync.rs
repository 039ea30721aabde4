//! The apiserver source's health per watched kind, for `sonde status` and metrics.

use std::collections::BTreeMap;

use serde::Serialize;

use super::kind::WatchKind;
use crate::kube::source::SyncHealth;

/// One watch's health.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KindSyncState {
    /// A full list has been loaded at least once (the kind's view is complete).
    pub synced: bool,
    /// Successes (a list, an event) and failed list or watch requests (the fields every
    /// source has).
    #[serde(flatten)]
    pub sync: SyncHealth,
    /// Objects held for this kind now (stripped).
    pub objects: usize,
    /// Full lists loaded (the first, and each re-list after `410 Gone`).
    pub lists: u64,
    /// Watch events applied (added, modified, deleted).
    pub events: u64,
    /// `410 Gone` answers: the watch's resourceVersion had been compacted, so the kind was
    /// re-listed. Expected now and then; not a failure.
    pub expired: u64,
    /// Errors inside a watch stream (a read error, a malformed event): the watch goes on, or
    /// resumes from the last resourceVersion. Not a failure unless resuming fails. (A
    /// connection cut mid-event is taken by kube-rs for the end of the watch and resumed
    /// without an error, so it is not counted here.)
    pub stream_errors: u64,
}

impl KindSyncState {
    pub fn healthy(&self) -> bool {
        self.synced && self.sync.ok()
    }
}

/// The apiserver source's health.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ApiserverSyncState {
    /// The apiserver URL (empty until a client could be built).
    pub server: String,
    /// Where the credentials come from: `kubeconfig <path>` or `in-cluster service account`.
    pub credentials: String,
    /// Why no client could be built yet (cause and fix); `None` once it could.
    pub client_error: Option<String>,
    /// One entry per watch that runs.
    pub kinds: BTreeMap<WatchKind, KindSyncState>,
}

impl ApiserverSyncState {
    /// Every watch has listed and none is failing.
    pub fn healthy(&self) -> bool {
        self.client_error.is_none()
            && !self.kinds.is_empty()
            && self.kinds.values().all(KindSyncState::healthy)
    }

    pub fn kind(&self, kind: WatchKind) -> Option<&KindSyncState> {
        self.kinds.get(&kind)
    }
}
