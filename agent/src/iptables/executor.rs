//! The real executor: `iptables`, `iptables-save` and `iptables-restore` of
//! one backend, run as child processes, optionally behind a command prefix
//! (for example `nsenter --net=/run/netns/NAME`) so that tests and
//! benchmarks can point it at a throwaway network namespace.
//!
//! The backend is chosen as kube-proxy's and iptables-wrapper's detection
//! does: whichever of `iptables-legacy-save` and `iptables-nft-save` shows
//! more rules is the one the host uses; with no rules in either, nft.
//! Writing to the other backend would leave two rule sets that the kernel
//! both evaluates, in an order nobody controls.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use super::{restore_error, Iptables, IptablesError, Table};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Nft,
    Legacy,
}

impl Backend {
    fn suffix(self) -> &'static str {
        match self {
            Backend::Nft => "nft",
            Backend::Legacy => "legacy",
        }
    }
}

/// Picks the backend from the number of rules each one holds.
pub fn choose_backend(legacy_rules: usize, nft_rules: usize) -> Backend {
    if legacy_rules > nft_rules {
        Backend::Legacy
    } else {
        Backend::Nft
    }
}

/// Counts the rules each backend holds (a missing binary counts none) and
/// picks one.
pub fn detect_backend(prefix: &[String]) -> Backend {
    let count = |binary: &str| -> usize {
        match run(prefix, binary, &[], None) {
            Ok(output) => String::from_utf8_lossy(&output.stdout)
                .lines()
                .filter(|line| line.starts_with("-A "))
                .count(),
            Err(_) => 0,
        }
    };
    choose_backend(count("iptables-legacy-save"), count("iptables-nft-save"))
}

/// Whether an `iptables --version` line names 1.6.2 or later, the first
/// release whose MASQUERADE takes `--random-fully`.
pub fn version_supports_random_fully(version_line: &str) -> bool {
    let Some(version) = version_line
        .split_whitespace()
        .find_map(|word| word.strip_prefix('v'))
    else {
        return false;
    };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let triple = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    triple >= (1, 6, 2)
}

/// Runs the binaries of one backend.
#[derive(Debug, Clone)]
pub struct CommandIptables {
    prefix: Vec<String>,
    backend: Backend,
    random_fully: bool,
}

impl CommandIptables {
    /// Detects the backend and the `--random-fully` support once, running
    /// everything behind `prefix` (empty for the host itself).
    pub fn detect(prefix: Vec<String>) -> Self {
        let backend = detect_backend(&prefix);
        let mut executor = CommandIptables {
            prefix,
            backend,
            random_fully: false,
        };
        executor.random_fully = run(&executor.prefix, &executor.binary(""), &["--version"], None)
            .map(|output| version_supports_random_fully(&String::from_utf8_lossy(&output.stdout)))
            .unwrap_or(false);
        executor
    }

