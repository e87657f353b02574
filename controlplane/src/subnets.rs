//! Pod subnet leases: the cluster network cut into one subnet per node.
//!
//! Mechanism. The cluster CIDR (`--cluster-cidr`, `10.244.0.0/16`) is cut
//! into subnets of `--node-cidr-mask-size` bits (`/24`), as flannel's
//! `SubnetLen` and kube-controller-manager's node IPAM do. A node's lease
//! is its Node's `spec.podCIDR`: the stored Nodes are the durable record,
//! and the allocator is rebuilt from them at start-up, so a node keeps its
//! subnet across control-plane restarts.
//!
//! Rules:
//! - A node that holds a lease keeps it; asking again returns the same one.
//! - A new node gets the lowest free subnet, so addresses stay predictable
//!   and a freed subnet is the first to be reused.
//! - A Node deletion releases its subnet.
//! - Running out is an error value the caller reports on the Node; it never
//!   panics.
//!
//! The allocator is plain data with no I/O; callers serialise access.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubnetError {
    #[error("invalid CIDR {text:?} in {flag}: expected an IPv4 network such as 10.244.0.0/16")]
    InvalidCidr { flag: &'static str, text: String },
    #[error("--node-cidr-mask-size {mask} must be longer than the cluster CIDR's prefix /{cluster_prefix} and at most 30")]
    MaskSize { mask: u8, cluster_prefix: u8 },
    #[error("the cluster CIDR {cluster} overlaps the service CIDR {service}; pick ranges that do not overlap")]
    Overlap { cluster: Ipv4Net, service: Ipv4Net },
    #[error("no pod subnet is free: every /{mask} subnet of the cluster CIDR {cluster} is leased")]
    Exhausted { cluster: Ipv4Net, mask: u8 },
    #[error("subnet {subnet} of node {node} is not a /{mask} inside the cluster CIDR {cluster}")]
    OutsideCluster {
        node: String,
        subnet: Ipv4Net,
        cluster: Ipv4Net,
        mask: u8,
    },
    #[error("subnet {subnet} of node {node} is already leased to node {holder}")]
    Taken {
        node: String,
        subnet: Ipv4Net,
        holder: String,
    },
}

/// Parses an IPv4 network given on the command line, normalised to its
/// network address (`10.244.1.7/16` means `10.244.0.0/16`).
pub fn parse_cidr(flag: &'static str, text: &str) -> Result<Ipv4Net, SubnetError> {
    text.parse::<Ipv4Net>()
        .map(|net| net.trunc())
        .map_err(|_| SubnetError::InvalidCidr {
            flag,
            text: text.to_owned(),
        })
}

/// Checks the cluster network against the service network it must not
/// overlap.
pub fn validate_against_services(cluster: Ipv4Net, service: Ipv4Net) -> Result<(), SubnetError> {
    if cluster.contains(&service.network()) || service.contains(&cluster.network()) {
        return Err(SubnetError::Overlap { cluster, service });
    }
    Ok(())
}

/// The first host address of a subnet: the bridge's gateway address.
pub fn gateway(subnet: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()).saturating_add(1))
}

/// Which node holds which subnet.
#[derive(Debug, Clone)]
pub struct SubnetAllocator {
    cluster: Ipv4Net,
    mask: u8,
    /// Subnet index (its offset within the cluster CIDR in subnets) to
    /// the node holding it.
    holders: BTreeMap<u32, String>,
    by_node: BTreeMap<String, u32>,
}

impl SubnetAllocator {
    pub fn new(cluster: Ipv4Net, mask: u8) -> Result<SubnetAllocator, SubnetError> {
        let cluster = cluster.trunc();
        if mask <= cluster.prefix_len() || mask > 30 {
            return Err(SubnetError::MaskSize {
                mask,
                cluster_prefix: cluster.prefix_len(),
            });
        }
        Ok(SubnetAllocator {
            cluster,
            mask,
            holders: BTreeMap::new(),
            by_node: BTreeMap::new(),
        })
    }

    pub fn cluster(&self) -> Ipv4Net {
        self.cluster
    }

    pub fn mask(&self) -> u8 {
        self.mask
    }

    /// How many subnets the cluster CIDR holds.
    fn capacity(&self) -> u64 {
        1u64 << (self.mask - self.cluster.prefix_len())
    }

    fn subnet_at(&self, index: u32) -> Ipv4Net {
        let network = u32::from(self.cluster.network()) + (index << (32 - self.mask));
        // The mask was checked to be at most 30 in `new`.
        Ipv4Net::new(Ipv4Addr::from(network), self.mask).unwrap_or(self.cluster)
    }

    fn index_of(&self, subnet: Ipv4Net) -> Option<u32> {
        (subnet.prefix_len() == self.mask
            && subnet.network() == subnet.addr()
            && self.cluster.contains(&subnet.network()))
        .then(|| {
            (u32::from(subnet.network()) - u32::from(self.cluster.network())) >> (32 - self.mask)
        })
    }

    /// The subnet `node` holds, if any.
    pub fn lease_of(&self, node: &str) -> Option<Ipv4Net> {
        self.by_node.get(node).map(|&index| self.subnet_at(index))
    }

    /// Records a lease found on a stored Node. A subnet that does not fit
    /// this cluster network or is held by another node is refused (and the
    /// node is then given a fresh one when it registers).
    pub fn restore(&mut self, node: &str, subnet: Ipv4Net) -> Result<(), SubnetError> {
        let index = self
            .index_of(subnet)
            .ok_or_else(|| SubnetError::OutsideCluster {
                node: node.to_owned(),
                subnet,
                cluster: self.cluster,
                mask: self.mask,
            })?;
        match self.holders.get(&index) {
            Some(holder) if holder != node => {
                return Err(SubnetError::Taken {
                    node: node.to_owned(),
                    subnet,
                    holder: holder.clone(),
                })
            }
            _ => {}
        }
        self.release(node);
        self.holders.insert(index, node.to_owned());
        self.by_node.insert(node.to_owned(), index);
        Ok(())
    }

