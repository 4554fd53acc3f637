//! The control plane: who is in the cluster, who is reachable, and how nodes and clients
//! find each other's actors.
//!
//! | module | owns |
//! | --- | --- |
//! | [`mesh`] | the actor: dialing, heartbeats, gossip, closing sessions, leaving cleanly |
//! | [`detector`] | the mesh's decisions as a pure type driven by `step(now, input)` |
//! | [`membership`] | the table of peers: reachable or not, since when, last heard |
//! | [`agent`] | the node's face to peers (info, heartbeats, leaving) and to clients |
//! | [`departure`] | this node's own departure: asked to leave, closed to changes, its mark |
//! | [`leave`] | leaving for a while or for good: what the node takes, and when it may |
//! | [`names`] | whose session is whose: member and client node names |
//! | [`discovery`] | finding hosts and agents through the process groups |
//! | [`seeds`] | the addresses `--join` names, its DNS names resolved again and again |
//! | [`policy`] | what a peer may say: members speak only for themselves |
//! | [`rpc`] | calls with a deadline, and fan-outs without a task per call |

pub(crate) mod agent;
pub(crate) mod departure;
pub(crate) mod detector;
pub(crate) mod discovery;
pub(crate) mod leave;
pub(crate) mod membership;
pub(crate) mod mesh;
pub(crate) mod names;
pub(crate) mod policy;
pub(crate) mod rpc;
pub(crate) mod seeds;
