//! Conformance: the document's scenario (two Edge Servers behind an nftables HLB with DNAT and
//! the documented SNAT) with edge-ctl on both interfaces of both nodes. Every inbound row of the
//! four tables is tried with real TCP connections and UDP datagrams over IPv4 and IPv6; ports
//! outside the matrix must not get through. Needs root.

use std::collections::BTreeMap;

use edge_ctl::policy::{Direction, Role};
use edge_ctl::profile::{self, Options};
use edge_tests::lync::{LyncLab, counting_rule, run_probes};
use edge_tests::net::Outcome;

fn conformance(options: Options) {
    let lab = LyncLab::build(2, options);
    lab.attach_all();
    let probes = lab.probes();
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
    let mut rows: BTreeMap<(&str, Role), ()> = BTreeMap::new();
    for p in probes.iter().filter(|p| p.expect_pass) {
        rows.insert((p.row.unwrap().name, p.role), ());
    }
    for (row, role) in rows.keys() {
        let rule = counting_rule(&lab.policy, row);
        assert!(lab.rule_total(*role, &rule) > 0, "row {row}: rule {rule} counted nothing");
    }
    // Every denied probe was dropped by the filter, not lost elsewhere: at least one
    // policy-default drop per denied probe on that side.
    for role in Role::ALL {
        let denied = probes.iter().filter(|p| !p.expect_pass && p.role == role).count() as u64;
        let drops = lab.drop_total(role, "policy-default");
        assert!(drops >= denied, "{role}: {drops} policy-default drops for {denied} denied probes");
    }
}

#[test]
fn every_inbound_row_passes_with_all_switchable_rows_on() {
    conformance(Options { ocs2007: true, xmpp: true, ..Default::default() });
}

#[test]
fn default_profile_keeps_ocs2007_rows_closed_and_xmpp_switchable() {
    // Defaults: OCS 2007 rows off (their probes must be dropped); XMPP off here to show the switch.
    let options = Options { ocs2007: false, xmpp: false, ..Default::default() };
    // Rows switched off are probed and must be dropped: there are some of each kind.
    for switch in [profile::Switch::Ocs2007, profile::Switch::Xmpp] {
        assert!(profile::ROWS.iter().any(|r| r.switch == switch && r.direction == "inbound"), "{switch:?} rows");
    }
    conformance(options);
}

/// The outbound rows are compiled, counted and shown; their enforcement is the stateful issue.
#[test]
fn outbound_rows_are_compiled_and_shown() {
    let lab = LyncLab::build(1, Options::default());
    lab.attach_all();
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