    /// A given backend, without detection.
    pub fn with_backend(prefix: Vec<String>, backend: Backend, random_fully: bool) -> Self {
        CommandIptables {
            prefix,
            backend,
            random_fully,
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// `iptables-nft`, `iptables-nft-save`, ... for `kind` "", "-save", "-restore".
    fn binary(&self, kind: &str) -> String {
        format!("iptables-{}{kind}", self.backend.suffix())
    }

    fn rule_command(
        &self,
        flag: &str,
        table: Table,
        chain: &str,
        args: &[String],
    ) -> Result<Output, IptablesError> {
        let mut argv: Vec<&str> = vec!["-w", "5", "-t", table.as_str(), flag, chain];
        argv.extend(args.iter().map(String::as_str));
        run(&self.prefix, &self.binary(""), &argv, None)
    }
}

impl Iptables for CommandIptables {
    fn restore(&self, table: Table, input: &str) -> Result<(), IptablesError> {
        let binary = self.binary("-restore");
        let output = run(&self.prefix, &binary, &["--noflush"], Some(input))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(restore_error(
                table,
                input,
                &String::from_utf8_lossy(&output.stderr),
            ))
        }
    }

    fn save(&self, table: Table) -> Result<String, IptablesError> {
        let binary = self.binary("-save");
        let output = run(&self.prefix, &binary, &["-t", table.as_str()], None)?;
        check(&binary, &output)?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn rule_exists(
        &self,
        table: Table,
        chain: &str,
        args: &[String],
    ) -> Result<bool, IptablesError> {
        let output = self.rule_command("-C", table, chain, args)?;
        // 1 is "no such rule"; anything else is a real failure (2: bad
        // arguments, 4: resource problem) that must not read as "absent".
        match output.status.code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => check(&self.binary(""), &output).map(|()| false),
        }
    }

    fn insert_rule(&self, table: Table, chain: &str, args: &[String]) -> Result<(), IptablesError> {
        let output = self.rule_command("-I", table, chain, args)?;
        check(&self.binary(""), &output)
    }

    fn delete_rule(&self, table: Table, chain: &str, args: &[String]) -> Result<(), IptablesError> {
        let output = self.rule_command("-D", table, chain, args)?;
        check(&self.binary(""), &output)
    }

    fn supports_random_fully(&self) -> bool {
        self.random_fully
    }
}

fn check(binary: &str, output: &Output) -> Result<(), IptablesError> {
    if output.status.success() {
        return Ok(());
    }
    Err(IptablesError::Command {
        command: binary.to_owned(),
        status: output.status.to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    })
}

/// Runs `prefix... binary args...`, feeding `stdin` from a separate thread
/// so that a child writing a lot to stderr cannot deadlock us.
pub(crate) fn run(
    prefix: &[String],
    binary: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<Output, IptablesError> {
    let (program, rest) = match prefix.split_first() {
        Some((first, rest)) => (first.as_str(), rest),
        None => (binary, &[][..]),
    };
    let mut command = Command::new(program);
    command.args(rest);
    if !prefix.is_empty() {
        command.arg(binary);
    }
    command
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let describe = || {
        let mut words: Vec<&str> = prefix.iter().map(String::as_str).collect();
        words.push(binary);
        words.extend_from_slice(args);
        words.join(" ")
    };
    let mut child = command.spawn().map_err(|source| IptablesError::Spawn {
        command: describe(),
        source,
    })?;
    let spawn_error = |source| IptablesError::Spawn {
        command: describe(),
        source,
    };
    match (stdin, child.stdin.take()) {
        (Some(input), Some(mut pipe)) => std::thread::scope(|scope| {
            let writer = scope.spawn(move || pipe.write_all(input.as_bytes()));
            let output = child.wait_with_output().map_err(spawn_error)?;
            // A write error (broken pipe) only means the child stopped
            // reading early; its exit status and stderr say why.
            let _ = writer.join();
            Ok(output)
        }),
        _ => child.wait_with_output().map_err(spawn_error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_follows_the_one_with_rules() {
        assert_eq!(choose_backend(0, 0), Backend::Nft);
        assert_eq!(choose_backend(12, 3), Backend::Legacy);
        assert_eq!(choose_backend(3, 12), Backend::Nft);
        assert_eq!(choose_backend(5, 5), Backend::Nft);
    }

    #[test]
    fn random_fully_needs_iptables_1_6_2() {
        assert!(version_supports_random_fully("iptables v1.8.9 (nf_tables)"));
        assert!(version_supports_random_fully("iptables v1.6.2"));
        assert!(!version_supports_random_fully("iptables v1.6.1"));
        assert!(!version_supports_random_fully("iptables v1.4.21"));
        assert!(!version_supports_random_fully("garbage"));
    }

    #[test]
    fn prefix_runs_in_front_of_the_binary() {
        let prefix = vec!["echo".to_owned(), "through".to_owned()];
        let output = run(&prefix, "iptables-nft-save", &["-t", "nat"], None).expect("echo runs");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            "through iptables-nft-save -t nat"
        );
    }
}
