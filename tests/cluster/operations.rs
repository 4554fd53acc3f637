//! Known increments and decrements through different nodes add up exactly.

use crate::util::{client, client_ok, Cluster};

#[test]
fn known_operations_through_any_node_sum_exactly() {
    let cluster = Cluster::start(2, &["--counters", "3"]);
    cluster.wait_mesh(9);

    // (command, counter, amount, node to send through)
    let ops: [(&str, &str, i64, usize); 9] = [
        ("incr", "coordinator/0", 10, 1),
        ("incr", "worker-1/2", 7, 2),
        ("decr", "worker-2/1", 4, 0),
        ("incr", "worker-2/1", 100, 1),
        ("decr", "coordinator/0", 3, 2),
        ("incr", "worker-1/0", 1, 0),
        ("decr", "worker-1/2", 20, 1),
        ("incr", "coordinator/2", 5, 0),
        ("decr", "worker-2/0", 1, 2),
    ];
    let mut expected = std::collections::BTreeMap::<&str, i64>::new();
    for (cmd, counter, amount, via) in ops {
        let value = expected.entry(counter).or_default();
        *value += if cmd == "incr" { amount } else { -amount };
        let printed = client_ok(&[
            cmd,
            counter,
            "--by",
            &amount.to_string(),
            "--join",
            &cluster.nodes[via].addr,
        ]);
        assert_eq!(
            printed,
            value.to_string(),
            "{cmd} {counter} printed the new value"
        );
    }

    let s = cluster.wait_complete(1, 3, 9);
    let total: i64 = expected.values().sum();
    assert_eq!(s["total_value"], total);
    assert_eq!(s["total_operations"], ops.len());
    for (counter, value) in &expected {
        let read = client_ok(&["get", counter, "--join", &cluster.nodes[2].addr]);
        assert_eq!(read, value.to_string(), "get {counter}");
    }
    // Default amount is 1.
    assert_eq!(
        client_ok(&["incr", "worker-2/2", "--join", &cluster.nodes[0].addr]),
        "1"
    );
}

#[test]
fn unknown_counter_is_a_clear_error() {
    let cluster = Cluster::start(0, &["--counters", "2"]);
    cluster.wait_complete(0, 1, 2);
    let out = client(&["incr", "nobody/7", "--join", &cluster.nodes[0].addr]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("no counter named 'nobody/7'"), "{stderr}");
    assert!(out.stdout.is_empty());
}

/// One process connecting again and again (as `node-bench` does): every connection
/// authenticates, whether the previous one was closed or is still open.
#[test]
fn back_to_back_connections_from_one_process_all_authenticate() {
    use node::ClusterClient;
    use std::time::Duration;

    let _one_in_process_client = crate::util::in_process_client_lock();
    let cluster = Cluster::start(0, &[]);
    cluster.wait_complete(0, 1, 4);
    let addr = cluster.nodes[0].addr.clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut open = Vec::new();
        for i in 0..20 {
            let client =
                ClusterClient::connect(&addr, crate::util::COOKIE, None, Duration::from_secs(5))
                    .await
                    .unwrap_or_else(|e| panic!("connection {i}: {e}"));
            if i % 2 == 0 {
                client.close().await;
            } else {
                open.push(client);
            }
        }
        for client in open {
            client.close().await;
        }
    });
}

/// A process that holds connections to several nodes at once (as `node-bench` does):
/// each client's requests are served by the node it connected to, whatever else the
/// process knows.
#[test]
fn each_client_talks_to_the_node_it_connected_to() {
    use node::ClusterClient;
    use shared::agent::{ClientAnswer, ClientRequest};
    use std::time::Duration;

    let _one_in_process_client = crate::util::in_process_client_lock();
    let cluster = Cluster::start(2, &["--counters", "1"]);
    cluster.wait_mesh(3);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut clients = Vec::new();
        // Connected in an order where the first-known agent is never the right one for
        // the later clients.
        for node in cluster.nodes.iter().rev() {
            let client = ClusterClient::connect(
                &node.addr,
                crate::util::COOKIE,
                None,
                Duration::from_secs(5),
            )
            .await
            .unwrap();
            clients.push((node.name.clone(), client));
        }
        for (name, client) in &clients {
            assert_eq!(client.node(), name);
            let info = client.info(Duration::from_secs(5)).await.unwrap();
            assert_eq!(&info.name, name, "GetInfo answered by another node");
            let request = ClientRequest::Stats {
                deadline_ms: 1000,
                per_counter: false,
            };
            match client
                .request(request, Duration::from_secs(5))
                .await
                .unwrap()
            {
                ClientAnswer::Stats(s) => {
                    assert_eq!(&s.collected_by, name, "collected by another node")
                }
                other => panic!("{other:?}"),
            }
            let host = client.host().expect("the node's counter host");
            let counter =
                ractor::call_t!(host, shared::host::HostMessage::GetStats, 5000, 0).unwrap();
            assert_eq!(
                counter.0.unwrap().name,
                format!("{name}/0"),
                "the counter host of another node"
            );
        }
        for (_, client) in clients {
            client.close().await;
        }
    });
}
