//! Node join and registration: a real control plane, real `skiff-agent`
//! processes and kubectl, all on loopback.
//!
//! Where a test needs a client that misbehaves (says Hello as another node,
//! sends garbage), it speaks the node API itself with the credentials an
//! agent stored, since the agent would never do that.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use skiff_e2e::{wait_until, ControlPlane, Kubectl, COMMAND_TIMEOUT};
use skiff_proto::node::v1 as proto;
use skiff_proto::node::v1::node_service_client::NodeServiceClient;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// How long an agent gets to join and register. A healthy one needs well
/// under a second; CI machines are shared.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);

const REGISTERED: &str = "connected: the node is registered";

fn node_json(k: &Kubectl, name: &str) -> Value {
    k.get_json(&["node", name])
}

fn ready_condition(node: &Value) -> Value {
    node["status"]["conditions"]
        .as_array()
        .and_then(|conditions| conditions.iter().find(|c| c["type"] == "Ready"))
        .cloned()
        .unwrap_or(Value::Null)
}

#[test]
fn an_agent_joins_registers_a_ready_node_and_receives_its_pods() {
    let cp = ControlPlane::start();
    let token = cp.create_token();
    assert!(token.starts_with("K10"), "unexpected token {token:?}");
    let data_dir = cp.dir().join("agent-a");

    let agent = cp.spawn_agent(Some(&token), "e2e-node-a", &data_dir);
    assert!(
        agent.wait_for_stderr(REGISTER_TIMEOUT, |log| log.contains(REGISTERED)),
        "the agent did not register\n--- agent log ---\n{}",
        agent.stderr()
    );

    for k in cp.kubectls() {
        skiff_e2e::section(&k);
        let out = k.ok(&["get", "nodes"]);
        let row = out.row("e2e-node-a");
        assert_eq!(row[1], "Ready", "{out}");
        let wide = k.ok(&["get", "nodes", "-o", "wide"]);
        assert!(
            wide.row("e2e-node-a").contains(&"127.0.0.1".to_owned()),
            "no InternalIP in the wide listing\n{wide}"
        );
    }

    let k = cp.kubectl();
    let node = node_json(&k, "e2e-node-a");
    let status = &node["status"];
    for resource in ["cpu", "memory", "pods"] {
        assert!(
            status["capacity"][resource].is_string(),
            "capacity lacks {resource}: {node:#}"
        );
        assert!(
            status["allocatable"][resource].is_string(),
            "allocatable lacks {resource}: {node:#}"
        );
    }
    assert_eq!(status["capacity"]["pods"], "110");
    let info = &status["nodeInfo"];
    assert!(
        info["kubeletVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("v1.33.0-skiff")),
        "{node:#}"
    );
    assert_eq!(info["operatingSystem"], "linux");
    for field in ["osImage", "kernelVersion", "architecture", "bootID"] {
        assert!(
            info[field].as_str().is_some_and(|v| !v.is_empty()),
            "nodeInfo.{field} is empty: {node:#}"
        );
    }
    let labels = &node["metadata"]["labels"];
    assert_eq!(labels["kubernetes.io/os"], "linux");
    assert!(labels["kubernetes.io/arch"].is_string(), "{node:#}");
    assert!(labels["kubernetes.io/hostname"].is_string(), "{node:#}");
    let ready = ready_condition(&node);
    assert_eq!(ready["status"], "True", "{node:#}");
    assert_eq!(ready["reason"], "KubeletReady", "{node:#}");
    let first_heartbeat = ready["lastHeartbeatTime"].clone();
    assert!(first_heartbeat.is_string(), "{node:#}");

    // A pod bound to the node reaches its agent.
    let pod = cp.file(
        "pod.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: bound-to-a\nspec:\n  nodeName: e2e-node-a\n  containers:\n  - name: c\n    image: registry.example/nginx:1\n",
    );
    k.ok(&["create", "-f", pod.to_str().unwrap()]);
    assert!(
        agent.wait_for_stderr(REGISTER_TIMEOUT, |log| log.lines().any(|line| {
            line.contains("desired pod received") && line.contains("default/bound-to-a")
        })),
        "the agent did not log the pod\n--- agent log ---\n{}",
        agent.stderr()
    );

    // Heartbeats renew the Ready condition (every 10 s).
    assert!(
        wait_until(Duration::from_secs(30), || {
            ready_condition(&node_json(&k, "e2e-node-a"))["lastHeartbeatTime"] != first_heartbeat
        }),
        "lastHeartbeatTime never moved past {first_heartbeat}\n--- agent log ---\n{}",
        agent.stderr()
    );

    // Deleting the pod completes: the agent reports that nothing of it runs
    // (it starts nothing yet), instead of leaving it Terminating forever.
    k.ok(&["delete", "pod", "bound-to-a", "--timeout=30s"]);
    assert!(!k.exists("pod", "bound-to-a"));

    // A restarted agent reuses its credentials: no second Join.
    let first_run = agent.kill();
    assert_eq!(
        first_run.stderr.matches("joining the cluster").count(),
        1,
        "{first_run}"
    );
    let again = cp.spawn_agent(None, "e2e-node-a", &data_dir);
    assert!(
        again.wait_for_stderr(REGISTER_TIMEOUT, |log| log.contains(REGISTERED)),
        "the restarted agent did not connect\n--- agent log ---\n{}",
        again.stderr()
    );
    let log = again.stderr();
    assert!(
        log.contains("reusing the node credentials"),
        "--- agent log ---\n{log}"
    );
    assert!(
        !log.contains("joining the cluster"),
        "--- agent log ---\n{log}"
    );
    assert_eq!(
        cp.log().matches("node joined").count(),
        1,
        "the control plane saw a second Join\n{}",
        cp.log()
    );
    assert_eq!(k.ok(&["get", "nodes"]).row("e2e-node-a")[1], "Ready");
}

#[test]
fn wrong_tokens_and_bad_names_are_refused_and_no_node_appears() {
    let cp = ControlPlane::start();
    let token = cp.create_token();
    let (ca_part, _) = token.split_once("::").expect("token format");

    // Right cluster, unknown secret.
    let wrong_secret = format!("{ca_part}::abcdef.0123456789abcdef");
    let out = skiff_e2e::run_command(
        cp.agent_command(Some(&wrong_secret), "e2e-wrong", &cp.dir().join("agent-1")),
        None,
    );
    out.assert_failure()
        .assert_stderr_contains("refused to let this node join")
        .assert_stderr_contains("the join token is not valid");

    // A token for another cluster: the agent refuses the server's CA itself.
    let other_cluster = format!("K10{}::abcdef.0123456789abcdef", "0".repeat(64));
    let out = skiff_e2e::run_command(
        cp.agent_command(Some(&other_cluster), "e2e-wrong", &cp.dir().join("agent-2")),
        None,
    );
    out.assert_failure()
        .assert_stderr_contains("the server's CA does not match the join token");

    let out = skiff_e2e::run_command(
        cp.agent_command(Some("not-a-token"), "e2e-wrong", &cp.dir().join("agent-3")),
        None,
    );
    out.assert_failure()
        .assert_stderr_contains("the join token is malformed");

    // A valid token does not make an invalid node name acceptable.
    let out = skiff_e2e::run_command(
        cp.agent_command(Some(&token), "Not_A_Name", &cp.dir().join("agent-4")),
        None,
    );
    out.assert_failure()
        .assert_stderr_contains("invalid node name");

    for k in cp.kubectls() {
        skiff_e2e::section(&k);
        k.ok(&["get", "nodes", "-o", "name"]).assert_stdout_is("");
    }
    for dir in ["agent-1", "agent-2", "agent-3", "agent-4"] {
        assert!(
            !cp.dir().join(dir).join("node.crt").exists(),
            "{dir} got a certificate"
        );
    }
}

/// A node API client with the credentials an agent stored in `data_dir`.
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

fn hello(name: &str) -> proto::AgentMessage {
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
                ..Default::default()
            }),
        })),
    }
}

