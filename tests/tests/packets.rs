//! The XDP filter through the real verifier and BPF_PROG_TEST_RUN: verdicts and counters for
//! hand-built frames. Needs root.

use std::net::IpAddr;

use edge_common::{DropReason, PassReason};
use edge_ctl::policy::{self, Role};
use edge_ctl::reference::{self, Decision, Frame, Payload};
use edge_tests::bpf::{Loaded, XDP_DROP, XDP_PASS};
use edge_tests::packet::{self, ACK, SYN, TCP, UDP};

const POLICY: &str = r#"
[sets]
edge = ["192.0.2.10", "2001:db8::10"]
peers = ["198.51.100.0/24", "2001:db8:1::/48"]

[[rule]]
name = "sip"
role = "external"
direction = "inbound"
protocol = "tcp"
ports = 5061
local = "edge"

[[rule]]
name = "av-media"
role = "external"
direction = "inbound"
protocol = "udp"
ports = "50000-59999"
local = "edge"

[[rule]]
name = "peers-only"
role = "external"
direction = "inbound"
protocol = "tcp"
ports = 8057
local = "edge"
remote = "peers"

[[rule]]
name = "dns-out"
role = "external"
direction = "outbound"
protocol = "udp"
ports = 53
local = "edge"
"#;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const EDGE4: &str = "192.0.2.10";
const EDGE6: &str = "2001:db8::10";
const CLIENT4: &str = "203.0.113.5";
const CLIENT6: &str = "2001:db8:ff::5";
const PEER4: &str = "198.51.100.7";
const PEER6: &str = "2001:db8:1::7";

fn load(text: &str) -> Loaded {
    let policy = policy::parse(text, "test.toml").unwrap();
    Loaded::ingress_only(&policy, Role::External, &[])
}

/// Runs a frame and checks verdict and the counter it must move (by exactly one packet and
/// the frame's bytes).
fn expect_rule(l: &Loaded, frame: &[u8], rule: &str) {
    let before = l.rule(rule);
    assert_eq!(l.run(frame), XDP_PASS, "expected pass by {rule}");
    let after = l.rule(rule);
    assert_eq!(after.packets, before.packets + 1, "{rule} packets");
    assert_eq!(after.bytes, before.bytes + frame.len() as u64, "{rule} bytes");
}

fn expect_drop(l: &Loaded, frame: &[u8], reason: DropReason) {
    let before = l.dropped(reason);
    assert_eq!(l.run(frame), XDP_DROP, "expected drop ({})", reason.name());
    let after = l.dropped(reason);
    assert_eq!(after.packets, before.packets + 1, "{} packets", reason.name());
    assert_eq!(after.bytes, before.bytes + frame.len() as u64);
}

fn expect_essential(l: &Loaded, frame: &[u8], reason: PassReason) {
    let before = l.passed(reason);
    assert_eq!(l.run(frame), XDP_PASS, "expected pass ({})", reason.name());
    assert_eq!(l.passed(reason).packets, before.packets + 1);
}

#[test]
fn allowed_and_denied_tcp_ipv4_and_ipv6() {
    let l = load(POLICY);
    for (edge, client) in [(EDGE4, CLIENT4), (EDGE6, CLIENT6)] {
        let (edge, client) = (ip(edge), ip(client));
        expect_rule(&l, &packet::tcp(client, edge, 40000, 5061, SYN), "sip");
        expect_rule(&l, &packet::tcp(client, edge, 40000, 5061, ACK), "sip");
        expect_drop(&l, &packet::tcp(client, edge, 40000, 5060, SYN), DropReason::PolicyDefault);
        expect_drop(&l, &packet::tcp(client, edge, 40000, 22, SYN), DropReason::PolicyDefault);
        // Right port, wrong protocol.
        expect_drop(&l, &packet::udp(client, edge, 40000, 5061), DropReason::PolicyDefault);
    }
}

#[test]
fn local_address_must_match() {
    let l = load(POLICY);
    expect_drop(&l, &packet::tcp(ip(CLIENT4), ip("192.0.2.11"), 40000, 5061, SYN), DropReason::PolicyDefault);
    expect_drop(&l, &packet::tcp(ip(CLIENT6), ip("2001:db8::11"), 40000, 5061, SYN), DropReason::PolicyDefault);
}

