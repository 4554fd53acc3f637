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
use tracing::{info, warn};

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

/// Makes the [`RESTORING`] mark in `dir`, naming the copy it is replaced with (its
/// store's id and last commit), or removes it (`None`); durably.
fn mark(dir: &Path, copy: Option<(u64, u64)>) -> Result<(), NodeError> {
    let path = dir.join(RESTORING);
    let done = match copy {
        Some((store_id, through)) => std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&path, format!("{store_id} {through}\n")))
            .and_then(|()| std::fs::File::open(&path)?.sync_all()),
        None => std::fs::remove_file(&path),
    };
    done.and_then(|()| std::fs::File::open(dir)?.sync_all())
        .map_err(|e| {
            NodeError::Config(format!("cannot mark the restore in {}: {e}", dir.display()))
        })
}

/// The copy a replacement under way was made with: its store's id and last commit
/// (`None`: no mark; an unreadable mark is an error).
fn marked(dir: &Path) -> Result<Option<(u64, u64)>, NodeError> {
    let path = dir.join(RESTORING);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(NodeError::Config(format!(
                "cannot read {}: {e}",
                path.display()
            )))
        }
    };
    let mut words = text.split_whitespace().map(str::parse::<u64>);
    match (words.next(), words.next()) {
        (Some(Ok(store_id)), Some(Ok(through))) => Ok(Some((store_id, through))),
        _ => Err(NodeError::Config(format!(
            "{} does not say which copy the store was being replaced with; remove the data dir to start a new store",
            path.display()
        ))),
    }
}

/// Replaces the store in `dir` with the copy in `parts` (see the module
/// documentation).
fn replace(dir: &Path, node: &str, parts: &[CopyPart]) -> Result<(), NodeError> {
    mark(dir, Some((parts[0].store_id, parts[0].through)))?;
    {
        let (store, _) = Store::open(dir, node, 0, Arc::default())?;
        for (i, part) in parts.iter().enumerate() {
            let ops: Vec<Op> = shared::codec::decode(&part.ops).map_err(|e| {
                NodeError::Config(format!("the copy of this node's store is unreadable: {e}"))
            })?;
            store.apply_copied(&ops, i == 0, None)?;
        }
    }
    mark(dir, None)
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
    let unfinished_before = marked(dir)?;
    if config.copies < 2 || config.seeds.is_empty() {
        if unfinished_before.is_some() {
            return Err(unfinished(dir, "it runs without --copies 2 and --join now"));
        }
        return Ok(());
    }
    let local = match unfinished_before {
        Some(_) => None,
        None => {
            let (at, name) = (dir.to_path_buf(), config.name.clone());
            spawn_blocking(move || local_store(&at, &name)).await??
        }
    };
    // What copy will do: one further on than the local store, of the same store; or,
    // to finish a replacement, the copy it began with or one further on.
    let wanted = match (local, unfinished_before) {
        (Some((commit, store_id)), _) => Some((commit, store_id)),
        (None, Some((store_id, through))) => Some((through.saturating_sub(1), store_id)),
        (None, None) => None,
    };
    // A node with a store of its own has something to start from: it waits less (a
    // whole cluster started again at once finds nobody up for a moment).
    let within = if local.is_some() {
        ASK_WITHIN_HOLDING
    } else {
        ASK_WITHIN
    };
    let Some(client) = connect(config, within).await else {
        if unfinished_before.is_some() {
            return Err(unfinished(dir, "no member answered"));
        }
        if local.is_none() {
            // As every node of a new cluster does, started together.
            info!("no member answered to say whether a copy of this node's store is kept: starting with a new store");
        }
        return Ok(());
    };
    let fetched = fetch(&client, &config.name, wanted).await;
    client.close().await;
    let fetched = match fetched {
        Ok(fetched) => fetched,
        // A store of its own to start from: better than none.
        Err(e) if local.is_some() => {
            warn!(error = %e, "could not fetch the copy of this node's store to compare: starting from the data dir's");
            None
        }
        Err(e) => return Err(e),
    };
    let Some((keeper, parts)) = fetched else {
        if unfinished_before.is_some() {
            return Err(unfinished(dir, "no member up keeps its copy"));
        }
        return Ok(());
    };
    let through = parts[0].through;
    let was = match (local, unfinished_before) {
        (Some((commit, _)), _) => format!("commit {commit}"),
        (None, Some(_)) => "an unfinished replacement".to_string(),
        (None, None) => "none".to_string(),
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
/// kept further on than `wanted` (a commit, and a store's id: only a copy of that
/// store).
async fn fetch(
    client: &ClusterClient,
    node: &str,
    wanted: Option<(u64, u64)>,
) -> Result<Option<(String, Vec<CopyPart>)>, NodeError> {
    let mut parts: Vec<CopyPart> = Vec::new();
    let mut keeper = String::new();
    loop {
        let request = ClientRequest::FetchCopy {
            node: node.to_string(),
            part: parts.len() as u32,
            after: wanted.map(|(commit, _)| commit),
            store_id: wanted.map(|(_, id)| id),
            keeper: (!keeper.is_empty()).then(|| keeper.clone()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mark_of_a_replacement_names_its_copy_and_goes_when_it_is_done() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(marked(dir.path()).unwrap(), None);
        mark(dir.path(), Some((7, 42))).unwrap();
        assert_eq!(marked(dir.path()).unwrap(), Some((7, 42)));
        mark(dir.path(), None).unwrap();
        assert_eq!(marked(dir.path()).unwrap(), None);
        // A mark that does not say which copy: refused, not guessed.
        std::fs::write(dir.path().join(RESTORING), "what\n").unwrap();
        assert!(marked(dir.path()).is_err());
    }
}
