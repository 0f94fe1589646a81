//! Conformance: the document's scenario (two Edge Servers behind an nftables HLB with DNAT and
//! the documented SNAT) with edge-ctl on both interfaces of both nodes. Every inbound row of the
//! four tables is tried with real TCP connections and UDP datagrams over IPv4 and IPv6; ports
//! outside the matrix must not get through. Needs root.

use std::collections::BTreeMap;

use edge_ctl::policy::{Direction, Role};
use edge_ctl::profile::{self, Options};
use edge_tests::lync::{LyncLab, counting_rule, run_probes};
use edge_tests::net::Outcome;

/// Probes every inbound row and the ports around them under the lab's current policy; every
/// count is taken as a difference, so the same lab serves several policies.
fn conformance(lab: &LyncLab) {
    let probes = lab.probes();
    // The rule that counts each row that must pass, per role, and the drops per role, before.
    let mut rows: BTreeMap<(String, Role), u64> = BTreeMap::new();
    for p in probes.iter().filter(|p| p.expect_pass) {
        let rule = counting_rule(&lab.policy, p.row.unwrap().name);
        rows.entry((rule.clone(), p.role)).or_insert_with(|| lab.rule_total(p.role, &rule));
    }
    let drops: BTreeMap<Role, u64> = Role::ALL.iter().map(|r| (*r, lab.drop_total(*r, "policy-default"))).collect();
    let _servers = lab.servers(&probes);
    let outcomes = run_probes(&probes);

    let mut mismatches = Vec::new();
    for (p, o) in probes.iter().zip(&outcomes) {
        let passed = *o == Outcome::Answered;
        if passed != p.expect_pass {
            mismatches.push(format!(
                "{} -> {}: expected {}, got {o:?}",
                p.what,
                p.to,
                if p.expect_pass { "pass" } else { "drop" }
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} probes disagree with the matrix:\n{}",
        mismatches.len(),
        probes.len(),
        mismatches.join("\n")
    );
    // Every row that passed was counted by its rule (or the earlier rule it duplicates).
    for ((rule, role), before) in &rows {
        assert!(lab.rule_total(*role, rule) > *before, "rule {rule} ({role}) counted nothing");
    }
    // Every denied probe was dropped by the filter, not lost elsewhere: at least one
    // policy-default drop per denied probe on that side.
    for role in Role::ALL {
        let denied = probes.iter().filter(|p| !p.expect_pass && p.role == role).count() as u64;
        let dropped = lab.drop_total(role, "policy-default") - drops[&role];
        assert!(dropped >= denied, "{role}: {dropped} policy-default drops for {denied} denied probes");
    }
}

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