#[test]
fn port_range_edges() {
    let l = load(POLICY);
    for (edge, client) in [(EDGE4, CLIENT4), (EDGE6, CLIENT6)] {
        let (edge, client) = (ip(edge), ip(client));
        expect_drop(&l, &packet::udp(client, edge, 3478, 49999), DropReason::PolicyDefault);
        expect_rule(&l, &packet::udp(client, edge, 3478, 50000), "av-media");
        expect_rule(&l, &packet::udp(client, edge, 3478, 55555), "av-media");
        expect_rule(&l, &packet::udp(client, edge, 3478, 59999), "av-media");
        expect_drop(&l, &packet::udp(client, edge, 3478, 60000), DropReason::PolicyDefault);
        expect_drop(&l, &packet::tcp(client, edge, 3478, 50000, SYN), DropReason::PolicyDefault);
    }
}

#[test]
fn remote_sets_restrict_the_source() {
    let l = load(POLICY);
    expect_rule(&l, &packet::tcp(ip(PEER4), ip(EDGE4), 40000, 8057, SYN), "peers-only");
    expect_rule(&l, &packet::tcp(ip(PEER6), ip(EDGE6), 40000, 8057, SYN), "peers-only");
    expect_drop(&l, &packet::tcp(ip(CLIENT4), ip(EDGE4), 40000, 8057, SYN), DropReason::PolicyDefault);
    expect_drop(&l, &packet::tcp(ip(CLIENT6), ip(EDGE6), 40000, 8057, SYN), DropReason::PolicyDefault);
}

#[test]
fn outbound_rules_do_not_open_inbound_ports() {
    let l = load(POLICY);
    expect_drop(&l, &packet::udp(ip(CLIENT4), ip(EDGE4), 40000, 53), DropReason::PolicyDefault);
}

#[test]
fn essentials_pass_and_other_icmp_drops() {
    let l = load(POLICY);
    expect_essential(&l, &packet::pad(packet::arp()), PassReason::Arp);
    expect_essential(&l, &packet::icmp(ip(CLIENT6), ip(EDGE6), 135, 0), PassReason::Ndp);
    expect_essential(&l, &packet::icmp(ip(CLIENT6), ip(EDGE6), 136, 0), PassReason::Ndp);
    expect_essential(&l, &packet::icmp(ip(CLIENT6), ip(EDGE6), 133, 0), PassReason::Ndp);
    expect_essential(&l, &packet::icmp(ip(CLIENT6), ip(EDGE6), 143, 0), PassReason::Ndp);
    expect_drop(&l, &packet::icmp(ip(CLIENT4), ip(EDGE4), 8, 0), DropReason::Icmp);
    expect_drop(&l, &packet::icmp(ip(CLIENT6), ip(EDGE6), 128, 0), DropReason::Icmp);
}

/// ICMP errors inbound (path MTU included) are about the edge's own traffic: a packet it sent
/// on a connection an inbound rule allows (or of a tracked flow: the stateful suites), quoted
/// with the error's IP version, and addressed to that packet's sender.
#[test]
fn icmp_errors_must_be_about_the_edges_traffic() {
    let l = load(POLICY);
    let p = policy::parse(POLICY, "test.toml").unwrap();
    let reference = |frame: &[u8]| reference::decide_bytes(&p, Role::External, &[], policy::Direction::Inbound, frame);
    for (edge, client, router, other) in [
        (ip(EDGE4), ip(CLIENT4), ip("198.51.100.1"), ip("192.0.2.99")),
        (ip(EDGE6), ip(CLIENT6), ip("2001:db8:1::1"), ip("2001:db8::99")),
    ] {
        let v4 = edge.is_ipv4();
        let (too_big, unreachable) = if v4 { ((3, 4), (3, 3)) } else { ((2, 0), (1, 4)) };
        let error =
            |(kind, code): (u8, u8), to: IpAddr, about: &[u8]| packet::icmp_error(router, to, kind, code, about);
        // The edge's answer on the SIP connection a client opened (the sip rule), and its UDP
        // media (av-media): errors about them pass, from any router on the way.
        let answer = packet::tcp(edge, client, 5061, 40000, SYN | ACK);
        let media = packet::udp(edge, client, 50000, 40000);
        for (error, reason) in [
            (error(too_big, edge, &answer), PassReason::Pmtu),
            (error(too_big, edge, &media), PassReason::Pmtu),
            (error(unreachable, edge, &answer), PassReason::Related),
            (error(if v4 { (11, 0) } else { (3, 0) }, edge, &media), PassReason::Related),
        ] {
            expect_essential(&l, &error, reason);
            assert_eq!(reference(&error), Decision::Pass(reason), "the reference agrees");
        }
        // Not about the edge's traffic: no quote, a quote of the other IP version, of a
        // protocol the edge does not track, of a connection no inbound rule allows (the
        // edge's own DNS query: only a tracked flow explains that), addressed to someone else
        // than its sender, or quoting a packet from another address.
        let mut not_about_it = vec![
            packet::icmp(router, edge, too_big.0, too_big.1),
            packet::icmp(router, edge, unreachable.0, unreachable.1),
            error(too_big, edge, &packet::icmp(edge, client, if v4 { 8 } else { 128 }, 0)),
            error(too_big, edge, &packet::udp(edge, client, 40000, 53)),
            error(too_big, edge, &packet::tcp(edge, client, 5062, 40000, ACK)),
            error(too_big, other, &answer),
            error(unreachable, edge, &packet::tcp(other, client, 5061, 40000, ACK)),
        ];
        // The other family's header in this family's error (addresses of this one's length
        // cannot be built, so the version field lies).
        let mut lying = error(too_big, edge, &answer);
        lying[14 + if v4 { 20 } else { 40 } + 8] ^= 0x20;
        not_about_it.push(lying);
        for error in not_about_it {
            expect_drop(&l, &error, DropReason::IcmpUnrelated);
            assert_eq!(reference(&error), Decision::Drop(DropReason::IcmpUnrelated), "the reference agrees");
        }
    }
}

