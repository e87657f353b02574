//! The agent's narrow seam over netfilter's iptables tables.
//!
//! Mechanism: whole chains are written with one `iptables-restore --noflush`
//! per table, so a table changes atomically and chains that are not named in
//! the input stay as they are. Declaring a chain (`:CHAIN - [0:0]`) in such
//! an input creates it, or flushes it when it exists; its rules follow as
//! `-A` lines; `-X CHAIN` after the declaration deletes it. Jump rules in the
//! built-in chains (which restore must not flush, since other software owns
//! rules there) are managed one at a time: checked with `-C`, inserted with
//! `-I` only when missing, so they are never duplicated.
//!
//! Ordering rules for callers:
//! - a jump from a built-in chain is ensured only after the restore that
//!   creates its target chain has succeeded;
//! - a chain is deleted only after every chain jumping to it has been
//!   rewritten without the jump, and after the built-in jumps to it are gone
//!   (restore refuses to delete a chain that is still referenced).
//!
//! [`CommandIptables`] runs the real binaries, optionally through a command
//! prefix (`nsenter --net=...`), with the backend (nft or legacy) that the
//! host already uses. Tests use the fake in `fake` (test builds only), which
//! parses restore input into a model of the tables.

mod executor;
#[cfg(test)]
pub mod fake;

pub use executor::{detect_backend, Backend, CommandIptables};

use std::fmt;

/// The two tables the agent writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Nat,
    Filter,
}

impl Table {
    pub const ALL: [Table; 2] = [Table::Nat, Table::Filter];

    pub fn as_str(self) -> &'static str {
        match self {
            Table::Nat => "nat",
            Table::Filter => "filter",
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    #[error("could not run {command}: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("{command} failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("iptables-restore of table {table} failed at line {line} ({line_text:?}): {stderr}")]
    RestoreLine {
        table: Table,
        line: usize,
        line_text: String,
        stderr: String,
    },
    #[error("iptables-restore of table {table} failed: {stderr}")]
    Restore { table: Table, stderr: String },
}

/// What the agent needs from iptables, and nothing more.
///
/// `args` are a rule's arguments after the chain name, one element per
/// argv word, exactly as `iptables -A CHAIN args...` takes them.
pub trait Iptables {
    /// Applies a restore input (which names its own tables) with
    /// `--noflush`: chains not declared in `input` are left alone.
    fn restore(&self, table: Table, input: &str) -> Result<(), IptablesError>;

    /// The table as `iptables-save -t TABLE` prints it.
    fn save(&self, table: Table) -> Result<String, IptablesError>;

    /// Whether `chain` holds the rule (`iptables -C`).
    fn rule_exists(
        &self,
        table: Table,
        chain: &str,
        args: &[String],
    ) -> Result<bool, IptablesError>;

    /// Inserts the rule first in `chain` (`iptables -I`).
    fn insert_rule(&self, table: Table, chain: &str, args: &[String]) -> Result<(), IptablesError>;

    /// Deletes one copy of the rule from `chain` (`iptables -D`).
    fn delete_rule(&self, table: Table, chain: &str, args: &[String]) -> Result<(), IptablesError>;

    /// Whether MASQUERADE takes `--random-fully` (iptables 1.6.2 and later).
    fn supports_random_fully(&self) -> bool;

