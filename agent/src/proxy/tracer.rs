//! A packet tracer over the fake iptables' parsed tables, as kube-proxy's
//! tests have: it follows one packet through nat PREROUTING/OUTPUT, the
//! filter table, and nat POSTROUTING, forking at every `-m statistic`
//! rule, and reports every possible outcome.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::iptables::fake::{Chains, FakeIptables};
use crate::iptables::Table;

/// Where the packet comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Arrives on an interface (a pod's veth, or the node's uplink).
    Arriving,
    /// Sent by a process of the host itself.
    Host,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: &'static str,
    pub dport: u16,
}

/// One possible fate of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Outcome {
    /// Where it ends up after DNAT (its original destination without).
    pub destination: (Ipv4Addr, u16),
    pub masqueraded: bool,
    pub rejected: bool,
}

#[derive(Debug, Clone)]
struct State {
    dst: Ipv4Addr,
    dport: u16,
    mark: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Accept,
    Drop,
    Reject,
    Masquerade,
}

enum Flow {
    Continue,
    Stop(Verdict),
}

enum Match {
    No,
    Yes,
    /// A random match: both ways are possible.
    Maybe,
}

pub struct Tracer {
    nat: Chains,
    filter: Chains,
    local_addresses: Vec<Ipv4Addr>,
}

fn parse_net(text: &str) -> Ipv4Net {
    text.parse::<Ipv4Net>()
        .or_else(|_| text.parse::<Ipv4Addr>().map(Ipv4Net::from))
        .unwrap_or_else(|_| panic!("bad address in a rule: {text}"))
}

fn parse_mark(text: &str) -> (u32, u32) {
    let parse = |s: &str| u32::from_str_radix(s.trim_start_matches("0x"), 16).expect("hex mark");
    match text.split_once('/') {
        Some((value, mask)) => (parse(value), parse(mask)),
        None => (parse(text), u32::MAX),
    }
}

impl Tracer {
    pub fn new(iptables: &FakeIptables, local_addresses: &[Ipv4Addr]) -> Self {
        Tracer {
            nat: iptables.chains(Table::Nat),
            filter: iptables.chains(Table::Filter),
            local_addresses: local_addresses.to_vec(),
        }
    }

    /// Every possible outcome of sending `packet`.
    pub fn trace(&self, packet: Packet, origin: Origin) -> BTreeSet<Outcome> {
        let start = State {
            dst: packet.dst,
            dport: packet.dport,
            mark: 0,
        };
        let nat_entry = match origin {
            Origin::Arriving => "PREROUTING",
            Origin::Host => "OUTPUT",
        };
        let mut outcomes = BTreeSet::new();
        for (state, _) in self.run(&self.nat, nat_entry, &packet, start) {
            let filter_entry = match origin {
                Origin::Host => "OUTPUT",
                Origin::Arriving if self.local_addresses.contains(&state.dst) => "INPUT",
                Origin::Arriving => "FORWARD",
            };
            for (state, flow) in self.run(&self.filter, filter_entry, &packet, state.clone()) {
                let rejected = matches!(flow, Flow::Stop(Verdict::Reject | Verdict::Drop));
                let masqueraded = !rejected
                    && self
                        .run(&self.nat, "POSTROUTING", &packet, state.clone())
                        .iter()
                        .any(|(_, flow)| matches!(flow, Flow::Stop(Verdict::Masquerade)));
                outcomes.insert(Outcome {
                    destination: (state.dst, state.dport),
                    masqueraded,
                    rejected,
                });
            }
        }
        outcomes
    }

    fn run(
        &self,
        chains: &Chains,
        chain: &str,
        packet: &Packet,
        state: State,
    ) -> Vec<(State, Flow)> {
        let rules = chains
            .get(chain)
            .unwrap_or_else(|| panic!("jump to undefined chain {chain}"));
        let mut live = vec![state];
        let mut done = Vec::new();
        for rule in rules {
            let mut next = Vec::new();
            for state in live {
                match self.matches(rule, packet, &state) {
                    Match::No => next.push(state),
                    Match::Maybe => {
                        next.push(state.clone());
                        self.apply(chains, rule, packet, state, &mut next, &mut done);
                    }
                    Match::Yes => self.apply(chains, rule, packet, state, &mut next, &mut done),
                }
            }
            live = next;
        }
        done.extend(live.into_iter().map(|s| (s, Flow::Continue)));
        done
    }