/// Neighbour discovery comes from the link (RFC 4861 hop limit 255, MLD hop limit 1, never in
/// a fragment: RFC 6980), and router advertisements and redirects are off on the external
/// role unless switched on (`essentials.router`), on by default on the internal one.
#[test]
fn neighbour_discovery_comes_from_the_link() {
    let l = load(POLICY);
    let (client, edge) = (ip(CLIENT6), ip(EDGE6));
    let with_hop_limit = |kind: u8, hops: u8| {
        let mut f = packet::icmp(client, edge, kind, 0);
        f[14 + 7] = hops;
        f
    };
    for (kind, wrong) in [(135, 64), (136, 254), (133, 1), (130, 255), (143, 2)] {
        expect_drop(&l, &with_hop_limit(kind, wrong), DropReason::NdpOffLink);
    }
    // In an atomic fragment (offset 0, no more) and in a first fragment.
    for frag in [0u16, 1] {
        let mut body = frag.to_be_bytes().to_vec();
        body.extend_from_slice(&[0, 0, 0, 9]);
        let v6 = packet::ipv6_ext(ip6(CLIENT6), ip6(EDGE6), &[(44, body)], packet::ICMPV6, &[135, 0, 0, 0, 0, 0, 0, 0]);
        let mut f = packet::ethernet(packet::ETH_IPV6, &v6);
        f[14 + 7] = 255;
        expect_drop(&l, &f, DropReason::NdpOffLink);
    }
    // Router advertisements and redirects: off on the external role, on on the internal one.
    for kind in [134, 137] {
        expect_drop(&l, &packet::icmp(client, edge, kind, 0), DropReason::EssentialOff);
    }
    let p = policy::parse(POLICY, "test.toml").unwrap();
    let internal = Loaded::ingress_only(&p, Role::Internal, &[]);
    let allowed = load(&format!("[roles.external]\nessentials = {{ router = true }}\n{POLICY}"));
    for kind in [134, 137] {
        expect_essential(&internal, &packet::icmp(client, edge, kind, 0), PassReason::Ndp);
        expect_essential(&allowed, &packet::icmp(client, edge, kind, 0), PassReason::Ndp);
        let d = reference::decide_bytes(
            &p,
            Role::External,
            &[],
            policy::Direction::Inbound,
            &packet::icmp(client, edge, kind, 0),
        );
        assert_eq!(d, Decision::Drop(DropReason::EssentialOff), "the reference agrees");
    }
}

