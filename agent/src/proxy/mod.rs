//! The node's service proxy (kube-proxy's job, iptables mode) and the pod
//! network's masquerade (flanneld's).
//!
//! Mechanism: the service table ([`service`], converted from the node API at
//! the edge) and the node's settings go through a pure renderer
//! ([`render`]) into the chains we own, all named `SKIFF-...`; the
//! [`sync::Syncer`] writes them with one `iptables-restore --noflush` per
//! table, fully or only the chains that changed, ensures the jumps from the
//! built-in chains, and flushes stale UDP conntrack entries ([`conntrack`]).
//! Nothing outside our chains and our jump rules is ever touched.
//!
//! Ordering rules:
//! - chains exist before any jump to them: restores first, jumps after;
//! - within one restore, SEP chains are written before the SVC chains that
//!   jump to them, and removed chains are deleted after the chains that
//!   jumped to them are rewritten;
//! - on cleanup, jumps from the built-in chains go first, then our chains
//!   are flushed and deleted together;
//! - conntrack entries are flushed after the rules that stop feeding them.
//!
//! The pod-network masquerade ([`ensure_pod_masquerade`]) needs only the
//! cluster CIDR, so the agent can install it before the first service
//! table arrives; the syncer renders the same chains, identically, so the
//! two never fight.

pub mod conntrack;
pub mod render;
pub mod service;
pub mod sync;
#[cfg(test)]
mod tests;
#[cfg(test)]
pub mod tracer;

pub use conntrack::{CommandConntrack, Conntrack, ConntrackError, ConntrackFlush};
pub use render::{render, NodePortAddresses, NodeSettings, Ruleset};
pub use service::{ServiceError, ServiceTable};
pub use sync::{SyncConfig, SyncKind, SyncReport, Syncer};

use crate::iptables::{remove_rule, saved_chain_names, Iptables, IptablesError, Table};
use render::{
    all_jumps, pod_network_jumps, render_fixed, CHAIN_PREFIX, FORWARD_CHAIN, POD_MASQ_CHAIN,
};
use sync::{ensure_jumps, restore_input};

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(transparent)]
    Iptables(#[from] IptablesError),
    #[error("internal error in the proxy: {0}")]
    Internal(&'static str),
}

/// Installs the pod network's masquerade: nat `SKIFF-POD-MASQ` from
/// POSTROUTING (pod to pod: never masqueraded; pod to elsewhere:
/// masqueraded) and filter `SKIFF-FORWARD` from FORWARD (pod traffic
/// accepted despite a default-DROP policy). Idempotent.
pub fn ensure_pod_masquerade(
    iptables: &dyn Iptables,
    settings: &NodeSettings,
) -> Result<(), ProxyError> {
    let fixed = render_fixed(settings, iptables.supports_random_fully());
    for (table, name) in [(Table::Nat, POD_MASQ_CHAIN), (Table::Filter, FORWARD_CHAIN)] {
        let chains: Vec<&render::Chain> = fixed
            .table(table)
            .chains
            .iter()
            .filter(|c| c.name == name)
            .collect();
        iptables.restore(table, &restore_input(table, &chains, &[]))?;
    }
    ensure_jumps(iptables, &pod_network_jumps())
}

/// Removes every jump we put in the built-in chains, then every `SKIFF-`
/// chain of both tables, for `skiff-agent cleanup`. With
/// `max_chains_per_restore` (see [`SyncConfig`]) the chains are first all
/// flushed, then deleted, in restores of at most that many chains: once
/// every chain is empty none references another, so any split is valid.
pub fn cleanup(
    iptables: &dyn Iptables,
    max_chains_per_restore: Option<usize>,
) -> Result<(), ProxyError> {
    for jump in all_jumps() {
        // The built-in chain is always there; a failed check means
        // iptables itself is broken, which the restore below reports.
        if let Err(error) = remove_rule(iptables, jump.table, jump.builtin_chain, &jump.args) {
            tracing::warn!(%error, chain = jump.builtin_chain, "could not remove a jump rule");
        }
    }
    for table in Table::ALL {
        let ours: Vec<String> = saved_chain_names(&iptables.save(table)?)
            .into_iter()
            .filter(|name| name.starts_with(CHAIN_PREFIX))
            .collect();
        match max_chains_per_restore {
            Some(chunk) if ours.len() > chunk => {
                let chunk = chunk.max(1);
                for piece in ours.chunks(chunk) {
                    // Declarations alone flush the chains.
                    let mut input = format!("*{table}\n");
                    for name in piece {
                        input.push_str(&format!(":{name} - [0:0]\n"));
                    }
                    input.push_str("COMMIT\n");
                    iptables.restore(table, &input)?;
                }
                for piece in ours.chunks(chunk) {
                    iptables.flush_and_delete_chains(table, piece)?;
                }
            }
            _ => iptables.flush_and_delete_chains(table, &ours)?,
        }
    }
    Ok(())
}
