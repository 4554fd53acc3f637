//! Running a node: bind the cluster port, start the supervision tree
//! ([`root`](crate::root)), wait for the shutdown signal or for the node to fail, then
//! stop it in order.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorRef};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::clock::unix_micros;
use crate::cluster::departure::Departing;
use crate::cluster::membership::Membership;
use crate::config::{NodeConfig, Storage};
use crate::copies::outgoing::Outgoing;
use crate::counters::table::CounterTable;
use crate::error::NodeError;
use crate::facts::NodeFacts;
use crate::root::{NodeRoot, RootArgs, RootMessage};
use crate::store::left_mark::left_for_good;
use crate::store::{Ship, Store, Sum};
use crate::supervision::root_cause;

/// How long the ordered stop of every part may take in all.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs a node until `shutdown` completes (then stops it cleanly and returns `Ok`), or
/// until a part of it fails for good (then stops it cleanly and returns the failure).
pub(crate) async fn run(
    config: NodeConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), NodeError> {
    if config.cookie.is_development() {
        warn!("no cookie given: using the development cookie (loopback only)");
    }
    // Take the port first: a port that is taken fails the start before (perhaps many)
    // counters start.
    let listener = crate::net::listener::bind(config.listen).map_err(|e| NodeError::Listen {
        addr: config.listen.to_string(),
        reason: e.to_string(),
    })?;
    // Serving at once: probes see the node alive (and not ready) while its store is
    // being recovered.
    let http = match &config.http {
        Some(http) => Some(crate::http::bind(http).await?.start(
            &config.name,
            !config.seeds.is_empty(),
            config.tls.as_ref(),
        )),
        None => None,
    };
    if let Storage::Dir(dir) = &config.storage {
        crate::copies::restore::if_behind(&config, dir).await?;
    }
    let opened = open_store(&config).await?;
    // Every commit from the first goes to the copy as well (see crate::copies).
    let outgoing = (config.copies >= 2 && opened.store.is_durable()).then(|| {
        let outgoing = Arc::new(Outgoing::default());
        opened.store.ship_to(Arc::clone(&outgoing) as Arc<dyn Ship>);
        outgoing
    });
    let facts = node_facts(&config, &opened, outgoing.clone());
    let store = opened.store;
    let (fatal, mut failures) = mpsc::unbounded_channel();
    let args = RootArgs {
        config: config.clone(),
        listener: Arc::new(listener),
        facts: Arc::clone(&facts),
        store,
        fatal,
        outgoing,
    };
    let (root, mut root_handle) =
        Actor::spawn(None, NodeRoot, args)
            .await
            .map_err(|source| NodeError::Start {
                reason: startup_failure(&source),
                source,
            })?;
    let leaving = Arc::clone(&facts);
    if let Some(http) = &http {
        http.started(facts);
    }
    say_started(&config);

    let failure = tokio::select! {
        () = shutdown => None,
        () = leaving.departing.asked() => {
            let how = if leaving.departing.for_good() { "for good" } else { "for a while" };
            info!("asked to leave the cluster {how}: stopping");
            None
        }
        Some(failure) = failures.recv() => Some(failure),
        // The root itself ended (it panicked): every part went with it.
        _ = &mut root_handle => {
            let why = "the node's supervision root stopped unexpectedly".to_string();
            tracing::error!("{why}; stopping the node");
            return Err(NodeError::Failed { why });
        }
    };
    if let Some(http) = http {
        // First: readiness turns 503 and the requests being served finish.
        http.stop().await;
    }
    stop_in_order(&root, root_handle).await;
    info!(node = %config.name, "node stopped");
    failure.map_or(Ok(()), Err)
}

/// What the node says about itself, shared by every part and outliving them all; its
/// issued tally starts from what the store holds.
fn node_facts(
    config: &NodeConfig,
    opened: &OpenedStore,
    outgoing: Option<Arc<Outgoing>>,
) -> Arc<NodeFacts> {
    let tally = crate::load::tally::IssuedTally::default();
    tally.set(opened.issued);
    Arc::new(NodeFacts {
        name: config.name.clone(),
        role: config.role,
        // Identifies this run: peers tell a restart under the same name by it.
        incarnation: unix_micros(),
        advertise: config.advertise(),
        table: Arc::new(CounterTable::new(&config.name, config.counters)),
        issued: Arc::new(tally),
        received: Arc::default(),
        membership: Membership::default(),
        metrics: Arc::default(),
        recovered_commit: opened.recovered_commit,
        disk_faults: config
            .fault_injection
            .then(|| opened.store.faults())
            .flatten(),
        departing: Departing::new(match &config.storage {
            Storage::Dir(dir) => Some(dir.clone()),
            Storage::Memory => None,
        }),
        outgoing,
    })
}

