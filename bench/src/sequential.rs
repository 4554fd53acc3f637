//! The baseline that `aggregate_10k_sequential_ms` measures: a collection the way the
//! original article does it, every counter's `GetStats` asked across the network, one
//! call after another. It runs here, in the benchmark's own process, over one client
//! connection per node (each reaching its node's counter host): a running cluster
//! offers no way to make a node do this.

use std::time::Duration;

use node::call_until;
use node::ClusterClient;
use node::CommandError;
use node::DEV_COOKIE;
use shared::counter::StatsOutcome;
use shared::host::HostMessage;
use tokio::time::Instant;

use crate::median;

/// How long one counter may take to answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Milliseconds of sequential collections of all `counters` counters of the nodes at
/// `addrs`: the median of `runs`, and, apart, the first run before them (which starts
/// every idle counter's actor on its first call).
pub(crate) struct Sequential {
    /// The median of the measured runs.
    pub(crate) median_ms: f64,
    /// The first run.
    pub(crate) first_ms: f64,
}

/// See [`Sequential`].
pub(crate) async fn median_ms(
    addrs: &[String],
    runs: u32,
    counters: u32,
) -> Result<Sequential, CommandError> {
    let mut clients = Vec::new();
    for addr in addrs {
        clients.push(ClusterClient::connect(addr, DEV_COOKIE, None, CALL_TIMEOUT).await?);
    }
    let result = timed(&clients, runs, counters).await;
    for client in clients {
        client.close().await;
    }
    result
}

async fn timed(
    clients: &[ClusterClient],
    runs: u32,
    counters: u32,
) -> Result<Sequential, CommandError> {
    let mut nodes = Vec::new();
    for client in clients {
        let info = client.info(CALL_TIMEOUT).await?;
        let host = client
            .host()
            .ok_or_else(|| CommandError::Local(format!("{} has no counter host", info.name)))?;
        nodes.push((host, info.counters));
    }
    let (mut times, mut first_ms) = (Vec::new(), 0.0);
    for run in 0..=runs {
        let at = Instant::now();
        let mut answered = 0;
        for (host, count) in &nodes {
            for index in 0..*count {
                let stats = call_until(
                    host.clone(),
                    |reply| HostMessage::GetStats(index, reply),
                    Instant::now() + CALL_TIMEOUT,
                )
                .await;
                if matches!(stats, Some(StatsOutcome(Ok(_)))) {
                    answered += 1;
                }
            }
        }
        if answered != counters {
            return Err(CommandError::Local(format!(
                "a sequential collection got {answered} of {counters} counters"
            )));
        }
        let ms = at.elapsed().as_secs_f64() * 1e3;
        if run > 0 {
            times.push(ms);
        } else {
            first_ms = ms;
        }
    }
    Ok(Sequential {
        median_ms: median(&mut times),
        first_ms,
    })
}
