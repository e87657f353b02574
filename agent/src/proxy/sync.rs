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
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use super::conntrack::{conntrack_flushes, Conntrack};
use super::render::{all_jumps, render, Chain, JumpRule, NodeSettings, Ruleset, CHAIN_PREFIX};
use super::service::ServiceTable;
use super::ProxyError;
use crate::iptables::{ensure_rule, remove_rule, saved_chain_names, Iptables, Table};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncConfig {
    /// How often a full sync runs even when partial syncs succeed.
    pub full_resync_period: Duration,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            full_resync_period: Duration::from_secs(5 * 60),
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

/// What the kernel holds, as far as this syncer wrote it.
#[derive(Debug)]
struct Applied {
    chain_hashes: HashMap<(Table, String), u64>,
    services: ServiceTable,
    last_full_sync: Instant,
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

/// Plans a partial sync: only chains whose hash changed, and the removal of
/// chains no longer rendered.
pub fn plan_partial(desired: &Ruleset, applied: &HashMap<(Table, String), u64>) -> RestorePlan {
    let mut plan = RestorePlan::default();
    for table in Table::ALL {
        let chains = &desired.table(table).chains;
        let written: Vec<&Chain> = chains
            .iter()
            .filter(|chain| applied.get(&(table, chain.name.clone())) != Some(&chain_hash(chain)))
            .collect();
        let desired_names: HashSet<&str> = chains.iter().map(|c| c.name.as_str()).collect();
        let mut deleted: Vec<String> = applied
            .keys()
            .filter(|(t, name)| *t == table && !desired_names.contains(name.as_str()))
            .map(|(_, name)| name.clone())
            .collect();
        deleted.sort();
        if written.is_empty() && deleted.is_empty() {
            continue;
        }
        plan.chains_written += written.len();
        plan.chains_deleted += deleted.len();
        plan.inputs
            .push((table, restore_input(table, &written, &deleted)));
    }
    plan
}

/// Plans a full sync: every chain, and the removal of our chains that the
/// kernel has (`existing`, per table) and the ruleset does not.
pub fn plan_full(desired: &Ruleset, existing: &HashMap<Table, Vec<String>>) -> RestorePlan {
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
        plan.inputs
            .push((table, restore_input(table, &written, &deleted)));
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

/// Keeps the kernel's rules in line with the service table.
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

    /// Makes the next sync a full one (after the node's settings or the
    /// host's rules changed under us).
    pub fn request_full_sync(&mut self) {
        self.applied = None;
    }

    /// Brings the kernel in line with `services`.
    pub fn sync(
        &mut self,
        iptables: &dyn Iptables,
        conntrack: &dyn Conntrack,
        services: &ServiceTable,
        now: Instant,
    ) -> Result<SyncReport, ProxyError> {
        let desired = render(services, &self.settings, iptables.supports_random_fully());
        let previous = self.applied.take();
        let due_for_full = previous.as_ref().is_none_or(|a| {
            now.saturating_duration_since(a.last_full_sync) >= self.config.full_resync_period
        });

        let mut report = match (&previous, due_for_full) {
            (Some(applied), false) => {
                let plan = plan_partial(&desired, &applied.chain_hashes);
                match apply_plan(iptables, &plan) {
                    Ok(()) => Some(SyncReport {
                        kind: SyncKind::Partial,
                        fell_back_to_full: false,
                        chains_written: plan.chains_written,
                        chains_deleted: plan.chains_deleted,
                        conntrack_flushes: 0,
                    }),
                    Err(error) => {
                        tracing::warn!(%error, "partial iptables sync failed; falling back to a full sync");
                        None
                    }
                }
            }
            _ => None,
        };
        let last_full_sync = match (&report, &previous) {
            (Some(_), Some(applied)) => applied.last_full_sync,
            _ => {
                let fell_back = previous.is_some() && !due_for_full;
                let plan = self.full_plan(iptables, &desired)?;
                apply_plan(iptables, &plan)?;
                ensure_jumps(iptables, &all_jumps())?;
                report = Some(SyncReport {
                    kind: SyncKind::Full,
                    fell_back_to_full: fell_back,
                    chains_written: plan.chains_written,
                    chains_deleted: plan.chains_deleted,
                    conntrack_flushes: 0,
                });
                now
            }
        };
        let mut report = report.ok_or(ProxyError::Internal("sync produced no report"))?;

        let empty = ServiceTable::default();
        let old_services = previous.as_ref().map_or(&empty, |a| &a.services);
        for flush in conntrack_flushes(old_services, services) {
            match conntrack.flush(&flush) {
                Ok(()) => report.conntrack_flushes += 1,
                Err(error) => {
                    tracing::warn!(%error, "could not delete stale UDP conntrack entries")
                }
            }
        }

        let chain_hashes = Table::ALL
            .iter()
            .flat_map(|&table| {
                desired
                    .table(table)
                    .chains
                    .iter()
                    .map(move |chain| ((table, chain.name.clone()), chain_hash(chain)))
            })
            .collect();
        self.applied = Some(Applied {
            chain_hashes,
            services: services.clone(),
            last_full_sync,
        });
        Ok(report)
    }

    fn full_plan(
        &self,
        iptables: &dyn Iptables,
        desired: &Ruleset,
    ) -> Result<RestorePlan, ProxyError> {
        let mut existing = HashMap::new();
        for table in Table::ALL {
            existing.insert(table, saved_chain_names(&iptables.save(table)?));
        }
        Ok(plan_full(desired, &existing))
    }
}

fn apply_plan(iptables: &dyn Iptables, plan: &RestorePlan) -> Result<(), ProxyError> {
    for (table, input) in &plan.inputs {
        iptables.restore(*table, input)?;
    }
    Ok(())
}
