//! Pod subnet leases and the overlay peer table, seen through the node API.
//!
//! Real agents join (so the nodes hold real credentials) and are stopped;
//! the test then speaks the node API itself as those nodes, reporting
//! overlay endpoints the way an agent with a VXLAN device does, and reads
//! what each node is told.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use skiff_e2e::{wait_until, Background, ControlPlane, Kubectl, COMMAND_TIMEOUT};
use skiff_proto::node::v1 as proto;
use skiff_proto::node::v1::node_service_client::NodeServiceClient;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);
const REGISTERED: &str = "connected: the node is registered";
/// How long a message the control plane owes a node may take to arrive.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(15);

/// Joins `name` with a real agent and stops it once registered; returns
/// the directory holding the node's credentials.
fn join(cp: &ControlPlane, token: &str, name: &str) -> std::path::PathBuf {
    let data_dir = cp.dir().join(format!("agent-{name}"));
    let agent: Background = cp.spawn_agent(Some(token), name, &data_dir);
    assert!(
        agent.wait_for_stderr(REGISTER_TIMEOUT, |log| log.contains(REGISTERED)),
        "{name} did not register\n--- agent log ---\n{}",
        agent.stderr()
    );
    drop(agent.kill());
    data_dir
}

async fn node_client(
    cp: &ControlPlane,
    data_dir: &Path,
) -> NodeServiceClient<tonic::transport::Channel> {
    let read = |name: &str| {
        std::fs::read_to_string(data_dir.join(name))
            .unwrap_or_else(|e| panic!("cannot read {name} in {}: {e}", data_dir.display()))
    };
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.crt")))
        .identity(Identity::from_pem(read("node.crt"), read("node.key")))
        .domain_name("127.0.0.1");
    let channel = Endpoint::from_shared(format!("https://127.0.0.1:{}", cp.node_api_port()))
        .expect("uri")
        .tls_config(tls)
        .expect("tls")
        .connect()
        .await
        .expect("connect to the node API");
    NodeServiceClient::new(channel)
}

fn endpoint(ip: &str, mac: &str) -> Option<proto::OverlayEndpoint> {
    Some(proto::OverlayEndpoint {
        public_ip: ip.into(),
        vtep_mac: mac.into(),
    })
}

fn hello(name: &str, overlay: Option<proto::OverlayEndpoint>) -> proto::AgentMessage {
    proto::AgentMessage {
        message: Some(proto::agent_message::Message::Hello(proto::Hello {
            protocol_version: 1,
            node: Some(proto::NodeInfo {
                name: name.into(),
                capacity: [("cpu".to_owned(), "1".to_owned())].into(),
                allocatable: [("cpu".to_owned(), "1".to_owned())].into(),
                operating_system: "linux".into(),
                architecture: "amd64".into(),
                agent_version: "v1.33.0-skiff.test".into(),
                overlay,
                ..Default::default()
            }),
        })),
    }
}

fn heartbeat(overlay: Option<proto::OverlayEndpoint>) -> proto::AgentMessage {
    proto::AgentMessage {
        message: Some(proto::agent_message::Message::Heartbeat(proto::Heartbeat {
            conditions: Vec::new(),
            overlay,
        })),
    }
}

async fn next_message(
    inbound: &mut tonic::Streaming<proto::ControlMessage>,
) -> Result<Option<proto::control_message::Message>, tonic::Status> {
    match tokio::time::timeout(MESSAGE_TIMEOUT, inbound.message()).await {
        Ok(Ok(Some(message))) => Ok(message.message),
        Ok(Ok(None)) => Err(tonic::Status::aborted("the stream ended")),
        Ok(Err(status)) => Err(status),
        Err(_) => Err(tonic::Status::deadline_exceeded("no message")),
    }
}

/// One open Connect stream of a simulated node.
struct FakeNode {
    outbound: tokio::sync::mpsc::Sender<proto::AgentMessage>,
    inbound: tonic::Streaming<proto::ControlMessage>,
    welcome: proto::Welcome,
    snapshot: proto::Snapshot,
}

