//! Hot swap: reloads and program upgrades under traffic lose nothing, never mix two policies,
//! keep counters and the connection table, and survive being killed at any step. Needs root.

use std::net::IpAddr;
use std::process::Stdio;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use edge_common::{DropReason, programs};
use edge_ctl::dataplane::wait_for_running_programs;
use edge_ctl::policy::{self, Role};
use edge_tests::bpf::{Loaded, XDP_DROP, XDP_PASS};
use edge_tests::lab::{EDGE, Lab, drop_packets, pin_dir, reason_packets, rule_packets};
use edge_tests::net::{
    HeldConnection, Outcome, Servers, UdpSink, at, tcp_connect_from, tcp_echo, tcp_exchange, tcp_probe, udp_stream,
};
use edge_tests::packet;

/// Two policies. Both allow the steady traffic (TCP 5000, UDP 6000, under the same rule names
/// in both); A also allows TCP 7000, B TCP 7001; A has rule `only-a`, B has `only-b`.
fn policy(which: char) -> String {
    let (port, name) = if which == 'a' { (7000, "only-a") } else { (7001, "only-b") };
    format!(
        r#"
[sets]
me = ["@interface"]

[[rule]]
name = "steady-tcp"
role = "external"
direction = "inbound"
protocol = "tcp"
ports = 5000
local = "me"

[[rule]]
name = "steady-udp"
role = "external"
direction = "inbound"
protocol = "udp"
ports = 6000
local = "me"

[[rule]]
name = "{name}"
role = "external"
direction = "inbound"
protocol = "tcp"
ports = {port}
local = "me"

[[rule]]
name = "sip-out"
role = "external"
direction = "outbound"
protocol = "tcp"
ports = 5061
local = "me"
"#
    )
}

struct Setup {
    lab: Lab,
    edge: String,
    peer: String,
    files: [std::path::PathBuf; 2],
}

fn setup(tag: &str) -> Setup {
    let mut lab = Lab::new(tag);
    let (edge, peer) = lab.edge_and_peer();
    let files = ['a', 'b'].map(|w| lab.file(&format!("policy-{w}.toml"), &policy(w)));
    Setup { lab, edge, peer, files }
}

