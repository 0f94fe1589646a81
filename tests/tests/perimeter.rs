//! The perimeter placement (issue 17): edge-ctl on the Linux firewalls in front of the pool,
//! which forward to it, with `policy template --placement perimeter`. The lab is the document's
//! scenario (two nodes behind an nftables HLB with its SNAT) with an external firewall between
//! the internet and the HLB and an internal one between the HLB and the Front End/Director; the
//! nodes filter nothing themselves (they run Windows). Every inbound row of the four tables is
//! probed through the firewalls over IPv4 and IPv6, ports outside the matrix must not get
//! through, the outbound rows get their answers back, and SSH reaches the internal firewall
//! itself but no host behind it. Needs root.

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use edge_ctl::policy::{Placement, Role};
use edge_ctl::profile::{self, Options, addr};
use edge_tests::lab::reason_packets;
use edge_tests::lync::{CLIENT4, CLIENT6, FE4, FE6, LyncLab, conformance};
use edge_tests::net::{
    HeldConnection, Outcome, Servers, tcp_connect_bound, tcp_probe, tcp_probe_bound, udp_probe_bound,
};

const PARTNER4: &str = "192.0.2.60";
const PARTNER6: &str = "2001:db8:c::60";

fn at(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

/// One connection or datagram a node opens, from one of its addresses.
struct Out {
    what: &'static str,
    role: Role,
    src: String,
    to: SocketAddr,
    udp: bool,
    pass: bool,
}

/// The outbound rows of node 1, each family, through the firewalls: what the document allows
/// gets its answer back through the connection table; what it does not is dropped on the way out.
fn outbound_rows(lab: &LyncLab) {
    let mut probes = Vec::new();
    for v6 in [false, true] {
        let [access, webconf, av] = if v6 { addr::node_external6(1) } else { addr::node_external(1) };
        let internal = if v6 { addr::node_internal6(1) } else { addr::node_internal(1) };
        let (client, partner, fe) = if v6 { (CLIENT6, PARTNER6, FE6) } else { (CLIENT4, PARTNER4, FE4) };
        let mut out = |what, role, src: &String, to, udp, pass| {
            probes.push(Out { what, role, src: src.clone(), to, udp, pass });
        };
        let ext = Role::External;
        out("ext-access-http-out", ext, &access, at(client, 80), false, true);
        out("ext-access-dns-tcp-out", ext, &access, at(client, 53), false, true);
        out("ext-access-dns-udp-out", ext, &access, at(client, 53), true, true);
        out("ext-av-rtp-tcp-out", ext, &av, at(client, 50000), false, true);
        out("ext-av-rtp-udp-out", ext, &av, at(client, 50000), true, true);
        out("ext-av-stun-udp-out", ext, &av, at(client, 3478), true, true);
        out("ext-av-stun-tcp-out", ext, &av, at(client, 443), false, true);
        // Through the HLB, which source-NATs them to the Access Edge VIP.
        out("vip-access-sip-mtls-out", ext, &access, at(partner, 5061), false, true);
        out("vip-xmpp-out", ext, &access, at(partner, 5269), false, true);
        out("no row: access to 8080", ext, &access, at(client, 8080), false, false);
        out("no row: web conferencing out", ext, &webconf, at(client, 80), false, false);
        out("no row: A/V to DNS", ext, &av, at(client, 53), true, false);
        let int = Role::Internal;
        out("ivip-sip-mtls-out", int, &internal, at(fe, 5061), false, true);
        out("ivip-stun-tcp-out", int, &internal, at(fe, 443), false, true);
        out("no row: internal to 8080", int, &internal, at(fe, 8080), false, false);
    }
    // Every outbound row of the four tables is tried (the lab has every switch on).
    for row in profile::ROWS.iter().filter(|r| r.direction == "outbound") {
        assert!(probes.iter().any(|p| p.what == row.name), "no probe for the outbound row {}", row.name);
    }
    let _servers = [
        Servers::start(&lab.client, &[53, 80, 443, 8080, 50000], &[53, 3478, 50000]),
        Servers::start(&lab.partner, &[5061, 5269], &[]),
        Servers::start(&lab.fe, &[443, 5061, 8080], &[]),
    ];
    let dropped = |role: Role| -> u64 {
        lab.filters(role)
            .iter()
            .map(|(ns, iface)| reason_packets(&lab.lab.stats(ns, iface), "drops", "outbound", "egress-policy"))
            .sum()
    };
    let before = [dropped(Role::External), dropped(Role::Internal)];
    let node = &lab.edges[0];
    let mut wrong = Vec::new();
    for (i, p) in probes.iter().enumerate() {
        // A pinned source port below the A/V range: with the OCS 2007 rows on, a port the kernel
        // picks in 50000-59999 makes an A/V address's datagram an answer to that row.
        let src = SocketAddr::new(p.src.parse::<IpAddr>().unwrap(), 40000 + i as u16);
        let wait = Duration::from_millis(if p.pass { 3000 } else { 700 });
        let o = if p.udp { udp_probe_bound(node, src, p.to, wait) } else { tcp_probe_bound(node, src, p.to, wait) };
        if (o == Outcome::Answered) != p.pass {
            wrong.push(format!("{} {} -> {}: {o:?}", p.what, p.src, p.to));
        }
    }
    assert!(wrong.is_empty(), "outbound rows through the firewalls:\n{}", wrong.join("\n"));
    for (i, role) in [Role::External, Role::Internal].into_iter().enumerate() {
        let denied = probes.iter().filter(|p| p.role == role && !p.pass).count() as u64;
        let counted = dropped(role) - before[i];
        assert!(counted >= denied, "{role}: {counted} egress-policy drops for {denied} denied probes");
    }
}

/// The SSH failsafe admits SSH to the internal firewall's own addresses, never to the hosts it
/// forwards to; the external firewall has no failsafe.
fn ssh_reaches_the_firewall_only(lab: &LyncLab) {
    let [xfw, ifw] = lab.firewalls.as_ref().unwrap();
    let _servers =
        [Servers::start(ifw, &[22], &[]), Servers::start(xfw, &[22], &[]), Servers::start(&lab.edges[0], &[22], &[])];
    let wait = |pass: bool| Duration::from_millis(if pass { 3000 } else { 700 });
    let cases = [
        (&lab.fe, "198.51.100.97", true, "the internal firewall itself"),
        (&lab.fe, "2001:db8:1:f::1", true, "the internal firewall itself"),
        (&lab.fe, FE_BEHIND4, false, "a node behind the internal firewall"),
        (&lab.fe, FE_BEHIND6, false, "a node behind the internal firewall"),
        (&lab.client, "192.0.2.1", false, "the external firewall, from the internet"),
        (&lab.client, "2001:db8:c::1", false, "the external firewall, from the internet"),
    ];
    for (from, ip, pass, what) in cases {
        let o = tcp_probe(from, at(ip, 22), wait(pass));
        assert_eq!(o == Outcome::Answered, pass, "SSH to {what} ({ip}): {o:?}");
    }
}

/// HTTP connections (TCP 80, the CRL row) from node 1's Access Edge address to the client, one
/// per family, opened through the external firewall from source ports `first`, `first + 1`.
fn open_through_the_firewall(lab: &LyncLab, first: u16) -> Vec<(HeldConnection, std::net::TcpStream)> {
    let pairs = [(CLIENT4, addr::node_external(1)[0].clone()), (CLIENT6, addr::node_external6(1)[0].clone())];
    let mut open = Vec::new();
    for (i, (client, node)) in pairs.into_iter().enumerate() {
        let held = HeldConnection::listen_at(&lab.client, at(client, 80));
        let src = SocketAddr::new(node.parse().unwrap(), first + i as u16);
        let conn = tcp_connect_bound(&lab.edges[0], src, at(client, 80), Duration::from_secs(3)).expect("connect");
        held.accepted();
        open.push((held, conn));
    }
    open
}

/// The client's next data on each connection arrives, although node 1 sent nothing since.
fn the_clients_data_arrives(open: &mut [(HeldConnection, std::net::TcpStream)]) {
    for (held, conn) in open.iter_mut() {
        held.send(b"after attach");
        let mut buf = [0u8; 12];
        conn.read_exact(&mut buf).expect("data from the client arrives after attach");
        assert_eq!(&buf, b"after attach");
    }
}

/// Loads an nftables ruleset in a namespace.
fn nft(ns: &str, ruleset: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run nft");
    child.stdin.take().unwrap().write_all(ruleset.as_bytes()).unwrap();
    let out = child.wait_with_output().expect("nft");
    assert!(out.status.success(), "nft: {}", String::from_utf8_lossy(&out.stderr));
}

const FE_BEHIND4: &str = "198.51.100.21";
const FE_BEHIND6: &str = "2001:db8:1::21";

/// The whole perimeter: attach refuses the built-in policy on a forwarding interface, says it
/// routes and keeps the connections open through it working (seeded from the kernel's
/// connection tracking), then the four tables through both firewalls, with every switchable row on and then
/// with the default switches (rolled out by reload), the outbound rows and SSH.
#[test]
fn the_firewalls_in_front_of_the_pool_enforce_the_four_tables() {
    let mut lab =
        LyncLab::build(2, Options { placement: Placement::Perimeter, ocs2007: true, xmpp: true, ..Default::default() });
    assert_eq!((FE_BEHIND4, FE_BEHIND6), (addr::node_internal(1).as_str(), addr::node_internal6(1).as_str()));
    let [xfw, _] = lab.firewalls.clone().unwrap();
    if !Path::new("/etc/edge-ctl/policy.toml").exists() {
        let out = lab.lab.edge_ctl(&xfw, &["attach", "up0", "--role", "external"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("up0 forwards IPv4 and IPv6") && err.contains("--placement perimeter"), "{err}");
        assert!(lab.lab.edge_ctl_ok(&xfw, &["status"]).contains("not attached"), "nothing half-done");
    }
    // Connections node 1 opened through the external firewall before the filter goes on
    // (nftables there makes the kernel track them, as on any Linux firewall).
    nft(
        &xfw,
        "table inet fw {\n chain forward {\n type filter hook forward priority filter;\n ct state established,related accept\n }\n}\n",
    );
    let mut open = open_through_the_firewall(&lab, 41800);
    let policy = lab.policy_file.to_str().unwrap().to_string();
    let out = lab.lab.edge_ctl_ok(&xfw, &["attach", "up0", "--role", "external", "--policy", &policy]);
    assert!(out.contains("routing: up0 forwards IPv4 and IPv6"), "{out}");
    assert!(
        out.contains("2 connection(s) the hosts behind opened through this router, allowed by the outbound rules, kept working (seeded from the kernel's connection tracking)"),
        "{out}"
    );
    for (ns, iface) in lab.filters(Role::Internal) {
        lab.lab.edge_ctl_ok(&ns, &["attach", iface, "--role", "internal", "--policy", &policy]);
    }
    // The client's next data arrives although node 1 sent nothing since the attach.
    the_clients_data_arrives(&mut open);
    drop(open);
    let status = lab.lab.edge_ctl_ok(&xfw, &["status"]);
    assert!(status.contains("routing: forwards IPv4 and IPv6"), "{status}");
    let shown = lab.lab.edge_ctl_ok(&xfw, &["policy", "show", lab.policy_file.to_str().unwrap()]);
    assert!(shown.starts_with("Placement: perimeter"), "{shown}");

    conformance(&lab);
    outbound_rows(&lab);
    ssh_reaches_the_firewall_only(&lab);

    lab.reload_all(Options::default());
    assert_eq!(lab.policy.placement, Placement::Perimeter, "reload keeps the lab's placement");
    conformance(&lab);
}

/// Without connection tracking in the firewall's namespace (no ruleset there uses it), attach
/// cannot read the connections open through it, and picks their mid-stream TCP up for a
/// window instead: the client's data on a connection node 1 opened before arrives.
#[test]
fn forwarded_connections_are_picked_up_without_connection_tracking() {
    let lab = LyncLab::build(1, Options { placement: Placement::Perimeter, ..Default::default() });
    let [xfw, _] = lab.firewalls.clone().unwrap();
    let mut open = open_through_the_firewall(&lab, 41810);
    let policy = lab.policy_file.to_str().unwrap().to_string();
    let out = lab.lab.edge_ctl_ok(&xfw, &["attach", "up0", "--role", "external", "--policy", &policy]);
    assert!(out.contains("the kernel's connection tracking tracks nothing here"), "{out}");
    assert!(out.contains("for 60 s the filter picks up their mid-stream TCP"), "{out}");
    the_clients_data_arrives(&mut open);
    let stats = lab.lab.stats(&xfw, "up0");
    assert!(reason_packets(&stats, "passes", "inbound", "pickup") >= 2, "{stats}");
}
