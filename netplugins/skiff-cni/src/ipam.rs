//! Address allocation decisions, over an in-memory view of the
//! reservations; no I/O here (the durable store is `ipam_store`).
//!
//! The pool is the subnet minus its network address, its broadcast address
//! and the gateway. A new address is searched for starting just after the
//! last one handed out, wrapping around once, so that a released address is
//! reused as late as possible (stale ARP entries and connections elsewhere
//! have time to die). An owner that already holds an address gets that same
//! address back, which makes a retried ADD land where the first one did.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// Who holds an address: the spec's attachment key within one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub container_id: String,
    pub ifname: String,
}

/// The reservations of one network, as the store read them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reservations {
    /// An owner is `None` when its record could not be read: the address
    /// stays taken, but no DEL can release it by mistake.
    pub by_address: BTreeMap<Ipv4Addr, Option<Owner>>,
    pub last_reserved: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocation {
    /// The owner already held this address.
    Existing(Ipv4Addr),
    /// A free address, to be reserved now.
    New(Ipv4Addr),
}

impl Allocation {
    pub fn address(self) -> Ipv4Addr {
        match self {
            Allocation::Existing(address) | Allocation::New(address) => address,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IpamError {
    #[error(
        "no free address left in {subnet}: all {capacity} usable addresses are reserved; \
         delete unused pods or give the node a larger pod subnet"
    )]
    Exhausted { subnet: Ipv4Net, capacity: u32 },
}

/// The addresses of a subnet that may be handed to pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
}

impl Pool {
    /// `subnet` must be /30 or shorter and hold `gateway` (the config
    /// validation guarantees both).
    pub fn new(subnet: Ipv4Net, gateway: Ipv4Addr) -> Pool {
        Pool { subnet, gateway }
    }

    fn first(&self) -> u32 {
        u32::from(self.subnet.network()).saturating_add(1)
    }

    fn last(&self) -> u32 {
        u32::from(self.subnet.broadcast()).saturating_sub(1)
    }

    pub fn contains(&self, address: Ipv4Addr) -> bool {
        let value = u32::from(address);
        (self.first()..=self.last()).contains(&value) && address != self.gateway
    }

    /// How many addresses pods can get.
    pub fn capacity(&self) -> u32 {
        let hosts = self.last().saturating_sub(self.first()).saturating_add(1);
        if self.subnet.contains(&self.gateway) && self.gateway != self.subnet.network() {
            hosts.saturating_sub(1)
        } else {
            hosts
        }
    }

    /// Every usable address, starting after `cursor` and wrapping around.
    fn candidates_after(&self, cursor: Option<Ipv4Addr>) -> impl Iterator<Item = Ipv4Addr> + '_ {
        let (first, last) = (self.first(), self.last());
        let span = last.saturating_sub(first).saturating_add(1);
        let start = match cursor.map(u32::from) {
            Some(value) if (first..last).contains(&value) => value + 1,
            _ => first,
        };
        // u64, so that the sum cannot overflow even for a /1.
        let (offset, span64) = (u64::from(start - first), u64::from(span));
        (0..span64)
            .map(move |step| first as u64 + (offset + step) % span64)
            .map(|value| Ipv4Addr::from(value as u32))
            .filter(move |address| *address != self.gateway)
    }
}

/// The address `owner` should have.
pub fn choose_address(
    pool: &Pool,
    reservations: &Reservations,
    owner: &Owner,
) -> Result<Allocation, IpamError> {
    if let Some(address) = held_by(reservations, owner)
        .into_iter()
        .find(|address| pool.contains(*address))
    {
        return Ok(Allocation::Existing(address));
    }
    pool.candidates_after(reservations.last_reserved)
        .find(|address| !reservations.by_address.contains_key(address))
        .map(Allocation::New)
        .ok_or(IpamError::Exhausted {
            subnet: pool.subnet,
            capacity: pool.capacity(),
        })
}

