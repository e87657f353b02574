//! Applying rendered rulesets: full and partial syncs.
//!
//! Mechanism: every sync renders the whole ruleset (cheap, pure) and hashes
//! each chain's rules. A *full* sync writes every chain we own in one
//! `iptables-restore --noflush` per table, deletes `SKIFF-` chains the
//! kernel has but the ruleset does not (found with `iptables-save`), then
//! ensures the jumps from the built-in chains. A *partial* sync writes only
//! the chains whose hash differs from what was last applied (so one
//! endpoint change rewrites that service's SVC and SEP chains, plus a
//! dispatch chain only if its content changed) and deletes the chains of
//! services that are gone.
//!
//! Ordering rules:
//! - within one restore, chains are declared first, then written SEP
//!   chains before the SVC chains that jump to them, then the dispatch
//!   chains, and `-X` of removed chains comes last, after every chain that
//!   jumped to them has been rewritten;
//! - a full sync may be split into several restores per table
//!   ([`SyncConfig::max_chains_per_restore`], for the nft backend); the
//!   ruleset lists every chain after the chains it jumps to, so each input
//!   only references chains that already exist or that it declares, and
//!   the dispatch chains and deletions come in the last input;
//! - jumps from the built-in chains are ensured only after the restore that
//!   creates their targets;
//! - conntrack flushes run after both tables are written.
//!
//! Failure: when a partial restore fails, the same call falls back to a
//! full sync. When a full sync fails, what was applied is forgotten, so the
//! next call is a full sync again. A full sync also runs every
//! [`SyncConfig::full_resync_period`], repairing any drift (a rule someone
//! deleted by hand).
//!
//! The syncer runs child processes and blocks: call it from a blocking
//! thread (`tokio::task::spawn_blocking`) in async code.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use super::conntrack::{conntrack_flushes, Conntrack};
use super::render::{
    all_jumps, render_dispatch, render_fixed, render_service, Chain, JumpRule, NodeSettings,
    Ruleset, ServiceRules, CHAIN_PREFIX, NODEPORTS_CHAIN, SERVICES_CHAIN,
};
use super::service::{Service, ServiceKey, ServiceTable};
use super::ProxyError;
use crate::iptables::{ensure_rule, remove_rule, saved_chain_names, Backend, Iptables, Table};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncConfig {
    /// How often a full sync runs even when partial syncs succeed.
    pub full_resync_period: Duration,
    /// Splits a full sync's nat restore into inputs of at most this many
    /// chains. iptables-nft-restore `--noflush` takes time that grows
    /// faster than linearly with the size of one input (about 0.5 s for
    /// 3,000 chains but over 20 s for 24,000 on our test machine), so the
    /// nft backend wants chunks; iptables-legacy-restore rewrites the whole
    /// table on every input, so the legacy backend wants one input (None).
    pub max_chains_per_restore: Option<usize>,
}

impl SyncConfig {
    /// Chunk size suited to the backend.
    pub fn for_backend(backend: Backend) -> Self {
        SyncConfig {
            max_chains_per_restore: match backend {
                Backend::Nft => Some(NFT_CHAINS_PER_RESTORE),
                Backend::Legacy => None,
            },
            ..SyncConfig::default()
        }
    }
}

/// Chains per nft restore input in a full sync.
pub const NFT_CHAINS_PER_RESTORE: usize = 2000;

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            full_resync_period: Duration::from_secs(5 * 60),
            max_chains_per_restore: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncKind {
    Full,
    Partial,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncReport {
    pub kind: SyncKind,
    /// Whether a partial restore failed and this became a full sync.
    pub fell_back_to_full: bool,
    pub chains_written: usize,
    pub chains_deleted: usize,
    pub conntrack_flushes: usize,
}

/// The restore inputs of one sync, and what they write.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RestorePlan {
    /// One input per table that has anything to write or delete.
    pub inputs: Vec<(Table, String)>,
    pub chains_written: usize,
    pub chains_deleted: usize,
}

fn chain_hash(chain: &Chain) -> u64 {
    let mut hasher = DefaultHasher::new();
    chain.rules.hash(&mut hasher);
    hasher.finish()
}

