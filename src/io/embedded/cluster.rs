//! Scale-out (cargo feature `cluster`): several `edgefilter run` processes form one rmqtt
//! cluster through rmqtt's broadcast plugin — each node runs a gRPC server on its entry of
//! `--cluster-peers` and forwards publishes, subscriptions, retained lookups and `$share`
//! choices to the others. Devices connect to any node; filters with the same `--share-group`
//! split the input.

use rmqtt::context::{ServerContext, ServerContextBuilder};

use super::EmbeddedError;
use crate::settings::Cluster;

/// The plugin's settings (TOML, as rmqtt reads them).
fn plugin_config(c: &Cluster) -> String {
    let addrs: Vec<String> = c
        .peers
        .iter()
        .map(|(id, addr)| format!("\"{id}@{addr}\""))
        .collect();
    format!(
        "message_type = 98\nnode_grpc_addrs = [{}]\nnode_grpc_client_timeout = \"10s\"\n",
        addrs.join(", ")
    )
}

/// This node's id and the plugin's settings on the broker's context.
pub fn configure(builder: ServerContextBuilder, cluster: Option<&Cluster>) -> ServerContextBuilder {
    match cluster {
        None => builder,
        Some(c) => builder
            .node_id(c.node_id)
            .plugins_config_map_add("rmqtt-cluster-broadcast", plugin_config(c)),
    }
}

/// Starts this node's gRPC server and joins the cluster.
pub async fn start(scx: &ServerContext, cluster: Option<&Cluster>) -> Result<(), EmbeddedError> {
    let Some(c) = cluster else {
        return Ok(());
    };
    let addr = c
        .peers
        .iter()
        .find(|(id, _)| *id == c.node_id)
        .map(|(_, a)| *a)
        .ok_or_else(|| EmbeddedError::Start(format!("no gRPC address for node {}", c.node_id)))?;
    // The gRPC server only logs a failed bind: check first for a clear error.
    std::net::TcpListener::bind(addr)
        .map_err(|e| EmbeddedError::Start(format!("--cluster-peers {}@{addr}: {e}", c.node_id)))?;
    scx.node.start_grpc_server(scx.clone(), addr, true, false);
    rmqtt_cluster_broadcast::register(scx, true, true)
        .await
        .map_err(|e| EmbeddedError::Start(format!("cluster: {e}")))?;
    tracing::info!(
        "cluster node {} (gRPC on {addr}) with {} peers",
        c.node_id,
        c.peers.len() - 1
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_config_lists_every_node() {
        let c = Cluster {
            node_id: 2,
            peers: vec![
                (1, "127.0.0.1:7001".parse().unwrap()),
                (2, "127.0.0.1:7002".parse().unwrap()),
            ],
        };
        assert_eq!(
            plugin_config(&c),
            "message_type = 98\nnode_grpc_addrs = [\"1@127.0.0.1:7001\", \"2@127.0.0.1:7002\"]\nnode_grpc_client_timeout = \"10s\"\n"
        );
    }
}
