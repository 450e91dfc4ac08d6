//! Raft groups over the real TCP transport on 127.0.0.1, all nodes in one glommio executor
//! (each with its own router, registry and listener, so every message crosses a socket). The
//! replication tests run on Spool's `LogStore` (over the in-memory file system), the others on
//! the test's `MemLog`; every group's state machine is `MemSm`.

mod mem;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use openraft::async_runtime::WatchReceiver;
use openraft::raft::VoteRequest;
use openraft::{Config, Instant as _, Raft, ServerState};

use spool_storage::{Backend, MemFs};

use self::mem::{MemLog, MemSm};
use super::*;
use crate::store::{LogStore, StoreConfig};
use crate::wire::{self, Failure, RPC_FRAME_BYTES_MAX};
use crate::{Command, NodeId, NodeInfo, TypeConfig};

/// Every test ends within this, passing or not.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);
/// One wait for a Raft condition (a leader, an applied index).
const WAIT_TIMEOUT: Duration = Duration::from_secs(10);

type Group = Raft<TypeConfig, MemSm>;

/// Which Raft log a group runs on: Spool's `LogStore` (over the in-memory file system) or the
/// test's own `MemLog`.
#[derive(Clone, Copy)]
enum Log {
    Store,
    Memory,
}

struct Node {
    id: NodeId,
    router: Router,
    registry: GroupRegistry,
    server: RpcServer,
    groups: HashMap<GroupId, (Group, MemSm)>,
}

struct Cluster {
    nodes: Vec<Node>,
}

fn run_test<F: Future<Output = ()> + 'static>(body: impl FnOnce() -> F) {
    let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .make()
        .expect("a glommio executor");
    executor.run(async move {
        let timer = async {
            glommio::timer::sleep(TEST_TIMEOUT).await;
            false
        };
        let finished = futures_lite::future::or(
            async {
                body().await;
                true
            },
            timer,
        )
        .await;
        assert!(finished, "test did not finish within {TEST_TIMEOUT:?}");
    });
}

fn config() -> Arc<Config> {
    let config = Config {
        heartbeat_interval: 50,
        election_timeout_min: 300,
        election_timeout_max: 600,
        ..Default::default()
    };
    Arc::new(config.validate().expect("a valid raft config"))
}

impl Cluster {
    /// `n` nodes with ids 1..=n, each listening on its own port.
    fn bind(n: u64) -> Cluster {
        let nodes = (1..=n)
            .map(|id| {
                let registry = GroupRegistry::new();
                let server = RpcServer::bind("127.0.0.1:0", registry.clone()).expect("bind");
                Node {
                    id,
                    router: Router::new(id),
                    registry,
                    server,
                    groups: HashMap::new(),
                }
            })
            .collect();
        Cluster { nodes }
    }

    fn info(&self, id: NodeId) -> NodeInfo {
        NodeInfo {
            rpc_addr: self.node(id).server.local_addr().to_string(),
        }
    }

    fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id as usize - 1]
    }

    fn raft(&self, id: NodeId, group: GroupId) -> &Group {
        &self.node(id).groups[&group].0
    }

    /// Starts `group` on the nodes `ids`, registered with their servers.
    async fn start_group(&mut self, group: GroupId, ids: &[NodeId], log: Log) {
        for &id in ids {
            let node = &mut self.nodes[id as usize - 1];
            let sm = MemSm::default();
            let network = network_factory(node.router.clone(), group);
            let raft = match log {
                Log::Memory => {
                    Raft::new(id, config(), network, MemLog::default(), sm.clone()).await
                }
                Log::Store => {
                    let dir = PathBuf::from(format!("/node-{id}/group-{group}"));
                    let backend = Backend::Memory(MemFs::new());
                    let store = LogStore::open(dir, backend, StoreConfig::default())
                        .await
                        .expect("log store opens");
                    Raft::new(id, config(), network, store, sm.clone()).await
                }
            };
            let raft = raft.expect("raft starts");
            node.registry
                .register(group, raft.clone())
                .expect("register");
            node.groups.insert(group, (raft, sm));
        }
    }

    /// Initializes `group` from `initializer` with `voters` and waits for a leader.
    async fn initialize(&self, group: GroupId, initializer: NodeId, voters: &[NodeId]) -> NodeId {
        let members: BTreeMap<NodeId, NodeInfo> =
            voters.iter().map(|&id| (id, self.info(id))).collect();
        self.raft(initializer, group)
            .initialize(members)
            .await
            .expect("initialize");
        self.leader(group, initializer).await
    }

    async fn leader(&self, group: GroupId, observer: NodeId) -> NodeId {
        let metrics = self
            .raft(observer, group)
            .wait(Some(WAIT_TIMEOUT))
            .metrics(|m| m.current_leader.is_some(), "a leader")
            .await
            .expect("a leader is elected");
        metrics.current_leader.expect("leader")
    }

    /// Writes `count` commands through the leader; returns the last log index.
    async fn write(&self, group: GroupId, tag: &str, count: usize) -> u64 {
        let mut last = 0;
        for i in 0..count {
            last = self
                .write_one(group, Command(Bytes::from(format!("{tag}-{i}"))))
                .await;
        }
        last
    }

    /// Writes through a leader a quorum has acknowledged (one that has not, a candidate's
    /// rival for instance, may be deposed with the write); leadership may move meanwhile:
    /// retry on the current leader a bounded number of times.
    async fn write_one(&self, group: GroupId, command: Command) -> u64 {
        const ATTEMPTS_MAX: usize = 50;
        for _ in 0..ATTEMPTS_MAX {
            let leader = self.leader(group, 1).await;
            let raft = self.raft(leader, group);
            let acked = raft
                .wait(Some(WAIT_TIMEOUT))
                .leader_with_quorum_acked(None, "leader lease")
                .await;
            if acked.is_err() {
                continue;
            }
            match raft.client_write(command.clone()).await {
                Ok(response) => return response.log_id.index,
                Err(e) if e.forward_to_leader().is_some() => {
                    glommio::timer::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("client_write: {e}"),
            }
        }
        panic!("no leader accepted a write in {ATTEMPTS_MAX} attempts");
    }

    /// Waits until every node of `ids` has applied `index` in `group`, then checks they applied
    /// the same commands.
    async fn assert_applied(&self, group: GroupId, ids: &[NodeId], index: u64) -> Vec<Bytes> {
        for &id in ids {
            self.raft(id, group)
                .wait(Some(WAIT_TIMEOUT))
                .applied_index_at_least(Some(index), "entries applied")
                .await
                .expect("every node applies the entries");
        }
        let first = self.node(ids[0]).groups[&group].1.applied();
        for &id in &ids[1..] {
            assert_eq!(self.node(id).groups[&group].1.applied(), first, "node {id}");
        }
        first
    }

    async fn shutdown(&self) {
        for node in &self.nodes {
            for (raft, _) in node.groups.values() {
                let _ = raft.shutdown().await;
            }
        }
    }
}

fn commands(tag: &str, count: usize) -> Vec<Bytes> {
    (0..count)
        .map(|i| Bytes::from(format!("{tag}-{i}")))
        .collect()
}

#[test]
fn three_nodes_elect_replicate_and_apply() {
    run_test(|| async {
        let mut cluster = Cluster::bind(3);
        cluster.start_group(1, &[1, 2, 3], Log::Store).await;
        let leader = cluster.initialize(1, 1, &[1, 2, 3]).await;
        for id in [1, 2, 3] {
            assert_eq!(
                cluster.leader(1, id).await,
                leader,
                "node {id} agrees on the leader"
            );
        }
        let last = cluster.write(1, "w", 50).await;
        let applied = cluster.assert_applied(1, &[1, 2, 3], last).await;
        assert_eq!(applied, commands("w", 50));
        cluster.shutdown().await;
    });
}