impl FakeNode {
    async fn connect(
        client: &mut NodeServiceClient<tonic::transport::Channel>,
        first: proto::AgentMessage,
    ) -> Result<FakeNode, tonic::Status> {
        let (outbound, receiver) = tokio::sync::mpsc::channel(16);
        outbound.try_send(first).expect("queue");
        let mut inbound = client
            .connect(tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(
                receiver,
            ))
            .await?
            .into_inner();
        use proto::control_message::Message;
        let welcome = match next_message(&mut inbound).await? {
            Some(Message::Welcome(welcome)) => welcome,
            other => panic!("expected a Welcome, got {other:?}"),
        };
        let snapshot = match next_message(&mut inbound).await? {
            Some(Message::Snapshot(snapshot)) => snapshot,
            other => panic!("expected a Snapshot, got {other:?}"),
        };
        Ok(FakeNode {
            outbound,
            inbound,
            welcome,
            snapshot,
        })
    }

    /// Waits for a Delta that satisfies `wanted`, skipping the others.
    async fn delta_where(&mut self, wanted: impl Fn(&proto::Delta) -> bool) -> proto::Delta {
        let deadline = Instant::now() + MESSAGE_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.inbound.message()).await {
                Ok(Ok(Some(proto::ControlMessage {
                    message: Some(proto::control_message::Message::Delta(delta)),
                }))) if wanted(&delta) => return delta,
                Ok(Ok(Some(_))) => {}
                other => panic!("the awaited Delta did not come: {other:?}"),
            }
        }
    }

    async fn send(&self, message: proto::AgentMessage) {
        self.outbound.send(message).await.expect("stream open");
    }
}

fn pod_cidr(k: &Kubectl, node: &str) -> Value {
    k.get_json(&["node", node])["spec"]["podCIDR"].clone()
}

fn network_condition(k: &Kubectl, node: &str) -> Value {
    k.get_json(&["node", node])["status"]["conditions"]
        .as_array()
        .and_then(|conditions| {
            conditions
                .iter()
                .find(|c| c["type"] == "NetworkUnavailable")
        })
        .cloned()
        .unwrap_or(Value::Null)
}

const MAC_A: &str = "aa:bb:cc:00:00:0a";
const MAC_B: &str = "aa:bb:cc:00:00:0b";

