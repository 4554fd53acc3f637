//! Copies of every node's store on a second node (`--copies 2`; the default is still
//! 1, see below): so a node's counters outlive its disk.
//!
//! | module | owns |
//! | --- | --- |
//! | [`placement`] | which member keeps a node's copy: its successor on the ring of names |
//! | [`outgoing`] | the commits not shipped yet, and how far the copy covers them |
//! | [`shipper`] | this node's store shipped to its keeper: a transfer, then every commit |
//! | [`keeper`] | the copies this node keeps of other nodes' stores, on its disk |
//! | [`restore`] | a node whose store is lost or older than its copy starts from the copy |
//!
//! **What is copied** is the node's whole store (counters, incoming streams and their
//! marks, client change ids, outbox and issued tally): as each commit makes it, the
//! commit's writes (the records of its redo log, each the new value of a key) go to the
//! keeper, which applies them in order to its copy. A copy is so always the node's store
//! as of one commit, never a mix: a node that starts from it resumes every stream, id
//! and outgoing batch exactly where that commit left them, and what it sent or applied
//! after is sent again and deduplicated as after any crash.
//!
//! **Acknowledged means on every current copy's disk.** The journal answers a commit
//! (a client's change, a sender's `Sync`, a load client's batches issued) only once the
//! keeper has it on its disk too, or once no copy is in step (see [`shipper`]): the
//! commit is then on the one current copy. The shipment leaves before the local sync,
//! so the two syncs run side by side.
//!
//! **The order-dependent parts**: none are decided by a copy. The node alone plans
//! every commit (an overflow refused, a batch taken or dropped, an id answered again),
//! and the copy takes the outcome as written; a copy never plans, so two copies cannot
//! decide differently.
//!
//! **What is not done yet** (see CHANGELOG.md), and why the default stays 1 until it
//! is: a copy serves neither reads nor changes while its node is down (the node's
//! counters wait for it, as with one copy, and stats are incomplete meanwhile); a node
//! whose keepers are down too when it starts on a lost disk, or that joins through no
//! member (the coordinator without `--join`), starts new; a node that leaves for good
//! does not hand its counters on (it leaves only holding no count, and a keeper that
//! hears it leave removes its copy).

pub(crate) mod keeper;
pub(crate) mod outgoing;
pub(crate) mod placement;
pub(crate) mod restore;
pub(crate) mod shipper;
