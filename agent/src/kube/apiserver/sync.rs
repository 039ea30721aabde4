//! The apiserver source's health per watched kind, for `sonde status` and metrics.

use std::{collections::BTreeMap, time::SystemTime};

use serde::Serialize;

use super::kind::WatchKind;

/// One watch's health.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KindSyncState {
    /// A full list has been loaded at least once (the kind's view is complete).
    pub synced: bool,
    /// The last list or event received.
    pub last_success: Option<SystemTime>,
    /// The latest failure's message (cause and fix); kept after a recovery, see
    /// `consecutive_failures` for the current health.
    pub last_error: Option<String>,
    pub last_error_at: Option<SystemTime>,
    /// Failures since the last list or event; 0 when healthy.
    pub consecutive_failures: u32,
    /// Failed list or watch requests since start.
    pub failures: u64,
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
        self.synced && self.consecutive_failures == 0
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
