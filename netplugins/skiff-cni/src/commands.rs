//! The four verbs, as sequences of pure decisions and calls on the two
//! narrow seams (`Dataplane`, `Stores`).
//!
//! Ordering rules:
//! - ADD: reserve the address first, then release the IPAM lock and do the
//!   kernel work (so concurrent ADDs overlap in the kernel part), with the
//!   reservation's final directory fsync running alongside; the result is
//!   printed only once the reservation is durable.
//!   If the kernel work fails, the address is released again, unless the
//!   owner already held it before this ADD (a repeated ADD must not take
//!   away the address the first one configured).
//! - DEL: remove the veth pair first and release the address last, so an
//!   address is never handed out while it is still configured on a live
//!   interface. Everything missing counts as already deleted.
//! - CHECK: the pod interface, its addresses and routes against
//!   `prevResult`, the host end on the bridge, then the reservation.

use serde_json::Value;

use crate::config::{parse_config, requested_version, NetConf};
use crate::dataplane::Dataplane;
use crate::error::PluginError;
use crate::invocation::{Attachment, Invocation};
use crate::ipam::{choose_address, held_by, Allocation, Owner, Pool};
use crate::ipam_store::{FsReservationStore, PendingSync, ReservationStore, StoreError};
use crate::plan::{
    add_result, attach_plan, compare, detach_plan, expected_from, observe_query, CheckError,
};
use crate::version::version_reply;

/// Opens the reservation store of a network, holding its lock.
pub trait Stores {
    type Store: ReservationStore;
    /// Creates the store if it does not exist yet.
    fn open(&mut self, conf: &NetConf) -> Result<Self::Store, StoreError>;
    /// `None` when the network never had a reservation on this node.
    fn open_existing(&mut self, conf: &NetConf) -> Result<Option<Self::Store>, StoreError>;
}

/// Stores under each configuration's `dataDir`.
pub struct FsStores;

impl Stores for FsStores {
    type Store = FsReservationStore;

    fn open(&mut self, conf: &NetConf) -> Result<FsReservationStore, StoreError> {
        FsReservationStore::open_locked(&conf.data_dir, &conf.name)
    }

