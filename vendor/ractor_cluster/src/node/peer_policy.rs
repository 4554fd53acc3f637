// PATCHED (counter-cluster): this whole file is new.

//! What a peer may say: a policy the application gives its [`super::NodeServer`], which
//! every session consults before it believes its peer.
//!
//! ractor_cluster authenticates a peer (the cookie, or TLS) and then delivers whatever
//! it sends to any actor it may reach, and mirrors whatever actors it advertises, under
//! whatever names. An application whose actors trust what a message says about its
//! sender (whose stream a batch is, who is leaving) needs to know which peer sent it;
//! the policy is where it decides, with the peer's name as it authenticated:
//!
//! - [`PeerPolicy::may_authenticate`]: whether a peer may go on under the name it gave
//!   (checked when the name arrives, before the cookie challenge completes);
//! - [`PeerPolicy::may_advertise`]: whether one of its actors is mirrored here (a
//!   refused one is neither spawned nor joined to any group);
//! - [`PeerPolicy::may_deliver`]: whether a cast or call it sent reaches its local
//!   actor (a refused one is dropped; a call is never answered).
//!
//! Without a policy, everything is allowed, as upstream.

use ractor::ActorCell;

/// See the module documentation. Called on a session's own tasks: keep each decision
/// quick, and never block.
pub trait PeerPolicy: std::fmt::Debug + Send + Sync + 'static {
    /// Whether the peer at `peer_addr` (the session's label for it: its socket
    /// address) may go on as `peer_name` (`name@host`, as it announced itself).
    fn may_authenticate(&self, peer_name: &str, peer_addr: &str) -> bool;

    /// Whether the peer `peer_name` may have its actor `actor_name` (`None`: unnamed)
    /// mirrored here, when `mirrored` of its actors are already.
    fn may_advertise(&self, peer_name: &str, actor_name: Option<&str>, mirrored: usize)
        -> bool;

    /// Whether the peer `peer_name` may deliver message `variant`, with its serialized
    /// arguments `args`, to the local actor `target`.
    fn may_deliver(&self, peer_name: &str, target: &ActorCell, variant: &str, args: &[u8])
        -> bool;
}