fn status_report(uid: &str, name: &str, status_json: &str) -> proto::AgentMessage {
    proto::AgentMessage {
        message: Some(proto::agent_message::Message::PodStatus(
            proto::PodStatusReport {
                uid: uid.into(),
                namespace: "default".into(),
                name: name.into(),
                status_json: status_json.into(),
                terminated: false,
            },
        )),
    }
}

/// Opens a Connect stream that sends `messages` and stays open; returns
/// every message received until the stream ends (with its status) or
/// goes quiet for two seconds (`Ok`).
async fn converse(
    client: &mut NodeServiceClient<tonic::transport::Channel>,
    messages: Vec<proto::AgentMessage>,
) -> (Vec<proto::ControlMessage>, Result<(), tonic::Status>) {
    let (sender, receiver) = tokio::sync::mpsc::channel(16);
    for message in messages {
        sender.try_send(message).expect("queue");
    }
    let outbound = futures_stream(receiver);
    let mut inbound = match client.connect(outbound).await {
        Ok(response) => response.into_inner(),
        Err(status) => return (Vec::new(), Err(status)),
    };
    let mut received = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(2), inbound.message()).await {
            Err(_) => return (received, Ok(())),
            Ok(Ok(Some(message))) => received.push(message),
            Ok(Ok(None)) => return (received, Ok(())),
            Ok(Err(status)) => return (received, Err(status)),
        }
    }
}