#[test]
fn nodes_get_distinct_subnets_learn_each_other_as_peers_and_keep_their_leases() {
    let mut cp = ControlPlane::start();
    let token = cp.create_token();
    let dir_a = join(&cp, &token, "net-a");
    let dir_b = join(&cp, &token, "net-b");
    let k = cp.kubectl();
    assert_eq!(pod_cidr(&k, "net-a"), "10.244.0.0/24");
    assert_eq!(pod_cidr(&k, "net-b"), "10.244.1.0/24");
    assert_eq!(
        k.get_json(&["node", "net-b"])["spec"]["podCIDRs"],
        serde_json::json!(["10.244.1.0/24"])
    );

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut client_a = node_client(&cp, &dir_a).await;
        let mut client_b = node_client(&cp, &dir_b).await;

        // A malformed endpoint is refused and nothing of it is written.
        let refused =
            FakeNode::connect(&mut client_a, hello("net-a", endpoint("not-an-ip", MAC_A))).await;
        let status = refused.err().expect("a bad endpoint must be refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains("overlay endpoint"), "{status:?}");

        // A reports its endpoint in Hello; B has none yet, so A has no peer.
        let mut a = FakeNode::connect(&mut client_a, hello("net-a", endpoint("192.0.2.10", MAC_A)))
            .await
            .expect("A connects");
        assert_eq!(a.welcome.pod_cidr, "10.244.0.0/24");
        let network = a.welcome.network.clone().expect("cluster network settings");
        assert_eq!(network.cluster_cidr, "10.244.0.0/16");
        assert_eq!(network.service_cidr, "10.96.0.0/12");
        assert_eq!((network.vxlan_vni, network.vxlan_port), (1, 8472));
        assert_eq!(network.cluster_domain, "cluster.local");
        assert!(a.snapshot.peers.is_empty(), "{:?}", a.snapshot.peers);

        // B connects without an endpoint and reports it with a heartbeat,
        // as an agent does once it has created its device.
        let b = FakeNode::connect(&mut client_b, hello("net-b", None))
            .await
            .expect("B connects");
        assert_eq!(b.welcome.pod_cidr, "10.244.1.0/24");
        let peers: Vec<&str> = b
            .snapshot
            .peers
            .iter()
            .map(|p| p.node_name.as_str())
            .collect();
        assert_eq!(peers, ["net-a"], "B's snapshot holds A");
        assert_eq!(b.snapshot.peers[0].pod_cidr, "10.244.0.0/24");
        assert_eq!(b.snapshot.peers[0].public_ip, "192.0.2.10");
        assert_eq!(b.snapshot.peers[0].vtep_mac, MAC_A);
        b.send(heartbeat(endpoint("192.0.2.11", MAC_B))).await;
        let delta = a.delta_where(|d| !d.peers_upserted.is_empty()).await;
        assert_eq!(
            delta.peers_upserted,
            [proto::OverlayPeer {
                node_name: "net-b".into(),
                pod_cidr: "10.244.1.0/24".into(),
                public_ip: "192.0.2.11".into(),
                vtep_mac: MAC_B.into(),
            }]
        );

        let node_b = k.get_json(&["node", "net-b"]);
        let annotations = &node_b["metadata"]["annotations"];
        assert_eq!(
            annotations["flannel.alpha.coreos.com/public-ip"],
            "192.0.2.11"
        );
        assert_eq!(
            annotations["flannel.alpha.coreos.com/backend-type"],
            "vxlan"
        );
        assert_eq!(
            annotations["flannel.alpha.coreos.com/backend-data"],
            format!(r#"{{"VNI":1,"VtepMAC":"{MAC_B}"}}"#)
        );
        let condition = network_condition(&k, "net-b");
        assert_eq!(condition["status"], "False", "{condition}");
        assert_eq!(condition["reason"], "SkiffVxlanReady", "{condition}");

        // B goes away and its Node is deleted: A is told, and B's subnet
        // is free for the next node.
        drop(b);
        k.ok(&["delete", "node", "net-b"]);
        let delta = a.delta_where(|d| !d.peers_removed.is_empty()).await;
        assert_eq!(delta.peers_removed, ["net-b"]);
        drop(a);
    });

    let _dir_c = join(&cp, &token, "net-c");
    assert!(
        wait_until(COMMAND_TIMEOUT, || pod_cidr(&k, "net-c") == "10.244.1.0/24"),
        "net-c did not get the subnet net-b freed: {}",
        pod_cidr(&k, "net-c")
    );

    // The leases survive a restart of the control plane.
    cp.restart();
    assert_eq!(pod_cidr(&k, "net-a"), "10.244.0.0/24");
    assert_eq!(pod_cidr(&k, "net-c"), "10.244.1.0/24");
    runtime.block_on(async {
        let mut client_a = node_client(&cp, &dir_a).await;
        let a = FakeNode::connect(&mut client_a, hello("net-a", endpoint("192.0.2.10", MAC_A)))
            .await
            .expect("A reconnects");
        assert_eq!(a.welcome.pod_cidr, "10.244.0.0/24", "A keeps its subnet");
    });
    let dir_d = join(&cp, &token, "net-d");
    assert!(dir_d.is_dir());
    assert_eq!(
        pod_cidr(&k, "net-d"),
        "10.244.2.0/24",
        "a new node after the restart does not get a leased subnet"
    );
}