#[test]
fn groups_share_one_connection_per_node_pair() {
    run_test(|| async {
        let mut cluster = Cluster::bind(3);
        cluster.start_group(1, &[1, 2, 3], Log::Store).await;
        cluster.start_group(2, &[1, 2, 3], Log::Memory).await;
        let leader_1 = cluster.initialize(1, 1, &[1, 2, 3]).await;
        let mut leader_2 = cluster.initialize(2, 1, &[1, 2, 3]).await;
        // Make one node lead both groups, so its router carries both groups' traffic to every
        // peer (this also exercises TransferLeader over the wire).
        if leader_2 != leader_1 {
            cluster
                .raft(leader_2, 2)
                .trigger()
                .transfer_leader(leader_1)
                .await
                .expect("transfer");
            cluster
                .raft(leader_1, 2)
                .wait(Some(WAIT_TIMEOUT))
                .state(ServerState::Leader, "leadership transferred")
                .await
                .expect("leader_1 leads group 2");
            leader_2 = leader_1;
        }
        assert_eq!(leader_1, leader_2);
        let last_1 = cluster.write(1, "g1", 20).await;
        let last_2 = cluster.write(2, "g2", 20).await;
        assert_eq!(
            cluster.assert_applied(1, &[1, 2, 3], last_1).await,
            commands("g1", 20)
        );
        assert_eq!(
            cluster.assert_applied(2, &[1, 2, 3], last_2).await,
            commands("g2", 20)
        );

        let opened: Vec<u64> = cluster
            .nodes
            .iter()
            .map(|n| n.router.connections_opened())
            .collect();
        let accepted: Vec<u64> = cluster
            .nodes
            .iter()
            .map(|n| n.server.connections_accepted())
            .collect();
        // The leader of both groups talks to both peers over exactly one connection each.
        assert_eq!(
            opened[leader_1 as usize - 1],
            2,
            "opened per node: {opened:?}"
        );
        assert!(
            opened.iter().all(|&o| o <= 2),
            "opened per node: {opened:?}"
        );
        assert_eq!(opened.iter().sum::<u64>(), accepted.iter().sum::<u64>());
        cluster.shutdown().await;
    });
}

/// A leader whose lease ran out (no quorum acknowledgement for `election_timeout_max`) still
/// appends the writes it is sent: openraft upstream refuses them (`LeaseExpired`) until a
/// quorum answers again within the same term, and a refused write followed by an accepted
/// one left a gap in a pipelining producer's log (vendor/openraft/SPOOL-PATCH.md).
#[test]
fn leader_without_quorum_acknowledgement_still_appends_writes() {
    run_test(|| async {
        let mut cluster = Cluster::bind(3);
        cluster.start_group(1, &[1, 2, 3], Log::Memory).await;
        let leader = cluster.initialize(1, 1, &[1, 2, 3]).await;
        let last = cluster.write(1, "before", 3).await;
        for id in [1, 2, 3].into_iter().filter(|&id| id != leader) {
            cluster
                .raft(id, 1)
                .shutdown()
                .await
                .expect("follower stops");
        }
        // Well past the lease: nothing acknowledges the leader any more.
        glommio::timer::sleep(Duration::from_millis(2 * config().election_timeout_max)).await;
        let raft = cluster.raft(leader, 1);
        let lease = raft.metrics().borrow_watched().last_quorum_acked;
        assert!(
            lease.is_some_and(
                |at| at.elapsed() > Duration::from_millis(config().election_timeout_max)
            ),
            "the lease has run out"
        );
        assert_eq!(raft.metrics().borrow_watched().state, ServerState::Leader);
        let write = raft.client_write(Command(Bytes::from_static(b"after")));
        let refused = futures_lite::future::or(async { Some(write.await) }, async {
            glommio::timer::sleep(Duration::from_millis(500)).await;
            None
        })
        .await;
        // Without a quorum the write cannot commit: it waits, appended, instead of failing.
        assert!(
            refused.is_none(),
            "write answered without a quorum: {refused:?}"
        );
        raft.wait(Some(WAIT_TIMEOUT))
            .log_index_at_least(Some(last + 1), "the write appended")
            .await
            .expect("the leader appends the write");
        cluster
            .raft(leader, 1)
            .shutdown()
            .await
            .expect("leader stops");
    });
}

