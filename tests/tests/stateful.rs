//! Stateful filtering end to end: network namespaces, real sockets, IPv4 and IPv6. The edge's
//! own connections get their answers without opening source ports; spoofed "answers" do not get
//! in; egress is enforced; flows end and expire. Client source ports are pinned to 41000-41999,
//! outside the A/V range 50000-59999 that Linux's ephemeral ports overlap. Needs root.

use std::io::{Read, Write};
use std::time::Duration;

use edge_tests::lab::{EDGE, Lab, PEER, drop_packets, reason_packets, rule_packets};
use edge_tests::net::{
    HeldConnection, Outcome, Servers, at, send_frame, tcp_connect_from, tcp_probe, tcp_probe_from, udp_delayed_echo,
    udp_exchange_from, udp_probe_from,
};
use edge_tests::packet::{self, ACK, FIN, RST};

const ALLOW: Duration = Duration::from_secs(2);
const DENY: Duration = Duration::from_millis(500);

fn policy(egress: &str) -> String {
    format!(
        r#"
[sets]
me = ["@interface"]

[roles.external]
egress = "{egress}"

[conntrack]
udp = 2
tcp_closing = 2

[[rule]]
name = "tls-in"
role = "external"
direction = "inbound"
protocol = "tcp"
ports = 443
local = "me"

[[rule]]
name = "media-in"
role = "external"
direction = "inbound"
protocol = "udp"
ports = 50000
local = "me"

[[rule]]
name = "crl-out"
role = "external"
direction = "outbound"
protocol = "tcp"
ports = 80
local = "me"

[[rule]]
name = "sip-out"
role = "external"
direction = "outbound"
protocol = "tcp"
ports = 5061
local = "me"

[[rule]]
name = "dns-tcp-out"
role = "external"
direction = "outbound"
protocol = "tcp"
ports = 53
local = "me"

[[rule]]
name = "dns-udp-out"
role = "external"
direction = "outbound"
protocol = "udp"
ports = 53
local = "me"

[[rule]]
name = "stun-out"
role = "external"
direction = "outbound"
protocol = "udp"
ports = 3478
local = "me"
"#
    )
}

struct Setup {
    lab: Lab,
    edge: String,
    peer: String,
    file: std::path::PathBuf,
}

fn setup(tag: &str, egress: &str) -> Setup {
    let mut lab = Lab::new(tag);
    let (edge, peer) = lab.edge_and_peer();
    let file = lab.file("policy.toml", &policy(egress));
    Setup { lab, edge, peer, file }
}

impl Setup {
    fn attach(&self) {
        self.lab.edge_ctl_ok(
            &self.edge,
            &["attach", "edge0", "--role", "external", "--policy", self.file.to_str().unwrap()],
        );
    }
    fn stats(&self) -> serde_json::Value {
        self.lab.stats(&self.edge, "edge0")
    }
}

#[test]
fn answers_to_the_edges_own_connections_arrive() {
    let s = setup("ans", "enforce");
    s.attach();
    let _servers = Servers::start(&s.peer, &[80, 5061, 53], &[53, 3478]);
    for (i, peer) in PEER.iter().enumerate() {
        let base = 41000 + 100 * i as u16;
        assert_eq!(tcp_probe_from(&s.edge, base, at(peer, 80), ALLOW), Outcome::Answered, "CRL over TCP 80 to {peer}");
        assert_eq!(tcp_probe_from(&s.edge, base + 1, at(peer, 5061), ALLOW), Outcome::Answered, "SIP 5061 to {peer}");
        assert_eq!(tcp_probe_from(&s.edge, base + 2, at(peer, 53), ALLOW), Outcome::Answered, "DNS over TCP to {peer}");
        assert_eq!(udp_probe_from(&s.edge, base + 3, at(peer, 53), ALLOW), Outcome::Answered, "DNS over UDP to {peer}");
        assert_eq!(udp_probe_from(&s.edge, base + 4, at(peer, 3478), ALLOW), Outcome::Answered, "STUN to {peer}");
    }
    let st = s.stats();
    assert!(reason_packets(&st, "passes", "inbound", "conntrack") >= 10, "answers came in through the table");
    assert!(st["conntrack"]["created"].as_u64().unwrap() >= 10);
    assert_eq!(drop_packets(&st, "no-flow"), 0);
}