/// Every address `owner` holds: what a DEL releases.
pub fn held_by(reservations: &Reservations, owner: &Owner) -> Vec<Ipv4Addr> {
    reservations
        .by_address
        .iter()
        .filter(|(_, holder)| holder.as_ref() == Some(owner))
        .map(|(address, _)| *address)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(id: &str) -> Owner {
        Owner {
            container_id: id.into(),
            ifname: "eth0".into(),
        }
    }

    fn ip(text: &str) -> Ipv4Addr {
        text.parse().unwrap()
    }

    fn pool(subnet: &str, gateway: &str) -> Pool {
        Pool::new(subnet.parse().unwrap(), ip(gateway))
    }

    /// Allocates for `id` and records the reservation as the store would.
    fn allocate(pool: &Pool, state: &mut Reservations, id: &str) -> Result<Ipv4Addr, IpamError> {
        let allocation = choose_address(pool, state, &owner(id))?;
        if let Allocation::New(address) = allocation {
            state.by_address.insert(address, Some(owner(id)));
            state.last_reserved = Some(address);
        }
        Ok(allocation.address())
    }

    fn release(state: &mut Reservations, id: &str) {
        for address in held_by(state, &owner(id)) {
            state.by_address.remove(&address);
        }
    }

    #[test]
    fn allocates_in_order_skipping_network_gateway_and_broadcast() {
        let pool = pool("10.0.0.0/29", "10.0.0.1");
        let mut state = Reservations::default();
        let got: Vec<_> = (0..5)
            .map(|n| allocate(&pool, &mut state, &format!("c{n}")).unwrap())
            .collect();
        assert_eq!(
            got,
            ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
                .map(ip)
                .to_vec()
        );
        assert_eq!(pool.capacity(), 5);
        assert_eq!(
            allocate(&pool, &mut state, "c5"),
            Err(IpamError::Exhausted {
                subnet: "10.0.0.0/29".parse().unwrap(),
                capacity: 5
            })
        );
    }

    #[test]
    fn a_gateway_in_the_middle_is_skipped() {
        let pool = pool("10.0.0.0/29", "10.0.0.4");
        let mut state = Reservations::default();
        let got: Vec<_> = (0..5)
            .map(|n| allocate(&pool, &mut state, &format!("c{n}")).unwrap())
            .collect();
        assert!(!got.contains(&ip("10.0.0.4")));
        assert_eq!(got[0], ip("10.0.0.1"));
        assert!(allocate(&pool, &mut state, "c6").is_err());
    }

    #[test]
    fn released_addresses_are_reused_only_after_wrapping_around() {
        let pool = pool("10.0.0.0/29", "10.0.0.1");
        let mut state = Reservations::default();
        for n in 0..3 {
            allocate(&pool, &mut state, &format!("c{n}")).unwrap(); // .2 .3 .4
        }
        release(&mut state, "c0");
        assert_eq!(allocate(&pool, &mut state, "d0").unwrap(), ip("10.0.0.5"));
        assert_eq!(allocate(&pool, &mut state, "d1").unwrap(), ip("10.0.0.6"));
        // The end of the range is reached: wrap around to the freed .2.
        assert_eq!(allocate(&pool, &mut state, "d2").unwrap(), ip("10.0.0.2"));
        assert!(allocate(&pool, &mut state, "d3").is_err());
    }

    #[test]
    fn reserved_addresses_are_never_handed_out_twice() {
        let pool = pool("10.0.0.0/28", "10.0.0.1");
        let mut state = Reservations::default();
        state.by_address.insert(ip("10.0.0.3"), None); // unreadable record
        state
            .by_address
            .insert(ip("10.0.0.4"), Some(owner("other")));
        let got: Vec<_> = (0..11)
            .map(|n| allocate(&pool, &mut state, &format!("c{n}")).unwrap())
            .collect();
        let mut unique = got.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), got.len());
        assert!(!got.contains(&ip("10.0.0.3")) && !got.contains(&ip("10.0.0.4")));
        assert!(allocate(&pool, &mut state, "full").is_err());
    }

    #[test]
    fn the_same_owner_gets_its_address_back() {
        let pool = pool("10.0.0.0/24", "10.0.0.1");
        let mut state = Reservations::default();
        let first = allocate(&pool, &mut state, "a").unwrap();
        allocate(&pool, &mut state, "b").unwrap();
        assert_eq!(
            choose_address(&pool, &state, &owner("a")),
            Ok(Allocation::Existing(first))
        );
        let other_ifname = Owner {
            container_id: "a".into(),
            ifname: "net1".into(),
        };
        assert!(matches!(
            choose_address(&pool, &state, &other_ifname),
            Ok(Allocation::New(_))
        ));
    }

    #[test]
    fn a_cursor_outside_the_pool_restarts_at_the_beginning() {
        let pool = pool("10.0.0.0/24", "10.0.0.1");
        let state = Reservations {
            last_reserved: Some(ip("192.168.0.7")),
            ..Reservations::default()
        };
        assert_eq!(
            choose_address(&pool, &state, &owner("a")),
            Ok(Allocation::New(ip("10.0.0.2")))
        );
        let at_end = Reservations {
            last_reserved: Some(ip("10.0.0.254")),
            ..Reservations::default()
        };
        assert_eq!(
            choose_address(&pool, &at_end, &owner("a")),
            Ok(Allocation::New(ip("10.0.0.2")))
        );
    }

    #[test]
    fn release_finds_only_the_owners_addresses() {
        let mut state = Reservations::default();
        state.by_address.insert(ip("10.0.0.2"), Some(owner("a")));
        state.by_address.insert(ip("10.0.0.3"), Some(owner("b")));
        state.by_address.insert(ip("10.0.0.4"), None);
        assert_eq!(held_by(&state, &owner("a")), vec![ip("10.0.0.2")]);
        assert!(held_by(&state, &owner("c")).is_empty());
    }

    #[test]
    fn a_slash_30_has_one_pod_address() {
        let pool = pool("10.0.0.0/30", "10.0.0.1");
        let mut state = Reservations::default();
        assert_eq!(pool.capacity(), 1);
        assert_eq!(allocate(&pool, &mut state, "a").unwrap(), ip("10.0.0.2"));
        assert!(allocate(&pool, &mut state, "b").is_err());
    }
}