/// The node's one line on starting (and, once it has measured, whether spinning pays).
fn say_started(config: &NodeConfig) {
    info!(
        node = %config.name,
        role = %config.role,
        listen = %config.listen,
        http = ?config.http.as_ref().map(|h| h.listen),
        advertise = %config.advertise(),
        counters = config.counters,
        seeds = ?config.seeds,
        failure_timeout = ?config.failure_timeout,
        tls = config.tls.is_some(),
        data_slot = ?config.slot.as_ref().map(|slot| slot.number),
        "node started"
    );
    // The measure runs beside the start (runtime::calibrate): its verdict follows.
    tokio::spawn(async {
        if let Some(m) = crate::runtime::calibrate::first().await {
            info!(
                on = m.spin_pays(),
                round_trip_asleep_ns = m.sleeping.as_nanos() as u64,
                round_trip_spinning_ns = m.spinning.as_nanos() as u64,
                cpus = ?m.cpus,
                "busy poll: measured whether it pays on this machine"
            );
        }
    });
}

/// Asks the root to stop every part in order, then stops the root.
async fn stop_in_order(root: &ActorRef<RootMessage>, root_handle: JoinHandle<()>) {
    if ractor::call_t!(
        root,
        RootMessage::Shutdown,
        SHUTDOWN_TIMEOUT.as_millis() as u64
    )
    .is_err()
    {
        warn!("the node did not stop in order within {SHUTDOWN_TIMEOUT:?}");
    }
    root.stop(Some("node stopped".into()));
    let _ = root_handle.await;
}

/// The node's store, as it was opened.
struct OpenedStore {
    store: Arc<Store>,
    /// What this node's load clients had issued, per the store.
    issued: Sum,
    /// The store's last commit (0 for a new store, or memory-only).
    recovered_commit: u64,
}

/// Opens the node's store (off the async threads: it reads every counter's record) and
/// says what it recovered.
async fn open_store(config: &NodeConfig) -> Result<OpenedStore, NodeError> {
    let (name, counters) = (config.name.clone(), config.counters);
    let (store, recovered) = match config.storage.clone() {
        Storage::Memory => {
            info!("memory-only: counters are not kept on disk and do not survive this process");
            Store::memory(counters)
        }
        Storage::Dir(dir) => {
            match left_for_good(&dir) {
                Ok(None) => {}
                Ok(Some(why)) => {
                    return Err(NodeError::Config(format!(
                        "the node whose store is in {} left the cluster for good ({}); its \
                         data is kept for reference. To start a new node, give it an empty \
                         --data-dir",
                        dir.display(),
                        why.trim()
                    )))
                }
                Err(error) => {
                    return Err(NodeError::Config(format!(
                        "cannot tell whether the node whose store is in {} left the cluster \
                         for good: {error}",
                        dir.display()
                    )))
                }
            }
            let opened = crate::runtime::busy_poll::spawn_blocking(move || {
                Store::open(&dir, &name, counters, Arc::default()).map(|o| (o, dir))
            })
            .await?;
            let ((store, recovered), dir) = opened?;
            if recovered.fresh {
                info!(data_dir = %dir.display(), "created a new store");
            } else {
                let (value, operations) =
                    recovered.records.iter().fold((0i128, 0u64), |(v, o), r| {
                        (v + i128::from(r.value), o.saturating_add(r.operations))
                    });
                info!(
                    data_dir = %dir.display(),
                    last_commit = recovered.last_commit,
                    value = %value,
                    operations,
                    "recovered the counters from the store"
                );
            }
            (store, recovered)
        }
    };
    let recovered_commit = recovered.last_commit;
    drop(recovered);
    let store = Arc::new(store);
    let reading = Arc::clone(&store);
    let outbox = crate::runtime::busy_poll::spawn_blocking(move || reading.outbox()).await??;
    let unacknowledged: usize = outbox.streams.values().map(|s| s.batches.len()).sum();
    if unacknowledged > 0 {
        info!(
            batches = unacknowledged,
            destinations = outbox.streams.len(),
            "the outbox holds batches not yet acknowledged: they are sent again"
        );
    }
    Ok(OpenedStore {
        store,
        issued: outbox.issued,
        recovered_commit,
    })
}

/// The most useful line from a failed start: our own error if a part reported one,
/// else the innermost cause.
fn startup_failure(error: &ractor::SpawnErr) -> String {
    if let ractor::SpawnErr::StartupFailed(inner) = error {
        if let Some(ours) = inner.downcast_ref::<NodeError>() {
            return ours.to_string();
        }
    }
    root_cause(error)
}