#[test]
fn spoofed_answers_and_source_ports_are_dropped_and_counted() {
    let s = setup("spf", "enforce");
    s.attach();
    let _servers = Servers::start(&s.edge, &[22, 8080], &[5000]);
    let before = s.stats();
    for edge in EDGE {
        for sport in [80u16, 443, 53] {
            for dport in [22, 8080] {
                assert_eq!(
                    tcp_probe_from(&s.peer, sport, at(edge, dport), DENY),
                    Outcome::Silent,
                    "SYN from {sport} to {edge}:{dport}"
                );
            }
        }
        assert_eq!(udp_probe_from(&s.peer, 53, at(edge, 5000), DENY), Outcome::Silent, "UDP from 53 to {edge}:5000");
    }
    // An ACK that pretends to answer a connection the edge never opened.
    let (edge_mac, peer_mac) = (s.lab.mac(&s.edge, "edge0"), s.lab.mac(&s.peer, "peer0"));
    for (edge, peer) in EDGE.iter().zip(PEER) {
        let ack = packet::tcp(peer.parse().unwrap(), edge.parse().unwrap(), 443, 41234, ACK);
        send_frame(&s.peer, "peer0", packet::with_macs(ack, edge_mac, peer_mac));
    }
    std::thread::sleep(Duration::from_millis(200));
    let after = s.stats();
    let delta = |r: &str| drop_packets(&after, r) - drop_packets(&before, r);
    assert!(delta("policy-default") >= 2 * (6 + 1), "SYNs and datagrams: {}", delta("policy-default"));
    assert_eq!(delta("no-flow"), 2, "the forged ACKs");
}

#[test]
fn replies_to_allowed_clients_pass_egress_and_unlisted_connections_do_not() {
    let s = setup("egr", "enforce");
    s.attach();
    let _edge_servers = Servers::start(&s.edge, &[443], &[]);
    let _peer_servers = Servers::start(&s.peer, &[8080], &[123]);
    for (edge, peer) in EDGE.iter().zip(PEER) {
        assert_eq!(tcp_probe(&s.peer, at(edge, 443), ALLOW), Outcome::Answered, "a client's TLS session to {edge}");
        assert_eq!(tcp_probe_from(&s.edge, 41500, at(peer, 8080), DENY), Outcome::Silent, "edge to {peer}:8080");
        assert_eq!(udp_probe_from(&s.edge, 41501, at(peer, 123), DENY), Outcome::Silent, "edge to {peer}:123");
    }
    let st = s.stats();
    assert!(reason_packets(&st, "passes", "outbound", "reply") >= 4, "server replies passed egress");
    assert!(reason_packets(&st, "drops", "outbound", "egress-policy") >= 4);
    assert_eq!(reason_packets(&st, "would_drop", "outbound", "egress-policy"), 0);
}

#[test]
fn monitor_mode_passes_and_counts_would_be_drops() {
    let s = setup("mon", "monitor");
    s.attach();
    let _peer_servers = Servers::start(&s.peer, &[8080], &[123]);
    for peer in PEER {
        assert_eq!(tcp_probe_from(&s.edge, 41600, at(peer, 8080), ALLOW), Outcome::Answered, "edge to {peer}:8080");
        assert_eq!(udp_probe_from(&s.edge, 41601, at(peer, 123), ALLOW), Outcome::Answered, "edge to {peer}:123");
    }
    let st = s.stats();
    assert!(reason_packets(&st, "would_drop", "outbound", "egress-policy") >= 4);
    assert_eq!(reason_packets(&st, "drops", "outbound", "egress-policy"), 0);
}

#[test]
fn flows_expire_and_rst_ends_them() {
    let s = setup("exp", "enforce");
    s.attach();
    // udp = 2 s: an answer after 3 s finds no flow; one at once does.
    let _late = udp_delayed_echo(&s.peer, 3478, Duration::from_secs(3));
    let _prompt = Servers::start(&s.peer, &[], &[53]);
    for peer in PEER {
        assert_eq!(udp_probe_from(&s.edge, 41700, at(peer, 53), ALLOW), Outcome::Answered);
        assert_eq!(
            udp_probe_from(&s.edge, 41701, at(peer, 3478), Duration::from_secs(4)),
            Outcome::Silent,
            "late answer from {peer}"
        );
    }
    assert!(s.stats()["conntrack"]["expired"].as_u64().unwrap() >= 2);

    // A RST ends the flow: a segment of that connection passes before it and not after.
    let (edge_mac, peer_mac) = (s.lab.mac(&s.edge, "edge0"), s.lab.mac(&s.peer, "peer0"));
    for (i, (edge, peer)) in EDGE.iter().zip(PEER).enumerate() {
        let port = 41800 + i as u16;
        let _held = HeldConnection::listen(&s.peer, 5061);
        let conn = tcp_connect_from(&s.edge, port, at(peer, 5061), ALLOW).expect("connect");
        let segment = packet::with_macs(
            packet::tcp(peer.parse().unwrap(), edge.parse().unwrap(), 5061, port, ACK),
            edge_mac,
            peer_mac,
        );
        let counts = || {
            let st = s.stats();
            (reason_packets(&st, "passes", "inbound", "conntrack"), drop_packets(&st, "no-flow"))
        };
        let (passed, noflow) = counts();
        send_frame(&s.peer, "peer0", segment.clone());
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(counts(), (passed + 1, noflow), "a segment of the open connection to {peer} passes");
        socket2::SockRef::from(&conn).set_linger(Some(Duration::ZERO)).unwrap();
        drop(conn); // The edge sends a RST.
        std::thread::sleep(Duration::from_millis(100));
        let (passed, noflow) = counts();
        send_frame(&s.peer, "peer0", segment);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(counts(), (passed, noflow + 1), "after the RST the same segment from {peer} is dropped");
    }
    assert!(s.stats()["conntrack"]["reset"].as_u64().unwrap() >= 2);
}

