use std::net::IpAddr;

use super::*;
use crate::policy::parse;
use crate::reference::{self, Decision, Frame, Payload};

/// What the kernel does with the tables, written out in Rust (the eBPF program mirrors it).
fn table_lookup(
    t: &Tables,
    direction: Direction,
    protocol: Protocol,
    local: IpAddr,
    remote: IpAddr,
    dport: u16,
) -> Option<String> {
    let class = t.ports[direction as usize][protocol as usize][dport as usize];
    if class == 0 {
        return None;
    }
    let entry = &t.classes[class as usize];
    let words = |a: IpAddr| match a {
        IpAddr::V4(a) => [u32::from_ne_bytes(a.octets()), 0, 0, 0],
        IpAddr::V6(a) => words_v6(a),
    };
    let v6 = local.is_ipv6();
    let family = v6 as usize;
    let hashed = |v4_flag: u32, v6_flag: u32| t.flags & if v6 { v6_flag } else { v4_flag } != 0;
    let inlined = |v4_bit: u32, v6_bit: u32| entry.inline & if v6 { v6_bit } else { v4_bit } != 0;
    let in_place =
        |hosts: &[InlineHost; INLINE_HOSTS], a: IpAddr| hosts.iter().find(|h| h.addr == words(a)).map_or(0, |h| h.sets);
    // The class's own hosts, else the host tables when the compiler built them (one probe, as
    // the kernel does).
    let local_sets = if inlined(inline::LOCAL_V4, inline::LOCAL_V6) {
        in_place(&entry.local[family], local) as u32
    } else if hashed(flags::LOCAL_HASH_V4, flags::LOCAL_HASH_V6) {
        let w = words(local);
        let e = &t.hosts.local[family][host_slot(&w, v6, t.hosts.mul[family])];
        if e.addr == w { e.sets } else { 0 }
    } else {
        match local {
            IpAddr::V4(a) => {
                let w = u32::from_ne_bytes(a.octets());
                t.local_v4.iter().filter(|e| w & e.mask == e.addr).fold(0, |acc, e| acc | e.sets)
            }
            IpAddr::V6(a) => {
                let w = words_v6(a);
                t.local_v6
                    .iter()
                    .filter(|e| (0..4).all(|i| w[i] & e.mask[i] == e.addr[i]))
                    .fold(0, |acc, e| acc | e.sets)
            }
        }
    };
    let remote_sets = if entry.remote_mode != REMOTE_NONE && inlined(inline::REMOTE_V4, inline::REMOTE_V6) {
        in_place(&entry.remote[family], remote)
    } else if entry.remote_mode == REMOTE_HOSTS && hashed(flags::REMOTE_HASH_V4, flags::REMOTE_HASH_V6) {
        let w = words(remote);
        let e = &t.hosts.remote[family][host_slot(&w, v6, t.hosts.mul[2 + family])];
        if e.addr == w { e.sets } else { 0 }
    } else {
        match remote {
            IpAddr::V4(a) => t
                .remote_v4
                .iter()
                .filter(|(n, _)| n.contains(&a))
                .max_by_key(|(n, _)| n.prefix_len())
                .map_or(0, |(_, b)| *b),
            IpAddr::V6(a) => t
                .remote_v6
                .iter()
                .filter(|(n, _)| n.contains(&a))
                .max_by_key(|(n, _)| n.prefix_len())
                .map_or(0, |(_, b)| *b),
        }
    };
    let decided = entry.candidates[..entry.len as usize]
        .iter()
        .find(|c| (local_sets & c.local) == c.local && (remote_sets & c.remote) == c.remote)
        .map(|c| t.rules.iter().find(|r| r.slot == c.rule).unwrap().name.clone());
    // The kernel tries the first candidate's hosts first (`ClassEntry::first`): when they say
    // it matches, the sets must say the same.
    let [valid, any_local, any_remote] = inline::first(v6);
    let first = &entry.first[family];
    let first_says = entry.inline & valid != 0
        && (entry.inline & any_local != 0 || first.local.contains(&words(local)))
        && (entry.inline & any_remote != 0 || first.remote.contains(&words(remote)));
    if first_says {
        let name = &t.rules.iter().find(|r| r.slot == entry.candidates[0].rule).unwrap().name;
        assert_eq!(decided.as_ref(), Some(name), "the first candidate's hosts match, its sets do not");
    }
    decided
}

