//! Services end to end without containerd: a simulated node (a client
//! speaking the node API with the credentials a real agent obtained)
//! reports its pods Running and Ready, and the test checks what kubectl
//! shows (Endpoints, `describe service`) and what the node is sent (the
//! service table in its Snapshot, Deltas when endpoints change, removal).

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use skiff_e2e::{wait_until, ControlPlane, Kubectl, COMMAND_TIMEOUT};
use skiff_proto::node::v1 as proto;
use skiff_proto::node::v1::node_service_client::NodeServiceClient;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

const NODE: &str = "svc-node";
/// How long an agent gets to join and register, and the control plane to
/// act on a change. Healthy runs need well under a second.
const TIMEOUT: Duration = Duration::from_secs(30);

const MANIFEST: &str = "apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector:
    app: web
  ports:
  - name: http
    port: 80
    targetPort: http
---
apiVersion: v1
kind: Pod
metadata:
  name: web-1
  labels:
    app: web
spec:
  nodeName: svc-node
  containers:
  - name: c
    image: registry.example/nginx:1
    ports:
    - name: http
      containerPort: 8080
---
apiVersion: v1
kind: Pod
metadata:
  name: web-2
  labels:
    app: web
spec:
  nodeName: svc-node
  containers:
  - name: c
    image: registry.example/nginx:1
    ports:
    - name: http
      containerPort: 9090
";

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

