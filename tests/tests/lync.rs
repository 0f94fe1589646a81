//! Conformance: the document's scenario (two Edge Servers behind an nftables HLB with DNAT and
//! the documented SNAT) with edge-ctl on both interfaces of both nodes. Every inbound row of the
//! four tables is tried with real TCP connections and UDP datagrams over IPv4 and IPv6; ports
//! outside the matrix must not get through. Needs root.

use edge_ctl::policy::{Direction, Role};
use edge_ctl::profile::{self, Options};
use edge_tests::lync::{LyncLab, conformance};

/// The document's matrix on one lab (two nodes, both interfaces attached once): every inbound
/// row with all switchable rows on; then the default profile, rolled out by `reload`, which
/// keeps the OCS 2007 rows closed (XMPP off here too, to show that switch: its probes must be
/// dropped); then the outbound rows as compiled and shown. One lab, because each attach costs
/// two programs' verification, which is most of this suite's time under emulation.
#[test]
fn every_row_of_the_four_tables_under_each_switch() {
    let mut lab = LyncLab::build(2, Options { ocs2007: true, xmpp: true, ..Default::default() });
    lab.attach_all();
    conformance(&lab);

    // Rows switched off are probed and must be dropped: there are some of each kind.
    for switch in [profile::Switch::Ocs2007, profile::Switch::Xmpp] {
        assert!(profile::ROWS.iter().any(|r| r.switch == switch && r.direction == "inbound"), "{switch:?} rows");
    }
    lab.reload_all(Options { ocs2007: false, xmpp: false, ..Default::default() });
    conformance(&lab);

    // The outbound rows are compiled, counted and shown; their enforcement is the stateful suites'.
    for (role, iface) in [(Role::External, "ext0"), (Role::Internal, "int0")] {
        let stats = lab.lab.stats(&lab.edges[0], iface);
        let listed: Vec<&str> = stats["rules"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["direction"] == "outbound")
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        let expected: Vec<&str> =
            lab.policy.rules_of(role).filter(|r| r.direction == Direction::Outbound).map(|r| r.name.as_str()).collect();
        assert_eq!(listed, expected);
        assert!(!expected.is_empty());
    }
    let shown = lab.lab.edge_ctl_ok(&lab.edges[0], &["policy", "show", lab.policy_file.to_str().unwrap()]);
    for row in profile::ROWS {
        assert!(shown.contains(row.name), "policy show lists {}", row.name);
    }
}