    /// Applies a matched rule's target: states that go on through the
    /// chain land in `next`, the others in `done`.
    fn apply(
        &self,
        chains: &Chains,
        rule: &[String],
        packet: &Packet,
        mut state: State,
        next: &mut Vec<State>,
        done: &mut Vec<(State, Flow)>,
    ) {
        let Some(index) = rule.iter().position(|w| w == "-j") else {
            next.push(state);
            return;
        };
        let target = rule[index + 1].as_str();
        let option = |name: &str| {
            rule[index..]
                .iter()
                .position(|w| w == name)
                .map(|i| rule[index + i + 1].as_str())
        };
        match target {
            "ACCEPT" => done.push((state, Flow::Stop(Verdict::Accept))),
            "DROP" => done.push((state, Flow::Stop(Verdict::Drop))),
            "REJECT" => done.push((state, Flow::Stop(Verdict::Reject))),
            "MASQUERADE" => done.push((state, Flow::Stop(Verdict::Masquerade))),
            "RETURN" => done.push((state, Flow::Continue)),
            "MARK" => {
                if let Some(xmark) = option("--set-xmark") {
                    let (value, mask) = parse_mark(xmark);
                    state.mark = (state.mark & !mask) ^ value;
                } else if let Some(xor) = option("--xor-mark") {
                    state.mark ^= parse_mark(xor).0;
                }
                next.push(state);
            }
            "DNAT" => {
                let to = option("--to-destination").expect("DNAT has a destination");
                let (ip, port) = to.split_once(':').expect("ip:port");
                state.dst = ip.parse().expect("DNAT ip");
                state.dport = port.parse().expect("DNAT port");
                done.push((state, Flow::Stop(Verdict::Accept)));
            }
            chain => {
                for (state, flow) in self.run(chains, chain, packet, state) {
                    match flow {
                        Flow::Continue => next.push(state),
                        stop => done.push((state, stop)),
                    }
                }
            }
        }
    }

    fn matches(&self, rule: &[String], packet: &Packet, state: &State) -> Match {
        let mut result = Match::Yes;
        let mut negate = false;
        let mut i = 0;
        while i < rule.len() {
            let word = rule[i].as_str();
            let value = rule.get(i + 1).map(String::as_str).unwrap_or_default();
            let test: Option<bool> = match word {
                "!" => {
                    negate = true;
                    i += 1;
                    continue;
                }
                "-j" => break,
                "-s" => Some(parse_net(value).contains(&packet.src)),
                "-d" => Some(parse_net(value).contains(&state.dst)),
                "-p" => Some(value == packet.protocol),
                "--dport" => Some(value.parse::<u16>().ok() == Some(state.dport)),
                "--dst-type" => Some(value == "LOCAL" && self.local_addresses.contains(&state.dst)),
                "--mark" => {
                    let (want, mask) = parse_mark(value);
                    Some(state.mark & mask == want)
                }
                // Every traced packet opens a new connection.
                "--ctstate" => Some(value.split(',').any(|s| s == "NEW")),
                "--probability" => {
                    if !matches!(result, Match::No) {
                        result = Match::Maybe;
                    }
                    None
                }
                // No client has an affinity entry yet.
                "--rcheck" => Some(false),
                "-m" | "--comment" | "--mode" | "--name" | "--seconds" | "--mask" => None,
                "--set" | "--reap" | "--rsource" => {
                    i += 1;
                    continue;
                }
                other => panic!("the tracer does not know {other:?} in {rule:?}"),
            };
            if let Some(hit) = test {
                if hit == negate {
                    result = Match::No;
                }
            }
            negate = false;
            i += 2;
        }
        result
    }
}