impl Setup {
    fn file(&self, which: usize) -> &str {
        self.files[which].to_str().unwrap()
    }
    fn attach(&self, which: usize) {
        self.lab.edge_ctl_ok(&self.edge, &["attach", "edge0", "--role", "external", "--policy", self.file(which)]);
    }
    fn reload(&self, which: usize) -> String {
        self.lab.edge_ctl_ok(&self.edge, &["reload", "edge0", "--policy", self.file(which)])
    }
    fn stats(&self) -> serde_json::Value {
        self.lab.stats(&self.edge, "edge0")
    }
    /// `status --json` of edge0; the exit code says whether it reports a problem (3) or not (0).
    fn status(&self) -> serde_json::Value {
        let out = self.lab.edge_ctl(&self.edge, &["status", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("status: {e}: {}", String::from_utf8_lossy(&out.stderr)));
        let i = v["interfaces"][0].clone();
        let expected = if i["problem"].is_null() { 0 } else { 3 };
        assert_eq!(out.status.code(), Some(expected), "status exit code for {i}");
        i
    }
}

const SEQ_SPACE: u64 = 1 << 32;

/// Steady UDP (sequence-numbered) and TCP (echoed) traffic to the edge over both families.
struct Traffic {
    edge: String,
    sinks: Vec<UdpSink>,
    senders: Vec<JoinHandle<()>>,
    exchanges: Vec<JoinHandle<u64>>,
    echoes: Vec<JoinHandle<u64>>,
    count: u64,
    bytes: u64,
}

fn start_traffic(s: &Setup, udp_port_base: u16, duration: Duration) -> Traffic {
    let interval = Duration::from_millis(2);
    let count = (duration.as_millis() / 2) as u64;
    let rounds = (duration.as_millis() / 10) as usize;
    let mut t = Traffic {
        edge: s.edge.clone(),
        sinks: vec![],
        senders: vec![],
        exchanges: vec![],
        echoes: vec![],
        count,
        bytes: 0,
    };
    // One sink and one echo server ([::], both families); each family's datagrams carry their
    // own range of sequence numbers.
    t.sinks.push(UdpSink::start(&s.edge, 6000));
    t.echoes.push(tcp_echo(&s.edge, 5000, EDGE.len()));
    for (i, edge) in EDGE.iter().enumerate() {
        t.senders.push(udp_stream(
            &s.peer,
            udp_port_base + i as u16,
            at(edge, 6000),
            i as u64 * SEQ_SPACE,
            count,
            interval,
        ));
        t.exchanges.push(tcp_exchange(
            &s.peer,
            42000 + i as u16,
            at(edge, 5000),
            rounds,
            512,
            Duration::from_millis(10),
        ));
        t.bytes += rounds as u64 * 512;
    }
    t
}

impl Traffic {
    /// `RcvbufErrors` of Udp and Udp6 in the edge's namespace (new for each test): datagrams the
    /// filter passed but the sink's socket had no room for.
    fn rcvbuf_errors(ns: &str) -> String {
        let ns = ns.to_string();
        edge_tests::net::in_netns(&ns, || {
            let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap_or_default();
            let snmp6 = std::fs::read_to_string("/proc/thread-self/net/snmp6").unwrap_or_default();
            // snmp: a header line of names and a line of values per protocol.
            let lines: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Udp:")).collect();
            let v4 = lines.first().zip(lines.get(1)).and_then(|(names, values)| {
                names
                    .split_whitespace()
                    .zip(values.split_whitespace())
                    .find(|(n, _)| *n == "RcvbufErrors")
                    .map(|(_, v)| v.to_string())
            });
            let v6 = snmp6.lines().find_map(|l| l.strip_prefix("Udp6RcvbufErrors")).map(|v| v.trim().to_string());
            format!("IPv4 {}, IPv6 {}", v4.unwrap_or("?".into()), v6.unwrap_or("?".into()))
        })
    }

