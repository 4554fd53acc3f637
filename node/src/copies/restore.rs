//! A node whose store is lost (a blank data dir) or older than its copy (a data dir put
//! back from a backup) starts from its copy: before it opens its store for anything
//! else, it asks a member it joins through for the best copy of its store (the furthest
//! on, by commit number, among the keepers after it on the ring; of the same store, if
//! it has one), and, if that is further on than its own, replaces the store with it,
//! part by part, then says so in one line. A copy can be further on only by commits the
//! node never acknowledged (shipped before its own sync, and the node died first), or
//! because the data dir is older: either way the copy is the store as of one commit,
//! and the node resumes from it as from a crash.
//!
//! A replacement under way is marked by a file in the data dir ([`RESTORING`]), made
//! before the first part and removed after the last: a node that stopped midway starts
//! the replacement again, and refuses to start on the half-replaced store if it cannot.
//!
//! A node with no member to ask (none answers within [`ASK_WITHIN`]), or whose copy is
//! kept nowhere reachable, starts from what its disk holds.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use shared::agent::{ClientAnswer, ClientRequest};
use shared::copies::CopyPart;
use tracing::info;

use crate::client::connection::ClusterClient;
use crate::config::NodeConfig;
use crate::error::NodeError;
use crate::runtime::busy_poll::spawn_blocking;
use crate::store::{Op, Store, StoreError};

/// The file that marks a replacement of the store under way, in the data dir.
pub(crate) const RESTORING: &str = "RESTORING";

/// How long a node with no store (or an unfinished one) looks for a member to ask.
pub(crate) const ASK_WITHIN: Duration = Duration::from_secs(5);

/// How long a node with a store of its own looks for a member to ask.
const ASK_WITHIN_HOLDING: Duration = Duration::from_secs(2);

/// How long one part of the copy may take to arrive.
const PART_WITHIN: Duration = Duration::from_secs(30);

/// What the store in `dir` holds: its last commit and its id, or `None` if there is
/// no store.
fn local_store(dir: &Path, node: &str) -> Result<Option<(u64, u64)>, StoreError> {
    if !dir.join(crate::store::FILE_NAME).exists() {
        return Ok(None);
    }
    let (store, recovered) = Store::open(dir, node, 0, Arc::default())?;
    Ok(Some((recovered.last_commit, store.origin())))
}

/// Makes (`true`) or removes the [`RESTORING`] mark in `dir`, durably.
fn mark(dir: &Path, on: bool) -> Result<(), NodeError> {
    let path = dir.join(RESTORING);
    let done = if on {
        std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&path, b"a restore from the copy is under way\n"))
            .and_then(|()| std::fs::File::open(&path)?.sync_all())
    } else {
        std::fs::remove_file(&path)
    };
    done.and_then(|()| std::fs::File::open(dir)?.sync_all())
        .map_err(|e| {
            NodeError::Config(format!("cannot mark the restore in {}: {e}", dir.display()))
        })
}

/// Replaces the store in `dir` with the copy in `parts` (see the module
/// documentation).
fn replace(dir: &Path, node: &str, parts: &[CopyPart]) -> Result<(), NodeError> {
    mark(dir, true)?;
    {
        let (store, _) = Store::open(dir, node, 0, Arc::default())?;
        for (i, part) in parts.iter().enumerate() {
            let ops: Vec<Op> = shared::codec::decode(&part.ops).map_err(|e| {
                NodeError::Config(format!("the copy of this node's store is unreadable: {e}"))
            })?;
            store.apply_copied(&ops, i == 0, None)?;
        }
    }
    mark(dir, false)
}

/// The error of a node whose store was being replaced and cannot be now.
fn unfinished(dir: &Path, why: &str) -> NodeError {
    NodeError::Config(format!(
        "the store in {} was being replaced with its copy and the replacement did not \
         finish ({}); {why}. Start it again once a member that keeps its copy is up, or \
         remove the data dir to start a new store",
        dir.display(),
        dir.join(RESTORING).display()
    ))
}

