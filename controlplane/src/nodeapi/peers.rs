//! The overlay peer table each node is sent: every other node that has a
//! pod subnet and an overlay endpoint.
//!
//! Mechanism. A peer is read from a stored Node: `spec.podCIDR` and
//! flannel's annotations (see [`super::node`]). The session lists the
//! Nodes ([`list_peers`]) and puts the peers into its `Snapshot`, and hands
//! each Node event of its watch to [`peer_change_for_event`], which
//! decides from the Node before and after the event what node X must hear:
//!
//! - a peer after the event, and not the same peer before → upsert (a new
//!   node, a new subnet, a new VTEP MAC or underlay address);
//! - a peer before and not after (the Node deleted, or its subnet or
//!   endpoint gone) → remove;
//! - otherwise (heartbeats, labels, the node itself) → nothing.
//!
//! Node events arrive on the session's one watch over the core resources
//! (so Delta revisions keep increasing across pods and peers), and each is
//! turned into a Delta at once, without waiting for a pod event. The
//! decision is pure; [`list_peers`] is the thin part that reads the store.

use ipnet::Ipv4Net;
use serde_json::Value;
use skiff_proto::node::v1 as proto;
use skiff_store::{Event, EventType, KeyValue, StoreError};

use super::node::{pod_cidr_of, OverlayEndpoint};
use crate::api::errors::ApiError;
use crate::api::objects::{self, str_at};
use crate::api::registry::Registry;
use crate::api::resources;

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error(transparent)]
    Stored(#[from] ApiError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Another node as the overlay needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub node_name: String,
    pub pod_cidr: Ipv4Net,
    pub endpoint: OverlayEndpoint,
}

impl Peer {
    /// The peer a stored Node describes, if it has both a subnet and an
    /// overlay endpoint.
    pub fn of_node(node: &Value) -> Option<Peer> {
        Some(Peer {
            node_name: str_at(node, "/metadata/name")?.to_owned(),
            pod_cidr: pod_cidr_of(node)?,
            endpoint: OverlayEndpoint::of_node(node)?,
        })
    }
}

impl From<Peer> for proto::OverlayPeer {
    fn from(peer: Peer) -> proto::OverlayPeer {
        proto::OverlayPeer {
            node_name: peer.node_name,
            pod_cidr: peer.pod_cidr.to_string(),
            public_ip: peer.endpoint.public_ip.to_string(),
            vtep_mac: peer.endpoint.vtep_mac,
        }
    }
}

/// The peers of `node` among the stored Nodes.
pub fn peers_of(stored: &[KeyValue], node: &str) -> Result<Vec<Peer>, PeerError> {
    let mut peers = Vec::new();
    for kv in stored {
        if let Some(peer) = Peer::of_node(&objects::value(kv)?) {
            if peer.node_name != node {
                peers.push(peer);
            }
        }
    }
    Ok(peers)
}

/// What one Node event means to a node's peer table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerChange {
    Upsert(Peer),
    /// The name of a node that is no longer a peer.
    Remove(String),
}

/// A peer change and the store revision it happened at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerDelta {
    pub revision: i64,
    pub change: PeerChange,
}

impl From<PeerDelta> for proto::Delta {
    fn from(delta: PeerDelta) -> proto::Delta {
        let (peers_upserted, peers_removed) = match delta.change {
            PeerChange::Upsert(peer) => (vec![peer.into()], Vec::new()),
            PeerChange::Remove(name) => (Vec::new(), vec![name]),
        };
        proto::Delta {
            revision: delta.revision,
            peers_upserted,
            peers_removed,
            ..Default::default()
        }
    }
}

/// What a Node store event means to `node` (see the module documentation).
pub fn peer_change_for_event(event: &Event, node: &str) -> Result<Option<PeerDelta>, ApiError> {
    let before = match (&event.previous, event.event_type) {
        (Some(previous), _) => Some(objects::value(previous)?),
        (None, EventType::Delete) => Some(objects::value(&event.kv)?),
        (None, EventType::Put) => None,
    };
    let after = match event.event_type {
        EventType::Put => Some(objects::value(&event.kv)?),
        EventType::Delete => None,
    };
    let before = before.as_ref().and_then(Peer::of_node);
    let after = after.as_ref().and_then(Peer::of_node);
    let change = match (before, after) {
        (_, Some(after)) if after.node_name == node => None,
        (Some(before), _) if before.node_name == node => None,
        (before, Some(after)) => {
            (before.as_ref() != Some(&after)).then_some(PeerChange::Upsert(after))
        }
        (Some(before), None) => Some(PeerChange::Remove(before.node_name)),
        (None, None) => None,
    };
    Ok(change.map(|change| PeerDelta {
        revision: event.revision(),
        change,
    }))
}