    /// Waits for the traffic to end; asserts every datagram and every byte arrived.
    fn check(self) {
        for h in self.senders {
            h.join().unwrap();
        }
        let mut echoed = 0;
        for h in self.exchanges {
            echoed += h.join().unwrap();
        }
        for h in self.echoes {
            h.join().unwrap();
        }
        assert_eq!(echoed, self.bytes, "every TCP byte echoed");
        let edge = self.edge;
        for sink in self.sinks {
            let seen = sink.finish();
            let sent = (0..EDGE.len() as u64).flat_map(|f| (0..self.count).map(move |n| f * SEQ_SPACE + n));
            let missing: Vec<u64> = sent.filter(|n| seen.binary_search(n).is_err()).collect();
            assert!(
                missing.is_empty(),
                "{} of {} datagrams lost, first {:?}; the edge namespace's UDP receive-buffer errors: {}",
                missing.len(),
                2 * self.count,
                &missing[..missing.len().min(10)],
                Traffic::rcvbuf_errors(&edge)
            );
        }
    }
}

/// 100 reloads (`EDGE_RELOADS=N` sets another even number; the kernel matrix's guests run 20,
/// each costing seconds under emulation) while traffic runs: nothing is lost.
#[test]
fn reloads_under_traffic_lose_nothing() {
    let reloads: usize = std::env::var("EDGE_RELOADS").ok().and_then(|s| s.parse().ok()).unwrap_or(100);
    assert!(reloads >= 2 && reloads.is_multiple_of(2), "EDGE_RELOADS must be even, to end on the first policy");
    let s = setup("zl");
    s.attach(0);
    let drops_before = s.stats();
    let traffic = start_traffic(&s, 43000, Duration::from_secs(6));
    let start = Instant::now();
    for i in 0..reloads {
        s.reload(1 - i % 2);
    }
    eprintln!("{reloads} reloads in {:?}", start.elapsed());
    traffic.check();
    let after = s.stats();
    for reason in ["policy-default", "no-flow", "bad-header", "truncated"] {
        assert_eq!(drop_packets(&after, reason), drop_packets(&drops_before, reason), "{reason} drops moved");
    }
    assert_eq!(reason_packets(&after, "drops", "outbound", "egress-policy"), 0);
    assert_eq!(s.status()["generation"], 0, "an even number of reloads ends on the first generation");
}

/// Every packet is counted under exactly one policy's rule while reloads alternate two
/// policies that allow disjoint ports: the accounting of verdicts and counters matches exactly.
#[test]
fn no_packet_is_judged_by_a_mix_of_two_policies() {
    let text = |port: u16, name: &str| {
        format!(
            "[[rule]]\nname = \"{name}\"\nrole = \"external\"\ndirection = \"inbound\"\nprotocol = \"udp\"\nports = {port}\n"
        )
    };
    let p1 = policy::parse(&text(1111, "p1-a"), "p1").unwrap();
    let p2 = policy::parse(&text(2222, "p2-b"), "p2").unwrap();
    let l = Loaded::ingress_only(&p1, Role::External, &[]);
    let mut writer = l.open_maps();
    let t1 = edge_ctl::compile::compile(&p1, Role::External, &[], &l.tables.slots).unwrap();
    let slots = edge_ctl::compile::SlotMap::assign(["p2-b"], &t1.slots, &t1.slots.slots()).unwrap();
    let t2 = edge_ctl::compile::compile(&p2, Role::External, &[], &slots).unwrap();
    let (src, dst): (IpAddr, IpAddr) = ("198.51.100.1".parse().unwrap(), "192.0.2.1".parse().unwrap());
    let frames = [packet::udp(src, dst, 4000, 1111), packet::udp(src, dst, 4000, 2222)];
    let stop = std::sync::atomic::AtomicBool::new(false);
    let results = std::thread::scope(|scope| {
        let runners: Vec<_> = frames
            .iter()
            .map(|f| {
                let (l, stop) = (&l, &stop);
                scope.spawn(move || {
                    let (mut pass, mut drop) = (0u64, 0u64);
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        // One run per call: with repeat > 1 only the last run's verdict is returned.
                        match l.run_program(programs::XDP_FILTER, f, 1).0 {
                            XDP_PASS => pass += 1,
                            XDP_DROP => drop += 1,
                            other => panic!("verdict {other}"),
                        }
                    }
                    (pass, drop)
                })
            })
            .collect();
        let maps = &mut writer;
        for i in 0..100u32 {
            let next = (i + 1) % 2;
            wait_for_running_programs().unwrap();
            maps.write_generation(next, if next == 1 { &t2 } else { &t1 }).unwrap();
            maps.set_active_generation(next).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        runners.into_iter().map(|r| r.join().unwrap()).collect::<Vec<_>>()
    });
    let count = |slot: u16| l.maps.rule_counter(slot).unwrap().packets;
    let (a, b) = (count(t1.slots.0["p1-a"]), count(t2.slots.0["p2-b"]));
    let drops = l.dropped(DropReason::PolicyDefault).packets;
    assert_eq!(a, results[0].0, "port 1111 passes == p1-a's count");
    assert_eq!(b, results[1].0, "port 2222 passes == p2-b's count");
    assert_eq!(drops, results[0].1 + results[1].1, "every other packet a policy-default drop");
    assert!(a > 0 && b > 0 && results[0].1 > 0 && results[1].1 > 0, "both policies were live: {results:?}");
}

#[test]
fn counters_follow_rule_names_and_the_connection_table_survives() {
    let s = setup("ctr");
    s.attach(0);
    let _servers = Servers::start(&s.edge, &[7000, 5000], &[]);
    // The edge's own connection, open across the reload.
    let held = HeldConnection::listen(&s.peer, 5061);
    let mut conn = tcp_connect_from(&s.edge, 41000, at("192.0.2.2", 5061), Duration::from_secs(2)).unwrap();
    held.accepted();
    for _ in 0..3 {
        assert_eq!(tcp_probe(&s.peer, at(EDGE[0], 7000), Duration::from_secs(2)), Outcome::Answered);
        assert_eq!(tcp_probe(&s.peer, at(EDGE[0], 5000), Duration::from_secs(2)), Outcome::Answered);
    }
    let before = s.stats();
    let kept = rule_packets(&before, "steady-tcp");
    let removed = rule_packets(&before, "only-a");
    assert!(kept > 0 && removed > 0);
    let out = s.reload(1);
    assert!(out.contains("+ only-b") && out.contains(&format!("- only-a (final count: {removed} packets")), "{out}");
    let after = s.stats();
    assert_eq!(rule_packets(&after, "steady-tcp"), kept, "a kept rule keeps its count");
    assert_eq!(rule_packets(&after, "only-b"), 0, "a new rule starts at zero");
    assert_eq!(tcp_probe(&s.peer, at(EDGE[0], 5000), Duration::from_secs(2)), Outcome::Answered);
    assert!(rule_packets(&s.stats(), "steady-tcp") > kept, "and goes on counting");
    // The connection table came through: the peer's data still reaches the edge.
    held.send(b"still here");
    let mut buf = [0u8; 10];
    std::io::Read::read_exact(&mut conn, &mut buf).expect("tracked flow survives the reload");
    // A reload to a broken policy changes nothing.
    let bad = std::env::temp_dir().join(format!("edge-reload-bad-{}.toml", std::process::id()));
    std::fs::write(&bad, policy('a').replace("ports = 5000", "ports = \"5000-4000\"")).unwrap();
    let hash = s.status()["policy_hash"].clone();
    let out = s.lab.edge_ctl(&s.edge, &["reload", "edge0", "--policy", bad.to_str().unwrap()]);
    let _ = std::fs::remove_file(&bad);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("inverted"));
    assert_eq!(s.status()["policy_hash"], hash, "the live policy is untouched");
}