const POLICY: &str = r#"
[sets]
access = ["203.0.113.10", "2001:db8:1::10"]
av = ["203.0.113.12", "2001:db8:1::12"]
both = ["203.0.113.10", "203.0.113.12"]
fe = ["198.51.100.0/28", "2001:db8:2::/64"]
fe_wide = ["198.51.100.0/24"]
vips = ["198.51.100.50", "2001:db8:2::50"]
me = ["@interface"]

[[rule]]
name = "sip-tls"
role = "external"
direction = "inbound"
protocol = "tcp"
ports = 443
local = "access"

[[rule]]
name = "av-tcp"
role = "external"
direction = "inbound"
protocol = "tcp"
ports = [443, "50000-59999"]
local = "av"

[[rule]]
name = "fed"
role = "external"
direction = "inbound"
protocol = "tcp"
ports = 5061
local = "both"
remote = "fe"

[[rule]]
name = "fed-wide"
role = "external"
direction = "inbound"
protocol = "tcp"
ports = "5000-5100"
local = "both"
remote = "fe_wide"

[[rule]]
name = "from-vips"
role = "external"
direction = "inbound"
protocol = "tcp"
ports = 5062
local = "access"
remote = "vips"

[[rule]]
name = "stun"
role = "external"
direction = "inbound"
protocol = "udp"
ports = 3478
local = "me"

[[rule]]
name = "dns-out"
role = "external"
direction = "outbound"
protocol = "udp"
ports = 53
local = "access"

[[rule]]
name = "internal-only"
role = "internal"
direction = "inbound"
protocol = "tcp"
ports = 4443
"#;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn tables_agree_with_the_reference_model() {
    let policy = parse(POLICY, "p.toml").unwrap();
    let iface = [ip("203.0.113.20"), ip("2001:db8:1::20")];
    let t = compile(&policy, Role::External, &iface, &SlotMap::default()).unwrap();
    let locals = [
        "203.0.113.10",
        "203.0.113.12",
        "203.0.113.20",
        "203.0.113.99",
        "2001:db8:1::10",
        "2001:db8:1::12",
        "2001:db8:1::20",
        "2001:db8:1::99",
    ];
    let remotes = [
        "198.51.100.1",
        "198.51.100.20",
        "198.51.100.50",
        "192.0.2.1",
        "2001:db8:2::5",
        "2001:db8:2::50",
        "2001:db8:3::5",
    ];
    let ports = [
        1u16, 53, 442, 443, 444, 3478, 4443, 4999, 5000, 5061, 5062, 5100, 5101, 49999, 50000, 55555, 59999, 60000,
        65535,
    ];
    // Both kinds of lookup are exercised: the host tables (local addresses, the VIP list) and
    // the scan and trie (the networks of `fe`).
    let all = flags::LOCAL_HASH_V4 | flags::LOCAL_HASH_V6 | flags::REMOTE_HASH_V4 | flags::REMOTE_HASH_V6;
    assert_eq!(t.flags & all, all);
    let mut checked = 0;
    for direction in Direction::ALL {
        for protocol in Protocol::ALL {
            for l in locals {
                for r in remotes {
                    let (l, r) = (ip(l), ip(r));
                    if l.is_ipv4() != r.is_ipv4() {
                        continue;
                    }
                    for &p in &ports {
                        let (src, dst) = match direction {
                            Direction::Inbound => (r, l),
                            Direction::Outbound => (l, r),
                        };
                        let frame = Frame::Ip {
                            src,
                            dst,
                            payload: Payload::Ports {
                                protocol,
                                sport: 40000,
                                dport: p,
                                tcp_flags: crate::reference::TCP_SYN,
                            },
                        };
                        let want = match reference::decide(&policy, Role::External, &iface, direction, &frame) {
                            Decision::Rule(name) => Some(name),
                            _ => None,
                        };
                        let got = table_lookup(&t, direction, protocol, l, r, p);
                        assert_eq!(got, want, "{direction} {protocol} {l} <-> {r} port {p}");
                        checked += 1;
                    }
                }
            }
        }
    }
    assert!(checked > 1000);
}

