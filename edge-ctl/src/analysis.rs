//! Findings about a valid policy that are worth a warning: rules that can never count a packet
//! because an earlier rule takes all of it (shadowed), exact duplicates, rules that share part of
//! their traffic with an earlier one (overlap), and port lists that overlap themselves.

use std::collections::HashMap;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::compile::resolve;
use crate::policy::{AddrMatch, Diagnostic, Policy, PortRange, Ports, Role, Rule, Severity};

/// An address side for comparison: `any`, or the union of `v4` and `v6` (aggregated: sorted,
/// disjoint, adjacent prefixes merged, so a prefix inside the union lies inside one of them);
/// `@interface` is a token that only equals itself.
#[derive(Clone, Debug, PartialEq)]
struct Side {
    any: bool,
    interface: bool,
    v4: Vec<Ipv4Net>,
    v6: Vec<Ipv6Net>,
}

fn side(policy: &Policy, m: &AddrMatch) -> Side {
    let interface = match m {
        AddrMatch::Any => false,
        AddrMatch::Terms(terms) => terms.iter().any(|t| match t {
            crate::policy::AddrTerm::Set(name) => {
                policy.set(name).is_some_and(|s| s.entries.contains(&crate::policy::SetEntry::Interface))
            }
            crate::policy::AddrTerm::Net(_) => false,
        }),
    };
    match resolve(policy, m, &[]) {
        None => Side { any: true, interface: false, v4: Vec::new(), v6: Vec::new() },
        Some(nets) => {
            let mut v4: Vec<Ipv4Net> =
                nets.iter().filter_map(|n| if let IpNet::V4(n) = n { Some(*n) } else { None }).collect();
            let mut v6: Vec<Ipv6Net> =
                nets.iter().filter_map(|n| if let IpNet::V6(n) = n { Some(*n) } else { None }).collect();
            v4 = Ipv4Net::aggregate(&v4);
            v6 = Ipv6Net::aggregate(&v6);
            v4.sort_by_key(|n| n.network());
            v6.sort_by_key(|n| n.network());
            Side { any: false, interface, v4, v6 }
        }
    }
}

/// A prefix as the interval of addresses it covers.
trait Span: Copy {
    type Addr: Ord + Copy;
    fn lo(&self) -> Self::Addr;
    fn hi(&self) -> Self::Addr;
}

impl Span for Ipv4Net {
    type Addr = u32;
    fn lo(&self) -> u32 {
        self.network().into()
    }
    fn hi(&self) -> u32 {
        self.broadcast().into()
    }
}

impl Span for Ipv6Net {
    type Addr = u128;
    fn lo(&self) -> u128 {
        self.network().into()
    }
    fn hi(&self) -> u128 {
        self.broadcast().into()
    }
}

/// Whether every prefix of `inner` lies inside `outer` (sorted and disjoint).
fn all_inside<N: Span>(outer: &[N], inner: &[N]) -> bool {
    inner.iter().all(|n| {
        let i = outer.partition_point(|m| m.lo() <= n.lo());
        i > 0 && outer[i - 1].hi() >= n.hi()
    })
}

/// Whether some address is in both (each sorted and disjoint).
fn intersect<N: Span>(a: &[N], b: &[N]) -> bool {
    let (small, large) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    small.iter().any(|n| {
        let i = large.partition_point(|m| m.lo() < n.lo());
        (i > 0 && large[i - 1].hi() >= n.lo()) || large.get(i).is_some_and(|m| m.lo() <= n.hi())
    })
}

impl Side {
    fn contains(&self, other: &Side) -> bool {
        if self.any {
            return true;
        }
        if other.any || (other.interface && !self.interface) {
            return false;
        }
        all_inside(&self.v4, &other.v4) && all_inside(&self.v6, &other.v6)
    }

    fn overlaps(&self, other: &Side) -> bool {
        self.any
            || other.any
            || (self.interface && other.interface)
            || intersect(&self.v4, &other.v4)
            || intersect(&self.v6, &other.v6)
    }
}

