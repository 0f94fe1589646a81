//! Findings about a valid policy that are worth a warning: rules that can never count a packet
//! because an earlier rule takes all of it (shadowed), exact duplicates, rules that share part of
//! their traffic with an earlier one (overlap), and port lists that overlap themselves.

use ipnet::IpNet;

use crate::compile::resolve;
use crate::policy::{AddrMatch, Diagnostic, Policy, PortRange, Ports, Role, Rule, Severity};

/// An address side for comparison: `None` is any; `@interface` is a token that only equals itself.
#[derive(Clone, Debug, PartialEq)]
struct Side {
    any: bool,
    interface: bool,
    nets: Vec<IpNet>,
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
        None => Side { any: true, interface: false, nets: Vec::new() },
        Some(nets) => Side { any: false, interface, nets },
    }
}

impl Side {
    fn contains(&self, other: &Side) -> bool {
        if self.any {
            return true;
        }
        if other.any || (other.interface && !self.interface) {
            return false;
        }
        other.nets.iter().all(|n| self.nets.iter().any(|m| m.contains(n)))
    }

    fn overlaps(&self, other: &Side) -> bool {
        self.any
            || other.any
            || (self.interface && other.interface)
            || self.nets.iter().any(|a| other.nets.iter().any(|b| a.contains(b) || b.contains(a)))
    }
}

fn ports_contain(a: &Ports, b: &Ports) -> bool {
    b.0.iter().all(|r| (r.first..=r.last).all(|p| a.contains(p)))
}

fn ports_overlap(a: &Ports, b: &Ports) -> Option<PortRange> {
    a.0.iter().find_map(|x| {
        b.0.iter().find_map(|y| {
            let (first, last) = (x.first.max(y.first), x.last.min(y.last));
            (first <= last).then_some(PortRange { first, last })
        })
    })
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
    for role in Role::ALL {
        let rules: Vec<&Rule> = policy.rules_of(role).collect();
        for (j, later) in rules.iter().enumerate() {
            let (ll, lr) = (side(policy, &later.local), side(policy, &later.remote));
            for earlier in &rules[..j] {
                if earlier.direction != later.direction || earlier.protocol != later.protocol {
                    continue;
                }
                let Some(shared) = ports_overlap(&earlier.ports, &later.ports) else {
                    continue;
                };
                let (el, er) = (side(policy, &earlier.local), side(policy, &earlier.remote));
                let covers = ports_contain(&earlier.ports, &later.ports) && el.contains(&ll) && er.contains(&lr);
                let same =
                    covers && ports_contain(&later.ports, &earlier.ports) && ll.contains(&el) && lr.contains(&er);
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
                } else if el.overlaps(&ll) && er.overlaps(&lr) {
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
