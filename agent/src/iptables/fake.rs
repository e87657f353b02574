//! A fake [`Iptables`] for tests: it parses restore input into a model of
//! the nat and filter tables with the semantics the agent relies on
//! (`--noflush`, declaration flushes, `-X` refuses referenced chains, a
//! failing line leaves the table untouched), and records every restore.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{restore_error, split_rule_words, Iptables, IptablesError, Table};

/// Targets that are not chains.
pub const BUILTIN_TARGETS: &[&str] = &[
    "ACCEPT",
    "DROP",
    "RETURN",
    "REJECT",
    "DNAT",
    "SNAT",
    "MASQUERADE",
    "MARK",
    "LOG",
];

/// The built-in chains of a table.
pub fn builtin_chains(table: Table) -> &'static [&'static str] {
    match table {
        Table::Nat => &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
        Table::Filter => &["INPUT", "FORWARD", "OUTPUT"],
    }
}

/// Chain name → rules, each rule as its argv words after the chain name.
pub type Chains = BTreeMap<String, Vec<Vec<String>>>;

#[derive(Debug)]
struct State {
    tables: BTreeMap<Table, Chains>,
    restores: Vec<(Table, String)>,
    failing_restores: usize,
    rule_commands: usize,
}

#[derive(Debug)]
pub struct FakeIptables {
    state: Mutex<State>,
    random_fully: bool,
}

impl Default for FakeIptables {
    fn default() -> Self {
        Self::new(true)
    }
}

