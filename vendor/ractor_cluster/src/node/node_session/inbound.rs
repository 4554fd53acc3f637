// PATCHED (counter-cluster): this whole file is new.

//! The part of a [super::NodeSession] that its session's reader shares, so the reader can
//! hand over casts and calls for local actors, and replies to this node's calls, itself
//! instead of through the `NodeSession`'s mailbox (one task hand-off less per frame
//! received).
//!
//! The reader goes direct only while the session is authenticated (and won its
//! election) and every frame it forwarded to the `NodeSession` before has been handled
//! there, so frames reach local actors in the order they arrived, whichever way each
//! went.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use ractor::message::SerializedMessage;
use ractor::{ActorId, ActorRef};
use tokio::time::Duration;

use crate::net::SessionWriter;
use crate::protocol::meta::network_message::Message as NetworkPayload;
use crate::protocol::node as node_protocol;
use crate::protocol::NetworkMessage;
use crate::remote_actor::RemoteActorMessage;

/// What a session's reader and its `NodeSession` share.
#[derive(Debug, Default)]
pub(crate) struct InboundRoute {
    /// Set once the session is authenticated and elected; cleared when the
    /// `NodeSession` stops (or its state is dropped, if it was killed).
    open: AtomicBool,
    /// How many frames the reader forwarded has the `NodeSession` handled.
    handled: AtomicU64,
    /// The local actors this session has advertised to the peer: the only ones the
    /// peer may send to.
    advertised_local_pids: RwLock<HashSet<u64>>,
    /// The `RemoteActor`s of the peer's actors, by pid: where replies to calls go.
    remote_actors: RwLock<HashMap<u64, ActorRef<RemoteActorMessage>>>,
    /// What the peer may say (see `peer_policy.rs`), and its name once the policy let
    /// it authenticate under it: nothing is delivered before.
    policy: Option<Arc<dyn crate::node::PeerPolicy>>,
    peer: RwLock<Option<String>>,
}

/// Where a call's reply goes: the session's writer, or (without one) a function that
/// hands it to the `NodeSession`.
pub(crate) type ReplyTo = Box<dyn Fn(node_protocol::NodeMessage) + Send + 'static>;

impl InboundRoute {
    #[cfg(test)]
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A route that consults `policy` (if any) before delivering.
    pub(crate) fn with_policy(policy: Option<Arc<dyn crate::node::PeerPolicy>>) -> Arc<Self> {
        Arc::new(Self {
            policy,
            ..Self::default()
        })
    }

    /// The peer is `name` (as it authenticated, and the policy admitted).
    pub(crate) fn set_peer(&self, name: &str) {
        *write(&self.peer) = Some(name.to_string());
    }

    /// Whether the policy lets the peer's actor `actor_name` be mirrored here.
    pub(crate) fn may_advertise(&self, actor_name: Option<&str>) -> bool {
        let Some(policy) = &self.policy else {
            return true;
        };
        let peer = read(&self.peer);
        let mirrored = read(&self.remote_actors).len();
        peer.as_deref()
            .is_some_and(|peer| policy.may_advertise(peer, actor_name, mirrored))
    }

    /// Whether the policy lets the peer deliver `variant` (`args`) to `target`.
    fn may_deliver(&self, target: &ractor::ActorCell, variant: &str, args: &[u8]) -> bool {
        let Some(policy) = &self.policy else {
            return true;
        };
        let peer = read(&self.peer);
        let allowed = peer
            .as_deref()
            .is_some_and(|peer| policy.may_deliver(peer, target, variant, args));
        if !allowed {
            tracing::debug!("Peer policy refused '{variant}' for local PID {}", target.get_id());
        }
        allowed
    }

    /// The session is authenticated and elected: its reader may deliver directly.
    pub(crate) fn open(&self) {
        self.open.store(true, Ordering::Release);
    }

    /// The `NodeSession` is gone: nothing more goes direct.
    pub(crate) fn close(&self) {
        self.open.store(false, Ordering::Release);
    }

    /// The `NodeSession` has handled one more forwarded frame (delivered it, if it was
    /// for a local actor).
    pub(crate) fn mark_handled(&self) {
        self.handled.fetch_add(1, Ordering::Release);
    }

    pub(crate) fn advertise(&self, pids: impl IntoIterator<Item = u64>) {
        write(&self.advertised_local_pids).extend(pids);
    }

    pub(crate) fn withdraw(&self, pid: u64) {
        write(&self.advertised_local_pids).remove(&pid);
    }

    pub(crate) fn remote_actor(&self, pid: u64) -> Option<ActorRef<RemoteActorMessage>> {
        read(&self.remote_actors).get(&pid).cloned()
    }

    pub(crate) fn add_remote_actor(&self, pid: u64, actor: ActorRef<RemoteActorMessage>) {
        write(&self.remote_actors).insert(pid, actor);
    }

    #[cfg(test)]
    pub(crate) fn remote_actor_count(&self) -> usize {
        read(&self.remote_actors).len()
    }

    pub(crate) fn remove_remote_actor(&self, pid: u64) -> Option<ActorRef<RemoteActorMessage>> {
        write(&self.remote_actors).remove(&pid)
    }

