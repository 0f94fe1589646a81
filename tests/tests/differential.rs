//! The kernel programs against the reference model (`edge_ctl::reference`): random policies and
//! random frames, valid and mangled, through BPF_PROG_TEST_RUN; the verdict and the counter that
//! moves (deciding rule, pass reason or drop reason) must equal the reference's. At least
//! 100,000 cases per run (`EDGE_DIFF_CASES=N` sets another number; the kernel matrix's guests
//! run 30,000). A failure prints the seed; `EDGE_DIFF_SEED=<seed>` replays it.
//! Also: every truncation of every supported frame type. Needs root.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use edge_common::{Counter, DropKind, DropReason, PassReason};
use edge_ctl::compile::{self, SlotMap};
use edge_ctl::policy::{self, Direction, EgressMode, Policy, Role};
use edge_ctl::reference::{self, Decision};
use edge_tests::bpf::{Loaded, TC_PASS, XDP_PASS};
use edge_tests::packet::{self, ACK, FIN, RST, SYN};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const V4: [&str; 6] = ["192.0.2.1", "192.0.2.2", "192.0.2.77", "198.51.100.7", "198.51.100.200", "203.0.113.5"];
const V6: [&str; 5] = ["2001:db8::1", "2001:db8::2", "2001:db8::4d", "2001:db8:1::7", "2001:db8:ff::5"];
// Host addresses too, so that classes check from none to several hosts in place (see
// `edge_common::INLINE_HOSTS`) and fall back to the host tables and the trie beyond that.
const NETS: [&str; 14] = [
    "192.0.2.0/24",
    "192.0.2.0/25",
    "192.0.2.1/32",
    "192.0.2.2/32",
    "198.51.100.7/32",
    "2001:db8::2/128",
    "2001:db8::4d/128",
    "198.51.100.0/24",
    "198.51.100.0/28",
    "2001:db8::/64",
    "2001:db8::/126",
    "2001:db8:1::/48",
    "203.0.113.0/24",
    "0.0.0.0/0",
];
const PORTS: [u16; 14] = [22, 53, 80, 443, 3478, 4443, 5060, 5061, 5062, 8057, 23456, 50000, 55555, 59999];
const INTERFACE: [&str; 2] = ["192.0.2.1", "2001:db8::1"];

fn pick<'a, T>(rng: &mut SmallRng, items: &'a [T]) -> &'a T {
    &items[rng.gen_range(0..items.len())]
}

fn ports_expr(rng: &mut SmallRng) -> String {
    let one = |rng: &mut SmallRng| -> String {
        if rng.gen_bool(0.3) {
            let a = *pick(rng, &PORTS);
            let b = a.saturating_add(rng.gen_range(0..3000));
            format!("\"{a}-{b}\"")
        } else {
            pick(rng, &PORTS).to_string()
        }
    };
    if rng.gen_bool(0.3) { format!("[{}, {}]", one(rng), one(rng)) } else { one(rng) }
}

/// A random policy over a small address and port universe, so rules and packets meet.
fn random_policy(rng: &mut SmallRng) -> String {
    let mut s = String::from("[sets]\n");
    let sets = ["s0", "s1", "s2", "s3"];
    for name in sets {
        let n = rng.gen_range(1..=3);
        let entries: Vec<String> = (0..n).map(|_| format!("\"{}\"", pick(rng, &NETS))).collect();
        s += &format!("{name} = [{}]\n", entries.join(", "));
    }
    s += "me = [\"@interface\"]\n";
    for role in ["external", "internal"] {
        s += &format!(
            "[roles.{role}]\nessentials = {{ arp = {}, ndp = {}, pmtu = {} }}\nmode = \"{}\"\nfragments = \"{}\"\nmartians = \"{}\"\negress = \"enforce\"\n",
            rng.gen_bool(0.8),
            rng.gen_bool(0.8),
            rng.gen_bool(0.8),
            if rng.gen_bool(0.15) { "audit" } else { "enforce" },
            *pick(rng, &["track", "track", "drop", "pass"]),
            *pick(rng, &["drop", "drop", "pass"]),
        );
    }
    s += &format!("[failsafe]\nssh = {}\n", rng.gen_bool(0.5));
    for i in 0..rng.gen_range(1..=12) {
        let addr = |rng: &mut SmallRng| -> String {
            match rng.gen_range(0..4) {
                0 => "\"any\"".into(),
                1 => format!("\"{}\"", pick(rng, &sets)),
                2 => "\"me\"".into(),
                _ => format!("[\"{}\"]", pick(rng, &NETS)),
            }
        };
        s += &format!(
            "[[rule]]\nname = \"r{i}\"\nrole = \"{}\"\ndirection = \"{}\"\nprotocol = \"{}\"\nports = {}\nlocal = {}\nremote = {}\nenabled = {}\n",
            if rng.gen_bool(0.8) { "external" } else { "internal" },
            if rng.gen_bool(0.6) { "inbound" } else { "outbound" },
            if rng.gen_bool(0.5) { "tcp" } else { "udp" },
            ports_expr(rng),
            addr(rng),
            addr(rng),
            rng.gen_bool(0.9),
        );
    }
    s
}