    /// Flushes and deletes `chains` of `table` in one restore. Every jump
    /// to them from chains outside the list must already be gone.
    fn flush_and_delete_chains(
        &self,
        table: Table,
        chains: &[String],
    ) -> Result<(), IptablesError> {
        if chains.is_empty() {
            return Ok(());
        }
        let mut input = format!("*{table}\n");
        for chain in chains {
            input.push_str(&format!(":{chain} - [0:0]\n"));
        }
        for chain in chains {
            input.push_str(&format!("-X {chain}\n"));
        }
        input.push_str("COMMIT\n");
        self.restore(table, &input)
    }
}

/// Inserts the rule unless `chain` already holds it. Returns whether it
/// inserted.
pub fn ensure_rule(
    iptables: &dyn Iptables,
    table: Table,
    chain: &str,
    args: &[String],
) -> Result<bool, IptablesError> {
    if iptables.rule_exists(table, chain, args)? {
        return Ok(false);
    }
    iptables.insert_rule(table, chain, args)?;
    Ok(true)
}

/// Deletes every copy of the rule from `chain`; absent is fine.
pub fn remove_rule(
    iptables: &dyn Iptables,
    table: Table,
    chain: &str,
    args: &[String],
) -> Result<(), IptablesError> {
    // Bounded: a rule inserted twice by an older version is removed too,
    // but a chain that refuses deletion cannot loop us forever.
    for _ in 0..16 {
        if !iptables.rule_exists(table, chain, args)? {
            return Ok(());
        }
        iptables.delete_rule(table, chain, args)?;
    }
    Ok(())
}

/// The names of the user-defined chains in an `iptables-save` output.
pub fn saved_chain_names(saved: &str) -> Vec<String> {
    saved
        .lines()
        .filter_map(|line| line.strip_prefix(':'))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Splits a rule written as restore input into argv words, honouring the
/// double quotes iptables-save puts around comments.
pub fn split_rule_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut in_quotes = false;
    let mut has_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                has_word = true;
            }
            '\\' if in_quotes => {
                if let Some(next) = chars.next() {
                    current.push(next);
                }
            }
            c if c.is_whitespace() && !in_quotes => {
                if has_word {
                    words.push(std::mem::take(&mut current));
                    has_word = false;
                }
            }
            c => {
                current.push(c);
                has_word = true;
            }
        }
    }
    if has_word {
        words.push(current);
    }
    words
}

/// Turns iptables-restore's stderr into an error that quotes the input line
/// it rejected. Both backends say `line N failed`; nft also says
/// `Error occurred at line: N`.
pub(crate) fn restore_error(table: Table, input: &str, stderr: &str) -> IptablesError {
    let stderr = stderr.trim().to_owned();
    match failing_line_number(&stderr) {
        Some(line) => IptablesError::RestoreLine {
            table,
            line,
            line_text: input
                .lines()
                .nth(line.saturating_sub(1))
                .unwrap_or_default()
                .to_owned(),
            stderr,
        },
        None => IptablesError::Restore { table, stderr },
    }
}

fn failing_line_number(stderr: &str) -> Option<usize> {
    for line in stderr.lines() {
        if let Some(rest) = line.split("line: ").nth(1) {
            if let Ok(n) = rest.trim().parse() {
                return Some(n);
            }
        }
        if let Some(rest) = line.split("line ").nth(1) {
            if let Some(number) = rest.split_whitespace().next() {
                if let Ok(n) = number.trim_end_matches(':').parse() {
                    return Some(n);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_errors_quote_the_failing_line() {
        let input = "*nat\n:SKIFF-X - [0:0]\n-A SKIFF-X -j NOPE\nCOMMIT\n";
        let legacy = restore_error(Table::Nat, input, "iptables-restore: line 3 failed\n");
        assert!(matches!(
            legacy,
            IptablesError::RestoreLine { line: 3, ref line_text, .. } if line_text == "-A SKIFF-X -j NOPE"
        ));
        let nft = restore_error(
            Table::Nat,
            input,
            "iptables-restore v1.8.9 (nf_tables): Chain 'NOPE' does not exist\nError occurred at line: 3\nTry `iptables-restore -h' for more information.",
        );
        assert!(nft.to_string().contains("-A SKIFF-X -j NOPE"), "{nft}");
        let other = restore_error(
            Table::Filter,
            input,
            "Another app is currently holding the xtables lock",
        );
        assert!(matches!(other, IptablesError::Restore { .. }));
    }

    #[test]
    fn rule_words_keep_quoted_comments_whole() {
        assert_eq!(
            split_rule_words(r#"-A X -m comment --comment "default/web:http cluster IP" -j Y"#),
            [
                "-A",
                "X",
                "-m",
                "comment",
                "--comment",
                "default/web:http cluster IP",
                "-j",
                "Y"
            ]
        );
        assert_eq!(split_rule_words(r#"--comment """#), ["--comment", ""]);
    }

    #[test]
    fn saved_chain_names_are_the_declared_chains() {
        let saved = "# Generated\n*nat\n:PREROUTING ACCEPT [0:0]\n:SKIFF-SERVICES - [0:0]\n-A PREROUTING -j SKIFF-SERVICES\nCOMMIT\n";
        assert_eq!(saved_chain_names(saved), ["PREROUTING", "SKIFF-SERVICES"]);
    }
}
