//! The cluster: the metadata records and image every node applies from the metadata Raft group,
//! the active controller's rules, replica placement, and the controller RPCs. See
//! ARCHITECTURE.md, "The cluster".

pub mod controller;
pub mod image;
pub mod node;
pub mod placement;
pub mod records;
pub mod rpc;
pub mod state_machine;
pub mod view;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use spool_raft::{NodeId, NodeInfo};

use crate::fatal::fatal;
use crate::net::exclusive;
use crate::runtime;
use crate::shard::Shard;
use image::MetadataImage;
use node::{Applied, ClusterNode, METADATA_GROUP};
use openraft::async_runtime::WatchReceiver;
use records::{BrokerRegistration, Endpoint};
use state_machine::{ApplyListener, MetadataStateMachine};

/// The metadata log's directory under `log.dirs` (Kafka's name).
pub const METADATA_DIR: &str = "__cluster_metadata-0";

/// Starts this node's part of the cluster on shard 0: the metadata Raft group (initialized
/// with the configured voters on a fresh controller), the RPC server, the broker's
/// registration and, on controllers, the liveness checks. Returns once the node is running;
/// [`wait_ready`] waits until the controller has unfenced it.
pub async fn start(shard: Rc<Shard>, shutdown: Arc<AtomicBool>) -> Rc<ClusterNode> {
    let config = shard.config.clone();
    let cluster = &config.cluster;
    let dir = config.log_dirs.join(METADATA_DIR);
    let image = Rc::new(RefCell::new(MetadataImage::default()));
    let applied = Rc::new(Applied::default());
    let listener: ApplyListener = {
        let shard = shard.clone();
        let image = image.clone();
        let applied = applied.clone();
        Rc::new(move |index, changes| {
            let shard = shard.clone();
            let image = image.clone();
            let applied = applied.clone();
            Box::pin(async move {
                shard.apply_cluster_changes(&image, changes).await;
                applied.set(index);
            })
        })
    };
    let state_machine = MetadataStateMachine::open(image.clone(), Some(dir.clone()), listener)
        .unwrap_or_else(|e| {
            fatal(format!(
                "cannot open the metadata snapshots in {}: {e}",
                dir.display()
            ))
        });
    let log_store = spool_raft::store::LogStore::open(
        dir.clone(),
        spool_storage::Backend::Dma,
        spool_raft::store::StoreConfig::default(),
    )
    .await
    .unwrap_or_else(|e| {
        fatal(format!(
            "cannot open the metadata log in {}: {e}",
            dir.display()
        ))
    });
    let store_closer = log_store.closer();
    // Shard 0's router: the metadata group shares its connections with the shard's partition
    // groups.
    let router = shard.raft_router.clone();
    let network = spool_raft::transport::network_factory(router.clone(), METADATA_GROUP);
    let raft_config = node::raft_config(cluster).unwrap_or_else(|e| fatal(e));
    let raft = openraft::Raft::new(
        config.node_id as NodeId,
        raft_config,
        network,
        log_store,
        state_machine,
    )
    .await
    .unwrap_or_else(|e| fatal(format!("cannot start the metadata quorum: {e}")));

    if cluster.controller {
        // A fresh voter proposes the configured voter set; every voter does the same, and
        // openraft accepts it only on an empty log, so restarts and races are harmless.
        let members: BTreeMap<NodeId, NodeInfo> = cluster
            .voters
            .iter()
            .map(|(id, addr)| {
                (
                    *id as NodeId,
                    NodeInfo {
                        rpc_addr: addr.clone(),
                    },
                )
            })
            .collect();
        if let Err(e) = raft.initialize(members).await {
            tracing::debug!("metadata quorum already initialized: {e}");
        }
        // A one-node cluster needs no trigger: openraft elects a sole voter at its first tick
        // without waiting out an election timeout (a trigger of our own raced that election
        // and logged a warning at every start).
    }

    let incarnation = uuid::Uuid::new_v4().into_bytes();
    let registration = BrokerRegistration {
        id: config.node_id,
        incarnation,
        listeners: vec![Endpoint {
            name: config.listener_name(),
            host: config.advertised_host.clone(),
            port: config.advertised_port,
        }],
        rack: cluster.rack.clone(),
        rpc_addr: cluster
            .rpc_listen
            .as_ref()
            .map(|(host, port)| format!("{host}:{port}"))
            .unwrap_or_default(),
        controller: cluster.controller,
    };
    let node = ClusterNode::new(
        config.node_id,
        raft.clone(),
        image,
        applied,
        router.clone(),
        &config,
        registration,
    );
    *node.store_closer.borrow_mut() = Some(store_closer);
    *shard.cluster.borrow_mut() = Some(node.clone());

    if let Some((host, port)) = &cluster.rpc_listen {
        use spool_raft::transport::{AppHandler, GroupRegistry, RpcServer, APP_GROUP};
        let addr = format!("{host}:{port}");
        // The RPC listener joins a reuseport group too (glommio binds with SO_REUSEPORT): the
        // same check as the Kafka listener's, so a second broker on this address is refused
        // and a SIGKILLed predecessor's listener is waited out rather than shared.
        if *port != 0 {
            let rpc_addr = exclusive::resolve(host, *port).unwrap_or_else(|e| fatal(e));
            exclusive::ensure_unused(rpc_addr).unwrap_or_else(|e| fatal(e));
        }
        // Shard 0's registry: the metadata group, the controller RPCs and shard 0's partition
        // groups; requests for another shard's groups are forwarded to it.
        let registry: GroupRegistry = shard.raft_groups.clone();
        {
            let shard = shard.clone();
            registry.set_fallback(Rc::new(move |group, request| {
                let shard = shard.clone();
                Box::pin(async move { shard.forward_raft(group, request).await })
            }));
        }
        let handler_node = node.clone();
        let handler_shard = shard.clone();
        let registered = registry
            .register(METADATA_GROUP, raft.clone())
            .and_then(|()| {
                registry.register(
                    APP_GROUP,
                    AppHandler(Rc::new(move |payload| {
                        let node = handler_node.clone();
                        let shard = handler_shard.clone();
                        Box::pin(async move {
                            // Leadership moves are served by this node, whoever leads the
                            // metadata quorum.
                            if let Some(answer) =
                                crate::replication::leadership::serve_rpc(&shard, &payload).await
                            {
                                return answer;
                            }
                            if let Some(answer) =
                                crate::txn::markers::serve_rpc(&shard, &payload).await
                            {
                                return answer;
                            }
                            if let Some(answer) =
                                crate::txn::verify::serve_rpc(&shard, &payload).await
                            {
                                return answer;
                            }
                            node.handle_rpc(payload).await
                        })
                    })),
                )
            });
        registered.unwrap_or_else(|e| fatal(e));
        let server = RpcServer::bind(&addr, registry)
            .unwrap_or_else(|e| fatal(format!("cannot listen for cluster RPC on {addr}: {e}")));
        tracing::info!("cluster RPC listening on {}", server.local_addr());
        *node.rpc_server.borrow_mut() = Some(server);
    }
    runtime::spawn_detached(node.clone().registration_loop(
        Duration::from_millis(cluster.heartbeat_interval_ms),
        shutdown.clone(),
    ));
    if cluster.controller {
        runtime::spawn_detached(node.clone().liveness_loop(shutdown.clone()));
        runtime::spawn_detached(bootstrap(node.clone(), shard.clone(), shutdown.clone()));
    }
    runtime::spawn_detached(watch_leader(node.clone(), shard.clone(), shutdown));
    node
}