/// Sources no packet on the wire can have (`martian`), on the plain path (TCP to an allowed
/// port) and the general one (ICMP, neighbour discovery), with the interface's own addresses;
/// `martians = "pass"` judges them like any packet.
#[test]
fn martian_sources_are_dropped() {
    let iface = [ip(EDGE4), ip("192.0.2.11"), ip(EDGE6), ip("2001:db8::11")];
    let p = policy::parse(POLICY, "test.toml").unwrap();
    let l = Loaded::ingress_only(&p, Role::External, &iface);
    let passing = load(&format!("[roles.external]\nmartians = \"pass\"\n{POLICY}"));
    let reference =
        |frame: &[u8]| reference::decide_bytes(&p, Role::External, &iface, policy::Direction::Inbound, frame);
    let martians = [
        "0.1.2.3",
        "127.0.0.1",
        "224.0.0.5",
        "239.255.255.250",
        "255.255.255.255",
        "192.0.2.11",
        EDGE4,
        "::",
        "::1",
        "ff02::1",
        "::ffff:192.0.2.1",
        "2001:db8::11",
        EDGE6,
    ];
    for src in martians.map(ip) {
        let edge = if src.is_ipv4() { ip(EDGE4) } else { ip(EDGE6) };
        let syn = packet::tcp(src, edge, 40000, 5061, SYN);
        expect_drop(&l, &syn, DropReason::Martian);
        assert_eq!(reference(&syn), Decision::Drop(DropReason::Martian), "{src}: the reference agrees");
        expect_drop(&l, &packet::icmp(src, edge, if src.is_ipv4() { 8 } else { 128 }, 0), DropReason::Martian);
        expect_rule(&passing, &syn, "sip");
    }
    // Neighbour discovery from :: is duplicate address detection; from ::1 it is a martian.
    expect_essential(&l, &packet::icmp(ip("::"), ip(EDGE6), 135, 0), PassReason::Ndp);
    expect_drop(&l, &packet::icmp(ip("::1"), ip(EDGE6), 135, 0), DropReason::Martian);
    // Discovery from :: to :: is judged as discovery (here: a router solicitation with the wrong
    // hop limit), by the filter and the reference alike (a differential seed found them apart).
    let mut rs = packet::icmp(ip("::"), ip("::"), 133, 4);
    rs[14 + 7] = 1;
    expect_drop(&l, &rs, DropReason::NdpOffLink);
    assert_eq!(reference(&rs), Decision::Drop(DropReason::NdpOffLink));
    // A packet to itself, from an address the interface does not know it has (LAND).
    let unaware = Loaded::ingress_only(&p, Role::External, &[]);
    for edge in [ip(EDGE4), ip(EDGE6)] {
        expect_drop(&unaware, &packet::tcp(edge, edge, 5061, 5061, SYN), DropReason::Martian);
    }
    // Next to the martian ranges: class E, this network's neighbours, link-local, IPv4-compatible.
    for src in [
        "1.0.0.1",
        "126.255.255.255",
        "128.0.0.1",
        "223.255.255.255",
        "240.0.0.1",
        "192.0.2.12",
        "fe80::1",
        "::2",
        "fe00::1",
    ]
    .map(ip)
    {
        let edge = if src.is_ipv4() { ip(EDGE4) } else { ip(EDGE6) };
        expect_rule(&l, &packet::tcp(src, edge, 40000, 5061, SYN), "sip");
    }
}

/// Extension headers no host accepts: a routing header of type 0 (RFC 5095), hop-by-hop
/// options after another header (RFC 8200). Type 2 and hop-by-hop first pass to the rules.
#[test]
fn ipv6_extension_headers_no_host_accepts() {
    let l = load(POLICY);
    let tcp = packet::tcp_header(40000, 5061, SYN);
    let frame = |headers: &[(u8, Vec<u8>)]| {
        packet::ethernet(packet::ETH_IPV6, &packet::ipv6_ext(ip6(CLIENT6), ip6(EDGE6), headers, TCP, &tcp))
    };
    expect_drop(&l, &frame(&[(43, vec![0, 1, 0, 0, 0, 0])]), DropReason::BadExtHeader);
    expect_drop(&l, &frame(&[(60, vec![]), (0, vec![])]), DropReason::BadExtHeader);
    expect_drop(&l, &frame(&[(0, vec![]), (0, vec![])]), DropReason::BadExtHeader);
    expect_rule(&l, &frame(&[(43, vec![2, 1, 0, 0, 0, 0])]), "sip");
    expect_rule(&l, &frame(&[(0, vec![]), (60, vec![]), (43, vec![4, 0])]), "sip");
}

#[test]
fn essentials_can_be_switched_off() {
    let text = format!("[roles.external]\nessentials = {{ arp = false, ndp = false, pmtu = false }}\n{POLICY}");
    let l = load(&text);
    expect_drop(&l, &packet::pad(packet::arp()), DropReason::EssentialOff);
    expect_drop(&l, &packet::icmp(ip(CLIENT6), ip(EDGE6), 135, 0), DropReason::EssentialOff);
    let answer4 = packet::tcp(ip(EDGE4), ip(CLIENT4), 5061, 40000, ACK);
    let answer6 = packet::tcp(ip(EDGE6), ip(CLIENT6), 5061, 40000, ACK);
    expect_drop(&l, &packet::icmp_error(ip(CLIENT4), ip(EDGE4), 3, 4, &answer4), DropReason::EssentialOff);
    expect_drop(&l, &packet::icmp_error(ip(CLIENT6), ip(EDGE6), 2, 0, &answer6), DropReason::EssentialOff);
}