#[test]
fn spot_checks() {
    let policy = parse(POLICY, "p.toml").unwrap();
    let t = compile(&policy, Role::External, &[ip("203.0.113.20")], &SlotMap::default()).unwrap();
    let look = |p, l: &str, r: &str, port| table_lookup(&t, Direction::Inbound, p, ip(l), ip(r), port);
    assert_eq!(look(Protocol::Tcp, "203.0.113.10", "192.0.2.1", 443).as_deref(), Some("sip-tls"));
    assert_eq!(look(Protocol::Tcp, "203.0.113.12", "192.0.2.1", 443).as_deref(), Some("av-tcp"));
    assert_eq!(look(Protocol::Tcp, "203.0.113.20", "192.0.2.1", 443), None, "wrong local address");
    assert_eq!(look(Protocol::Tcp, "203.0.113.12", "192.0.2.1", 49999), None);
    assert_eq!(look(Protocol::Tcp, "203.0.113.12", "192.0.2.1", 50000).as_deref(), Some("av-tcp"));
    assert_eq!(look(Protocol::Tcp, "203.0.113.12", "192.0.2.1", 59999).as_deref(), Some("av-tcp"));
    assert_eq!(look(Protocol::Tcp, "203.0.113.12", "192.0.2.1", 60000), None);
    // Nested remote sets: /28 inside /24; the longest match carries both bits.
    assert_eq!(look(Protocol::Tcp, "203.0.113.10", "198.51.100.1", 5061).as_deref(), Some("fed"));
    assert_eq!(look(Protocol::Tcp, "203.0.113.10", "198.51.100.20", 5061).as_deref(), Some("fed-wide"));
    assert_eq!(look(Protocol::Tcp, "203.0.113.10", "192.0.2.1", 5061), None);
    assert_eq!(look(Protocol::Udp, "203.0.113.20", "192.0.2.1", 3478).as_deref(), Some("stun"), "@interface");
    assert_eq!(look(Protocol::Udp, "203.0.113.10", "192.0.2.1", 3478), None);
    assert!(t.rules.iter().all(|r| r.name != "internal-only"), "other role's rules are not compiled");
    assert_eq!(t.remote_v4.iter().find(|(n, _)| n.prefix_len() == 28).unwrap().1.count_ones(), 2);
}

#[test]
fn slots_are_stable_across_recompiles() {
    let policy = parse(POLICY, "p.toml").unwrap();
    let t1 = compile(&policy, Role::External, &[], &SlotMap::default()).unwrap();
    let changed = POLICY.replace("name = \"sip-tls\"", "name = \"sip-tls-2\"");
    let policy2 = parse(&changed, "p.toml").unwrap();
    let t2 = compile(&policy2, Role::External, &[], &t1.slots).unwrap();
    assert_eq!(t1.slots.0["av-tcp"], t2.slots.0["av-tcp"]);
    assert_eq!(t1.slots.0["stun"], t2.slots.0["stun"]);
    assert!(!t1.slots.slots().contains(&t2.slots.0["sip-tls-2"]), "a new rule gets a fresh slot");
}