fn hello() -> proto::AgentMessage {
    proto::AgentMessage {
        message: Some(proto::agent_message::Message::Hello(proto::Hello {
            protocol_version: 1,
            node: Some(proto::NodeInfo {
                name: NODE.into(),
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

/// A Running status with `ip`, Ready or not.
fn running(uid: &str, name: &str, ip: &str, ready: bool) -> proto::AgentMessage {
    let ready = if ready { "True" } else { "False" };
    let status = json!({
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "conditions": [
            {"type": "Initialized", "status": "True"},
            {"type": "Ready", "status": ready},
            {"type": "ContainersReady", "status": ready},
            {"type": "PodScheduled", "status": "True"},
        ],
    });
    proto::AgentMessage {
        message: Some(proto::agent_message::Message::PodStatus(
            proto::PodStatusReport {
                uid: uid.into(),
                namespace: "default".into(),
                name: name.into(),
                status_json: status.to_string(),
                terminated: false,
            },
        )),
    }
}

/// The node's end of a Connect stream.
struct NodeStream {
    sender: tokio::sync::mpsc::Sender<proto::AgentMessage>,
    inbound: tonic::Streaming<proto::ControlMessage>,
}

impl NodeStream {
    async fn open(client: &mut NodeServiceClient<tonic::transport::Channel>) -> NodeStream {
        let (sender, receiver) = tokio::sync::mpsc::channel(16);
        sender.try_send(hello()).expect("queue");
        let outbound = tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(receiver);
        let inbound = client
            .connect(outbound)
            .await
            .expect("Connect")
            .into_inner();
        NodeStream { sender, inbound }
    }

    async fn send(&self, message: proto::AgentMessage) {
        self.sender.send(message).await.expect("send");
    }

    /// The next control message, or `None` after `TIMEOUT` of silence.
    async fn next(&mut self) -> Option<proto::control_message::Message> {
        match tokio::time::timeout(TIMEOUT, self.inbound.message()).await {
            Ok(Ok(Some(message))) => message.message,
            Ok(Ok(None)) => None,
            Ok(Err(status)) => panic!("the session ended: {status:?}"),
            Err(_) => None,
        }
    }

    /// Reads Deltas until one satisfies `wanted`.
    async fn delta_where(&mut self, wanted: impl Fn(&proto::Delta) -> bool) -> proto::Delta {
        let mut seen = Vec::new();
        loop {
            match self.next().await {
                Some(proto::control_message::Message::Delta(delta)) => {
                    if wanted(&delta) {
                        return delta;
                    }
                    seen.push(delta);
                }
                Some(_) => {}
                None => panic!("no matching Delta arrived; saw {seen:#?}"),
            }
        }
    }
}

fn web_entry(delta: &proto::Delta) -> Option<&proto::Service> {
    delta
        .services_upserted
        .iter()
        .find(|s| s.namespace == "default" && s.name == "web")
}

/// The (ip, port, ready) endpoints of the first port of `service`.
fn endpoints(service: &proto::Service) -> Vec<(String, u32, bool)> {
    let mut list: Vec<(String, u32, bool)> = service.ports[0]
        .endpoints
        .iter()
        .map(|e| (e.ip.clone(), e.port, e.ready))
        .collect();
    list.sort();
    list
}

fn env_names(pod: &proto::Pod) -> Vec<String> {
    let spec: Value = serde_json::from_str(&pod.spec_json).expect("spec JSON");
    spec["containers"][0]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["name"].as_str().map(str::to_owned))
        .collect()
}

fn describe_endpoints(k: &Kubectl) -> String {
    let out = k.ok(&["describe", "service", "web"]);
    out.lines()
        .into_iter()
        .find(|line| line.starts_with("Endpoints:"))
        .unwrap_or_else(|| panic!("no Endpoints: line\n{out}"))
        .to_owned()
}

#[test]
fn endpoints_follow_pod_readiness_and_nodes_get_the_service_table() {
    let cp = ControlPlane::start();
    let token = cp.create_token();
    let data_dir = cp.dir().join("agent");
    let agent = cp.spawn_agent(Some(&token), NODE, &data_dir);
    assert!(
        agent.wait_for_stderr(TIMEOUT, |log| log
            .contains("connected: the node is registered")),
        "the agent did not register\n--- agent log ---\n{}",
        agent.stderr()
    );
    // From here on the test is the node, with the agent's credentials.
    drop(agent);

    let k = cp.kubectl();
    let manifest = cp.file("web.yaml", MANIFEST);
    k.ok(&["create", "-f", manifest.to_str().expect("path")]);
    let uid = |name: &str| {
        k.get_json(&["pod", name])["metadata"]["uid"]
            .as_str()
            .expect("uid")
            .to_owned()
    };
    let (uid1, uid2) = (uid("web-1"), uid("web-2"));

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut client = node_client(&cp, &data_dir).await;
        let mut node = NodeStream::open(&mut client).await;
        assert!(matches!(
            node.next().await,
            Some(proto::control_message::Message::Welcome(_))
        ));
        let Some(proto::control_message::Message::Snapshot(snapshot)) = node.next().await else {
            panic!("expected a Snapshot after the Welcome");
        };
        // Every service, with its ports; no endpoints yet.
        let mut names: Vec<String> = snapshot
            .services
            .iter()
            .map(|s| format!("{}/{}", s.namespace, s.name))
            .collect();
        names.sort();
        assert_eq!(names, ["default/kubernetes", "default/web"]);
        let web = snapshot
            .services
            .iter()
            .find(|s| s.name == "web")
            .expect("web");
        assert_eq!(web.r#type, "ClusterIP");
        assert!(!web.cluster_ip.is_empty());
        assert_eq!(
            (web.ports[0].name.as_str(), web.ports[0].port),
            ("http", 80)
        );
        assert!(web.ports[0].endpoints.is_empty(), "{web:?}");
        let api = snapshot
            .services
            .iter()
            .find(|s| s.name == "kubernetes")
            .expect("kubernetes");
        assert_eq!(api.ports[0].endpoints.len(), 1, "{api:?}");
        // The pods carry the service link variables.
        assert_eq!(snapshot.pods.len(), 2);
        for pod in &snapshot.pods {
            let env = env_names(pod);
            for name in [
                "KUBERNETES_SERVICE_HOST",
                "WEB_SERVICE_HOST",
                "WEB_SERVICE_PORT_HTTP",
                "WEB_PORT_80_TCP_ADDR",
            ] {
                assert!(env.iter().any(|e| e == name), "{name} missing: {env:?}");
            }
        }

        // Both pods become Ready: one Delta carries the endpoints, each
        // with its own resolved target port.
        node.send(running(&uid1, "web-1", "10.244.0.10", true))
            .await;
        node.send(running(&uid2, "web-2", "10.244.0.11", true))
            .await;
        let both = vec![
            ("10.244.0.10".to_owned(), 8080, true),
            ("10.244.0.11".to_owned(), 9090, true),
        ];
        let delta = node
            .delta_where(|d| web_entry(d).is_some_and(|s| endpoints(s) == both))
            .await;
        assert!(delta.revision > snapshot.revision);
        let entry = web_entry(&delta).expect("web");
        assert!(entry.ports[0]
            .endpoints
            .iter()
            .all(|e| e.node_name == NODE && e.pod_name.starts_with("web-")));

        for k in cp.kubectls() {
            skiff_e2e::section(&k);
            let out = k.ok(&["get", "endpoints", "web"]);
            let row = out.row("web");
            assert!(
                row[1].contains("10.244.0.10:8080") && row[1].contains("10.244.0.11:9090"),
                "{out}"
            );
            let line = describe_endpoints(&k);
            assert!(
                line.contains("10.244.0.10:8080") && line.contains("10.244.0.11:9090"),
                "{line}"
            );
        }

        // web-2 turns unready: it moves to notReadyAddresses, and the node
        // hears it.
        node.send(running(&uid2, "web-2", "10.244.0.11", false))
            .await;
        let unready = vec![
            ("10.244.0.10".to_owned(), 8080, true),
            ("10.244.0.11".to_owned(), 9090, false),
        ];
        node.delta_where(|d| web_entry(d).is_some_and(|s| endpoints(s) == unready))
            .await;
        let stored = k.get_json(&["endpoints", "web"]);
        let not_ready: Vec<&str> = stored["subsets"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["notReadyAddresses"].as_array().into_iter().flatten())
            .filter_map(|a| a["ip"].as_str())
            .collect();
        assert_eq!(not_ready, ["10.244.0.11"], "{stored:#}");
        for k in cp.kubectls() {
            skiff_e2e::section(&k);
            let line = describe_endpoints(&k);
            assert!(
                line.contains("10.244.0.10:8080") && !line.contains("10.244.0.11"),
                "{line}"
            );
        }

        // The Service goes: so do its Endpoints, and the node is told.
        k.ok(&["delete", "service", "web"]);
        node.delta_where(|d| d.services_removed.iter().any(|s| s == "default/web"))
            .await;
    });
    assert!(
        wait_until(COMMAND_TIMEOUT, || !k.exists("endpoints", "web")),
        "the Endpoints outlived its Service"
    );
    assert!(
        wait_until(COMMAND_TIMEOUT, || {
            k.get_json(&["endpointslices", "-l", "kubernetes.io/service-name=web"])["items"]
                .as_array()
                .is_some_and(Vec::is_empty)
        }),
        "the EndpointSlices outlived their Service"
    );
}