#[test]
fn truncated_frames_have_a_named_drop_reason() {
    let l = load(POLICY);
    for (edge, client, l3_len) in [(EDGE4, CLIENT4, 20), (EDGE6, CLIENT6, 40)] {
        let full = packet::tcp(ip(client), ip(edge), 40000, 5061, SYN);
        assert_eq!(l.run(&full), XDP_PASS);
        // BPF_PROG_TEST_RUN refuses XDP input shorter than an Ethernet header (as no NIC
        // delivers one), so the cuts start at 14 bytes.
        for len in 14..full.len() {
            let cut = &full[..len];
            // Headers cut short are "truncated"; a whole IP header whose length field points
            // beyond the frame is "bad-header".
            let reason = if len < 14 + l3_len { DropReason::Truncated } else { DropReason::BadHeader };
            let before = l.dropped(reason).packets;
            assert_eq!(l.run(cut), XDP_DROP, "{len} bytes of {}", full.len());
            assert_eq!(l.dropped(reason).packets, before + 1, "{len} bytes: {}", reason.name());
        }
    }
}

#[test]
fn ipv4_options_are_skipped_by_ihl() {
    let l = load(POLICY);
    let tcp = packet::tcp_header(40000, 5061, SYN);
    for options in [&[1u8, 1, 1, 0][..], &[1; 40][..]] {
        let ipv4 = packet::ipv4_with([203, 0, 113, 5], [192, 0, 2, 10], TCP, options, 0, &tcp);
        expect_rule(&l, &packet::ethernet(packet::ETH_IPV4, &ipv4), "sip");
    }
    // The port at offset 20 is really option bytes: judged by the real TCP header.
    let denied = packet::tcp_header(40000, 22, SYN);
    let ipv4 = packet::ipv4_with([203, 0, 113, 5], [192, 0, 2, 10], TCP, &[0x13, 0xc5, 0x13, 0xc5], 0, &denied);
    expect_drop(&l, &packet::ethernet(packet::ETH_IPV4, &ipv4), DropReason::PolicyDefault);
}

#[test]
fn bogus_header_fields() {
    let l = load(POLICY);
    let good = packet::tcp(ip(CLIENT4), ip(EDGE4), 40000, 5061, SYN);
    let mut ihl4 = good.clone();
    ihl4[14] = 0x44;
    expect_drop(&l, &ihl4, DropReason::BadHeader);
    let mut version = good.clone();
    version[14] = 0x55;
    expect_drop(&l, &version, DropReason::BadHeader);
    let mut doff = good.clone();
    doff[14 + 20 + 12] = 4 << 4;
    expect_drop(&l, &doff, DropReason::BadHeader);
    let mut total = good.clone();
    total[16..18].copy_from_slice(&2000u16.to_be_bytes());
    expect_drop(&l, &total, DropReason::BadHeader);
    let mut v6len = packet::tcp(ip(CLIENT6), ip(EDGE6), 40000, 5061, SYN);
    v6len[18..20].copy_from_slice(&2000u16.to_be_bytes());
    expect_drop(&l, &v6len, DropReason::BadHeader);
}

/// TCP flag combinations no stack sends are dropped before any rule, even to an allowed port,
/// in both families (`tcp-flags`); the combinations stacks do send pass the rule.
#[test]
fn impossible_tcp_flags_are_dropped_before_the_rules() {
    use edge_tests::packet::{FIN, RST};
    const PSH: u8 = 0x08;
    const URG: u8 = 0x20;
    let l = load(POLICY);
    let p = policy::parse(POLICY, "test.toml").unwrap();
    for (edge, client) in [(EDGE4, CLIENT4), (EDGE6, CLIENT6)] {
        let (edge, client) = (ip(edge), ip(client));
        for flags in [SYN | FIN, SYN | RST, 0, FIN | PSH | URG, FIN, RST | FIN, PSH, SYN | RST | ACK, URG] {
            let frame = packet::tcp(client, edge, 40000, 5061, flags);
            expect_drop(&l, &frame, DropReason::TcpFlags);
            assert_eq!(
                reference::decide_bytes(&p, Role::External, &[], policy::Direction::Inbound, &frame),
                Decision::Drop(DropReason::TcpFlags),
                "the reference agrees on flags {flags:#04x}"
            );
        }
        for flags in [SYN, SYN | ACK, ACK, ACK | PSH, FIN | ACK, RST, RST | ACK, SYN | 0xc0] {
            expect_rule(&l, &packet::tcp(client, edge, 40000, 5061, flags), "sip");
        }
    }
}