/// The restore input for one table: declarations of written and deleted
/// chains, the written chains' rules in ruleset order, then the deletions.
pub fn restore_input(table: Table, written: &[&Chain], deleted: &[String]) -> String {
    let rules: usize = written.iter().map(|c| c.rules.len()).sum();
    let mut input = String::with_capacity(64 * (written.len() + deleted.len()) + 120 * rules);
    let _ = writeln!(input, "*{table}");
    for chain in written {
        let _ = writeln!(input, ":{} - [0:0]", chain.name);
    }
    for name in deleted {
        let _ = writeln!(input, ":{name} - [0:0]");
    }
    for chain in written {
        for rule in &chain.rules {
            let _ = writeln!(input, "-A {} {rule}", chain.name);
        }
    }
    for name in deleted {
        let _ = writeln!(input, "-X {name}");
    }
    input.push_str("COMMIT\n");
    input
}

/// Plans a full sync: every chain, and the removal of our chains that the
/// kernel has (`existing`, per table) and the ruleset does not.
pub fn plan_full(
    desired: &Ruleset,
    existing: &HashMap<Table, Vec<String>>,
    max_chains_per_restore: Option<usize>,
) -> RestorePlan {
    let mut plan = RestorePlan::default();
    for table in Table::ALL {
        let chains = &desired.table(table).chains;
        let desired_names: HashSet<&str> = chains.iter().map(|c| c.name.as_str()).collect();
        let mut deleted: Vec<String> = existing
            .get(&table)
            .into_iter()
            .flatten()
            .filter(|name| name.starts_with(CHAIN_PREFIX) && !desired_names.contains(name.as_str()))
            .cloned()
            .collect();
        deleted.sort();
        deleted.dedup();
        let written: Vec<&Chain> = chains.iter().collect();
        plan.chains_written += written.len();
        plan.chains_deleted += deleted.len();
        // Chunks follow the ruleset's order, in which a chain comes after
        // the chains it jumps to: each input only references chains that
        // exist already or that it declares itself. The dispatch chains
        // and the deletions land in the last input.
        let chunk = max_chains_per_restore.unwrap_or(usize::MAX).max(1);
        let mut pieces: Vec<&[&Chain]> = written.chunks(chunk).collect();
        let last = pieces.pop().unwrap_or(&[]);
        for piece in pieces {
            plan.inputs.push((table, restore_input(table, piece, &[])));
        }
        plan.inputs
            .push((table, restore_input(table, last, &deleted)));
    }
    plan
}

/// Ensures `jumps` in their built-in chains. Jumps that share a built-in
/// chain must appear in the listed order at its top: when one is missing,
/// all of them are removed and reinserted in order, so a missing jump never
/// lands ahead of one that must precede it, and none is ever duplicated.
pub fn ensure_jumps(iptables: &dyn Iptables, jumps: &[JumpRule]) -> Result<(), ProxyError> {
    let mut groups: Vec<((Table, &str), Vec<&JumpRule>)> = Vec::new();
    for jump in jumps {
        let key = (jump.table, jump.builtin_chain);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, group)) => group.push(jump),
            None => groups.push((key, vec![jump])),
        }
    }
    for ((table, chain), group) in groups {
        let mut all_present = true;
        for jump in &group {
            if !iptables.rule_exists(table, chain, &jump.args)? {
                all_present = false;
                break;
            }
        }
        if all_present {
            continue;
        }
        if group.len() == 1 {
            ensure_rule(iptables, table, chain, &group[0].args)?;
            continue;
        }
        for jump in &group {
            remove_rule(iptables, table, chain, &jump.args)?;
        }
        for jump in group.iter().rev() {
            iptables.insert_rule(table, chain, &jump.args)?;
        }
    }
    Ok(())
}

/// One service as last rendered, with the hash of each of its chains.
#[derive(Debug)]
struct RenderedService {
    service: Service,
    rules: ServiceRules,
    hashes: Vec<u64>,
}

impl RenderedService {
    fn new(service: &Service, settings: &NodeSettings) -> Self {
        let rules = render_service(service, settings);
        let hashes = rules.chains.iter().map(chain_hash).collect();
        RenderedService {
            service: service.clone(),
            rules,
            hashes,
        }
    }

    fn chains(&self) -> impl Iterator<Item = (&Chain, u64)> {
        self.rules.chains.iter().zip(self.hashes.iter().copied())
    }
}

/// What the kernel holds, as far as this syncer wrote it.
#[derive(Debug)]
struct Applied {
    services: BTreeMap<ServiceKey, RenderedService>,
    /// The dispatch and fixed chains.
    shared_hashes: HashMap<(Table, String), u64>,
    last_full_sync: Instant,
}

