//! A node whose store is lost (a blank data dir) starts from its copy: before it opens
//! its store for anything else, it asks a member it joins through for the best copy of
//! its store (the furthest on, by commit number, among the keepers after it on the
//! ring), and fills its store with it, part by part, then says so in one line. A store being replaced is marked so on its disk
//! until the last part: a node that stops midway starts the replacement again.
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

/// How long the node looks for a member to ask, in all.
pub(crate) const ASK_WITHIN: Duration = Duration::from_secs(5);

/// How long one part of the copy may take to arrive.
const PART_WITHIN: Duration = Duration::from_secs(30);

/// What the store in `dir` holds: the last commit, or `None` if there is no store, or
/// a restore into it was under way.
fn local_commit(dir: &Path, node: &str) -> Result<Option<u64>, StoreError> {
    if !dir.join(crate::store::FILE_NAME).exists() {
        return Ok(None);
    }
    let (store, recovered) = Store::open(dir, node, 0, Arc::default())?;
    if store.copy_incomplete()? {
        return Ok(None);
    }
    Ok(Some(recovered.last_commit))
}

/// Replaces the store in `dir` with the copy from `first` onwards (see the module
/// documentation).
fn replace(dir: &Path, node: &str, parts: &[CopyPart]) -> Result<(), NodeError> {
    let (store, _) = Store::open(dir, node, 0, Arc::default())?;
    let count = parts.len();
    for (i, part) in parts.iter().enumerate() {
        let ops: Vec<Op> = shared::codec::decode(&part.ops).map_err(|e| {
            NodeError::Config(format!("the copy of this node's store is unreadable: {e}"))
        })?;
        let state = if i + 1 == count {
            Some(1)
        } else if i == 0 {
            Some(0)
        } else {
            None
        };
        store.apply_copied(&ops, i == 0, state)?;
    }
    Ok(())
}

/// Starts the node's store from its copy if the copy is further on (see the module
/// documentation). Needs a data dir, copies and a member to join through.
pub(crate) async fn if_behind(config: &NodeConfig, dir: &Path) -> Result<(), NodeError> {
    if config.copies < 2 || config.seeds.is_empty() {
        return Ok(());
    }
    let (at, name) = (dir.to_path_buf(), config.name.clone());
    let local = spawn_blocking(move || local_commit(&at, &name)).await??;
    if local.is_some() {
        return Ok(());
    }
    let Some(client) = connect(config).await else {
        // As every node of a new cluster does, started together.
        info!("no member answered to say whether a copy of this node's store is kept: starting with a new store");
        return Ok(());
    };
    let fetched = fetch(&client, &config.name).await;
    client.close().await;
    let Some((keeper, parts)) = fetched? else {
        return Ok(());
    };
    let through = parts[0].through;
    let (at, name) = (dir.to_path_buf(), config.name.clone());
    spawn_blocking(move || replace(&at, &name, &parts)).await??;
    let was = local.map_or_else(
        || "none (a blank or unfinished store)".to_string(),
        |n| format!("commit {n}"),
    );
    info!(%keeper, through, was = %was, "started this node's store from its copy: what this node acknowledged is back");
    Ok(())
}

/// A client of the first member to answer, within [`ASK_WITHIN`].
async fn connect(config: &NodeConfig) -> Option<ClusterClient> {
    let deadline = tokio::time::Instant::now() + ASK_WITHIN;
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

/// Every part of the best copy of `node`'s store, and its keeper; `None` if none is kept.
async fn fetch(
    client: &ClusterClient,
    node: &str,
) -> Result<Option<(String, Vec<CopyPart>)>, NodeError> {
    let mut parts: Vec<CopyPart> = Vec::new();
    let mut keeper = String::new();
    loop {
        let request = ClientRequest::FetchCopy {
            node: node.to_string(),
            part: parts.len() as u32,
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
        let same = parts
            .first()
            .is_none_or(|p| p.through == part.through && p.parts == part.parts);
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