/// The layer-4 header is read from the datagram the IP length declares, not from whatever the
/// frame holds after it: a TCP SYN or UDP header in the trailing bytes is `bad-header`.
#[test]
fn headers_past_the_datagram_are_bad() {
    let l = load(POLICY);
    let p = policy::parse(POLICY, "test.toml").unwrap();
    let syn = packet::tcp(ip(CLIENT4), ip(EDGE4), 40000, 5061, SYN);
    // IPv4 total length 20 and 22 (and 39: one byte short of the TCP header).
    for total in [20u16, 22, 39] {
        let mut f = syn.clone();
        f[16..18].copy_from_slice(&total.to_be_bytes());
        expect_drop(&l, &f, DropReason::BadHeader);
    }
    // TCP options that run past the datagram: data offset 6 with a 20-byte header.
    let mut options = syn.clone();
    options[14 + 20 + 12] = 6 << 4;
    expect_drop(&l, &options, DropReason::BadHeader);
    let udp = packet::udp(ip(CLIENT4), ip(EDGE4), 3478, 50000);
    let mut short = udp.clone();
    short[16..18].copy_from_slice(&24u16.to_be_bytes());
    expect_drop(&l, &short, DropReason::BadHeader);
    // IPv6 payload length 0 and 4.
    for payload in [0u16, 4] {
        for frame in
            [packet::tcp(ip(CLIENT6), ip(EDGE6), 40000, 5061, SYN), packet::udp(ip(CLIENT6), ip(EDGE6), 1, 50000)]
        {
            let mut f = frame;
            f[18..20].copy_from_slice(&payload.to_be_bytes());
            expect_drop(&l, &f, DropReason::BadHeader);
        }
    }
    // A fragment header whose datagram ends before the TCP header.
    let tcp = packet::tcp_header(40000, 5061, SYN);
    let first = vec![(44u8, vec![0, 0, 0, 0, 0, 9])];
    let v6 = packet::ipv6_ext(ip6(CLIENT6), ip6(EDGE6), &first, TCP, &tcp);
    let mut f = packet::ethernet(packet::ETH_IPV6, &v6);
    expect_rule(&l, &f, "sip");
    f[18..20].copy_from_slice(&12u16.to_be_bytes());
    expect_drop(&l, &f, DropReason::BadHeader);
    // The reference model agrees on every one of these shapes.
    let mut cut = syn.clone();
    cut[16..18].copy_from_slice(&22u16.to_be_bytes());
    assert_eq!(
        reference::decide_bytes(&p, Role::External, &[], policy::Direction::Inbound, &cut),
        Decision::Drop(DropReason::BadHeader)
    );
}

fn ip6(s: &str) -> [u8; 16] {
    s.parse::<std::net::Ipv6Addr>().unwrap().octets()
}

/// An IPv4 fragment of datagram `id`: `frag` holds the flags and offset field.
fn fragment4(id: u16, proto: u8, frag: u16, payload: &[u8]) -> Vec<u8> {
    let mut ip = packet::ipv4_with([203, 0, 113, 5], [192, 0, 2, 10], proto, &[], frag, payload);
    ip[4..6].copy_from_slice(&id.to_be_bytes());
    packet::ethernet(packet::ETH_IPV4, &ip)
}

/// An IPv6 fragment of datagram `id`: `frag` is the offset (8-byte units) shifted left by 3,
/// with the more-fragments bit.
fn fragment6(id: u32, next: u8, frag: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = frag.to_be_bytes().to_vec();
    body.extend_from_slice(&id.to_be_bytes());
    let v6 = packet::ipv6_ext(ip6(CLIENT6), ip6(EDGE6), &[(44, body)], next, payload);
    packet::ethernet(packet::ETH_IPV6, &v6)
}