/// The services of one sync: all of them rendered (unchanged ones reused
/// from the last sync), and which changed since.
struct Rendering {
    services: BTreeMap<ServiceKey, RenderedService>,
    /// Changed or added services, with what was applied for them before.
    changed: Vec<(ServiceKey, Option<RenderedService>)>,
    /// Services gone since the last sync.
    removed: Vec<RenderedService>,
    /// Dispatch and fixed chains, per table.
    shared: Vec<(Table, Chain, u64)>,
}

/// Keeps the kernel's rules in line with the service table.
///
/// Services are rendered one by one and cached with the hashes of their
/// chains, so a sync re-renders only the services that changed; the
/// dispatch chains are rebuilt from the cached pieces every time and
/// written only when their hash changed.
#[derive(Debug)]
pub struct Syncer {
    settings: NodeSettings,
    config: SyncConfig,
    applied: Option<Applied>,
}

impl Syncer {
    pub fn new(settings: NodeSettings, config: SyncConfig) -> Self {
        Syncer {
            settings,
            config,
            applied: None,
        }
    }

    pub fn settings(&self) -> &NodeSettings {
        &self.settings
    }

    /// Makes the next sync a full one (after the host's rules changed under
    /// us, say).
    pub fn request_full_sync(&mut self) {
        self.applied = None;
    }

    fn render(
        &self,
        services: &ServiceTable,
        mut previous: BTreeMap<ServiceKey, RenderedService>,
        random_fully: bool,
    ) -> Rendering {
        let mut rendered = BTreeMap::new();
        let mut changed = Vec::new();
        for (key, service) in &services.services {
            match previous.remove(key) {
                Some(old) if old.service == *service => {
                    rendered.insert(key.clone(), old);
                }
                old => {
                    rendered.insert(key.clone(), RenderedService::new(service, &self.settings));
                    changed.push((key.clone(), old));
                }
            }
        }
        let (nat_services, nodeports, filter_services) =
            render_dispatch(rendered.values().map(|r| &r.rules), &self.settings);
        let fixed = render_fixed(&self.settings, random_fully);
        let mut shared = Vec::new();
        for chain in [nodeports, nat_services]
            .into_iter()
            .chain(fixed.nat.chains)
        {
            let hash = chain_hash(&chain);
            shared.push((Table::Nat, chain, hash));
        }
        for chain in std::iter::once(filter_services).chain(fixed.filter.chains) {
            let hash = chain_hash(&chain);
            shared.push((Table::Filter, chain, hash));
        }
        Rendering {
            services: rendered,
            changed,
            removed: previous.into_values().collect(),
            shared,
        }
    }

    /// Brings the kernel in line with `services`.
    pub fn sync(
        &mut self,
        iptables: &dyn Iptables,
        conntrack: &dyn Conntrack,
        services: &ServiceTable,
        now: Instant,
    ) -> Result<SyncReport, ProxyError> {
        let previous = self.applied.take();
        let due_for_full = previous.as_ref().is_none_or(|a| {
            now.saturating_duration_since(a.last_full_sync) >= self.config.full_resync_period
        });
        let (old_services, shared_hashes, last_full_sync) = match previous {
            Some(a) => (a.services, Some(a.shared_hashes), Some(a.last_full_sync)),
            None => (BTreeMap::new(), None, None),
        };
        let rendering = self.render(services, old_services, iptables.supports_random_fully());

        let mut report = None;
        if let (Some(shared_hashes), false) = (&shared_hashes, due_for_full) {
            let plan = plan_changes(&rendering, shared_hashes);
            match apply_plan(iptables, &plan) {
                Ok(()) => {
                    report = Some(SyncReport {
                        kind: SyncKind::Partial,
                        fell_back_to_full: false,
                        chains_written: plan.chains_written,
                        chains_deleted: plan.chains_deleted,
                        conntrack_flushes: 0,
                    })
                }
                Err(error) => {
                    tracing::warn!(%error, "partial iptables sync failed; falling back to a full sync");
                }
            }
        }
        let (mut report, last_full_sync) = match (report, last_full_sync) {
            (Some(report), Some(last)) => (report, last),
            _ => {
                let ruleset = assemble_rendering(&rendering);
                let mut existing = HashMap::new();
                for table in Table::ALL {
                    existing.insert(table, saved_chain_names(&iptables.save(table)?));
                }
                let plan = plan_full(&ruleset, &existing, self.config.max_chains_per_restore);
                apply_plan(iptables, &plan)?;
                ensure_jumps(iptables, &all_jumps())?;
                let report = SyncReport {
                    kind: SyncKind::Full,
                    fell_back_to_full: shared_hashes.is_some() && !due_for_full,
                    chains_written: plan.chains_written,
                    chains_deleted: plan.chains_deleted,
                    conntrack_flushes: 0,
                };
                (report, now)
            }
        };

        // Only changed and removed services can call for a flush.
        let mut old_table = ServiceTable::default();
        let mut new_table = ServiceTable::default();
        for (key, old) in &rendering.changed {
            if let Some(old) = old {
                old_table.insert(old.service.clone());
            }
            if let Some(new) = rendering.services.get(key) {
                new_table.insert(new.service.clone());
            }
        }
        for removed in &rendering.removed {
            old_table.insert(removed.service.clone());
        }
        for flush in conntrack_flushes(&old_table, &new_table) {
            match conntrack.flush(&flush) {
                Ok(()) => report.conntrack_flushes += 1,
                Err(error) => {
                    tracing::warn!(%error, "could not delete stale UDP conntrack entries")
                }
            }
        }

        self.applied = Some(Applied {
            shared_hashes: rendering
                .shared
                .iter()
                .map(|(table, chain, hash)| ((*table, chain.name.clone()), *hash))
                .collect(),
            services: rendering.services,
            last_full_sync,
        });
        Ok(report)
    }
}

