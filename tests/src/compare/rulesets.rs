//! The same policy for the tools a user would pick instead of edge-ctl, generated from the
//! validated model so the comparison cannot drift from the matrix: an nftables ruleset
//! (stateful, `inet` family) and xdp-filter's port allow-list.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use edge_ctl::policy::{AddrMatch, AddrTerm, Direction, Policy, Protocol, Role, Rule, SetEntry};

/// The nftables table the comparison loads (in the receiver's namespace only).
pub const NFT_TABLE: &str = "edge_compare";

/// One address family's side of a rule: `None` is "any", `Some` the prefixes.
type Side = Option<Vec<String>>;

/// The prefixes an address match resolves to, split by family (v4, v6). `Any`, and a set that
/// holds a /0 of a family, match any address of that family. `@interface` is not resolvable
/// here: the comparison uses documentation addressing.
fn sides(policy: &Policy, m: &AddrMatch) -> (Side, Side) {
    let AddrMatch::Terms(terms) = m else {
        return (None, None);
    };
    let mut nets = Vec::new();
    for term in terms {
        match term {
            AddrTerm::Net(n) => nets.push(*n),
            AddrTerm::Set(name) => {
                let set = policy.set(name).unwrap_or_else(|| panic!("validated policy names set {name}"));
                for e in &set.entries {
                    match e {
                        SetEntry::Net(n) => nets.push(*n),
                        SetEntry::Interface => panic!("set {name} uses @interface: give the comparison addresses"),
                    }
                }
            }
        }
    }
    let family = |v4: bool| -> Side {
        let of: Vec<_> = nets.iter().filter(|n| n.addr().is_ipv4() == v4).collect();
        if of.iter().any(|n| n.prefix_len() == 0) {
            return None;
        }
        Some(
            of.iter()
                .map(|n| if n.prefix_len() == n.max_prefix_len() { n.addr().to_string() } else { n.to_string() })
                .collect(),
        )
    };
    (family(true), family(false))
}

fn nft_ports(rule: &Rule) -> String {
    let ports: Vec<String> = rule.ports.0.iter().map(|r| r.to_string()).collect();
    if ports.len() == 1 { ports[0].clone() } else { format!("{{ {} }}", ports.join(", ")) }
}

fn nft_addr(family: &str, dir: &str, side: &Side) -> Option<String> {
    match side {
        None => Some(String::new()),
        Some(list) if list.is_empty() => None,
        Some(list) => Some(format!("{family} {dir} {{ {} }} ", list.join(", "))),
    }
}

/// The nft lines of one rule: one per address family the rule can match.
fn nft_rule(policy: &Policy, rule: &Rule) -> Vec<String> {
    let (local4, local6) = sides(policy, &rule.local);
    let (remote4, remote6) = sides(policy, &rule.remote);
    let (local_dir, remote_dir) = match rule.direction {
        Direction::Inbound => ("daddr", "saddr"),
        Direction::Outbound => ("saddr", "daddr"),
    };
    let l4 = format!("{} dport {} accept comment \"{}\"", rule.protocol.as_str(), nft_ports(rule), rule.name);
    let mut lines = Vec::new();
    for (family, local, remote) in [("ip", &local4, &remote4), ("ip6", &local6, &remote6)] {
        let (Some(l), Some(r)) = (nft_addr(family, local_dir, local), nft_addr(family, remote_dir, remote)) else {
            continue;
        };
        lines.push(format!("{l}{r}{l4}"));
    }
    // A rule restricted in neither family's addresses gives the same line twice.
    lines.dedup();
    lines
}