/// The peers of `node` among the Nodes stored now.
pub async fn list_peers(registry: &Registry, node: &str) -> Result<Vec<Peer>, PeerError> {
    let nodes = resources::find("", "v1", "nodes")
        .ok_or_else(|| ApiError::Internal("nodes are not served".into()))?;
    let listed = registry.store.range(&nodes.key_prefix(None)).await?;
    peers_of(&listed.items, node)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use serde_json::json;

    fn node(name: &str, cidr: Option<&str>, mac: Option<&str>) -> Value {
        let mut node = json!({"metadata": {"name": name, "annotations": {}}, "spec": {}});
        if let Some(cidr) = cidr {
            node["spec"]["podCIDR"] = json!(cidr);
            node["spec"]["podCIDRs"] = json!([cidr]);
        }
        if let Some(mac) = mac {
            node["metadata"]["annotations"] = json!({
                "flannel.alpha.coreos.com/public-ip": "192.168.50.2",
                "flannel.alpha.coreos.com/backend-type": "vxlan",
                "flannel.alpha.coreos.com/backend-data": format!("{{\"VNI\":1,\"VtepMAC\":\"{mac}\"}}"),
            });
        }
        node
    }

    fn kv(value: &Value, revision: i64) -> KeyValue {
        KeyValue {
            key: format!(
                "/registry/core/nodes/{}",
                value["metadata"]["name"].as_str().unwrap_or("")
            ),
            value: Bytes::from(value.to_string()),
            create_revision: 1,
            mod_revision: revision,
        }
    }

    fn put(before: Option<&Value>, after: &Value) -> Event {
        Event {
            event_type: EventType::Put,
            kv: kv(after, 10),
            previous: before.map(|b| kv(b, 9)),
        }
    }

    fn delete(before: &Value) -> Event {
        Event {
            event_type: EventType::Delete,
            kv: kv(before, 11),
            previous: Some(kv(before, 9)),
        }
    }

    const MAC: &str = "aa:bb:cc:dd:ee:01";

    #[test]
    fn a_peer_needs_a_subnet_and_an_endpoint() {
        let full = node("b", Some("10.244.1.0/24"), Some(MAC));
        let peer = Peer::of_node(&full).expect("peer");
        assert_eq!(peer.pod_cidr.to_string(), "10.244.1.0/24");
        assert_eq!(peer.endpoint.vtep_mac, MAC);
        let wire = proto::OverlayPeer::from(peer);
        assert_eq!(wire.public_ip, "192.168.50.2");
        assert_eq!(Peer::of_node(&node("b", None, Some(MAC))), None);
        assert_eq!(Peer::of_node(&node("b", Some("10.244.1.0/24"), None)), None);

        let stored = [
            kv(&node("a", Some("10.244.0.0/24"), Some(MAC)), 2),
            kv(&full, 3),
            kv(&node("c", None, None), 4),
        ];
        let names: Vec<String> = peers_of(&stored, "a")
            .expect("peers")
            .into_iter()
            .map(|p| p.node_name)
            .collect();
        assert_eq!(names, ["b"], "not itself, not a node without a subnet");
    }

    #[test]
    fn node_events_become_peer_deltas_only_when_the_peer_changes() {
        let bare = node("b", Some("10.244.1.0/24"), None);
        let full = node("b", Some("10.244.1.0/24"), Some(MAC));

        let appeared = peer_change_for_event(&put(Some(&bare), &full), "a").expect("event");
        assert!(matches!(
            appeared,
            Some(PeerDelta { revision: 10, change: PeerChange::Upsert(ref p) }) if p.node_name == "b"
        ));

        let mut heartbeat = full.clone();
        heartbeat["status"] = json!({"conditions": [{"type": "Ready"}]});
        assert_eq!(
            peer_change_for_event(&put(Some(&full), &heartbeat), "a").expect("event"),
            None
        );

        let moved = node("b", Some("10.244.1.0/24"), Some("aa:bb:cc:dd:ee:02"));
        assert!(matches!(
            peer_change_for_event(&put(Some(&full), &moved), "a").expect("event"),
            Some(PeerDelta {
                change: PeerChange::Upsert(_),
                ..
            })
        ));

        let gone = peer_change_for_event(&delete(&full), "a").expect("event");
        assert_eq!(
            gone,
            Some(PeerDelta {
                revision: 11,
                change: PeerChange::Remove("b".into())
            })
        );
        let delta = proto::Delta::from(gone.expect("delta"));
        assert_eq!(delta.peers_removed, ["b"]);
        assert!(delta.upserted.is_empty());

        // A node is never its own peer, and a node that never was one is
        // not removed.
        assert_eq!(
            peer_change_for_event(&put(Some(&bare), &full), "b").expect("event"),
            None
        );
        assert_eq!(
            peer_change_for_event(&delete(&bare), "a").expect("event"),
            None
        );
        assert_eq!(
            peer_change_for_event(&put(None, &bare), "a").expect("event"),
            None
        );
    }
}