#[test]
fn lagging_learner_catches_up_by_snapshot() {
    run_test(|| async {
        let mut cluster = Cluster::bind(4);
        cluster.start_group(1, &[1, 2, 3, 4], Log::Memory).await;
        let leader = cluster.initialize(1, 1, &[1, 2, 3]).await;
        let last = cluster.write(1, "s", 30).await;
        cluster.assert_applied(1, &[1, 2, 3], last).await;
        // Compact the leader's log, so node 4 can only be brought up to date by a snapshot.
        let raft = cluster.raft(leader, 1);
        raft.trigger().snapshot().await.expect("snapshot");
        raft.wait(Some(WAIT_TIMEOUT))
            .metrics(
                |m| m.snapshot.is_some_and(|s| s.index >= last),
                "snapshot built",
            )
            .await
            .expect("snapshot built");
        raft.trigger().purge_log(last).await.expect("purge");
        raft.wait(Some(WAIT_TIMEOUT))
            .metrics(|m| m.purged.is_some_and(|p| p.index >= last), "log purged")
            .await
            .expect("log purged");

        raft.add_learner(4, cluster.info(4), true)
            .await
            .expect("add learner");
        let applied = cluster.assert_applied(1, &[leader, 4], last).await;
        assert_eq!(applied, commands("s", 30));
        assert!(
            cluster.node(4).groups[&1].1.installed_snapshot(),
            "node 4 caught up by a snapshot sent over the wire"
        );
        cluster.shutdown().await;
    });
}

/// Hostile or broken peers: each bad connection is closed, nothing else is disturbed.
#[test]
fn bad_frames_close_only_their_connection() {
    run_test(|| async {
        let mut cluster = Cluster::bind(3);
        cluster.start_group(1, &[1, 2, 3], Log::Memory).await;
        let leader = cluster.initialize(1, 1, &[1, 2, 3]).await;
        let last = cluster.write(1, "before", 5).await;
        cluster.assert_applied(1, &[1, 2, 3], last).await;

        let target = cluster.node(leader).server.local_addr();
        let baseline = cluster.node(leader).server.connections_open();

        let too_long = ((RPC_FRAME_BYTES_MAX + 1) as u32).to_be_bytes().to_vec();
        let mut garbage = 64u32.to_be_bytes().to_vec();
        garbage.extend((0..64u8).map(|i| i.wrapping_mul(37) ^ 0x5A));
        let mut truncated = 100u32.to_be_bytes().to_vec();
        truncated.extend([7u8; 10]);
        for (what, bytes, half_close) in [
            ("too long", too_long, false),
            ("garbage", garbage, false),
            ("truncated", truncated, true),
        ] {
            let mut raw = TcpStream::connect(target).await.expect("connect");
            raw.write_all(&bytes).await.expect("send");
            if half_close {
                raw.shutdown(std::net::Shutdown::Write)
                    .await
                    .expect("half close");
            }
            assert_closed_by_server(&mut raw, what).await;
        }

        // A well-formed request for a group this node does not have is answered, and the
        // connection stays usable.
        let mut raw = TcpStream::connect(target).await.expect("connect");
        let vote = openraft::Vote::new(1, 1);
        for correlation_id in [41, 42] {
            let request = Request::Vote(VoteRequest::new(vote, None));
            let frame = wire::encode_request(correlation_id, 999, &request).expect("encode");
            raw.write_all(&frame).await.expect("send");
            let payload = wire::read_frame(&mut raw)
                .await
                .expect("read")
                .expect("a response");
            let (id, response) = wire::decode_response(payload).expect("decode");
            assert_eq!(id, correlation_id);
            assert_eq!(response, Response::Failed(Failure::UnknownGroup));
        }
        drop(raw);

        let last = cluster.write(1, "after", 5).await;
        let applied = cluster.assert_applied(1, &[1, 2, 3], last).await;
        let mut expected = commands("before", 5);
        expected.extend(commands("after", 5));
        assert_eq!(applied, expected);
        // The bad connections are gone; the peers' connections were never touched.
        let open = cluster.node(leader).server.connections_open();
        assert!(open <= baseline + 1, "open {open}, before {baseline}");
        for node in &cluster.nodes {
            assert!(
                node.router.connections_opened() <= 2,
                "node {} re-dialled",
                node.id
            );
        }
        cluster.shutdown().await;
    });
}