fn assemble_rendering(rendering: &Rendering) -> Ruleset {
    // The same order as render::render: fixed chains, per-service
    // chains, dispatch chains.
    let is_dispatch = |chain: &Chain| chain.name == SERVICES_CHAIN || chain.name == NODEPORTS_CHAIN;
    let mut ruleset = Ruleset::default();
    let mut push = |table: &Table, chain: &Chain| match table {
        Table::Nat => ruleset.nat.chains.push(chain.clone()),
        Table::Filter => ruleset.filter.chains.push(chain.clone()),
    };
    for (table, chain, _) in rendering.shared.iter().filter(|(_, c, _)| !is_dispatch(c)) {
        push(table, chain);
    }
    for rendered in rendering.services.values() {
        for chain in &rendered.rules.chains {
            push(&Table::Nat, chain);
        }
    }
    for (table, chain, _) in rendering.shared.iter().filter(|(_, c, _)| is_dispatch(c)) {
        push(table, chain);
    }
    ruleset
}

/// Plans a partial sync: the chains of changed services whose content
/// changed, shared chains whose hash changed, and the deletion of chains
/// that changed services no longer have or removed services had.
fn plan_changes(
    rendering: &Rendering,
    shared_hashes: &HashMap<(Table, String), u64>,
) -> RestorePlan {
    let mut written: Vec<&Chain> = Vec::new();
    let mut deleted: Vec<String> = Vec::new();
    for (key, old) in &rendering.changed {
        let Some(new) = rendering.services.get(key) else {
            continue;
        };
        let old_chains: HashMap<&str, u64> = old
            .iter()
            .flat_map(|o| o.chains())
            .map(|(chain, hash)| (chain.name.as_str(), hash))
            .collect();
        for (chain, hash) in new.chains() {
            if old_chains.get(chain.name.as_str()) != Some(&hash) {
                written.push(chain);
            }
        }
        let new_names: HashSet<&str> = new.rules.chains.iter().map(|c| c.name.as_str()).collect();
        deleted.extend(
            old_chains
                .keys()
                .filter(|name| !new_names.contains(*name))
                .map(|name| name.to_string()),
        );
    }
    for removed in &rendering.removed {
        deleted.extend(removed.rules.chains.iter().map(|c| c.name.clone()));
    }
    deleted.sort();
    deleted.dedup();

    let mut plan = RestorePlan::default();
    for table in Table::ALL {
        let mut table_written: Vec<&Chain> = if table == Table::Nat {
            written.clone()
        } else {
            Vec::new()
        };
        // Dispatch chains after the per-service chains they jump to.
        for (t, chain, hash) in &rendering.shared {
            if *t == table && shared_hashes.get(&(table, chain.name.clone())) != Some(hash) {
                table_written.push(chain);
            }
        }
        let table_deleted: &[String] = if table == Table::Nat { &deleted } else { &[] };
        if table_written.is_empty() && table_deleted.is_empty() {
            continue;
        }
        plan.chains_written += table_written.len();
        plan.chains_deleted += table_deleted.len();
        plan.inputs
            .push((table, restore_input(table, &table_written, table_deleted)));
    }
    plan
}

fn apply_plan(iptables: &dyn Iptables, plan: &RestorePlan) -> Result<(), ProxyError> {
    for (table, input) in &plan.inputs {
        iptables.restore(*table, input)?;
    }
    Ok(())
}