/// An nftables ruleset with the meaning of `role`'s rules, written as a user would write a
/// stateful host firewall: replies to allowed flows by connection state, each rule an accept
/// by address and destination port, the essentials (neighbour discovery, path-MTU ICMP), a
/// default of drop in both directions.
pub fn nft_ruleset(policy: &Policy, role: Role) -> String {
    let mut s = format!("table inet {NFT_TABLE} {{\n");
    for (chain, hook, direction, lo) in
        [("input", "input", Direction::Inbound, "iifname"), ("output", "output", Direction::Outbound, "oifname")]
    {
        let _ = writeln!(s, "  chain {chain} {{\n    type filter hook {hook} priority filter; policy drop;");
        s += "    ct state established,related accept\n";
        let _ = writeln!(s, "    {lo} \"lo\" accept");
        let essentials = policy.role(role).essentials;
        if essentials.ndp {
            s += "    icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, nd-redirect, mld-listener-query, mld-listener-report, mld-listener-done, mld2-listener-report } accept\n";
        }
        if essentials.pmtu {
            s += "    icmp type destination-unreachable icmp code frag-needed accept\n";
            s += "    icmpv6 type packet-too-big accept\n";
        }
        if direction == Direction::Outbound {
            // edge-ctl's egress always passes the host's own ICMP errors.
            s += "    icmp type { destination-unreachable, time-exceeded, parameter-problem } accept\n";
            s += "    icmpv6 type { destination-unreachable, time-exceeded, parameter-problem } accept\n";
        }
        for rule in policy.rules_of(role).filter(|r| r.direction == direction) {
            for line in nft_rule(policy, rule) {
                let _ = writeln!(s, "    {line}");
            }
        }
        s += "  }\n";
    }
    s += "}\n";
    s
}

/// xdp-filter's closest configuration: an allow-list (`load --policy deny`) of the destination
/// ports of `role`'s inbound rules, by protocol. Returns (port, protocols) with "tcp", "udp"
/// or "tcp,udp".
pub fn xdp_filter_ports(policy: &Policy, role: Role) -> Vec<(u16, &'static str)> {
    let mut tcp = BTreeSet::new();
    let mut udp = BTreeSet::new();
    for rule in policy.rules_of(role).filter(|r| r.direction == Direction::Inbound) {
        let set = if rule.protocol == Protocol::Tcp { &mut tcp } else { &mut udp };
        for range in &rule.ports.0 {
            set.extend(range.first..=range.last);
        }
    }
    let all: BTreeSet<u16> = tcp.union(&udp).copied().collect();
    all.into_iter()
        .map(|p| {
            let protos = match (tcp.contains(&p), udp.contains(&p)) {
                (true, true) => "tcp,udp",
                (true, false) => "tcp",
                _ => "udp",
            };
            (p, protos)
        })
        .collect()
}

/// What xdp-filter cannot express of the matrix, for the report.
pub const XDP_FILTER_LIMITS: &[&str] = &[
    "per-rule addresses: it matches a destination port for every address of the host, so SIP \
     5061 from a client (not the HLB's VIP) or to the A/V address passes; its address lists are \
     separate allow entries that pass all traffic of that address",
    "outbound rules: it filters ingress only (XDP); the outbound rows are not enforced",
    "stateful replies: answers to the edge's own DNS, CRL, SIP, XMPP, STUN and A/V connections \
     need their source ports opened (`port --mode src`), which lets anyone in from those ports; \
     configured here without them, the answers are dropped",
    "essentials: in deny mode it drops ARP, neighbour discovery and path-MTU ICMP (it can only \
     allow by MAC or address, which then passes everything of that peer)",
    "one ruleset per machine: its maps are global, so an external and an internal interface \
     cannot have different port lists",
];

#[cfg(test)]
mod tests {
    use super::*;
    use edge_ctl::profile::{self, Options};

    fn lync() -> Policy {
        profile::policy(&Options::default()).unwrap()
    }

    #[test]
    fn xdp_filter_gets_the_external_inbound_ports() {
        let ports = xdp_filter_ports(&lync(), Role::External);
        assert_eq!(ports, vec![(443, "tcp"), (3478, "udp"), (5061, "tcp"), (5269, "tcp")]);
    }

    #[test]
    fn nft_accepts_each_row_by_address_and_port() {
        let text = nft_ruleset(&lync(), Role::External);
        assert!(text.contains("policy drop;"));
        assert!(text.contains(
            "ip daddr { 203.0.113.21, 203.0.113.31 } ip saddr { 203.0.113.10 } tcp dport 5061 accept comment \"vip-access-sip-mtls-in\""
        ));
        assert!(text.contains("ip6 daddr { 2001:db8:e::23, 2001:db8:e::33 } udp dport 3478 accept"));
        // Outbound to federated partners (0.0.0.0/0) is any remote.
        assert!(text.contains(
            "ip saddr { 203.0.113.21, 203.0.113.31 } tcp dport 5061 accept comment \"vip-access-sip-mtls-out\""
        ));
        assert!(!text.contains("/0"));
        assert!(!text.contains("ext-av-rtp-udp-in"), "disabled rows stay out");
    }
}