/// Martian sources, and neighbours of them that are not (class E, link-local).
const ODD4: [&str; 7] = ["0.0.0.0", "0.1.2.3", "127.0.0.1", "224.0.0.1", "239.1.1.1", "255.255.255.255", "240.0.0.1"];
const ODD6: [&str; 6] = ["::", "::1", "ff02::1", "::ffff:192.0.2.2", "fe80::1", "::2"];

fn addr(rng: &mut SmallRng, v6: bool) -> IpAddr {
    if rng.gen_bool(0.05) {
        return pick(rng, if v6 { &ODD6[..] } else { &ODD4[..] }).parse().unwrap();
    }
    if v6 {
        IpAddr::V6(pick(rng, &V6).parse::<Ipv6Addr>().unwrap())
    } else {
        IpAddr::V4(pick(rng, &V4).parse::<Ipv4Addr>().unwrap())
    }
}

/// An ICMP error's quote: mostly a TCP/UDP packet between the error's addresses (either way
/// round, so it is about traffic either side sent), sometimes of other addresses, the other IP
/// version, another protocol, IPv4 options, or cut short.
fn quote(rng: &mut SmallRng, v6: bool, src: IpAddr, dst: IpAddr, port: &dyn Fn(&mut SmallRng) -> u16) -> Vec<u8> {
    let v6 = if rng.gen_bool(0.05) { !v6 } else { v6 };
    let (a, b) = match rng.gen_range(0..5) {
        0 => (src, dst),
        1..=3 => (dst, src),
        _ => (addr(rng, v6), addr(rng, v6)),
    };
    let (a, b) = if a.is_ipv6() == v6 { (a, b) } else { (addr(rng, v6), addr(rng, v6)) };
    let proto = *pick(rng, &[6u8, 6, 17, 17, 1]);
    let ports = [port(rng).to_be_bytes(), port(rng).to_be_bytes()].concat();
    let l4 = [&ports[..], &[0; 4]].concat();
    let packet = match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let options = if rng.gen_bool(0.1) { vec![1; 4] } else { vec![] };
            packet::ipv4_with(a.octets(), b.octets(), proto, &options, 0, &l4)
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => packet::ipv6_with(a.octets(), b.octets(), proto, &l4),
        _ => unreachable!("one family"),
    };
    let keep = if rng.gen_bool(0.1) { rng.gen_range(0..packet.len()) } else { packet.len() };
    packet[..keep].to_vec()
}