/// Waits until the controller has unfenced this broker (it has caught up with the metadata
/// log) and the cluster has its id, as a Kafka broker waits to be unfenced before it opens its
/// listeners. False on shutdown.
pub async fn wait_ready(node: &ClusterNode, shard: &Rc<Shard>, shutdown: &AtomicBool) -> bool {
    let mut waited = 0u64;
    while !node.ready.get() || node.image.borrow().cluster_id.is_none() {
        if shutdown.load(Ordering::Relaxed) {
            return false;
        }
        runtime::sleep(Duration::from_millis(10)).await;
        waited += 10;
        if waited.is_multiple_of(10_000) {
            tracing::info!(
                "waiting to join the cluster: metadata quorum leader {:?}, applied index {}",
                node.leader(),
                node.applied.get()
            );
        }
    }
    shard.publish_view().await;
    true
}

/// The first leader of a new cluster writes its id: `cluster.id` if set, else the one its log
/// dir was formatted with (`meta.properties`), else a fresh one. A node that ran as a
/// single-node Spool before the quorum existed imports its `meta.json` (topics on this node,
/// producer ids handed out) in the same entry.
async fn bootstrap(node: Rc<ClusterNode>, shard: Rc<Shard>, shutdown: Arc<AtomicBool>) {
    let config = &shard.config;
    while !shutdown.load(Ordering::Relaxed) && node.image.borrow().cluster_id.is_none() {
        if node.is_leader() {
            let legacy = crate::metadata::read_legacy(&config.log_dirs);
            let formatted = crate::identity::read(&config.log_dirs)
                .ok()
                .flatten()
                .map(|p| p.cluster_id);
            let cluster_id = config
                .cluster
                .cluster_id
                .clone()
                .or(formatted)
                .or_else(|| legacy.as_ref().map(|l| l.cluster_id.clone()))
                .unwrap_or_else(crate::metadata::new_cluster_id);
            let mut records = vec![records::MetadataRecord::ClusterId { cluster_id }];
            if let Some(legacy) = &legacy {
                for topic in &legacy.topics {
                    records.push(records::MetadataRecord::CreateTopic {
                        name: topic.name.clone(),
                        id: topic.id.into_bytes(),
                        configs: topic.configs.clone().into_iter().collect(),
                        partitions: (0..topic.partitions)
                            .map(|_| records::PartitionAssignment {
                                replicas: vec![config.node_id],
                            })
                            .collect(),
                    });
                }
                if legacy.producer_id_reserved > 0 {
                    records.push(records::MetadataRecord::ProducerIds {
                        broker: config.node_id,
                        count: legacy.producer_id_reserved,
                    });
                }
            }
            if node.write_records(records).await && legacy.is_some() {
                let from = config.log_dirs.join(crate::metadata::LEGACY_META_FILE);
                let to = from.with_extension("json.imported");
                match std::fs::rename(&from, &to) {
                    Ok(()) => tracing::info!("imported {} into the metadata log", from.display()),
                    Err(e) => tracing::warn!("cannot rename {}: {e}", from.display()),
                }
            }
        }
        runtime::sleep(Duration::from_millis(20)).await;
    }
}

/// Republishes the cluster view when the quorum's leader changes (DescribeCluster names it).
async fn watch_leader(node: Rc<ClusterNode>, shard: Rc<Shard>, shutdown: Arc<AtomicBool>) {
    let mut last = None;
    while !shutdown.load(Ordering::Relaxed) {
        // openraft stops a group whose storage failed; a broker without its metadata log
        // would serve a frozen image forever, so the node exits (a supervisor restarts it
        // and recovery repairs the log).
        let running = node.raft.metrics().borrow_watched().running_state.clone();
        if let Err(e) = running {
            if !shutdown.load(Ordering::Relaxed) {
                fatal(format!("the metadata quorum stopped: {e}"));
            }
        }
        let leader = node.leader();
        if leader != last {
            last = leader;
            shard.publish_view().await;
        }
        runtime::sleep(Duration::from_millis(50)).await;
    }
}
