//! The join: an event plus what the node model knows → an attributed record. Every event says
//! which cgroup it came from and what that cgroup is (container runtime and id, pod UID and QoS
//! class, or systemd unit and slice); connections whose owner the kernel did not know (they
//! predate Sonde) get it from the start-up scan. Kubernetes metadata joins here next.

use std::sync::Arc;

use crate::{
    event::{ConnPhase, Event},
    node::{FoundConn, NodeModel, cgroup::CgroupInfo},
};

/// What an event is attributed to, beyond what the kernel record carries.
#[derive(Clone, Debug, Default)]
pub struct Attribution {
    /// The cgroup of the process (or socket) behind the event, when known.
    pub cgroup: Option<Arc<CgroupInfo>>,
    /// For a connection found at start-up and now closing: its owner and id from the scan.
    pub found: Option<FoundConn>,
}

/// The cgroup id an event belongs to.
pub fn cgroup_id(ev: &Event) -> u64 {
    match ev {
        Event::Exec(r) => r.task.cgroup_id,
        Event::Fork(r) => r.child_cgroup_id,
        Event::Exit(r) => r.task.cgroup_id,
        Event::Conn(c) => c.cgroup_id(),
        Event::Cgroup { record, .. } => record.id,
    }
}

/// Applies `ev` to the model and attributes it.
pub fn attribute(node: &mut NodeModel, ev: &Event) -> Attribution {
    let found = match ev {
        // Closing a connection that existed at start-up: the scan knows its owner.
        Event::Conn(c) if c.phase != ConnPhase::Open && !c.seen_open() => {
            node.take_found_conn(c.local(), c.remote())
        }
        _ => None,
    };
    node.apply(ev);
    let mut id = cgroup_id(ev);
    if id == 0 {
        id = found.as_ref().map_or(0, |f| f.cgroup_id);
    }
    Attribution {
        cgroup: node.cgroup(id),
        found,
    }
}