/// A random frame: mostly well-formed TCP/UDP, some ICMP, ARP, other protocols, VLAN tags,
/// IPv4 options, IPv6 extension headers, fragments.
fn random_frame(rng: &mut SmallRng) -> Vec<u8> {
    let v6 = rng.gen_bool(0.4);
    let (src, dst) = (addr(rng, v6), addr(rng, v6));
    let port = |rng: &mut SmallRng| if rng.gen_bool(0.8) { *pick(rng, &PORTS) } else { rng.r#gen() };
    let l4: (u8, Vec<u8>) = match rng.gen_range(0..10) {
        0..=3 => {
            // Mostly what stacks send, some of what scanners and attackers do (SYN+FIN,
            // SYN+RST, none, xmas, FIN alone), and random bytes.
            let flags = match rng.gen_range(0..10) {
                0 => *pick(rng, &[SYN | FIN, SYN | RST, 0, FIN | 0x08 | 0x20, FIN, RST | FIN]),
                1 => rng.r#gen(),
                _ => *pick(rng, &[SYN, SYN, ACK, SYN | ACK, RST, FIN | ACK, RST | ACK, ACK | 0x08]),
            };
            (6, packet::tcp_header(port(rng), port(rng), flags))
        }
        4..=5 => (17, packet::udp_header(port(rng), port(rng), b"data")),
        6..=7 => {
            let proto = if v6 { 58 } else { 1 };
            // Errors of both families (v4: 3, 11, 12; v6: 1-4) half the time.
            let kind = *pick(rng, &[0u8, 8, 128, 130, 133, 135, 136, 143, 1, 2, 2, 2, 3, 3, 3, 4, 11, 12]);
            let mut body = vec![kind, *pick(rng, &[0u8, 3, 4, 4]), 0, 0, 0, 0, 0, 0];
            if rng.gen_bool(0.7) {
                body.extend_from_slice(&quote(rng, v6, src, dst, &port));
            }
            (proto, body)
        }
        8 => (*pick(rng, &[47u8, 50, 132, 1, 58]), vec![0; 12]),
        _ => (6, packet::tcp_header(port(rng), port(rng), SYN)),
    };
    let mut frame = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let options: Vec<u8> = if rng.gen_bool(0.1) { vec![1; 4 * rng.gen_range(1..=10)] } else { vec![] };
            let frag = match rng.gen_range(0..10) {
                0 => 0x2000,
                1 => rng.gen_range(1..0x1fff),
                _ => 0,
            };
            packet::ethernet(packet::ETH_IPV4, &packet::ipv4_with(s.octets(), d.octets(), l4.0, &options, frag, &l4.1))
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut headers = Vec::new();
            for _ in 0..rng.gen_range(0..=5) {
                if rng.gen_bool(0.6) {
                    break;
                }
                let kind = *pick(rng, &[0u8, 43, 60, 44]);
                let body = if kind == 44 {
                    // Offset (8-byte units) and the more-fragments flag: first fragments,
                    // atomic ones, later ones (offset 1 among them).
                    let more = rng.gen_range(0..2u16);
                    let off: u16 = if rng.gen_bool(0.7) { more } else { rng.gen_range(1..100) << 3 | more };
                    let mut b = off.to_be_bytes().to_vec();
                    b.extend_from_slice(&[0, 0, 0, 1]);
                    b
                } else {
                    // A routing header's first body byte is its type: 0 (RH0) is refused.
                    let mut body = vec![0; rng.gen_range(1..20)];
                    body[0] = *pick(rng, &[0u8, 2, 3, 4]);
                    body
                };
                headers.push((kind, body));
            }
            let mut f =
                packet::ethernet(packet::ETH_IPV6, &packet::ipv6_ext(s.octets(), d.octets(), &headers, l4.0, &l4.1));
            // Hop limits: neighbour discovery from the link has 255 (MLD 1), a forged one not.
            f[14 + 7] = *pick(rng, &[255u8, 255, 1, 64]);
            f
        }
        _ => unreachable!(),
    };
    // Lie about the datagram's length: an IP length field shorter than what the frame holds,
    // so the layer-4 header may lie past the datagram.
    if rng.gen_bool(0.08) {
        let (at, header) = if v6 { (18, 0) } else { (16, (frame[14] & 0x0f) as usize * 4) };
        let held = (frame.len() - 14 - if v6 { 40 } else { 0 }) as u16;
        let lie = (header as u16 + rng.gen_range(0..=24)).min(held);
        frame[at..at + 2].copy_from_slice(&lie.to_be_bytes());
    }
    match rng.gen_range(0..40) {
        0 => frame = packet::pad(packet::arp()),
        1 => frame = packet::pad(packet::ethernet(0x88cc, &[0; 46])),
        2 => frame = packet::vlan(&frame, 0x8100, 7),
        3 => frame = packet::vlan(&packet::vlan(&frame, 0x8100, 7), 0x88a8, 9),
        _ => {}
    }
    // Mangle some: cut short, or flip bytes in the headers.
    match rng.gen_range(0..10) {
        0 => {
            let len = rng.gen_range(14..frame.len().max(15));
            frame.truncate(len);
        }
        1 => {
            for _ in 0..rng.gen_range(1..4) {
                let at = rng.gen_range(12..frame.len().min(80));
                frame[at] = rng.r#gen();
            }
        }
        2 => frame = packet::pad(frame),
        _ => {}
    }
    frame
}

