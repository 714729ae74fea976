//! Scale-out (cargo feature `cluster`): three `edgefilter run` nodes on loopback form one rmqtt
//! cluster (broadcast plugin, gRPC between the nodes); devices publish to every node, the
//! filters split the input with `--share-group`, a consumer on one node sees every alert once.
//! Run with `cargo nextest run --features cluster -E 'binary(cluster)'` (a binary of its own:
//! `required-features` in Cargo.toml keeps it out of a default build).

#[path = "it/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_split_the_input_and_every_alert_arrives_once() {
    let mqtt: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let grpc: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let peers = (1..=3)
        .map(|i| format!("{i}@127.0.0.1:{}", grpc[i - 1]))
        .collect::<Vec<_>>()
        .join(",");
    // All three at once: a node's filter subscribes through the cluster, which needs its peers.
    let args: Vec<Vec<String>> = (1..=3usize)
        .map(|i| {
            vec![
                "--listen".into(),
                format!("127.0.0.1:{}", mqtt[i - 1]),
                "--client-id".into(),
                format!("ef-node-{i}"),
                "--share-group".into(),
                "filters".into(),
                "--cluster-node-id".into(),
                i.to_string(),
                "--cluster-peers".into(),
                peers.clone(),
            ]
        })
        .collect();
    let argv = |i: usize| args[i].iter().map(String::as_str).collect::<Vec<_>>();
    let (a1, a2, a3) = (argv(0), argv(1), argv(2));
    let (n1, n2, n3) = tokio::join!(
        InProcess::start(&a1),
        InProcess::start(&a2),
        InProcess::start(&a3)
    );
    let nodes = vec![n1, n2, n3];
    let sub = Client4::connect(mqtt[2], "consumer").await;
    sub.subscribe("alerts/#").await;
    let publishers = [
        Client4::connect(mqtt[0], "dev-a").await,
        Client4::connect(mqtt[1], "dev-b").await,
        Client4::connect(mqtt[2], "dev-c").await,
    ];

    // Ready when a probe published on each node comes back as an alert on node 3.
    let deadline = Instant::now() + WAIT;
    for (n, p) in publishers.iter().enumerate() {
        let topic = format!("alerts/telemetry/probe-{n}");
        loop {
            p.publish(&format!("telemetry/probe-{n}"), body(1_000_000, 99.0))
                .await;
            if tokio::time::timeout(
                Duration::from_secs(1),
                sub.inbox.wait_count(&topic, 1, WAIT),
            )
            .await
            .is_ok()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {n} did not join the cluster"
            );
        }
    }
    let before: u64 = nodes
        .iter()
        .map(|f| f.shared.metrics.snapshot().received)
        .sum();
    let probes = sub.inbox.on("alerts/").len();

    let per_node = 100u64;
    for (n, p) in publishers.iter().enumerate() {
        for i in 0..per_node {
            let seq = n as u64 * per_node + i;
            p.publish(&format!("telemetry/dev-{n}-{}", i % 5), body(seq, 30.0))
                .await;
        }
    }
    sub.inbox
        .wait_count("alerts/", probes + 3 * per_node as usize, WAIT)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
    for a in sub.inbox.on("alerts/telemetry/dev-") {
        *seen.entry(seq_of(&a.payload).unwrap()).or_default() += 1;
    }
    let received: Vec<u64> = nodes
        .iter()
        .map(|f| f.shared.metrics.snapshot().received)
        .collect();
    for f in nodes {
        f.stop().await;
    }
    assert_eq!(seen.len() as u64, 3 * per_node, "every alert");
    assert!(seen.values().all(|&c| c == 1), "an alert came twice");
    assert_eq!(
        received.iter().sum::<u64>() - before,
        3 * per_node,
        "each input to one filter: {received:?}"
    );
    assert!(
        received.iter().filter(|&&r| r > 0).count() >= 2,
        "the group spreads over the nodes: {received:?}"
    );
}