#[test]
fn any_any_candidate_ends_the_class() {
    let text = "[[rule]]\nname='a'\nrole='external'\ndirection='inbound'\nprotocol='tcp'\nports=80\n\
                [[rule]]\nname='b'\nrole='external'\ndirection='inbound'\nprotocol='tcp'\nports='1-100'\n";
    let t = compile(&parse(text, "p").unwrap(), Role::External, &[], &SlotMap::default()).unwrap();
    let class = t.ports[0][0][80] as usize;
    assert_eq!(t.classes[class].len, 1);
    assert_eq!(t.classes[t.ports[0][0][81] as usize].len, 1);
    assert_eq!(t.ports[0][0][101], 0);
}

#[test]
fn too_many_rules_on_one_port_is_a_located_error() {
    let mut text = String::from("[sets]\n");
    for i in 0..17 {
        text += &format!("s{i} = [\"192.0.2.{i}\"]\n");
    }
    for i in 0..17 {
        text += &format!(
            "[[rule]]\nname='r{i}'\nrole='external'\ndirection='inbound'\nprotocol='tcp'\nports=5061\nremote='s{i}'\n"
        );
    }
    let err = compile(&parse(&text, "p.toml").unwrap(), Role::External, &[], &SlotMap::default()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("p.toml:") && msg.contains("more than 16 rules apply to tcp port 5061 inbound"), "{msg}");
}

/// The line a rule named `name` starts on in `text`.
fn line_of(text: &str, needle: &str) -> usize {
    text[..text.find(needle).expect("in the text")].matches('\n').count() + 1
}

#[test]
fn too_many_port_classes_point_at_the_rule_that_crosses_the_limit() {
    // Each rule on a port of its own is a class of its own: the rule that makes class
    // MAX_CLASSES (class 0 is the empty one) is the error, wherever it is.
    let mut text = String::new();
    for i in 0..MAX_CLASSES as usize + 5 {
        text += &format!(
            "[[rule]]\nname='r{i}'\nrole='external'\ndirection='inbound'\nprotocol='tcp'\nports={}\n",
            1000 + i
        );
    }
    let err = compile(&parse(&text, "p.toml").unwrap(), Role::External, &[], &SlotMap::default()).unwrap_err();
    assert_eq!(err.errors.len(), 1, "{err}");
    let crossing = MAX_CLASSES as usize - 1;
    let d = &err.errors[0];
    assert_eq!(d.at.line, line_of(&text, &format!("name='r{crossing}'")) - 1, "{err}");
    assert!(
        d.message.contains(&format!("with rule `r{crossing}` at tcp port {} inbound", 1000 + crossing))
            && d.message.contains(&format!("more than {} distinct port classes", MAX_CLASSES - 1)),
        "{err}"
    );
    // One rule fewer fits.
    let fits: String = text.split("[[rule]]").take(MAX_CLASSES as usize).collect::<Vec<_>>().join("[[rule]]");
    compile(&parse(&fits, "p.toml").unwrap(), Role::External, &[], &SlotMap::default()).unwrap();
}

#[test]
fn too_many_remote_prefixes_point_at_the_rule_and_its_set() {
    let max = (MAX_REMOTE_PREFIXES / 2) as usize;
    let hosts = |range: std::ops::Range<usize>| {
        range.map(|i| format!("\"10.{}.{}.{}\"", i >> 16, (i >> 8) & 0xff, i & 0xff)).collect::<Vec<_>>().join(", ")
    };
    let rule = |name: &str, set: &str| {
        format!(
            "[[rule]]\nname='{name}'\nrole='external'\ndirection='inbound'\nprotocol='tcp'\nports=443\nremote='{set}'\n"
        )
    };
    // `a` and `b` share 100 hosts; together they hold max + 1 distinct ones.
    let text = format!(
        "[sets]\na = [{}]\nb = [{}]\n{}{}",
        hosts(0..20_000),
        hosts(19_900..max + 1),
        rule("ra", "a"),
        rule("rb", "b")
    );
    let err = compile(&parse(&text, "p.toml").unwrap(), Role::External, &[], &SlotMap::default()).unwrap_err();
    assert_eq!(err.errors.len(), 1, "{err}");
    let d = &err.errors[0];
    assert_eq!(d.at.line, line_of(&text, "name='rb'") - 1, "{err}");
    assert!(
        d.message.contains("with rule `rb` (remote b; set `b`, line 3)")
            && d.message.contains(&format!("more than {max} IPv4 prefixes")),
        "{err}"
    );
    // Without the one host too many, both fit.
    let text = format!(
        "[sets]\na = [{}]\nb = [{}]\n{}{}",
        hosts(0..20_000),
        hosts(19_900..max),
        rule("ra", "a"),
        rule("rb", "b")
    );
    compile(&parse(&text, "p.toml").unwrap(), Role::External, &[], &SlotMap::default()).unwrap();
}