/// RSTs and FINs forged with wrong sequence numbers, as anyone who guesses a connection's ports
/// can send them, cut nothing however long the connection then idles (here longer than the
/// closing timeout, 2 s); a real close still ends the flow.
#[test]
fn blind_rst_and_fin_cut_no_connection() {
    let s = setup("bld", "enforce");
    s.attach();
    let (edge_mac, peer_mac) = (s.lab.mac(&s.edge, "edge0"), s.lab.mac(&s.peer, "peer0"));
    for (i, (edge, peer)) in EDGE.iter().zip(PEER).enumerate() {
        let port = 41900 + i as u16;
        let held = HeldConnection::listen(&s.peer, 5061);
        let mut conn = tcp_connect_from(&s.edge, port, at(peer, 5061), ALLOW).expect("connect");
        held.accepted();
        let (e, p): (std::net::IpAddr, std::net::IpAddr) = (edge.parse().unwrap(), peer.parse().unwrap());
        let spoof =
            |flags, seq| packet::with_macs(packet::tcp_seq(p, e, 5061, port, flags, seq, 1), edge_mac, peer_mac);
        let resets = s.stats()["conntrack"]["reset"].as_u64().unwrap();
        for seq in [1, 0x4000_0000, 0x8000_0000, 0xc000_0000] {
            send_frame(&s.peer, "peer0", spoof(RST, seq));
            send_frame(&s.peer, "peer0", spoof(RST | ACK, seq));
            send_frame(&s.peer, "peer0", spoof(FIN | ACK, seq));
        }
        std::thread::sleep(Duration::from_secs(3));
        held.send(b"still here");
        conn.set_read_timeout(Some(ALLOW)).unwrap();
        let mut buf = [0u8; 10];
        conn.read_exact(&mut buf).unwrap_or_else(|e| panic!("{peer}: the connection survives forged RST and FIN: {e}"));
        assert_eq!(&buf, b"still here");
        assert_eq!(s.stats()["conntrack"]["reset"].as_u64().unwrap(), resets, "no forged RST counted as a reset");
        // A real close: both FINs, then the closing timeout; a segment of it is then no-flow.
        drop(conn);
        drop(held);
        std::thread::sleep(Duration::from_secs(3));
        let noflow = drop_packets(&s.stats(), "no-flow");
        send_frame(&s.peer, "peer0", spoof(ACK, 5));
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(drop_packets(&s.stats(), "no-flow"), noflow + 1, "{peer}: the closed connection's flow is gone");
    }
}

