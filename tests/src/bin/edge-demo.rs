//! `cargo xtask demo`: the document's scenario, live.
//!
//! Two Edge Servers behind a hardware load balancer (nftables: DNAT from the VIPs, SNAT for the
//! Access and Web Conferencing Edge, none for A/V), an external client, a federated partner and
//! an internal Front End/Director host, each in its own network namespace. edge-ctl is attached
//! to both interfaces of both nodes with the lync2013-edge-hlb profile. A probe tries every
//! inbound row of the four tables and ports outside the matrix, over IPv4 and IPv6, and prints
//! expected against observed; then the counters per rule. Everything is removed at the end.
//!
//! `--placement perimeter` (`cargo xtask demo --placement perimeter`): the nodes filter nothing;
//! an external firewall between the internet and the HLB and an internal one between the HLB
//! and the Front End run edge-ctl with the perimeter template, and the same probes go through
//! them.

use std::collections::BTreeMap;
use std::process::ExitCode;

use edge_ctl::policy::{Placement, Role};
use edge_ctl::profile::Options;
use edge_tests::lync::{LyncLab, run_probes};
use edge_tests::net::Outcome;

fn main() -> ExitCode {
    let placement = match std::env::args().skip_while(|a| a != "--placement").nth(1).as_deref() {
        None | Some("node") => Placement::Node,
        Some("perimeter") => Placement::Perimeter,
        Some(other) => {
            eprintln!("--placement {other}: expected node or perimeter");
            return ExitCode::FAILURE;
        }
    };
    let perimeter = placement == Placement::Perimeter;
    println!(
        "Building the lab: client, partner, {}HLB (nftables), edge1, edge2, {}Front End ...",
        if perimeter { "external firewall, " } else { "" },
        if perimeter { "internal firewall, " } else { "" }
    );
    let lab = LyncLab::build(2, Options { placement, ..Options::default() });
    println!(
        "HLB VIPs 203.0.113.10 (Access, SNAT), .11 (Web Conferencing, SNAT), .12 (A/V, no SNAT), internal 198.51.100.10"
    );
    println!("edge1 ext0 203.0.113.21-23  int0 198.51.100.21   edge2 ext0 203.0.113.31-33  int0 198.51.100.22");
    if perimeter {
        println!("external firewall: up0 toward the internet; internal firewall: dn0 toward the Front End");
        println!("(placement perimeter: the nodes filter nothing, the firewalls in front of them do)");
    }
    println!();

    let file = if perimeter { "perimeter.toml" } else { "lync.toml" };
    let policy = lab.policy_file.to_str().unwrap();
    for role in Role::ALL {
        for (ns, iface) in lab.filters(role) {
            let host = if lab.edges.contains(&ns) {
                format!("edge{}", lab.edges.iter().position(|e| *e == ns).unwrap() + 1)
            } else if role == Role::External {
                "external-fw".to_string()
            } else {
                "internal-fw".to_string()
            };
            println!("{host}$ edge-ctl attach {iface} --role {role} --policy {file}");
            print!("  {}", lab.lab.edge_ctl_ok(&ns, &["attach", iface, "--role", role.as_str(), "--policy", policy]));
        }
    }

    let probes = lab.probes();
    let servers = lab.servers(&probes);
    let outcomes = run_probes(&probes);
    drop(servers);

    println!("\n{:<46} {:<22} {:<9} {:<9}", "ROW / PROBE", "TO", "EXPECTED", "OBSERVED");
    let mut failures = 0;
    for (p, o) in probes.iter().zip(&outcomes) {
        let passed = *o == Outcome::Answered;
        let ok = passed == p.expect_pass;
        failures += usize::from(!ok);
        println!(
            "{:<46} {:<22} {:<9} {:<9}{}",
            p.what,
            p.to.to_string(),
            if p.expect_pass { "pass" } else { "drop" },
            if passed { "passed" } else { "dropped" },
            if ok { "" } else { "  <-- MISMATCH" }
        );
    }

    println!("\nPackets counted per rule ({}):", if perimeter { "both firewalls" } else { "both nodes" });
    let mut totals: BTreeMap<(Role, String), u64> = BTreeMap::new();
    for role in Role::ALL {
        for rule in lab.policy.rules_of(role) {
            totals.insert((role, rule.name.clone()), lab.rule_total(role, &rule.name));
        }
    }
    for ((role, name), packets) in &totals {
        println!("  {:<9} {:<26} {:>8}", role.as_str(), name, packets);
    }
    for role in Role::ALL {
        println!(
            "  {:<9} {:<26} {:>8}",
            role.as_str(),
            "dropped: policy-default",
            lab.drop_total(role, "policy-default")
        );
    }

    let (ns, iface) = lab.filters(Role::External).remove(0);
    println!("\n{}$ edge-ctl stats {iface}", if perimeter { "external-fw" } else { "edge1" });
    print!("{}", lab.lab.edge_ctl_ok(&ns, &["stats", iface]));
    drop(lab);
    println!("\nlab removed");
    if failures > 0 {
        eprintln!("{failures} of {} probes did not behave as the matrix says", probes.len());
        return ExitCode::FAILURE;
    }
    println!("all {} probes behaved as the matrix says", probes.len());
    ExitCode::SUCCESS
}