/// Whether every port of `b` is a port of `a` (whose ranges may touch or overlap each other).
fn ports_contain(a: &Ports, b: &Ports) -> bool {
    let mut merged: Vec<(u32, u32)> = a.0.iter().map(|r| (r.first as u32, r.last as u32)).collect();
    merged.sort_unstable();
    let mut runs: Vec<(u32, u32)> = Vec::with_capacity(merged.len());
    for (first, last) in merged {
        match runs.last_mut() {
            Some(run) if first <= run.1 + 1 => run.1 = run.1.max(last),
            _ => runs.push((first, last)),
        }
    }
    b.0.iter().all(|r| runs.iter().any(|&(first, last)| first <= r.first as u32 && r.last as u32 <= last))
}

fn ports_overlap(a: &Ports, b: &Ports) -> Option<PortRange> {
    a.0.iter().find_map(|x| {
        b.0.iter().find_map(|y| {
            let (first, last) = (x.first.max(y.first), x.last.min(y.last));
            (first <= last).then_some(PortRange { first, last })
        })
    })
}

/// Ranges at most this long are found by a window over ranges sorted by their first port; longer
/// ones (few in any real policy) are scanned.
const NARROW: u16 = 256;

/// Which rules of one (role, direction, protocol) share a port with a given range, without
/// comparing every pair of rules.
struct PortIndex {
    /// (first, last, rule position), sorted.
    narrow: Vec<(u16, u16, usize)>,
    /// The longest narrow range, minus one: how far before a port a range that holds it starts.
    reach: u16,
    wide: Vec<(u16, u16, usize)>,
}