/// Reads until the server closes the connection (EOF or reset), which must happen promptly.
async fn assert_closed_by_server(raw: &mut TcpStream, what: &str) {
    let mut buf = [0u8; 64];
    let read = async {
        loop {
            match raw.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => continue,
            }
        }
    };
    let timer = async {
        glommio::timer::sleep(Duration::from_secs(5)).await;
        false
    };
    assert!(
        futures_lite::future::or(read, timer).await,
        "the server kept a connection open after a {what} frame"
    );
}

/// A refused connect is `Unreachable` and starts a backoff during which calls fail at once; once
/// the node listens, the router connects and the node's answers come through.
#[test]
fn unreachable_node_backs_off_then_connects() {
    run_test(|| async {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let router = Router::new(1);
        router.add_node(
            2,
            &NodeInfo {
                rpc_addr: addr.clone(),
            },
        );
        let vote = || Request::Vote(VoteRequest::new(openraft::Vote::new(1, 1), None));
        let ttl = Duration::from_secs(1);

        let refused = router.call(2, 7, vote(), ttl).await;
        assert!(
            matches!(
                refused,
                Err(CallError::Unreachable(TransportError::Connect { .. }))
            ),
            "{refused:?}"
        );
        let backing_off = router.call(2, 7, vote(), ttl).await;
        assert!(
            matches!(
                backing_off,
                Err(CallError::Unreachable(TransportError::BackingOff { .. }))
            ),
            "{backing_off:?}"
        );

        let _server = RpcServer::bind(&addr, GroupRegistry::new()).expect("bind");
        glommio::timer::sleep(RECONNECT_BACKOFF_MIN * 2).await;
        let answered = router.call(2, 7, vote(), ttl).await;
        assert!(
            matches!(
                answered,
                Err(CallError::Unreachable(TransportError::Remote {
                    failure: Failure::UnknownGroup,
                    ..
                }))
            ),
            "{answered:?}"
        );
        assert_eq!(router.connections_opened(), 1);
    });
}

/// A node that accepts but never answers: the call ends at its TTL with `Timeout`, and the
/// abandoned reply slot is cleaned up.
#[test]
fn silent_node_times_out() {
    run_test(|| async {
        let listener = glommio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let _accepted = glommio::spawn_local(async move {
            let mut held = Vec::new();
            while let Ok(stream) = listener.accept().await {
                held.push(stream);
            }
        });
        let router = Router::new(1);
        router.add_node(2, &NodeInfo { rpc_addr: addr });
        let request = Request::Vote(VoteRequest::new(openraft::Vote::new(1, 1), None));
        let started = std::time::Instant::now();
        let result = router.call(2, 7, request, Duration::from_millis(200)).await;
        assert!(matches!(result, Err(CallError::Timeout(_))), "{result:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
    });
}

/// The node-level ping is answered by the registry itself, whatever groups it holds (even one
/// whose fallback forwards every unknown group), with this process's incarnation.
#[test]
fn ping_answers_with_the_incarnation() {
    run_test(|| async {
        let registry = GroupRegistry::new();
        // A fallback that answered the ping would make it fail (not an incarnation).
        let fallback: Fallback = std::rc::Rc::new(|_: GroupId, _: Request| {
            Box::pin(async { Response::Failed(Failure::GroupStopped) })
                as futures::future::LocalBoxFuture<'static, Response>
        });
        registry.set_fallback(fallback);
        let server = RpcServer::bind("127.0.0.1:0", registry).expect("bind");
        let router = Router::new(1);
        router.add_node(
            2,
            &NodeInfo {
                rpc_addr: server.local_addr().to_string(),
            },
        );
        let ttl = Duration::from_secs(1);
        let first = router.ping(2, ttl).await.expect("a live node answers");
        assert_eq!(first, incarnation());
        assert_ne!(first, 0);
        assert_eq!(router.ping(2, ttl).await.expect("again"), first);
    });
}
