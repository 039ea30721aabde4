//! Work done once per cluster, not once per node: the agents elect one leader ([`leader`]),
//! which runs the cluster's duties while the others stand by.

pub mod leader;