#[test]
fn essentials_and_egress_become_flags() {
    // The switches only; the host-table flags are the compiler's own business.
    let switches = flags::ESSENTIAL_ARP
        | flags::ESSENTIAL_NDP
        | flags::ESSENTIAL_PMTU
        | flags::EGRESS_ENFORCE
        | flags::EGRESS_MONITOR
        | flags::AUDIT
        | flags::FRAGMENTS_PASS
        | flags::FRAGMENTS_TRACK;
    let compiled = |text: &str, role| {
        let mut t = compile(&parse(text, "p").unwrap(), role, &[], &SlotMap::default()).unwrap();
        t.flags &= switches;
        t
    };
    let text = "[roles.external]\nessentials = { arp = false }\n";
    // Fragment tracking is on by default.
    let all = flags::ESSENTIAL_ARP | flags::ESSENTIAL_NDP | flags::ESSENTIAL_PMTU | flags::FRAGMENTS_TRACK;
    assert_eq!(
        compiled(text, Role::External).flags,
        flags::ESSENTIAL_NDP | flags::ESSENTIAL_PMTU | flags::FRAGMENTS_TRACK | flags::EGRESS_ENFORCE
    );
    assert_eq!(compiled(text, Role::Internal).flags, all | flags::EGRESS_ENFORCE);
    let text = "[roles.external]\negress = \"monitor\"\n[roles.internal]\negress = \"off\"\n";
    assert_eq!(compiled(text, Role::External).flags, all | flags::EGRESS_MONITOR);
    assert_eq!(compiled(text, Role::Internal).flags, all);
    let text = "[roles.external]\nfragments = \"drop\"\n[roles.internal]\nfragments = \"pass\"\n";
    let tracked = all | flags::EGRESS_ENFORCE;
    assert_eq!(compiled(text, Role::External).flags, tracked & !flags::FRAGMENTS_TRACK);
    assert_eq!(compiled(text, Role::Internal).flags, tracked & !flags::FRAGMENTS_TRACK | flags::FRAGMENTS_PASS);
}