    /// The node's subnet: the one it holds, else the lowest free one.
    pub fn lease(&mut self, node: &str) -> Result<Ipv4Net, SubnetError> {
        if let Some(subnet) = self.lease_of(node) {
            return Ok(subnet);
        }
        let free = (0..self.capacity())
            .map(|index| index as u32)
            .find(|index| !self.holders.contains_key(index))
            .ok_or(SubnetError::Exhausted {
                cluster: self.cluster,
                mask: self.mask,
            })?;
        self.holders.insert(free, node.to_owned());
        self.by_node.insert(node.to_owned(), free);
        Ok(self.subnet_at(free))
    }

    /// Frees the node's subnet; a node without one is left alone.
    pub fn release(&mut self, node: &str) -> Option<Ipv4Net> {
        let index = self.by_node.remove(node)?;
        self.holders.remove(&index);
        Some(self.subnet_at(index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> Ipv4Net {
        text.parse().expect("cidr")
    }

    fn allocator(cluster: &str, mask: u8) -> SubnetAllocator {
        SubnetAllocator::new(net(cluster), mask).expect("valid")
    }

    #[test]
    fn new_nodes_get_the_lowest_free_subnet_and_keep_it() {
        let mut subnets = allocator("10.244.0.0/16", 24);
        assert_eq!(subnets.lease("a"), Ok(net("10.244.0.0/24")));
        assert_eq!(subnets.lease("b"), Ok(net("10.244.1.0/24")));
        assert_eq!(
            subnets.lease("a"),
            Ok(net("10.244.0.0/24")),
            "a keeps its lease"
        );
        assert_eq!(subnets.release("a"), Some(net("10.244.0.0/24")));
        assert_eq!(
            subnets.lease("c"),
            Ok(net("10.244.0.0/24")),
            "the freed one is reused first"
        );
        assert_eq!(subnets.release("nobody"), None);
    }

    #[test]
    fn restored_leases_survive_and_block_others() {
        let mut subnets = allocator("10.244.0.0/16", 24);
        subnets.restore("b", net("10.244.0.0/24")).expect("restore");
        subnets.restore("a", net("10.244.5.0/24")).expect("restore");
        assert_eq!(subnets.lease("a"), Ok(net("10.244.5.0/24")));
        assert_eq!(subnets.lease("c"), Ok(net("10.244.1.0/24")));
        assert_eq!(
            subnets.restore("d", net("10.244.5.0/24")),
            Err(SubnetError::Taken {
                node: "d".into(),
                subnet: net("10.244.5.0/24"),
                holder: "a".into()
            })
        );
        assert!(matches!(
            subnets.restore("d", net("10.245.0.0/24")),
            Err(SubnetError::OutsideCluster { .. })
        ));
        assert!(matches!(
            subnets.restore("d", net("10.244.0.0/25")),
            Err(SubnetError::OutsideCluster { .. })
        ));
        assert!(matches!(
            subnets.restore("d", net("10.244.7.1/24")),
            Err(SubnetError::OutsideCluster { .. })
        ));
        // Restoring the same lease twice is harmless.
        subnets.restore("a", net("10.244.5.0/24")).expect("again");
        assert_eq!(subnets.lease_of("a"), Some(net("10.244.5.0/24")));
    }

    #[test]
    fn exhaustion_is_an_error_not_a_panic() {
        let mut subnets = allocator("10.244.0.0/23", 24);
        assert_eq!(subnets.lease("a"), Ok(net("10.244.0.0/24")));
        assert_eq!(subnets.lease("b"), Ok(net("10.244.1.0/24")));
        let error = subnets.lease("c").expect_err("full");
        assert_eq!(
            error,
            SubnetError::Exhausted {
                cluster: net("10.244.0.0/23"),
                mask: 24
            }
        );
        assert!(error.to_string().contains("10.244.0.0/23"), "{error}");
        assert_eq!(subnets.lease_of("c"), None);
        subnets.release("a");
        assert_eq!(subnets.lease("c"), Ok(net("10.244.0.0/24")));
    }

    #[test]
    fn flags_are_validated() {
        assert!(matches!(
            SubnetAllocator::new(net("10.244.0.0/16"), 16),
            Err(SubnetError::MaskSize { .. })
        ));
        assert!(matches!(
            SubnetAllocator::new(net("10.244.0.0/16"), 31),
            Err(SubnetError::MaskSize { .. })
        ));
        assert!(SubnetAllocator::new(net("10.244.0.0/16"), 17).is_ok());
        assert_eq!(
            parse_cidr("--cluster-cidr", "10.244.3.1/16"),
            Ok(net("10.244.0.0/16"))
        );
        assert!(parse_cidr("--cluster-cidr", "10.244.0.0").is_err());
        assert!(parse_cidr("--cluster-cidr", "fd00::/8").is_err());
        assert!(validate_against_services(net("10.244.0.0/16"), net("10.96.0.0/12")).is_ok());
        assert!(validate_against_services(net("10.0.0.0/8"), net("10.96.0.0/12")).is_err());
        assert!(validate_against_services(net("10.96.4.0/24"), net("10.96.0.0/12")).is_err());
        assert_eq!(gateway(net("10.244.3.0/24")), Ipv4Addr::new(10, 244, 3, 1));
    }
}