/// Which counter a decision moves, and reads it.
fn counter(l: &Loaded, direction: Direction, d: &Decision) -> Counter {
    let dir = direction as u32;
    match d {
        Decision::Rule(name) => l.rule(name),
        Decision::Pass(r) => l.maps.pass_counter(dir, *r).unwrap(),
        Decision::Drop(r) => l.maps.drop_counter(dir, DropKind::Dropped, *r).unwrap(),
        Decision::WouldDrop(r) => l.maps.drop_counter(dir, DropKind::WouldDrop, *r).unwrap(),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Runs one frame through the kernel and the reference; describes any difference. Frames the
/// kernel will not turn into an skb for the egress test run (cut inside the IP header, which
/// the stack never sends) are skipped: `Some(None)`.
fn check(
    l: &mut Loaded,
    p: &Policy,
    role: Role,
    iface: &[IpAddr],
    direction: Direction,
    frame: &[u8],
) -> Option<Option<String>> {
    let want = reference::decide_bytes(p, role, iface, direction, frame);
    let before = counter(l, direction, &want);
    let passed = match direction {
        Direction::Inbound => l.run(frame) == XDP_PASS,
        Direction::Outbound => {
            let pass = match l.try_run_egress(frame) {
                Ok(action) => action == TC_PASS,
                Err(_) => return Some(None),
            };
            // Egress records flows; start every case from an empty table.
            l.maps.ct_flush().unwrap();
            pass
        }
    };
    // A first fragment that passed left its verdict for its later fragments: the reference
    // models an empty fragment table, as it models an empty connection table.
    if passed && is_first_fragment(frame) {
        l.fragments_flush();
    }
    let after = counter(l, direction, &want);
    if passed != want.passes() || after.packets != before.packets + 1 {
        return Some(Some(format!(
            "{direction} frame {}: reference {want:?} (passes: {}), kernel passes: {passed}, counter moved by {}",
            hex(frame),
            want.passes(),
            after.packets - before.packets
        )));
    }
    None
}

/// Whether a frame may be a first fragment (IPv4 more-fragments, or any IPv6 fragment header):
/// a cheap over-approximation, it only decides when to empty the fragment table.
fn is_first_fragment(frame: &[u8]) -> bool {
    let at = |i: usize| frame.get(i).copied().unwrap_or(0);
    let mut l3 = 14;
    let mut ethertype = u16::from_be_bytes([at(12), at(13)]);
    while ethertype == 0x8100 || ethertype == 0x88a8 {
        ethertype = u16::from_be_bytes([at(l3 + 2), at(l3 + 3)]);
        l3 += 4;
    }
    match ethertype {
        0x0800 => at(l3 + 6) & 0x20 != 0,
        0x86dd => frame.len() > l3 + 40, // walking the chain is the parser's job: any IPv6
        _ => false,
    }
}

#[test]
fn kernel_equals_reference_on_random_policies_and_frames() {
    let seed: u64 = std::env::var("EDGE_DIFF_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("differential seed {seed} (replay: EDGE_DIFF_SEED={seed})");
    let mut rng = SmallRng::seed_from_u64(seed);
    let iface: Vec<IpAddr> = INTERFACE.iter().map(|a| a.parse().unwrap()).collect();
    // One load; each policy's tables are written into the same maps.
    let first = policy::parse("", "p").unwrap();
    let mut l = Loaded::new(&first, Role::External, &iface);
    // `EDGE_DIFF_CASES` lowers it where a run is expensive: the kernel matrix's emulated guests.
    let want: usize = std::env::var("EDGE_DIFF_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let (mut cases, mut outbound, mut policies, mut skipped) = (0usize, 0usize, 0usize, 0usize);
    // Drop reasons the cases reached: the generator must produce every class it claims to.
    let mut seen = std::collections::BTreeSet::new();
    while cases < want {
        let text = random_policy(&mut rng);
        // Some random policies are invalid (an IPv4-only side against an IPv6-only one): skip.
        let Ok(p) = policy::parse(&text, "random.toml") else { continue };
        let role = if rng.gen_bool(0.7) { Role::External } else { Role::Internal };
        let Ok(tables) = compile::compile(&p, role, &iface, &SlotMap::default()) else { continue };
        assert_eq!(p.role(role).egress, EgressMode::Enforce);
        l.maps.write_generation(0, &tables).unwrap();
        l.tables = tables;
        policies += 1;
        for _ in 0..1000 {
            let frame = random_frame(&mut rng);
            let direction = if rng.gen_bool(0.7) { Direction::Inbound } else { Direction::Outbound };
            match check(&mut l, &p, role, &iface, direction, &frame) {
                None => {
                    cases += 1;
                    outbound += (direction == Direction::Outbound) as usize;
                    match reference::decide_bytes(&p, role, &iface, direction, &frame) {
                        reference::Decision::Drop(r) => seen.insert(r.name().to_string()),
                        reference::Decision::Pass(r) => seen.insert(format!("pass {}", r.name())),
                        _ => false,
                    };
                }
                Some(None) => skipped += 1,
                Some(Some(diff)) => {
                    panic!("seed {seed}, policy {policies}, case {cases}, role {role}: {diff}\npolicy:\n{text}")
                }
            }
        }
    }
    eprintln!(
        "{cases} cases ({outbound} outbound) over {policies} policies agree ({skipped} egress frames the skb test \
         run refuses skipped)"
    );
    // 30% of the cases are drawn outbound: the refused ones must not eat most of them.
    assert!(outbound > cases / 5, "only {outbound} of {cases} cases ran the egress program");
    let classes = [
        "martian",
        "icmp-unrelated",
        "tcp-flags",
        "ndp-off-link",
        "bad-ext-header",
        "tiny-fragment",
        "bad-header",
        "fragment",
        "no-flow",
        "policy-default",
        "egress-policy",
        // (Path-MTU errors about an allowed answer are rarer still than these: the packet
        // suite has them.)
        "pass related",
        "pass icmp-out",
        "pass ndp",
    ];
    let missing: Vec<&str> = classes.into_iter().filter(|c| !seen.contains(*c)).collect();
    assert!(missing.is_empty(), "no case reached {missing:?} (reached {seen:?})");
}

/// Every truncation of every supported frame type has the reference's verdict and reason.
#[test]
fn every_truncation_of_every_frame_type() {
    let text = r#"
[[rule]]
name = "tcp"
role = "external"
direction = "inbound"
protocol = "tcp"
ports = 5061
[[rule]]
name = "udp"
role = "external"
direction = "inbound"
protocol = "udp"
ports = 3478
"#;
    let p = policy::parse(text, "t.toml").unwrap();
    let mut l = Loaded::new(&p, Role::External, &[]);
    let (a4, b4): (IpAddr, IpAddr) = ("198.51.100.7".parse().unwrap(), "192.0.2.1".parse().unwrap());
    let (a6, b6): (IpAddr, IpAddr) = ("2001:db8:1::7".parse().unwrap(), "2001:db8::1".parse().unwrap());
    let ext = |headers: &[(u8, Vec<u8>)], proto: u8, l4: Vec<u8>| {
        let (IpAddr::V6(s), IpAddr::V6(d)) = (a6, b6) else { unreachable!() };
        packet::ethernet(packet::ETH_IPV6, &packet::ipv6_ext(s.octets(), d.octets(), headers, proto, &l4))
    };
    let frames: Vec<(&str, Vec<u8>)> = vec![
        ("tcp/ipv4", packet::tcp(a4, b4, 40000, 5061, SYN)),
        ("tcp/ipv6", packet::tcp(a6, b6, 40000, 5061, SYN)),
        ("udp/ipv4", packet::udp(a4, b4, 40000, 3478)),
        ("udp/ipv6", packet::udp(a6, b6, 40000, 3478)),
        ("icmp", packet::icmp_error(a4, b4, 3, 4, &packet::tcp(b4, a4, 5061, 40000, ACK))),
        ("icmpv6 error", packet::icmp_error(a6, b6, 1, 4, &packet::udp(b6, a6, 3478, 40000))),
        ("icmpv6", packet::icmp(a6, b6, 135, 0)),
        ("vlan tcp", packet::vlan(&packet::tcp(a4, b4, 40000, 5061, SYN), 0x8100, 5)),
        ("qinq udp/ipv6", packet::vlan(&packet::vlan(&packet::udp(a6, b6, 40000, 3478), 0x8100, 5), 0x88a8, 6)),
        ("ipv4 options tcp", {
            let (IpAddr::V4(s), IpAddr::V4(d)) = (a4, b4) else { unreachable!() };
            packet::ethernet(
                packet::ETH_IPV4,
                &packet::ipv4_with(s.octets(), d.octets(), 6, &[1; 12], 0, &packet::tcp_header(1, 5061, SYN)),
            )
        }),
        (
            "ipv6 hop-by-hop + dstopts tcp",
            ext(&[(0, vec![0; 4]), (60, vec![0; 12])], 6, packet::tcp_header(1, 5061, SYN)),
        ),
        ("ipv6 first fragment udp", ext(&[(44, vec![0, 0, 0, 0, 0, 1])], 17, packet::udp_header(1, 3478, b"x"))),
        ("arp", packet::pad(packet::arp())),
    ];
    let mut checked = 0;
    for (name, full) in &frames {
        for len in 14..=full.len() {
            if let Some(diff) = check(&mut l, &p, Role::External, &[], Direction::Inbound, &full[..len]) {
                panic!("{name} cut to {len} bytes: {diff:?}");
            }
            checked += 1;
        }
    }
    assert!(checked > 600, "{checked}");
    // And the whole frames pass where the rules say so.
    for (name, full) in &frames {
        let d = reference::decide_bytes(&p, Role::External, &[], Direction::Inbound, full);
        assert!(d.passes(), "{name}: {d:?}");
    }
    // A non-first fragment and a too-long extension chain have their own reasons.
    let frag = ext(&[(44, vec![0, 8, 0, 0, 0, 1])], 17, packet::udp_header(1, 3478, b"x"));
    assert_eq!(
        reference::decide_bytes(&p, Role::External, &[], Direction::Inbound, &frag),
        Decision::Drop(DropReason::Fragment)
    );
    assert!(check(&mut l, &p, Role::External, &[], Direction::Inbound, &frag).is_none());
    let long = ext(
        &[(0, vec![]), (60, vec![]), (43, vec![2]), (60, vec![]), (60, vec![])],
        6,
        packet::tcp_header(1, 5061, SYN),
    );
    assert_eq!(
        reference::decide_bytes(&p, Role::External, &[], Direction::Inbound, &long),
        Decision::Drop(DropReason::ExtHeaders)
    );
    assert!(check(&mut l, &p, Role::External, &[], Direction::Inbound, &long).is_none());
    // MLD reports (hop-by-hop, then ICMPv6 143) pass as neighbour/listener discovery.
    let mut mld = ext(&[(0, vec![5, 2, 0, 0, 1, 0])], 58, vec![143, 0, 0, 0, 0, 0, 0, 1]);
    mld[14 + 7] = 1; // From the link: hop limit 1.
    assert_eq!(
        reference::decide_bytes(&p, Role::External, &[], Direction::Inbound, &mld),
        Decision::Pass(PassReason::Ndp)
    );
    assert!(check(&mut l, &p, Role::External, &[], Direction::Inbound, &mld).is_none());
}