/// Datagrams over the link's MTU travel in fragments, and later fragments follow their first
/// (`fragments = "track"`, the default): a 3000-byte DNS query and its 3000-byte answer (the
/// answer to a tracked flow), a 3000-byte datagram to an allowed inbound port and its echo (a
/// reply from an allowed port) all arrive, over IPv4 and IPv6; one to a denied port does not,
/// and its later fragments are `fragment` drops.
#[test]
fn fragmented_datagrams_of_allowed_flows_arrive() {
    let s = setup("frg", "enforce");
    s.attach();
    let _peer = Servers::start(&s.peer, &[], &[53]);
    let _edge = Servers::start(&s.edge, &[], &[50000, 50001]);
    let big: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    for (i, (edge, peer)) in EDGE.iter().zip(PEER).enumerate() {
        let port = 41750 + i as u16;
        assert_eq!(
            udp_exchange_from(&s.edge, port, at(peer, 53), big.clone(), ALLOW),
            Outcome::Answered,
            "a 3000-byte answer from {peer} to the edge's query"
        );
        assert_eq!(
            udp_exchange_from(&s.peer, port, at(edge, 50000), big.clone(), ALLOW),
            Outcome::Answered,
            "a 3000-byte datagram to {edge}'s allowed port and the echo"
        );
        let st = s.stats();
        let (denied, fragments) = (drop_packets(&st, "policy-default"), drop_packets(&st, "fragment"));
        assert_eq!(udp_exchange_from(&s.peer, port, at(edge, 50001), big.clone(), DENY), Outcome::Silent);
        let st = s.stats();
        assert_eq!(drop_packets(&st, "policy-default"), denied + 1, "the first fragment to {edge}:50001");
        assert!(drop_packets(&st, "fragment") > fragments, "its later fragments");
    }
    // Passed fragments are counted by the rule (or reason) that passed their first.
    let st = s.stats();
    assert!(rule_packets(&st, "media-in") >= 2 * 3, "three fragments per datagram: {st}");
    assert!(rule_packets(&st, "dns-udp-out") >= 2 * 3);
}

#[test]
fn attach_keeps_open_permitted_connections_working() {
    let s = setup("sed", "enforce");
    let mut open = Vec::new();
    for (i, peer) in PEER.iter().enumerate() {
        let held = HeldConnection::listen_at(&s.peer, at(peer, 5061));
        let conn = tcp_connect_from(&s.edge, 41900 + i as u16, at(peer, 5061), ALLOW).expect("connect");
        held.accepted();
        open.push((held, conn));
    }
    let out =
        s.lab.edge_ctl_ok(&s.edge, &["attach", "edge0", "--role", "external", "--policy", s.file.to_str().unwrap()]);
    assert!(out.contains("2 open connection(s) allowed by the outbound rules kept working"), "{out}");
    for (held, conn) in open.iter_mut() {
        held.send(b"after attach");
        let mut buf = [0u8; 12];
        conn.read_exact(&mut buf).expect("data from the peer arrives after attach");
        assert_eq!(&buf, b"after attach");
        conn.write_all(b"and back").unwrap();
    }
    let list = s.lab.edge_ctl_ok(&s.edge, &["conntrack", "edge0"]);
    assert!(list.contains("seeded at attach"), "{list}");
    let json: serde_json::Value =
        serde_json::from_str(&s.lab.edge_ctl_ok(&s.edge, &["conntrack", "edge0", "--json"])).unwrap();
    let entries = json["entries"].as_array().unwrap();
    assert_eq!(entries.iter().filter(|e| e["remote_port"] == 5061 && e["state"] == "established").count(), 2, "{json}");
    s.lab.edge_ctl_ok(&s.edge, &["conntrack", "flush", "edge0"]);
    let json: serde_json::Value =
        serde_json::from_str(&s.lab.edge_ctl_ok(&s.edge, &["conntrack", "edge0", "--json"])).unwrap();
    assert_eq!(json["entries"].as_array().unwrap().len(), 0);
    // Flushed: the peer's next data no longer gets in.
    let before = drop_packets(&s.stats(), "no-flow");
    open[0].0.send(b"x");
    std::thread::sleep(Duration::from_millis(300));
    assert!(drop_packets(&s.stats(), "no-flow") > before);
}