/// Later fragments follow their first (`fragments = "track"`, the default): counted by the
/// rule that allowed it; those of a datagram whose first fragment was dropped or never seen
/// are dropped (`fragment`). Fragments that could rewrite or hide the header are
/// `tiny-fragment`. Both families.
#[test]
fn fragments() {
    let l = load(POLICY);
    let tcp = packet::tcp_header(40000, 5061, SYN);
    let denied = packet::tcp_header(40000, 5060, SYN);
    let data = [0u8; 16];
    // IPv4: first fragment (more fragments, offset 0) judged by its ports; its later fragments
    // are counted by the same rule.
    expect_rule(&l, &fragment4(7, TCP, 0x2000, &tcp), "sip");
    expect_rule(&l, &fragment4(7, TCP, 0x2000 | 3, &data), "sip");
    expect_rule(&l, &fragment4(7, TCP, 5, &data), "sip");
    // Another datagram, another protocol, a datagram whose first fragment was denied.
    expect_drop(&l, &fragment4(8, TCP, 3, &data), DropReason::Fragment);
    expect_drop(&l, &fragment4(7, UDP, 3, &data), DropReason::Fragment);
    expect_drop(&l, &fragment4(9, TCP, 0x2000, &denied), DropReason::PolicyDefault);
    expect_drop(&l, &fragment4(9, TCP, 3, &data), DropReason::Fragment);
    // Tiny fragments: TCP at offset 8 bytes, a first fragment without the whole TCP header.
    expect_drop(&l, &fragment4(7, TCP, 0x2000 | 1, &data), DropReason::TinyFragment);
    expect_drop(&l, &fragment4(10, TCP, 0x2000, &tcp[..12]), DropReason::TinyFragment);
    expect_drop(&l, &fragment4(10, UDP, 0x2000, &[0x0d, 0x96, 0xc3, 0x50]), DropReason::TinyFragment);

    // IPv6: the same with a fragment header.
    expect_rule(&l, &fragment6(0x1234_5678, TCP, 1, &tcp), "sip");
    expect_rule(&l, &fragment6(0x1234_5678, TCP, 3 << 3, &data), "sip");
    expect_drop(&l, &fragment6(0x1234_5679, TCP, 3 << 3, &data), DropReason::Fragment);
    expect_drop(&l, &fragment6(0x1234_5678, TCP, 1 << 3, &data), DropReason::TinyFragment);
    expect_drop(&l, &fragment6(0x1234_567a, TCP, 1, &tcp[..12]), DropReason::TinyFragment);
    assert_eq!(l.fragments().len(), 2, "one entry per first fragment that passed");

    // `drop` drops every later fragment; `pass` passes it, counted as a fragment.
    let dropping = load(&format!("[roles.external]\nfragments = \"drop\"\n{POLICY}"));
    expect_rule(&dropping, &fragment4(7, TCP, 0x2000, &tcp), "sip");
    expect_drop(&dropping, &fragment4(7, TCP, 3, &data), DropReason::Fragment);
    assert!(dropping.fragments().is_empty(), "nothing recorded without tracking");
    let passing = load(&format!("[roles.external]\nfragments = \"pass\"\n{POLICY}"));
    expect_essential(&passing, &fragment4(11, TCP, 3, &data), PassReason::Fragment);
    expect_essential(&passing, &fragment6(11, UDP, 3 << 3, &data), PassReason::Fragment);
}

#[test]
fn vlan_tagged_frames() {
    let l = load(POLICY);
    let frame = packet::tcp(ip(CLIENT4), ip(EDGE4), 40000, 5061, SYN);
    let tagged = packet::vlan(&frame, 0x8100, 100);
    expect_rule(&l, &tagged, "sip");
    let qinq = packet::vlan(&tagged, 0x88a8, 200);
    expect_rule(&l, &qinq, "sip");
    let denied = packet::vlan(&packet::udp(ip(CLIENT6), ip(EDGE6), 1, 49999), 0x8100, 7);
    expect_drop(&l, &denied, DropReason::PolicyDefault);
}

#[test]
fn other_ethertypes_and_protocols() {
    let l = load(POLICY);
    expect_drop(&l, &packet::pad(packet::ethernet(0x88cc, &[0; 46])), DropReason::EtherType);
    expect_drop(&l, &packet::ip(ip(CLIENT4), ip(EDGE4), 47, &[0; 8]), DropReason::L4Protocol);
    expect_drop(&l, &packet::ip(ip(CLIENT6), ip(EDGE6), 132, &[0; 12]), DropReason::L4Protocol);
    // ICMP inside IPv6 or ICMPv6 inside IPv4 is not what it claims.
    expect_drop(
        &l,
        &packet::ip(ip(CLIENT4), ip(EDGE4), packet::ICMPV6, &[135, 0, 0, 0, 0, 0, 0, 0]),
        DropReason::L4Protocol,
    );
}