impl PortIndex {
    fn new<'a>(rules: impl Iterator<Item = (usize, &'a Rule)>) -> Self {
        let (mut narrow, mut wide) = (Vec::new(), Vec::new());
        for (pos, rule) in rules {
            for r in &rule.ports.0 {
                let entry = (r.first, r.last, pos);
                if r.last - r.first < NARROW { narrow.push(entry) } else { wide.push(entry) }
            }
        }
        narrow.sort_unstable();
        let reach = narrow.iter().map(|e| e.1 - e.0).max().unwrap_or(0);
        PortIndex { narrow, reach, wide }
    }

    /// The positions before `before` with a range that shares a port with `ports`, ascending.
    fn earlier(&self, ports: &Ports, before: usize) -> Vec<usize> {
        let mut out = Vec::new();
        for r in &ports.0 {
            let from = self.narrow.partition_point(|e| e.0 < r.first.saturating_sub(self.reach));
            let to = self.narrow.partition_point(|e| e.0 <= r.last);
            let hits = self.narrow[from..to].iter().chain(&self.wide);
            out.extend(hits.filter(|e| e.2 < before && e.1 >= r.first && e.0 <= r.last).map(|e| e.2));
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The rule's own port list overlaps itself.
    PortsOverlap,
    /// An earlier rule matches exactly the same traffic.
    Duplicate,
    /// An earlier rule matches all of this rule's traffic and more.
    Shadowed,
    /// An earlier rule matches part of this rule's traffic.
    Overlap,
}

#[derive(Clone, Debug)]
pub struct Finding {
    pub kind: Kind,
    /// The later rule, the one the warning is about.
    pub rule: String,
    /// The earlier rule that takes (some of) its packets.
    pub by: Option<String>,
    pub diagnostic: Diagnostic,
}

/// Warnings for `policy check`, in source order.
pub fn findings(policy: &Policy) -> Vec<Finding> {
    let mut out = Vec::new();
    let warn = |kind: Kind, rule: &Rule, by: Option<&Rule>, message: String| Finding {
        kind,
        rule: rule.name.clone(),
        by: by.map(|b| b.name.clone()),
        diagnostic: Diagnostic { severity: Severity::Warning, origin: policy.origin.clone(), at: rule.at, message },
    };
    for rule in policy.rules.iter().filter(|r| r.enabled) {
        for (i, a) in rule.ports.0.iter().enumerate() {
            if let Some(b) = rule.ports.0[i + 1..].iter().find(|b| a.first <= b.last && b.first <= a.last) {
                out.push(warn(
                    Kind::PortsOverlap,
                    rule,
                    None,
                    format!("rule `{}`: ports {a} and {b} overlap", rule.name),
                ));
            }
        }
    }
    // Each distinct address match is resolved once; equal ids are equal sides.
    let mut ids: HashMap<&AddrMatch, usize> = HashMap::new();
    let mut sides: Vec<Side> = Vec::new();
    let mut side_of = |m| {
        *ids.entry(m).or_insert_with(|| {
            sides.push(side(policy, m));
            sides.len() - 1
        })
    };
    let rules: Vec<(&Rule, usize, usize)> =
        policy.rules.iter().filter(|r| r.enabled).map(|r| (r, side_of(&r.local), side_of(&r.remote))).collect();
    let mut groups: HashMap<_, Vec<usize>> = HashMap::new();
    for (i, (r, _, _)) in rules.iter().enumerate() {
        groups.entry((r.role, r.direction, r.protocol)).or_default().push(i);
    }
    // Few distinct sides, many rule pairs: each pair of sides is compared once.
    let mut contained: HashMap<(usize, usize), bool> = HashMap::new();
    let mut overlapped: HashMap<(usize, usize), bool> = HashMap::new();
    let mut contains =
        |a: usize, b: usize| a == b || *contained.entry((a, b)).or_insert_with(|| sides[a].contains(&sides[b]));
    let mut overlaps =
        |a: usize, b: usize| *overlapped.entry((a.min(b), a.max(b))).or_insert_with(|| sides[a].overlaps(&sides[b]));
    for role in Role::ALL {
        for members in groups.iter().filter(|(k, _)| k.0 == role).map(|(_, v)| v) {
            let index = PortIndex::new(members.iter().enumerate().map(|(pos, &i)| (pos, rules[i].0)));
            for (j, &li) in members.iter().enumerate() {
                let (later, ll, lr) = rules[li];
                for pos in index.earlier(&later.ports, j) {
                    let (earlier, el, er) = rules[members[pos]];
                    let Some(shared) = ports_overlap(&earlier.ports, &later.ports) else {
                        continue;
                    };
                    let covers = ports_contain(&earlier.ports, &later.ports) && contains(el, ll) && contains(er, lr);
                    let same =
                        covers && ports_contain(&later.ports, &earlier.ports) && contains(ll, el) && contains(lr, er);
                    let what = format!("{} {} {}", later.direction, later.protocol, shared);
                    let (kind, msg) = if same {
                        (
                            Kind::Duplicate,
                            format!(
                                "rule `{}` duplicates `{}` (line {}): the earlier rule counts all of its packets",
                                later.name, earlier.name, earlier.at.line
                            ),
                        )
                    } else if covers {
                        (
                            Kind::Shadowed,
                            format!(
                                "rule `{}` is shadowed by `{}` (line {}): every packet it matches is counted by the earlier rule",
                                later.name, earlier.name, earlier.at.line
                            ),
                        )
                    } else if overlaps(el, ll) && overlaps(er, lr) {
                        (
                            Kind::Overlap,
                            format!(
                                "rules `{}` (line {}) and `{}` overlap on {what}: packets matching both count under `{}`",
                                earlier.name, earlier.at.line, later.name, earlier.name
                            ),
                        )
                    } else {
                        continue;
                    };
                    out.push(warn(kind, later, Some(earlier), msg));
                    break;
                }
            }
        }
    }
    out.sort_by_key(|f| f.diagnostic.at);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse;

    fn rule(name: &str, ports: &str, local: &str, remote: &str) -> String {
        format!(
            "[[rule]]\nname = \"{name}\"\nrole = \"external\"\ndirection = \"inbound\"\nprotocol = \"tcp\"\n\
             ports = {ports}\nlocal = {local}\nremote = {remote}\n"
        )
    }

    fn messages(text: &str) -> Vec<String> {
        let p = parse(text, "p.toml").unwrap();
        findings(&p).iter().map(|f| f.diagnostic.to_string()).collect()
    }

    const SETS: &str =
        "[sets]\nedge = [\"192.0.2.10\", \"192.0.2.11\"]\nedge10 = [\"192.0.2.10\"]\nnet = [\"198.51.100.0/24\"]\n";

    #[test]
    fn shadowed_duplicate_and_overlap() {
        let mut text = SETS.to_string();
        text += &rule("wide", "\"400-500\"", "\"edge\"", "\"any\"");
        text += &rule("narrow", "443", "\"edge10\"", "\"net\"");
        text += &rule("dup", "\"400-500\"", "\"edge\"", "\"any\"");
        text += &rule("partial", "\"450-600\"", "\"edge10\"", "\"any\"");
        text += &rule("disjoint", "\"450-600\"", "[\"192.0.2.99\"]", "\"any\"");
        let m = messages(&text);
        assert_eq!(m.len(), 3, "{m:#?}");
        assert!(m[0].contains("warning: rule `narrow` is shadowed by `wide` (line 5)"), "{}", m[0]);
        assert!(m[1].contains("rule `dup` duplicates `wide`"), "{}", m[1]);
        assert!(m[2].contains("rules `wide` (line 5) and `partial` overlap on inbound tcp 450-500"), "{}", m[2]);
    }

    #[test]
    fn a_union_of_prefixes_covers_what_no_single_one_does() {
        let mut text = SETS.to_string();
        text += &rule("halves", "443", "\"any\"", "[\"198.51.100.0/25\", \"198.51.100.128/25\"]");
        text += &rule("whole", "443", "\"any\"", "[\"198.51.100.0/24\"]");
        text += &rule("v6-wide", "\"1-65535\"", "\"any\"", "[\"2001:db8::/32\"]");
        text += &rule("v6-inside", "[22, \"8000-8100\"]", "\"any\"", "[\"2001:db8:1::/48\"]");
        text += &rule("v6-partly", "\"9000-9001\"", "\"any\"", "[\"2001:db8::/31\"]");
        text += &rule("v6-beside", "9000", "\"any\"", "[\"2001:db9::/32\", \"198.51.100.0/24\"]");
        let m = messages(&text);
        assert_eq!(m.len(), 4, "{m:#?}");
        assert!(m[0].contains("rule `whole` duplicates `halves`"), "{}", m[0]);
        assert!(m[1].contains("rule `v6-inside` is shadowed by `v6-wide`"), "{}", m[1]);
        assert!(
            m[2].contains("rules `v6-wide` (line 21) and `v6-partly` overlap on inbound tcp 9000-9001"),
            "{}",
            m[2]
        );
        // Outside v6-wide (2001:db9::/32 is beside it), inside v6-partly's /31 but for its IPv4 half.
        assert!(m[3].contains("rules `v6-partly` (line 37) and `v6-beside` overlap on inbound tcp 9000"), "{}", m[3]);
    }

    #[test]
    fn containment_and_intersection_of_sorted_prefixes() {
        let nets = |v: &[&str]| -> Vec<Ipv4Net> { v.iter().map(|n| n.parse().unwrap()).collect() };
        let outer = nets(&["10.0.0.0/8", "192.0.2.0/24", "198.51.100.128/25"]);
        assert!(all_inside(&outer, &nets(&["10.1.0.0/16", "192.0.2.7/32", "198.51.100.200/32"])));
        assert!(!all_inside(&outer, &nets(&["198.51.100.0/24"])));
        assert!(!all_inside(&outer, &nets(&["9.255.255.255/32"])));
        assert!(all_inside(&outer, &[]));
        assert!(intersect(&outer, &nets(&["0.0.0.0/0"])));
        assert!(intersect(&outer, &nets(&["198.51.100.0/24"])));
        assert!(intersect(&nets(&["198.51.100.0/24"]), &outer));
        assert!(!intersect(&outer, &nets(&["11.0.0.0/8", "192.0.3.0/24", "198.51.100.0/25"])));
        assert!(!intersect(&outer, &[]));
    }

    #[test]
    fn overlapping_ports_within_a_rule() {
        let m = messages(&(SETS.to_string() + &rule("r", "[80, \"1-100\"]", "\"any\"", "\"any\"")));
        assert_eq!(m.len(), 1);
        assert!(m[0].contains("ports 80 and 1-100 overlap"));
    }

    #[test]
    fn clean_policy_has_no_findings() {
        let mut text = SETS.to_string();
        text += &rule("a", "443", "\"edge10\"", "\"any\"");
        text += &rule("b", "443", "[\"192.0.2.11\"]", "\"any\"");
        assert!(messages(&text).is_empty());
    }

    #[test]
    fn lync_template_warns_only_about_rows_the_document_lists_twice() {
        let p = crate::profile::policy(&Default::default()).unwrap();
        let f = findings(&p);
        let names: Vec<&str> = f.iter().map(|f| f.rule.as_str()).collect();
        assert_eq!(
            names,
            ["vip-av-stun-udp-in", "vip-av-stun-tcp-in", "ivip-stun-udp-in", "ivip-stun-tcp-in"],
            "{f:#?}"
        );
        assert!(f.iter().all(|f| f.kind == Kind::Duplicate));
        assert_eq!(f[0].by.as_deref(), Some("ext-av-stun-udp-in"));
    }
}