#[test]
fn martians_switch_and_the_interface_addresses_the_check_knows() {
    let iface: Vec<IpAddr> = ["192.0.2.1", "2001:db8::1", "192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.5"]
        .map(|a| a.parse().unwrap())
        .into();
    let p = parse("[roles.internal]\nmartians = \"pass\"\n", "p").unwrap();
    let t = compile(&p, Role::External, &iface, &SlotMap::default()).unwrap();
    assert_ne!(t.flags & flags::MARTIANS, 0, "on by default");
    assert_eq!(compile(&p, Role::Internal, &iface, &SlotMap::default()).unwrap().flags & flags::MARTIANS, 0);
    // The first four of each family, in the order the interface has them; zeros after.
    let v4 = |s: &str| u32::from_ne_bytes(s.parse::<std::net::Ipv4Addr>().unwrap().octets());
    assert_eq!(t.own_v4, ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"].map(v4));
    assert_eq!(t.own_v6[0], words_v6("2001:db8::1".parse().unwrap()));
    assert_eq!(t.own_v6[1..], [[0; 4]; 3]);
    let e = parse("[roles.external]\nmartians = \"log\"\n", "p").unwrap_err().to_string();
    assert!(e.contains("unknown martians policy `log`: expected \"drop\" or \"pass\""), "{e}");
}

#[test]
fn conntrack_settings_become_timeouts() {
    let p = parse("[conntrack]\nmax_entries = 1024\nudp = 5\ntcp_established = 100\n", "p").unwrap();
    let t = compile(&p, Role::External, &[], &SlotMap::default()).unwrap();
    assert_eq!(t.ct_max, 1024);
    assert_eq!(t.ct_timeout_ns, [30_000_000_000, 100_000_000_000, 60_000_000_000, 5_000_000_000]);
}

#[test]
fn host_tables_hold_every_host_and_fall_back_for_networks() {
    let policy = parse(POLICY, "p.toml").unwrap();
    let iface = [ip("203.0.113.20"), ip("2001:db8:1::20")];
    let t = compile(&policy, Role::External, &iface, &SlotMap::default()).unwrap();
    // Every local prefix is a host address: both families are hashed, and each host is found.
    assert_ne!(t.flags & flags::LOCAL_HASH_V4, 0);
    assert_ne!(t.flags & flags::LOCAL_HASH_V6, 0);
    for e in &t.local_v4 {
        let key = [e.addr, 0, 0, 0];
        let slot = &t.hosts.local[0][edge_common::host_slot(&key, false, t.hosts.mul[0])];
        assert_eq!((slot.addr, slot.sets), (key, e.sets));
    }
    // The remote sets hold networks, so their classes use the trie.
    let class = &t.classes[t.ports[0][0][5061] as usize];
    assert_eq!(class.remote_mode, edge_common::REMOTE_LPM);
    // A local network turns the v4 hash off.
    let nets = POLICY.replace("access = [\"203.0.113.10\"", "access = [\"203.0.113.0/28\"");
    let t = compile(&parse(&nets, "p.toml").unwrap(), Role::External, &iface, &SlotMap::default()).unwrap();
    assert_eq!(t.flags & flags::LOCAL_HASH_V4, 0);
    assert_ne!(t.flags & flags::LOCAL_HASH_V6, 0);
}

#[test]
fn classes_check_few_hosts_in_place() {
    let policy = parse(POLICY, "p.toml").unwrap();
    let iface = [ip("203.0.113.20")];
    let t = compile(&policy, Role::External, &iface, &SlotMap::default()).unwrap();
    let class = |port: usize| &t.classes[t.ports[0][0][port] as usize];
    let v4 = |s: &str| [u32::from_ne_bytes(s.parse::<std::net::Ipv4Addr>().unwrap().octets()), 0, 0, 0];
    // The bits of the class's own hosts (the first candidate's have a test of their own).
    const IN_PLACE: u32 = inline::LOCAL_V4 | inline::LOCAL_V6 | inline::REMOTE_V4 | inline::REMOTE_V6;
    // 443: access or av, two hosts per family.
    let c = class(443);
    assert_eq!(c.inline & IN_PLACE, IN_PLACE);
    let hosts: Vec<_> = c.local[0].iter().map(|h| h.addr).collect();
    assert!(hosts.contains(&v4("203.0.113.10")) && hosts.contains(&v4("203.0.113.12")), "{hosts:?}");
    // 5061 and 5062: a remote set holds IPv4 networks, so that side is not checked in place.
    // On 5062 the only IPv6 remote is one VIP (the network sets there are IPv4 only).
    assert_eq!(class(5061).inline & IN_PLACE, inline::LOCAL_V4 | inline::LOCAL_V6);
    assert_eq!(class(5062).inline & IN_PLACE, inline::LOCAL_V4 | inline::LOCAL_V6 | inline::REMOTE_V6);
    // One VIP per family on the remote side, kept with its set bit.
    let vips = "[sets]\nvips = [\"198.51.100.50\", \"2001:db8:2::50\"]\n[[rule]]\nname = \"from-vips\"\nrole = \"external\"\n\
                direction = \"inbound\"\nprotocol = \"tcp\"\nports = 5062\nremote = \"vips\"\n";
    let t = compile(&parse(vips, "p.toml").unwrap(), Role::External, &iface, &SlotMap::default()).unwrap();
    let c = &t.classes[t.ports[0][0][5062] as usize];
    assert_eq!(c.inline & (inline::REMOTE_V4 | inline::REMOTE_V6), inline::REMOTE_V4 | inline::REMOTE_V6);
    assert_eq!(c.remote[0][0].addr, v4("198.51.100.50"));
    assert_eq!(c.remote[0][0].sets, c.candidates[0].remote);
    // A third host on 443 is one too many for IPv4; IPv6 still has two.
    let three = format!(
        "{POLICY}\n[[rule]]\nname = \"me-443\"\nrole = \"external\"\ndirection = \"inbound\"\nprotocol = \"tcp\"\nports = 443\nlocal = \"me\"\n"
    );
    let t = compile(&parse(&three, "p.toml").unwrap(), Role::External, &iface, &SlotMap::default()).unwrap();
    let c = &t.classes[t.ports[0][0][443] as usize];
    assert_eq!(c.inline & (inline::LOCAL_V4 | inline::LOCAL_V6), inline::LOCAL_V6);
}

#[test]
fn first_candidates_as_hosts() {
    use inline::*;
    const FIRST: u32 =
        FIRST_V4 | FIRST_V6 | FIRST_ANY_LOCAL_V4 | FIRST_ANY_LOCAL_V6 | FIRST_ANY_REMOTE_V4 | FIRST_ANY_REMOTE_V6;
    let policy = parse(POLICY, "p.toml").unwrap();
    let iface = [ip("203.0.113.20")];
    let t = compile(&policy, Role::External, &iface, &SlotMap::default()).unwrap();
    let class = |proto: usize, port: usize| &t.classes[t.ports[0][proto][port] as usize];
    let v4 = |s: &str| [u32::from_ne_bytes(s.parse::<std::net::Ipv4Addr>().unwrap().octets()), 0, 0, 0];
    // 443: sip-tls comes first, one local host per family, any remote; the one host twice.
    let c = class(0, 443);
    assert_eq!(c.inline & FIRST, FIRST_V4 | FIRST_V6 | FIRST_ANY_REMOTE_V4 | FIRST_ANY_REMOTE_V6);
    assert_eq!(c.first[0].local, [v4("203.0.113.10"), v4("203.0.113.10")]);
    assert_eq!(c.first[1].local, [words_v6("2001:db8:1::10".parse().unwrap()); 2]);
    // 5061: fed's remote set holds networks, and its local set no IPv6 host: no short path.
    assert_eq!(class(0, 5061).inline & FIRST, 0);
    // 3478/udp: the interface's one IPv4 address; nothing of IPv6.
    let c = class(1, 3478);
    assert_eq!(c.inline & FIRST, FIRST_V4 | FIRST_ANY_REMOTE_V4);
    assert_eq!(c.first[0].local, [v4("203.0.113.20"); 2]);
    // Any local address, one remote VIP per family.
    let vips = "[sets]\nvips = [\"198.51.100.50\", \"2001:db8:2::50\"]\n[[rule]]\nname = \"from-vips\"\nrole = \"external\"\n\
                direction = \"inbound\"\nprotocol = \"tcp\"\nports = 5062\nremote = \"vips\"\n";
    let t = compile(&parse(vips, "p.toml").unwrap(), Role::External, &iface, &SlotMap::default()).unwrap();
    let c = &t.classes[t.ports[0][0][5062] as usize];
    assert_eq!(c.inline & FIRST, FIRST_V4 | FIRST_V6 | FIRST_ANY_LOCAL_V4 | FIRST_ANY_LOCAL_V6);
    assert_eq!(c.first[0].remote, [v4("198.51.100.50"); 2]);
}