/// `edge-ctl reload` killed after each of its steps (it reports them, see
/// `EDGE_CTL_STEP_DELAY_MS`): killed before the switch (the last step) the old policy is whole,
/// after it the new one; status says which, nothing staged is left, and the next reload works.
#[test]
fn a_reload_killed_at_any_step_leaves_one_whole_policy() {
    /// Reload's steps: compiled, waited for running programs, wrote the next generation, saved
    /// the state, switched.
    const STEPS: usize = 5;
    let s = setup("kill");
    s.attach(0);
    let _servers = Servers::start(&s.edge, &[7000, 7001], &[]);
    let hashes = [0, 1].map(|i| edge_ctl::policy::parse(&policy(if i == 0 { 'a' } else { 'b' }), "x").unwrap().hash());
    let pin_dir = pin_dir(&s.edge);
    let pins = || {
        let mut names: Vec<String> = std::fs::read_dir(pin_dir.join("edge0"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    let pinned = pins();
    // Every kill point twice, so both directions (a to b, b to a) are killed at every step.
    for round in 0..2 * (STEPS + 1) {
        let kill_after = round % (STEPS + 1);
        let live = s.status()["policy_hash"].as_str().unwrap().to_string();
        let current = hashes.iter().position(|h| *h == live).expect("status names one of the two");
        let target = 1 - current;
        let child = s
            .lab
            .edge_ctl_command(&s.edge, &["reload", "edge0", "--policy", s.file(target)])
            .env("EDGE_CTL_STEP_DELAY_MS", "400")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut child = edge_tests::lab::KillOnDrop(child);
        let (steps, other) = edge_tests::lab::wait_for_steps(&mut child.0, kill_after, Duration::from_secs(120));
        assert_eq!(steps, kill_after, "round {round}: reload stopped after {steps} steps: {other}");
        drop(child);
        let st = s.status();
        let live = st["policy_hash"].as_str().unwrap();
        let now = hashes.iter().position(|h| h == live).expect("one whole policy");
        eprintln!(
            "round {round}: killed after step {kill_after}: {} policy",
            if now == current { "old" } else { "new" }
        );
        let expected = if kill_after == STEPS { target } else { current };
        assert_eq!(now, expected, "round {round}: killed after step {kill_after} of {STEPS}");
        assert!(st["problem"].is_null(), "{st}");
        // The filter enforces exactly that policy.
        let (open, closed) = if now == 0 { (7000, 7001) } else { (7001, 7000) };
        assert_eq!(
            tcp_probe(&s.peer, at(EDGE[0], open), Duration::from_secs(2)),
            Outcome::Answered,
            "round {round}: {open} open"
        );
        assert_eq!(
            tcp_probe(&s.peer, at(EDGE[0], closed), Duration::from_millis(300)),
            Outcome::Silent,
            "round {round}: {closed} closed"
        );
    }
    // Nothing half-built is left behind and the next reload works.
    assert_eq!(pins(), pinned, "the same pins as before the kills");
    assert_eq!(std::fs::read_dir(&pin_dir).unwrap().count(), 1, "no staging directories");
    s.reload(0);
    s.reload(1);
}

#[test]
fn program_upgrade_on_a_live_link_loses_nothing() {
    let s = setup("upg");
    s.attach(0);
    let before = s.status();
    let drops_before = s.stats();
    let traffic = start_traffic(&s, 44000, Duration::from_secs(3));
    for _ in 0..5 {
        let out = s.lab.edge_ctl_ok(&s.edge, &["upgrade", "edge0"]);
        assert!(out.contains("upgraded edge0: XDP program"), "{out}");
        std::thread::sleep(Duration::from_millis(200));
    }
    traffic.check();
    let after = s.status();
    assert_ne!(after["program_id"], before["program_id"], "a new program");
    assert_eq!(after["link_id"], before["link_id"], "on the same link");
    let drops_after = s.stats();
    for reason in ["policy-default", "no-flow"] {
        assert_eq!(drop_packets(&drops_after, reason), drop_packets(&drops_before, reason), "{reason} drops moved");
    }
}

#[test]
fn upgrade_refuses_a_build_without_packet_tables() {
    let s = setup("msk");
    s.attach(0);
    let status = s.status();
    // Builds before the packet tables kept the policy in other maps: there is no EDGE_TABLES
    // pin, and one created empty at load would drop everything.
    let pin = pin_dir(&s.edge).join("edge0/EDGE_TABLES");
    std::fs::remove_file(&pin).unwrap();
    let out = s.lab.edge_ctl(&s.edge, &["upgrade", "edge0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("map EDGE_TABLES") && err.contains("detach"), "{err}");
    assert!(!pin.exists(), "the refused upgrade created no map");
    assert_eq!(s.status()["program_id"], status["program_id"], "nothing changed");
}

#[test]
fn upgrade_refuses_a_changed_map_layout() {
    let s = setup("lay");
    s.attach(0);
    let status = s.status();
    // Swap a pinned map for one of another layout, as an older build would have left it.
    let pin = pin_dir(&s.edge).join("edge0/EDGE_CTEV");
    std::fs::remove_file(&pin).unwrap();
    let other = aya::maps::Array::<aya::maps::MapData, [u64; 2]>::create(5, 0).unwrap();
    other.pin(&pin).unwrap();
    let out = s.lab.edge_ctl(&s.edge, &["upgrade", "edge0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("map EDGE_CTEV") && err.contains("detach"), "{err}");
    assert_eq!(s.status()["program_id"], status["program_id"], "nothing changed");
}