/// Starts the node's store from its copy if the copy is further on (see the module
/// documentation). Needs a data dir, copies and a member to join through.
pub(crate) async fn if_behind(config: &NodeConfig, dir: &Path) -> Result<(), NodeError> {
    let unfinished_before = dir.join(RESTORING).exists();
    if config.copies < 2 || config.seeds.is_empty() {
        if unfinished_before {
            return Err(unfinished(dir, "it runs without --copies 2 and --join now"));
        }
        return Ok(());
    }
    let local = if unfinished_before {
        None
    } else {
        let (at, name) = (dir.to_path_buf(), config.name.clone());
        spawn_blocking(move || local_store(&at, &name)).await??
    };
    // A node with a store of its own has something to start from: it waits less (a
    // whole cluster started again at once finds nobody up for a moment).
    let within = if local.is_some() {
        ASK_WITHIN_HOLDING
    } else {
        ASK_WITHIN
    };
    let Some(client) = connect(config, within).await else {
        if unfinished_before {
            return Err(unfinished(dir, "no member answered"));
        }
        if local.is_none() {
            // As every node of a new cluster does, started together.
            info!("no member answered to say whether a copy of this node's store is kept: starting with a new store");
        }
        return Ok(());
    };
    let fetched = fetch(&client, &config.name, local).await;
    client.close().await;
    let Some((keeper, parts)) = fetched? else {
        if unfinished_before {
            return Err(unfinished(dir, "no member up keeps its copy"));
        }
        return Ok(());
    };
    let through = parts[0].through;
    let was = match local {
        Some((commit, _)) => format!("commit {commit}"),
        None if unfinished_before => "an unfinished replacement".to_string(),
        None => "none".to_string(),
    };
    let (at, name) = (dir.to_path_buf(), config.name.clone());
    spawn_blocking(move || replace(&at, &name, &parts)).await??;
    info!(%keeper, through, data_dir_held = %was, "started this node's store from its copy, which is further on than the data dir's: what this node acknowledged is back");
    Ok(())
}

/// A client of the first member to answer, within `within`.
async fn connect(config: &NodeConfig, within: Duration) -> Option<ClusterClient> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        // Not this node itself: it does not serve yet.
        let own = [config.listen.to_string(), config.advertise()];
        for seed in config.seeds.iter().filter(|s| !own.contains(s)) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return None;
            }
            let within = left.min(Duration::from_secs(2));
            if let Ok(client) =
                ClusterClient::connect(seed, config.cookie.secret(), config.tls.as_ref(), within)
                    .await
            {
                return Some(client);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every part of the best copy of `node`'s store, and its keeper; `None` if none is
/// kept further on than `local` (the local store's last commit, and its id: only a
/// copy of that store).
async fn fetch(
    client: &ClusterClient,
    node: &str,
    local: Option<(u64, u64)>,
) -> Result<Option<(String, Vec<CopyPart>)>, NodeError> {
    let mut parts: Vec<CopyPart> = Vec::new();
    let mut keeper = String::new();
    loop {
        let request = ClientRequest::FetchCopy {
            node: node.to_string(),
            part: parts.len() as u32,
            after: local.map(|(commit, _)| commit),
            store_id: local.map(|(_, id)| id),
        };
        let answer = client.request(request, PART_WITHIN).await.map_err(|e| {
            NodeError::Config(format!("fetching the copy of this node's store: {e}"))
        })?;
        let ClientAnswer::Copy(copy) = answer else {
            return Err(NodeError::Config(
                "the member answered something else than a copy".into(),
            ));
        };
        let Some((from, part)) = copy else {
            if parts.is_empty() {
                return Ok(None);
            }
            return Err(NodeError::Config(format!(
                "the copy of this node's store on {keeper} went away midway"
            )));
        };
        let same = parts.first().is_none_or(|p| {
            (p.through, p.parts, p.store_id) == (part.through, part.parts, part.store_id)
        });
        if !same || (!keeper.is_empty() && keeper != from) {
            return Err(NodeError::Config(
                "the copy of this node's store changed midway".into(),
            ));
        }
        keeper = from;
        let count = part.parts as usize;
        parts.push(part);
        if parts.len() >= count {
            return Ok(Some((keeper, parts)));
        }
    }
}