/// The receiver as a stream, keeping the sender's end open as long as the
/// receiver lives.
fn futures_stream(
    receiver: tokio::sync::mpsc::Receiver<proto::AgentMessage>,
) -> impl tonic::codegen::tokio_stream::Stream<Item = proto::AgentMessage> {
    tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(receiver)
}

#[test]
fn a_node_cannot_act_as_another_or_send_garbage() {
    let cp = ControlPlane::start();
    let token = cp.create_token();
    let data_dir = cp.dir().join("agent-a");
    let agent = cp.spawn_agent(Some(&token), "e2e-node-a", &data_dir);
    assert!(
        agent.wait_for_stderr(REGISTER_TIMEOUT, |log| log.contains(REGISTERED)),
        "the agent did not register\n--- agent log ---\n{}",
        agent.stderr()
    );
    // Only the credentials are needed from here on.
    drop(agent);

    let k = cp.kubectl();
    let pods = cp.file(
        "pods.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: on-a\nspec:\n  nodeName: e2e-node-a\n  containers:\n  - name: c\n    image: registry.example/nginx:1\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: on-b\nspec:\n  nodeName: e2e-node-b\n  containers:\n  - name: c\n    image: registry.example/nginx:1\n",
    );
    k.ok(&["create", "-f", pods.to_str().unwrap()]);
    let uid = |name: &str| {
        k.get_json(&["pod", name])["metadata"]["uid"]
            .as_str()
            .expect("uid")
            .to_owned()
    };
    let (uid_a, uid_b) = (uid("on-a"), uid("on-b"));

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut client = node_client(&cp, &data_dir).await;

        // Node A's certificate, Hello as node B.
        let (_, result) = converse(&mut client, vec![hello("e2e-node-b")]).await;
        let status = result.expect_err("Hello as another node must be refused");
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        assert!(
            status.message().contains("cannot act as node e2e-node-b"),
            "{status:?}"
        );

        // The first message must be Hello.
        let (_, result) = converse(&mut client, vec![status_report(&uid_a, "on-a", "{}")]).await;
        let status = result.expect_err("a stream without Hello must be refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains("must be Hello"), "{status:?}");

        // After a good Hello: Welcome and a snapshot with only A's pod.
        // Then a status report that is not JSON ends the stream.
        let (received, result) = converse(
            &mut client,
            vec![
                hello("e2e-node-a"),
                status_report(&uid_a, "on-a", "{not json"),
            ],
        )
        .await;
        let status = result.expect_err("garbage must end the stream");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains("not JSON"), "{status:?}");
        match received.get(1).and_then(|m| m.message.as_ref()) {
            Some(proto::control_message::Message::Snapshot(snapshot)) => {
                let names: Vec<&str> = snapshot.pods.iter().map(|p| p.name.as_str()).collect();
                assert_eq!(names, ["on-a"]);
            }
            other => panic!("expected Welcome then a Snapshot, got {received:?} ({other:?})"),
        }

        // Another node's pod: refused.
        let (_, result) = converse(
            &mut client,
            vec![
                hello("e2e-node-a"),
                status_report(&uid_b, "on-b", r#"{"phase":"Running"}"#),
            ],
        )
        .await;
        let status = result.expect_err("another node's pod must be refused");
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");

        // Its own pod: written.
        let (_, result) = converse(
            &mut client,
            vec![
                hello("e2e-node-a"),
                status_report(&uid_a, "on-a", r#"{"phase":"Running"}"#),
            ],
        )
        .await;
        result.expect("a report on the node's own pod is fine");
    });

    assert!(
        !k.exists("node", "e2e-node-b"),
        "node B appeared from A's Hello"
    );
    assert_eq!(k.get_json(&["pod", "on-b"])["status"]["phase"], "Pending");
    assert!(
        wait_until(COMMAND_TIMEOUT, || k.get_json(&["pod", "on-a"])["status"]
            ["phase"]
            == "Running"),
        "the node's report on its own pod was not written"
    );
}