#[test]
fn failsafe_ssh_and_the_session_guard() {
    let s = setup("ssh", "enforce");
    let policy = s.file.to_str().unwrap();
    // edge-ctl run over SSH whose session arrives on edge0: the external role has no SSH rule.
    let out = s
        .lab
        .edge_ctl_command(&s.edge, &["attach", "edge0", "--role", "external", "--policy", policy])
        .env("SSH_CONNECTION", "192.0.2.2 40022 192.0.2.1 22")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("your SSH session (192.0.2.2 -> 192.0.2.1:22) arrives on edge0") && err.contains("--force"),
        "{err}"
    );
    assert!(s.lab.edge_ctl_ok(&s.edge, &["status"]).contains("not attached"));
    // The internal role has the failsafe: SSH passes there.
    let out = s
        .lab
        .edge_ctl_command(&s.edge, &["attach", "edge0", "--role", "internal", "--policy", policy])
        .env("SSH_CONNECTION", "192.0.2.2 40022 192.0.2.1 22")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let _servers = Servers::start(&s.edge, &[22], &[]);
    for edge in EDGE {
        assert_eq!(tcp_probe(&s.peer, at(edge, 22), ALLOW), Outcome::Answered, "management SSH to {edge}");
    }
    assert!(edge_tests::lab::rule_packets(&s.stats(), "failsafe-ssh") > 0);
    // Reload guards the session as attach does: a policy without the failsafe is refused over
    // SSH, and the live one stays; --force reloads anyway.
    let hash = || {
        serde_json::from_str::<serde_json::Value>(&s.lab.edge_ctl_ok(&s.edge, &["status", "--json"])).unwrap()
            ["interfaces"][0]["policy_hash"]
            .clone()
    };
    let before = hash();
    let text = std::fs::read_to_string(&s.file).unwrap();
    let no_failsafe = s.lab.file("no-failsafe.toml", &format!("{text}\n[failsafe]\nssh = false\n"));
    let reload = |force: bool| {
        let mut args = vec!["reload", "edge0", "--policy", no_failsafe.to_str().unwrap()];
        if force {
            args.push("--force");
        }
        s.lab.edge_ctl_command(&s.edge, &args).env("SSH_CONNECTION", "192.0.2.2 40022 192.0.2.1 22").output().unwrap()
    };
    let out = reload(false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("arrives on edge0") && err.contains("reloading would cut it") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(hash(), before, "the live policy stays");
    let out = reload(true);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_ne!(hash(), before);
}

/// Kernels before 6.6 have no TCX: the egress program goes on the clsact qdisc instead.
/// `EDGE_CTL_TC=clsact` forces that path here.
#[test]
fn clsact_fallback_enforces_and_detaches() {
    let s = setup("cls", "enforce");
    let out = s
        .lab
        .edge_ctl_command(&s.edge, &["attach", "edge0", "--role", "external", "--policy", s.file.to_str().unwrap()])
        .env("EDGE_CTL_TC", "clsact")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("clsact egress"));
    let filters = || {
        let out = std::process::Command::new("tc")
            .args(["-n", &s.edge, "filter", "show", "dev", "edge0", "egress"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(filters().contains("edge_tc_egress"), "{}", filters());
    let _servers = Servers::start(&s.peer, &[8080, 5061], &[]);
    assert_eq!(tcp_probe_from(&s.edge, 41950, at(PEER[0], 8080), DENY), Outcome::Silent);
    assert_eq!(tcp_probe_from(&s.edge, 41951, at(PEER[0], 5061), ALLOW), Outcome::Answered);
    // An upgrade replaces the filter's program in place: still one filter, still enforcing.
    let out = s.lab.edge_ctl_ok(&s.edge, &["upgrade", "edge0"]);
    let new_id = out.split("egress program (clsact filter) replaced by ").nth(1).unwrap_or_else(|| panic!("{out}"));
    let f = filters();
    assert_eq!(f.matches("handle 0xed").count(), 1, "{f}");
    assert!(f.contains(&format!(" id {} ", new_id.trim())), "the filter runs the new program {new_id}: {f}");
    assert_eq!(tcp_probe_from(&s.edge, 41953, at(PEER[0], 8080), DENY), Outcome::Silent);
    assert_eq!(tcp_probe_from(&s.edge, 41954, at(PEER[0], 5061), ALLOW), Outcome::Answered);
    s.lab.edge_ctl_ok(&s.edge, &["detach", "edge0"]);
    assert!(!filters().contains("edge_tc_egress"), "detach removes the filter: {}", filters());
    assert_eq!(tcp_probe_from(&s.edge, 41952, at(PEER[0], 8080), ALLOW), Outcome::Answered);

    // An attach killed after the filter went on: the next command takes the filter off.
    let child = s
        .lab
        .edge_ctl_command(&s.edge, &["attach", "edge0", "--role", "external", "--policy", s.file.to_str().unwrap()])
        .env("EDGE_CTL_TC", "clsact")
        .env("EDGE_CTL_STEP_DELAY_MS", "1000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = edge_tests::lab::KillOnDrop(child);
    // Attach's second step puts the egress filter on; killed in the pause after it.
    let (steps, other) = edge_tests::lab::wait_for_steps(&mut guard.0, 2, std::time::Duration::from_secs(120));
    assert_eq!(steps, 2, "the staged attach stopped early: {other}");
    assert!(filters().contains("edge_tc_egress"), "the staged attach put its filter on: {}", filters());
    drop(guard);
    assert!(s.lab.edge_ctl_ok(&s.edge, &["status"]).contains("not attached"));
    assert!(!filters().contains("edge_tc_egress"), "status removed the orphan filter: {}", filters());
}