impl FakeIptables {
    pub fn new(random_fully: bool) -> Self {
        let mut tables = BTreeMap::new();
        for table in Table::ALL {
            let chains: Chains = builtin_chains(table)
                .iter()
                .map(|name| (name.to_string(), Vec::new()))
                .collect();
            tables.insert(table, chains);
        }
        FakeIptables {
            state: Mutex::new(State {
                tables,
                restores: Vec::new(),
                failing_restores: 0,
                rule_commands: 0,
            }),
            random_fully,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn chains(&self, table: Table) -> Chains {
        self.lock().tables.get(&table).cloned().unwrap_or_default()
    }

    /// Every restore input applied or attempted so far, in order.
    pub fn restores(&self) -> Vec<(Table, String)> {
        self.lock().restores.clone()
    }

    pub fn clear_restores(&self) {
        self.lock().restores.clear();
    }

    /// Makes the next `count` restores fail, as a kernel or lock error would.
    pub fn fail_next_restores(&self, count: usize) {
        self.lock().failing_restores = count;
    }

    /// How many `-C`/`-I`/`-D` commands ran.
    pub fn rule_commands(&self) -> usize {
        self.lock().rule_commands
    }
}

fn is_builtin(table: Table, chain: &str) -> bool {
    builtin_chains(table).contains(&chain)
}

fn jump_target(rule: &[String]) -> Option<&str> {
    rule.iter()
        .position(|w| w == "-j")
        .and_then(|i| rule.get(i + 1))
        .map(String::as_str)
}

fn apply_restore(tables: &mut BTreeMap<Table, Chains>, input: &str) -> Result<(), usize> {
    let mut pending: Option<(Table, Chains)> = None;
    for (index, line) in input.lines().enumerate() {
        let number = index + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('*') {
            let table = match name {
                "nat" => Table::Nat,
                "filter" => Table::Filter,
                _ => return Err(number),
            };
            pending = Some((table, tables.get(&table).cloned().unwrap_or_default()));
            continue;
        }
        if line == "COMMIT" {
            let (table, chains) = pending.take().ok_or(number)?;
            tables.insert(table, chains);
            continue;
        }
        let (table, chains) = pending.as_mut().ok_or(number)?;
        let table = *table;
        if let Some(declaration) = line.strip_prefix(':') {
            let name = declaration.split_whitespace().next().ok_or(number)?;
            if !is_builtin(table, name) {
                chains.insert(name.to_owned(), Vec::new());
            }
            continue;
        }
        let words = split_rule_words(line);
        let (command, chain, rule) = match words.as_slice() {
            [command, chain, rule @ ..] => (command.as_str(), chain.clone(), rule.to_vec()),
            _ => return Err(number),
        };
        match command {
            "-A" | "-I" => {
                if let Some(target) = jump_target(&rule) {
                    if !BUILTIN_TARGETS.contains(&target) && !chains.contains_key(target) {
                        return Err(number);
                    }
                }
                let rules = chains.get_mut(&chain).ok_or(number)?;
                if command == "-A" {
                    rules.push(rule);
                } else {
                    rules.insert(0, rule);
                }
            }
            "-X" => {
                if is_builtin(table, &chain) || !chains.contains_key(&chain) {
                    return Err(number);
                }
                let referenced = chains
                    .values()
                    .flatten()
                    .any(|rule| jump_target(rule) == Some(chain.as_str()));
                if referenced || chains.get(&chain).is_some_and(|r| !r.is_empty()) {
                    return Err(number);
                }
                chains.remove(&chain);
            }
            "-F" => chains.get_mut(&chain).ok_or(number)?.clear(),
            _ => return Err(number),
        }
    }
    if pending.is_some() {
        // No COMMIT: iptables-restore applies nothing.
        return Err(input.lines().count());
    }
    Ok(())
}

fn quote(word: &str) -> String {
    if word.is_empty() || word.contains(char::is_whitespace) {
        format!("\"{word}\"")
    } else {
        word.to_owned()
    }
}

impl Iptables for FakeIptables {
    fn restore(&self, table: Table, input: &str) -> Result<(), IptablesError> {
        let mut state = self.lock();
        state.restores.push((table, input.to_owned()));
        if state.failing_restores > 0 {
            state.failing_restores -= 1;
            return Err(IptablesError::Restore {
                table,
                stderr: "iptables-restore: unable to initialize table (injected)".into(),
            });
        }
        let mut tables = state.tables.clone();
        match apply_restore(&mut tables, input) {
            Ok(()) => {
                state.tables = tables;
                Ok(())
            }
            Err(line) => Err(restore_error(
                table,
                input,
                &format!("iptables-restore: line {line} failed"),
            )),
        }
    }

    fn save(&self, table: Table) -> Result<String, IptablesError> {
        let state = self.lock();
        let mut out = format!("*{table}\n");
        let chains = state.tables.get(&table).cloned().unwrap_or_default();
        for name in chains.keys() {
            let policy = if is_builtin(table, name) {
                "ACCEPT"
            } else {
                "-"
            };
            out.push_str(&format!(":{name} {policy} [0:0]\n"));
        }
        for (name, rules) in &chains {
            for rule in rules {
                let words: Vec<String> = rule.iter().map(|w| quote(w)).collect();
                out.push_str(&format!("-A {name} {}\n", words.join(" ")));
            }
        }
        out.push_str("COMMIT\n");
        Ok(out)
    }

    fn rule_exists(
        &self,
        table: Table,
        chain: &str,
        args: &[String],
    ) -> Result<bool, IptablesError> {
        let mut state = self.lock();
        state.rule_commands += 1;
        Ok(state
            .tables
            .get(&table)
            .and_then(|chains| chains.get(chain))
            .is_some_and(|rules| rules.iter().any(|rule| rule == args)))
    }

    fn insert_rule(&self, table: Table, chain: &str, args: &[String]) -> Result<(), IptablesError> {
        let mut state = self.lock();
        state.rule_commands += 1;
        let chains = state.tables.entry(table).or_default();
        if let Some(target) = jump_target(args) {
            if !BUILTIN_TARGETS.contains(&target) && !chains.contains_key(target) {
                return Err(IptablesError::Command {
                    command: "iptables -I".into(),
                    status: "exit status: 2".into(),
                    stderr: format!("Couldn't load target `{target}'"),
                });
            }
        }
        match chains.get_mut(chain) {
            Some(rules) => {
                rules.insert(0, args.to_vec());
                Ok(())
            }
            None => Err(IptablesError::Command {
                command: "iptables -I".into(),
                status: "exit status: 1".into(),
                stderr: format!("No chain/target/match by that name: {chain}"),
            }),
        }
    }

    fn delete_rule(&self, table: Table, chain: &str, args: &[String]) -> Result<(), IptablesError> {
        let mut state = self.lock();
        state.rule_commands += 1;
        let rules = state
            .tables
            .get_mut(&table)
            .and_then(|chains| chains.get_mut(chain));
        match rules.and_then(|rules| rules.iter().position(|r| r == args).map(|i| (rules, i))) {
            Some((rules, index)) => {
                rules.remove(index);
                Ok(())
            }
            None => Err(IptablesError::Command {
                command: "iptables -D".into(),
                status: "exit status: 1".into(),
                stderr: "Bad rule (does a matching rule exist in that chain?)".into(),
            }),
        }
    }

    fn supports_random_fully(&self) -> bool {
        self.random_fully
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_is_atomic_and_refuses_dangling_jumps() {
        let fake = FakeIptables::default();
        fake.restore(
            Table::Nat,
            "*nat\n:SKIFF-A - [0:0]\n-A SKIFF-A -j RETURN\nCOMMIT\n",
        )
        .expect("valid input applies");
        let error = fake
            .restore(
                Table::Nat,
                "*nat\n:SKIFF-A - [0:0]\n-A SKIFF-A -j SKIFF-MISSING\nCOMMIT\n",
            )
            .expect_err("a jump to an undeclared chain fails");
        assert!(error.to_string().contains("line 3"), "{error}");
        // The failed restore changed nothing: the old rule is still there.
        assert_eq!(
            fake.chains(Table::Nat)["SKIFF-A"],
            vec![vec!["-j".to_owned(), "RETURN".to_owned()]]
        );
    }

    #[test]
    fn referenced_chains_cannot_be_deleted() {
        let fake = FakeIptables::default();
        fake.restore(
            Table::Nat,
            "*nat\n:SKIFF-A - [0:0]\n:SKIFF-B - [0:0]\n-A SKIFF-A -j SKIFF-B\nCOMMIT\n",
        )
        .expect("valid input applies");
        assert!(fake
            .restore(Table::Nat, "*nat\n:SKIFF-B - [0:0]\n-X SKIFF-B\nCOMMIT\n")
            .is_err());
        fake.flush_and_delete_chains(Table::Nat, &["SKIFF-A".into(), "SKIFF-B".into()])
            .expect("deleting both at once works");
        assert!(!fake.chains(Table::Nat).contains_key("SKIFF-A"));
    }
}
