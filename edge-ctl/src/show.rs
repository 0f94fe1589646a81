//! `policy show`: the policy as a table in the vendor document's own form:
//! Role/Protocol/TCP or UDP/Port, Source IP address, Destination IP address, Notes.

use std::fmt::Write as _;

use crate::policy::{AddrMatch, Direction, Policy, Role, Rule};

/// The document's first column: "Access/SIP(MTLS)/TCP/5061".
pub fn label(rule: &Rule) -> String {
    let proto = rule.protocol.as_str().to_uppercase();
    let ports = rule.ports.to_string().replace(',', ", ");
    match &rule.service {
        Some(s) => format!("{s}/{proto}/{ports}"),
        None => format!("{proto}/{ports}"),
    }
}

fn addresses(m: &AddrMatch, edge_side: bool, role: Role) -> String {
    match m {
        AddrMatch::Any if edge_side => format!("Edge {role} interface (any address)"),
        AddrMatch::Any => "Any".to_string(),
        AddrMatch::Terms(_) => m.to_string(),
    }
}

/// (source, destination) as the document writes them: inbound traffic comes from the remote
/// side to the edge, outbound from the edge to the remote side.
pub fn source_destination(rule: &Rule) -> (String, String) {
    let local = addresses(&rule.local, true, rule.role);
    let remote = addresses(&rule.remote, false, rule.role);
    match rule.direction {
        Direction::Inbound => (remote, local),
        Direction::Outbound => (local, remote),
    }
}

/// The table for one role or both.
pub fn render(policy: &Policy, role: Option<Role>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Placement: {} ({})\n", policy.placement.as_str(), policy.placement.describe());
    for r in Role::ALL.into_iter().filter(|r| role.is_none_or(|x| x == *r)) {
        let rules: Vec<&Rule> = policy.rules.iter().filter(|x| x.role == r).collect();
        let _ = writeln!(
            out,
            "{} interface ({} rules, {} enabled)",
            capitalize(r.as_str()),
            rules.len(),
            rules.iter().filter(|x| x.enabled).count()
        );
        let rows: Vec<[String; 5]> = rules
            .iter()
            .map(|x| {
                let (src, dst) = source_destination(x);
                let state = if x.enabled { String::new() } else { " (off)".into() };
                [format!("{}{state}", x.name), label(x), src, dst, x.note.clone().unwrap_or_default()]
            })
            .collect();
        let header = ["Rule", "Role/Protocol/TCP or UDP/Port", "Source IP address", "Destination IP address", "Notes"];
        let width = |i: usize| rows.iter().map(|r| r[i].chars().count()).chain([header[i].len()]).max().unwrap_or(0);
        let w: Vec<usize> = (0..4).map(width).collect();
        let line = |cols: [&str; 5]| {
            format!(
                "  {:<a$}  {:<b$}  {:<c$}  {:<d$}  {}",
                cols[0],
                cols[1],
                cols[2],
                cols[3],
                cols[4],
                a = w[0],
                b = w[1],
                c = w[2],
                d = w[3]
            )
        };
        let _ = writeln!(out, "{}", line(header).trim_end());
        for row in &rows {
            let _ = writeln!(out, "{}", line([&row[0], &row[1], &row[2], &row[3], &row[4]]).trim_end());
        }
        out.push('\n');
    }
    out
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_form() {
        let p = crate::profile::policy(&Default::default()).unwrap();
        let t = render(&p, Some(Role::External));
        assert!(t.starts_with("Placement: node (on an edge node's interface"), "{t}");
        assert!(t.contains("\n\nExternal interface (19 rules, 16 enabled)"), "{t}");
        assert!(!t.contains("Internal interface"));
        let line = t.lines().find(|l| l.contains("vip-access-sip-mtls-in")).unwrap();
        assert!(line.contains("Access/SIP(MTLS)/TCP/5061"), "{line}");
        assert!(line.contains("access_edge_vip") && line.contains("access_edge"), "{line}");
        let out = t.lines().find(|l| l.contains("ext-access-http-out")).unwrap();
        // Outbound: the edge is the source.
        let src = out.find("access_edge").unwrap();
        assert!(src < out.find("Any").unwrap(), "{out}");
        assert!(t.lines().any(|l| l.contains("ext-av-rtp-udp-in (off)")));
        assert!(render(&p, None).contains("Internal interface (15 rules, 15 enabled)"), "the rows and the failsafe");
    }

    /// At the perimeter the VIP rows are the document's columns: Any to the VIP.
    #[test]
    fn perimeter_form() {
        let options = crate::profile::Options { placement: crate::policy::Placement::Perimeter, ..Default::default() };
        let p = crate::profile::policy(&options).unwrap();
        let t = render(&p, None);
        assert!(t.starts_with("Placement: perimeter (on the firewall in front of the pool"), "{t}");
        let cells = |name: &str| -> Vec<String> {
            let line = t.lines().find(|l| l.trim_start().starts_with(&format!("{name} "))).unwrap();
            line.split("  ").map(str::trim).filter(|c| !c.is_empty()).map(String::from).collect()
        };
        assert_eq!(cells("vip-access-sip-tls-in")[2..4], ["Any", "access_edge_vip"]);
        assert_eq!(cells("vip-access-sip-mtls-out")[2..4], ["access_edge_vip, access_edge", "federated_partners"]);
        assert_eq!(cells("vip-av-stun-udp-in")[2..4], ["Any", "av_edge_vip"]);
        assert_eq!(cells("ext-av-stun-udp-in")[2..4], ["Any", "av_edge"]);
        assert_eq!(cells("ivip-sip-avauth-in")[2..4], ["Any", "edge_internal_vip"]);
        assert_eq!(cells("failsafe-ssh")[2..4], ["Any", "@interface"]);
    }
}
