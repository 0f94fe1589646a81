//! `cargo xtask demo`: a small lab that shows the filter passing and dropping real traffic.
//!
//! An edge node and an external client in two network namespaces, joined by a veth pair.
//! edge-ctl attaches to the edge's interface with the built-in lync2013-edge-hlb profile (service
//! addresses taken from the interface), servers listen on ports inside and outside the matrix,
//! and the client probes them all. Everything is removed at the end, also on failure.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use edge_tests::lab::Lab;
use edge_tests::net::{Outcome, Servers, tcp_probe, udp_probe};

struct Probe {
    proto: &'static str,
    port: u16,
    allowed: bool,
    why: &'static str,
}

const PROBES: &[Probe] = &[
    Probe {
        proto: "tcp",
        port: 443,
        allowed: true,
        why: "Access/SIP(TLS), Web Conferencing, A/V STUN/TURN over TCP",
    },
    Probe {
        proto: "tcp",
        port: 5061,
        allowed: true,
        why: "Access/SIP(MTLS), federation",
    },
    Probe {
        proto: "tcp",
        port: 5269,
        allowed: true,
        why: "XMPP proxy",
    },
    Probe {
        proto: "udp",
        port: 3478,
        allowed: true,
        why: "A/V STUN/MSTURN over UDP",
    },
    Probe {
        proto: "tcp",
        port: 22,
        allowed: false,
        why: "not in the matrix",
    },
    Probe {
        proto: "tcp",
        port: 80,
        allowed: false,
        why: "outbound only (CRL retrieval)",
    },
    Probe {
        proto: "tcp",
        port: 3389,
        allowed: false,
        why: "not in the matrix",
    },
    Probe {
        proto: "tcp",
        port: 5060,
        allowed: false,
        why: "not in the matrix",
    },
    Probe {
        proto: "tcp",
        port: 8080,
        allowed: false,
        why: "not in the matrix",
    },
    Probe {
        proto: "udp",
        port: 53,
        allowed: false,
        why: "outbound only (DNS)",
    },
    Probe {
        proto: "udp",
        port: 50000,
        allowed: false,
        why: "A/V media inbound: OCS 2007 federation only, off",
    },
];

fn main() -> ExitCode {
    let mut lab = Lab::new("demo");
    let edge = lab.netns("edge");
    let client = lab.netns("client");
    lab.veth((&edge, "ext0"), (&client, "cli0"));
    lab.addr(&edge, "ext0", "203.0.113.21/24");
    lab.addr(&edge, "ext0", "2001:db8:e::21/64");
    lab.addr(&client, "cli0", "203.0.113.200/24");
    lab.addr(&client, "cli0", "2001:db8:e::200/64");
    println!(
        "lab: edge node {edge} (ext0 203.0.113.21, 2001:db8:e::21), client {client} (203.0.113.200)\n"
    );

    println!("$ edge-ctl attach ext0 --role external");
    print!(
        "{}",
        lab.edge_ctl_ok(&edge, &["attach", "ext0", "--role", "external"])
    );
    println!();

    let tcp: Vec<u16> = PROBES
        .iter()
        .filter(|p| p.proto == "tcp")
        .map(|p| p.port)
        .collect();
    let udp: Vec<u16> = PROBES
        .iter()
        .filter(|p| p.proto == "udp")
        .map(|p| p.port)
        .collect();
    let servers = Servers::start(&edge, &tcp, &udp);

    println!(
        "{:<9} {:<16} {:<9} {:<9} WHY",
        "PROBE", "TO", "EXPECTED", "OBSERVED"
    );
    let mut failures = 0;
    for addr in ["203.0.113.21", "2001:db8:e::21"] {
        for p in PROBES {
            let to = SocketAddr::new(addr.parse().unwrap(), p.port);
            let wait = Duration::from_millis(if p.allowed { 2000 } else { 400 });
            let outcome = match p.proto {
                "tcp" => tcp_probe(&client, to, wait),
                _ => udp_probe(&client, to, wait),
            };
            let passed = outcome == Outcome::Answered;
            let ok = passed == p.allowed;
            failures += usize::from(!ok);
            println!(
                "{:<9} {:<16} {:<9} {:<9} {}{}",
                format!("{}/{}", p.proto, p.port),
                addr,
                if p.allowed { "pass" } else { "drop" },
                if passed { "passed" } else { "dropped" },
                p.why,
                if ok { "" } else { "   <-- MISMATCH" }
            );
        }
    }
    drop(servers);

    println!("\n$ edge-ctl stats ext0");
    print!("{}", lab.edge_ctl_ok(&edge, &["stats", "ext0"]));
    println!("\n$ edge-ctl detach ext0");
    print!("{}", lab.edge_ctl_ok(&edge, &["detach", "ext0"]));
    drop(lab);
    println!("lab removed");
    if failures > 0 {
        eprintln!("{failures} probe(s) did not behave as the matrix says");
        return ExitCode::FAILURE;
    }
    println!("every probe behaved as the matrix says");
    ExitCode::SUCCESS
}