    fn open_existing(&mut self, conf: &NetConf) -> Result<Option<FsReservationStore>, StoreError> {
        if FsReservationStore::exists(&conf.data_dir, &conf.name) {
            FsReservationStore::open_locked(&conf.data_dir, &conf.name).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// Runs one invocation. `Ok(Some(json))` is printed on stdout; `Ok(None)`
/// means success with nothing to print (DEL, CHECK).
pub fn run(
    invocation: &Invocation,
    stdin: &[u8],
    dataplane: &mut impl Dataplane,
    stores: &mut impl Stores,
) -> Result<Option<Value>, PluginError> {
    match invocation {
        Invocation::Version => Ok(Some(version_reply(requested_version(stdin)))),
        Invocation::Add(attachment) => {
            add(&parse_config(stdin)?, attachment, dataplane, stores).map(Some)
        }
        Invocation::Del(attachment) => {
            del(&parse_config(stdin)?, attachment, dataplane, stores)?;
            Ok(None)
        }
        Invocation::Check(attachment) => {
            check(&parse_config(stdin)?, attachment, dataplane, stores)?;
            Ok(None)
        }
    }
}

fn owner_of(attachment: &Attachment) -> Owner {
    Owner {
        container_id: attachment.container_id.clone(),
        ifname: attachment.ifname.clone(),
    }
}

fn add(
    conf: &NetConf,
    attachment: &Attachment,
    dataplane: &mut impl Dataplane,
    stores: &mut impl Stores,
) -> Result<Value, PluginError> {
    let Some(netns) = attachment.netns.as_deref() else {
        return Err(crate::invocation::InvocationError::Missing("CNI_NETNS").into());
    };
    // A namespace that is already gone needs no address.
    dataplane.check_netns(netns)?;

    let owner = owner_of(attachment);
    let (allocation, pending_sync) = {
        let mut store = stores.open(conf)?;
        let allocation = choose_address(
            &Pool::new(conf.subnet, conf.gateway),
            &store.load()?,
            &owner,
        )?;
        let pending_sync = match allocation {
            Allocation::New(address) => store.reserve(address, &owner)?,
            Allocation::Existing(_) => PendingSync::default(),
        };
        (allocation, pending_sync)
    };

    let plan = attach_plan(conf, attachment, netns, allocation.address());
    // The reservation's last fsync runs alongside the kernel work; the
    // result is printed only once both are done.
    let (attached, synced) = std::thread::scope(|scope| {
        let sync = scope.spawn(move || pending_sync.complete());
        let attached = dataplane.attach(&plan);
        let synced = sync.join().unwrap_or(Err(StoreError::SyncInterrupted));
        (attached, synced)
    });
    let attached = match (attached, synced) {
        (Ok(attached), Ok(())) => Ok(attached),
        (Ok(_), Err(sync_error)) => {
            // Not durable: undo, so the runtime's retry starts clean.
            let _ = dataplane.detach(&detach_plan(attachment));
            Err(PluginError::from(sync_error))
        }
        (Err(err), _) => Err(PluginError::from(err)),
    };
    match attached {
        Ok(attached) => {
            let result =
                add_result(&plan, &attached, conf.gateway).appended_to(conf.prev_result.clone());
            Ok(result.render(conf.cni_version))
        }
        Err(err) => {
            if let Allocation::New(address) = allocation {
                // Best effort: the attach error is the one to report; a
                // leftover reservation is released by the runtime's DEL.
                let _ = stores
                    .open(conf)
                    .and_then(|mut store| store.release(address));
            }
            Err(err)
        }
    }
}

fn del(
    conf: &NetConf,
    attachment: &Attachment,
    dataplane: &mut impl Dataplane,
    stores: &mut impl Stores,
) -> Result<(), PluginError> {
    dataplane.detach(&detach_plan(attachment))?;
    if let Some(mut store) = stores.open_existing(conf)? {
        let reservations = store.load()?;
        for address in held_by(&reservations, &owner_of(attachment)) {
            store.release(address)?;
        }
    }
    Ok(())
}

fn check(
    conf: &NetConf,
    attachment: &Attachment,
    dataplane: &mut impl Dataplane,
    stores: &mut impl Stores,
) -> Result<(), PluginError> {
    if !conf.cni_version.has_check() {
        return Err(PluginError::CheckUnsupported(conf.cni_version.as_str()));
    }
    let prev = conf
        .prev_result
        .as_ref()
        .ok_or(PluginError::CheckWithoutPrevResult)?;
    let Some(netns) = attachment.netns.as_deref() else {
        return Err(crate::invocation::InvocationError::Missing("CNI_NETNS").into());
    };
    let expected = expected_from(prev, &attachment.ifname)?;
    let query = observe_query(conf, attachment, netns);
    let observed = dataplane.observe(&query)?;
    compare(&expected, &observed, &query.host_veth)?;

    let owner = owner_of(attachment);
    let reservations = match stores.open_existing(conf)? {
        Some(mut store) => store.load()?,
        None => Default::default(),
    };
    for address in &expected.addresses {
        let holder = reservations.by_address.get(&address.addr());
        if holder != Some(&Some(owner.clone())) {
            return Err(CheckError::ReservationMissing {
                address: address.addr(),
            }
            .into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::{
        AttachPlan, Attached, DataplaneError, DetachPlan, ObserveQuery, Observed, ObservedPodLink,
    };
    use crate::ipam::Reservations;
    use std::cell::RefCell;
    use std::collections::BTreeSet;
    use std::net::Ipv4Addr;
    use std::path::{Path, PathBuf};
    use std::rc::Rc;

    /// A kernel model: which pod interfaces exist, with what address.
    #[derive(Default)]
    struct FakeDataplane {
        existing_netns: BTreeSet<PathBuf>,
        pod_links: Vec<(PathBuf, String, AttachPlan)>,
        fail_attach: bool,
        calls: Vec<String>,
    }

    impl FakeDataplane {
        fn with_netns(path: &str) -> FakeDataplane {
            FakeDataplane {
                existing_netns: [PathBuf::from(path)].into(),
                ..FakeDataplane::default()
            }
        }
    }

    impl Dataplane for FakeDataplane {
        fn check_netns(&mut self, netns: &Path) -> Result<(), DataplaneError> {
            if self.existing_netns.contains(netns) {
                Ok(())
            } else {
                Err(DataplaneError::NetnsMissing(netns.to_path_buf()))
            }
        }

        fn attach(&mut self, plan: &AttachPlan) -> Result<Attached, DataplaneError> {
            self.calls
                .push(format!("attach {} {}", plan.pod_ifname, plan.pod_address));
            self.check_netns(&plan.netns)?;
            if self.fail_attach {
                return Err(DataplaneError::Unexpected("injected failure".into()));
            }
            if self
                .pod_links
                .iter()
                .any(|(ns, name, _)| *ns == plan.netns && *name == plan.pod_ifname)
            {
                return Err(DataplaneError::InterfaceExists {
                    ifname: plan.pod_ifname.clone(),
                    netns: plan.netns.clone(),
                });
            }
            self.pod_links
                .push((plan.netns.clone(), plan.pod_ifname.clone(), plan.clone()));
            Ok(Attached {
                bridge_mac: plan.bridge.mac,
                host_veth_mac: [2, 0, 0, 0, 0, 9],
                pod_mac: plan.pod_mac,
            })
        }

        fn detach(&mut self, plan: &DetachPlan) -> Result<(), DataplaneError> {
            self.calls.push(format!("detach {}", plan.pod_ifname));
            self.pod_links
                .retain(|(_, _, attached)| attached.host_veth != plan.host_veth);
            Ok(())
        }

        fn observe(&mut self, query: &ObserveQuery) -> Result<Observed, DataplaneError> {
            self.check_netns(&query.netns)?;
            let link = self
                .pod_links
                .iter()
                .find(|(ns, name, _)| *ns == query.netns && *name == query.pod_ifname);
            Ok(Observed {
                pod_link: link.map(|(_, _, plan)| ObservedPodLink {
                    mac: plan.pod_mac,
                    up: true,
                    addresses: vec![plan.pod_address],
                    routes: plan
                        .pod_routes
                        .iter()
                        .map(|r| (r.destination, Some(r.gateway)))
                        .collect(),
                }),
                host_veth_on_bridge: link.is_some(),
            })
        }
    }

    #[derive(Clone, Default)]
    struct MemoryStore(Rc<RefCell<Reservations>>);

    impl ReservationStore for MemoryStore {
        fn load(&mut self) -> Result<Reservations, StoreError> {
            Ok(self.0.borrow().clone())
        }
        fn reserve(&mut self, address: Ipv4Addr, owner: &Owner) -> Result<PendingSync, StoreError> {
            let mut state = self.0.borrow_mut();
            state.by_address.insert(address, Some(owner.clone()));
            state.last_reserved = Some(address);
            Ok(PendingSync::default())
        }
        fn release(&mut self, address: Ipv4Addr) -> Result<(), StoreError> {
            self.0.borrow_mut().by_address.remove(&address);
            Ok(())
        }
    }

    #[derive(Default)]
    struct MemoryStores {
        store: MemoryStore,
        created: bool,
    }

    impl Stores for MemoryStores {
        type Store = MemoryStore;
        fn open(&mut self, _: &NetConf) -> Result<MemoryStore, StoreError> {
            self.created = true;
            Ok(self.store.clone())
        }
        fn open_existing(&mut self, _: &NetConf) -> Result<Option<MemoryStore>, StoreError> {
            Ok(self.created.then(|| self.store.clone()))
        }
    }

    const NETNS: &str = "/run/netns/pod-a";

    fn config(extra: &str) -> Vec<u8> {
        format!(
            r#"{{"cniVersion":"1.0.0","name":"skiff","type":"skiff-cni","bridge":"skiff0","subnet":"10.244.1.0/29"{extra}}}"#
        )
        .into_bytes()
    }

    fn attachment(id: &str) -> Attachment {
        Attachment {
            container_id: id.into(),
            ifname: "eth0".into(),
            netns: Some(NETNS.into()),
        }
    }

    fn reserved(stores: &MemoryStores) -> Vec<Ipv4Addr> {
        stores.store.0.borrow().by_address.keys().copied().collect()
    }

    #[test]
    fn add_check_del_round_trip() {
        let mut dataplane = FakeDataplane::with_netns(NETNS);
        let mut stores = MemoryStores::default();
        let result = run(
            &Invocation::Add(attachment("a")),
            &config(""),
            &mut dataplane,
            &mut stores,
        )
        .unwrap()
        .unwrap();
        assert_eq!(result["ips"][0]["address"], "10.244.1.2/29");
        assert_eq!(result["interfaces"][2]["sandbox"], NETNS);
        assert_eq!(
            reserved(&stores),
            vec!["10.244.1.2".parse::<Ipv4Addr>().unwrap()]
        );

        let with_prev = config(&format!(r#","prevResult":{result}"#));
        assert_eq!(
            run(
                &Invocation::Check(attachment("a")),
                &with_prev,
                &mut dataplane,
                &mut stores
            )
            .unwrap(),
            None
        );
        run(
            &Invocation::Del(attachment("a")),
            &with_prev,
            &mut dataplane,
            &mut stores,
        )
        .unwrap();
        assert!(reserved(&stores).is_empty());
        assert_eq!(
            dataplane.calls,
            ["attach eth0 10.244.1.2/29", "detach eth0"]
        );

        let err = run(
            &Invocation::Check(attachment("a")),
            &with_prev,
            &mut dataplane,
            &mut stores,
        )
        .unwrap_err();
        assert_eq!(err.code(), crate::error::CODE_CHECK_FAILED);
    }

    #[test]
    fn a_failed_attach_releases_the_new_address() {
        let mut dataplane = FakeDataplane::with_netns(NETNS);
        dataplane.fail_attach = true;
        let mut stores = MemoryStores::default();
        let err = run(
            &Invocation::Add(attachment("a")),
            &config(""),
            &mut dataplane,
            &mut stores,
        )
        .unwrap_err();
        assert_eq!(err.code(), crate::error::CODE_NETWORK_SETUP_FAILED);
        assert!(reserved(&stores).is_empty());
    }

    #[test]
    fn a_second_add_keeps_the_first_address_and_reports_the_existing_interface() {
        let mut dataplane = FakeDataplane::with_netns(NETNS);
        let mut stores = MemoryStores::default();
        run(
            &Invocation::Add(attachment("a")),
            &config(""),
            &mut dataplane,
            &mut stores,
        )
        .unwrap();
        let err = run(
            &Invocation::Add(attachment("a")),
            &config(""),
            &mut dataplane,
            &mut stores,
        )
        .unwrap_err();
        assert_eq!(err.code(), crate::error::CODE_INTERFACE_EXISTS);
        assert_eq!(
            reserved(&stores),
            vec!["10.244.1.2".parse::<Ipv4Addr>().unwrap()]
        );
        assert_eq!(dataplane.calls[1], "attach eth0 10.244.1.2/29");
    }

    #[test]
    fn add_into_a_missing_netns_reserves_nothing() {
        let mut dataplane = FakeDataplane::default();
        let mut stores = MemoryStores::default();
        let err = run(
            &Invocation::Add(attachment("a")),
            &config(""),
            &mut dataplane,
            &mut stores,
        )
        .unwrap_err();
        assert_eq!(err.code(), crate::error::CODE_CONTAINER_UNKNOWN);
        assert!(!stores.created);
        assert!(dataplane.calls.is_empty());
    }

    #[test]
    fn del_is_idempotent_and_needs_no_store() {
        let mut dataplane = FakeDataplane::default();
        let mut stores = MemoryStores::default();
        let gone = Attachment {
            netns: None,
            ..attachment("never-added")
        };
        for _ in 0..2 {
            run(
                &Invocation::Del(gone.clone()),
                &config(""),
                &mut dataplane,
                &mut stores,
            )
            .unwrap();
        }
        assert!(!stores.created);
    }

    #[test]
    fn exhaustion_is_reported_and_earlier_holders_keep_their_addresses() {
        let mut dataplane = FakeDataplane::with_netns(NETNS);
        let mut stores = MemoryStores::default();
        for n in 0..5 {
            let mut attachment = attachment(&format!("c{n}"));
            attachment.ifname = format!("eth{n}");
            run(
                &Invocation::Add(attachment),
                &config(""),
                &mut dataplane,
                &mut stores,
            )
            .unwrap();
        }
        let mut last = attachment("c5");
        last.ifname = "eth5".into();
        let err = run(
            &Invocation::Add(last),
            &config(""),
            &mut dataplane,
            &mut stores,
        )
        .unwrap_err();
        assert_eq!(err.code(), crate::error::CODE_ADDRESSES_EXHAUSTED);
        assert_eq!(reserved(&stores).len(), 5);
    }

    #[test]
    fn check_needs_prev_result_and_a_recent_version() {
        let mut dataplane = FakeDataplane::with_netns(NETNS);
        let mut stores = MemoryStores::default();
        let err = run(
            &Invocation::Check(attachment("a")),
            &config(""),
            &mut dataplane,
            &mut stores,
        )
        .unwrap_err();
        assert!(matches!(err, PluginError::CheckWithoutPrevResult));
        let old = br#"{"cniVersion":"0.3.1","name":"skiff","bridge":"skiff0","subnet":"10.244.1.0/24","prevResult":{}}"#;
        let err = run(
            &Invocation::Check(attachment("a")),
            old,
            &mut dataplane,
            &mut stores,
        )
        .unwrap_err();
        assert_eq!(err.code(), crate::error::CODE_INCOMPATIBLE_VERSION);
    }

    #[test]
    fn add_renders_the_requested_version_and_version_answers_without_config() {
        let mut dataplane = FakeDataplane::with_netns(NETNS);
        let mut stores = MemoryStores::default();
        let old =
            br#"{"cniVersion":"0.4.0","name":"skiff","bridge":"skiff0","subnet":"10.244.1.0/24"}"#;
        let result = run(
            &Invocation::Add(attachment("a")),
            old,
            &mut dataplane,
            &mut stores,
        )
        .unwrap()
        .unwrap();
        assert_eq!(result["cniVersion"], "0.4.0");
        assert_eq!(result["ips"][0]["version"], "4");
        let version = run(&Invocation::Version, b"", &mut dataplane, &mut stores)
            .unwrap()
            .unwrap();
        assert_eq!(version["supportedVersions"][3], "1.0.0");
    }
}