/// The kernel agrees with the reference model on the Lync profile for every rule's ports and
/// their neighbours, over both families.
#[test]
fn kernel_agrees_with_reference_on_the_lync_profile() {
    let p = edge_ctl::profile::policy(&Default::default()).unwrap();
    for role in Role::ALL {
        let l = Loaded::ingress_only(&p, role, &[]);
        let locals: Vec<IpAddr> = match role {
            Role::External => {
                ["203.0.113.21", "203.0.113.22", "203.0.113.23", "203.0.113.99", "2001:db8:e::21", "2001:db8:e::23"]
                    .iter()
                    .map(|s| ip(s))
                    .collect()
            }
            Role::Internal => ["198.51.100.21", "198.51.100.99", "2001:db8:1::21"].iter().map(|s| ip(s)).collect(),
        };
        let remotes: Vec<IpAddr> =
            ["203.0.113.10", "203.0.113.11", "192.0.2.77", "198.51.100.101", "2001:db8:e::10", "2001:db8:ff::1"]
                .iter()
                .map(|s| ip(s))
                .collect();
        let mut ports: Vec<u16> = vec![22, 80, 3389, 5060, 8080];
        for r in &p.rules {
            for range in &r.ports.0 {
                ports.extend([range.first.saturating_sub(1), range.first, range.last, range.last.saturating_add(1)]);
            }
        }
        ports.sort();
        ports.dedup();
        let mut checked = 0;
        for &local in &locals {
            for &remote in remotes.iter().filter(|r| r.is_ipv4() == local.is_ipv4()) {
                for &port in &ports {
                    for (proto, protocol) in [(TCP, policy::Protocol::Tcp), (UDP, policy::Protocol::Udp)] {
                        let frame = if proto == TCP {
                            packet::tcp(remote, local, 40000, port, SYN)
                        } else {
                            packet::udp(remote, local, 40000, port)
                        };
                        let want = reference::decide(
                            &p,
                            role,
                            &[],
                            policy::Direction::Inbound,
                            &Frame::Ip {
                                src: remote,
                                dst: local,
                                payload: Payload::Ports { protocol, sport: 40000, dport: port, tcp_flags: packet::SYN },
                            },
                        );
                        let before = match &want {
                            Decision::Rule(name) => l.rule(name).packets,
                            _ => 0,
                        };
                        let verdict = l.run(&frame);
                        let expected = if want.passes() { XDP_PASS } else { XDP_DROP };
                        assert_eq!(
                            verdict, expected,
                            "{role} {protocol} {remote} -> {local}:{port}: reference says {want:?}"
                        );
                        if let Decision::Rule(name) = want {
                            assert_eq!(l.rule(&name).packets, before + 1, "{name} counted");
                        }
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 500, "{checked}");
    }
}

/// A class's first rule is tried by its hosts written out (`ClassEntry::first`) before the
/// set arithmetic: either host of a side, "any" on a side, a first rule that fails and one
/// after it that decides, and a first rule with no host of the packet's family.
#[test]
fn first_rule_hosts_and_the_rules_after_it() {
    let l = load(
        r#"
[sets]
pool = ["192.0.2.10", "192.0.2.20", "2001:db8::10", "2001:db8::20"]
second = ["192.0.2.20", "2001:db8::20"]
vip = ["198.51.100.1", "2001:db8:1::1"]
v4only = ["192.0.2.10"]

[[rule]]
name = "from-vip"
role = "external"
direction = "inbound"
protocol = "tcp"
ports = 5061
local = "pool"
remote = "vip"

[[rule]]
name = "to-second"
role = "external"
direction = "inbound"
protocol = "tcp"
ports = 5061
local = "second"

[[rule]]
name = "stun"
role = "external"
direction = "inbound"
protocol = "udp"
ports = 3478

[[rule]]
name = "v4-first"
role = "external"
direction = "inbound"
protocol = "tcp"
ports = 5070
local = "v4only"

[[rule]]
name = "anyone"
role = "external"
direction = "inbound"
protocol = "tcp"
ports = 5070
"#,
    );
    for (first, second, vip, client) in [
        ("192.0.2.10", "192.0.2.20", "198.51.100.1", CLIENT4),
        ("2001:db8::10", "2001:db8::20", "2001:db8:1::1", CLIENT6),
    ] {
        let (first, second, vip, client) = (ip(first), ip(second), ip(vip), ip(client));
        expect_rule(&l, &packet::tcp(vip, first, 40000, 5061, SYN), "from-vip");
        expect_rule(&l, &packet::tcp(vip, second, 40000, 5061, SYN), "from-vip");
        expect_rule(&l, &packet::tcp(client, second, 40000, 5061, SYN), "to-second");
        expect_drop(&l, &packet::tcp(client, first, 40000, 5061, SYN), DropReason::PolicyDefault);
        expect_rule(&l, &packet::udp(client, vip, 40000, 3478), "stun");
    }
    expect_rule(&l, &packet::tcp(ip(CLIENT4), ip("192.0.2.10"), 40000, 5070, SYN), "v4-first");
    expect_rule(&l, &packet::tcp(ip(CLIENT4), ip("192.0.2.20"), 40000, 5070, SYN), "anyone");
    expect_rule(&l, &packet::tcp(ip(CLIENT6), ip("2001:db8::10"), 40000, 5070, SYN), "anyone");
}