    /// The reader's side: deliver `message` to its local actor if it is a cast or a
    /// call (or to its `RemoteActor` if it is a reply) and may go direct now; otherwise
    /// hand it back, to be forwarded to the `NodeSession`. `forwarded` is how many
    /// frames the reader has forwarded so far.
    pub(crate) fn try_deliver(
        &self,
        message: NetworkMessage,
        forwarded: u64,
        writer: &SessionWriter,
    ) -> Result<(), NetworkMessage> {
        if !self.open.load(Ordering::Acquire) || self.handled.load(Ordering::Acquire) != forwarded {
            return Err(message);
        }
        match message.message {
            Some(NetworkPayload::Node(node_protocol::NodeMessage {
                msg: Some(node_protocol::node_message::Msg::Cast(cast)),
            })) => {
                self.deliver_cast(cast);
                Ok(())
            }
            Some(NetworkPayload::Node(node_protocol::NodeMessage {
                msg: Some(node_protocol::node_message::Msg::Call(call)),
            })) => {
                let writer = writer.clone();
                self.deliver_call(
                    call,
                    Box::new(move |reply| {
                        let _ = writer.send(NetworkMessage {
                            message: Some(NetworkPayload::Node(reply)),
                        });
                    }),
                );
                Ok(())
            }
            Some(NetworkPayload::Node(node_protocol::NodeMessage {
                msg: Some(node_protocol::node_message::Msg::Reply(reply)),
            })) => {
                self.deliver_reply(reply);
                Ok(())
            }
            other => Err(NetworkMessage { message: other }),
        }
    }

    /// The local actor `pid`, if this session advertised it and it still takes remote
    /// messages.
    fn authorized_local_actor(&self, pid: u64) -> Option<ractor::ActorCell> {
        let advertised = read(&self.advertised_local_pids).contains(&pid);
        if !advertised {
            tracing::debug!("Rejected cluster message for unadvertised local PID {pid}");
            return None;
        }

        let actor = ractor::registry::where_is_pid(ActorId::Local(pid));
        if actor
            .as_ref()
            .is_some_and(ractor::ActorCell::supports_remoting)
        {
            actor
        } else {
            self.withdraw(pid);
            tracing::debug!("Rejected cluster message for non-remotable local PID {pid}");
            None
        }
    }

    pub(crate) fn deliver_cast(&self, cast: node_protocol::Cast) {
        if let Some(actor) = self.authorized_local_actor(cast.to) {
            // PATCHED (counter-cluster): the peer policy's say.
            if !self.may_deliver(&actor, &cast.variant, &cast.what) {
                return;
            }
            let _ = actor.send_serialized(SerializedMessage::Cast {
                variant: cast.variant,
                args: cast.what,
                metadata: cast.metadata,
            });
        }
    }

    /// Hands a reply to the `RemoteActor` whose call it answers.
    pub(crate) fn deliver_reply(&self, reply: node_protocol::CallReply) {
        if let Some(actor) = self.remote_actor(reply.to) {
            let _ = actor.send_serialized(SerializedMessage::CallReply(reply.tag, reply.what));
        }
    }

    /// Hands the call to its actor, and its reply (if one comes in time) to `reply_to`.
    pub(crate) fn deliver_call(&self, call: node_protocol::Call, reply_to: ReplyTo) {
        let to = call.to;
        let tag = call.tag;
        let Some(actor) = self.authorized_local_actor(to) else {
            return;
        };
        // PATCHED (counter-cluster): the peer policy's say.
        if !self.may_deliver(&actor, &call.variant, &call.what) {
            return;
        }
        let (tx, rx) = ractor::concurrency::oneshot();

        // send off the transmission in the serialized format, letting the message's own
        // deserialization handle the conversion
        let maybe_timeout = call.timeout_ms.map(Duration::from_millis);
        let reply: ractor::RpcReplyPort<Vec<u8>> = match maybe_timeout {
            Some(timeout) => (tx, timeout).into(),
            None => tx.into(),
        };
        let _ = actor.send_serialized(SerializedMessage::Call {
            args: call.what,
            reply,
            variant: call.variant,
            metadata: call.metadata,
        });

        // a background task replies, threading the tag and who to reply to
        let send_reply = move |what: Vec<u8>| {
            reply_to(node_protocol::NodeMessage {
                msg: Some(node_protocol::node_message::Msg::Reply(
                    node_protocol::CallReply { tag, to, what },
                )),
            });
        };
        #[allow(clippy::let_underscore_future)]
        let _ = ractor::concurrency::spawn(async move {
            if let Some(timeout) = maybe_timeout {
                if let Ok(Ok(result)) = ractor::concurrency::timeout(timeout, rx).await {
                    send_reply(result);
                }
            } else if let Ok(result) = rx.await {
                send_reply(result);
            }
        });
    }
}

/// A lock's contents, even if a holder panicked: each critical section here is one
/// insert, remove, clear or lookup, so the contents are whole either way.
fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// [`read`], for writing.
fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// Closes the route when the `NodeSession`'s state is dropped, however the session
/// ends (a killed actor gets no `post_stop`), and lets go of its `RemoteActor`s, as
/// the state did when it held them.
#[derive(Debug)]
pub(crate) struct RouteGuard(pub(crate) Arc<InboundRoute>);

impl Drop for RouteGuard {
    fn drop(&mut self) {
        self.0.close();
        write(&self.0.remote_actors).clear();
    }
}

impl std::ops::Deref for RouteGuard {
    type Target = InboundRoute;

    fn deref(&self) -> &InboundRoute {
        &self.0
    }
}

/// Marks one forwarded frame handled when dropped: the `NodeSession` holds one while it
/// handles a frame the reader forwarded, whichever way its handler returns.
pub(crate) struct MarkHandled(pub(crate) Arc<InboundRoute>);

impl Drop for MarkHandled {
    fn drop(&mut self) {
        self.0.mark_handled();
    }
}
