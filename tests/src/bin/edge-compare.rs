//! `cargo xtask bench`, second part: edge-ctl against the tools a user would pick instead,
//! on real veth traffic, by CPU time per packet.
//!
//! Two namespaces joined by a veth pair: a sender and a receiver that holds node 1's external
//! addresses of the Lync template. Each round, for each filter on the receiver's veth (none,
//! an empty XDP program, edge-ctl, xdp-filter, nftables), one thread pinned to one CPU sends a
//! fixed number of frames of a fixed mix with an AF_PACKET socket.
//!
//! Method: veth hands a frame to its peer inside the sender's transmit call (`veth_xmit`); the
//! receiver's side (native XDP, the IP stack, netfilter, the RST or ICMP it answers with) runs
//! in the NET_RX softirq raised there, on the sending CPU, when the transmit path re-enables
//! bottom halves: packet by packet, without batching. On a kernel without
//! CONFIG_IRQ_TIME_ACCOUNTING that softirq time is charged to the sending thread, so its CPU
//! time (CLOCK_THREAD_CPUTIME_ID, from the scheduler, in ns) plus any ksoftirqd time is the
//! sender's work and the whole receive path. The sender's work is the same in every
//! configuration, so the difference from the no-filter round is the filter's effect on the
//! receiver. The receive path by itself is the sending CPU's softirq time in /proc/stat
//! (sampled at the tick, so it needs long rounds). Every round measures every configuration
//! (order rotated) and differences are taken within a round, so drift on this shared machine
//! moves both sides.
//!
//! `--quick` (CI) sends few packets for two rounds and never judges times; `--json PATH`
//! writes the results. Tools that are not installed are skipped, and the output says so.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use aya::programs::XdpMode;
use edge_ctl::dataplane::object;
use edge_ctl::policy::{Policy, Role};
use edge_ctl::profile::{self, Options};
use edge_tests::compare::cpu;
use edge_tests::compare::delivered_packets;
use edge_tests::compare::mix::{self, Case};
use edge_tests::compare::rulesets::{self, NFT_TABLE, XDP_FILTER_LIMITS};
use edge_tests::compare::sender::{self, Burst, Load};
use edge_tests::lab::{Lab, edge_ctl_bin};
use edge_tests::net::{in_netns, spawn_in_netns};
use serde_json::{Value, json};

const SND: &str = "snd0";
const RCV: &str = "rcv0";
/// The CPU the sender (and with it the receive path) runs on.
const SEND_CPU: usize = 0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Config {
    None,
    XdpPass,
    EdgeCtl,
    XdpFilter,
    Nftables,
}

impl Config {
    const ALL: [Config; 5] = [Config::None, Config::XdpPass, Config::EdgeCtl, Config::XdpFilter, Config::Nftables];

    fn name(self) -> &'static str {
        match self {
            Config::None => "no filter",
            Config::XdpPass => "xdp pass (empty)",
            Config::EdgeCtl => "edge-ctl",
            Config::XdpFilter => "xdp-filter",
            Config::Nftables => "nftables",
        }
    }

    fn description(self) -> &'static str {
        match self {
            Config::None => "nothing attached: the stack answers every packet (RST, ICMP unreachable)",
            Config::XdpPass => {
                "edge-ctl's empty XDP program (passes all), native: what native XDP on veth costs by itself"
            }
            Config::EdgeCtl => {
                "edge-ctl attach --role external --mode native with `edge-ctl policy template lync2013-edge-hlb`"
            }
            Config::XdpFilter => {
                "xdp-filter load --policy deny --features tcp,udp --mode native (there is no tcp+udp program: it loads xdpfilt_dny_all), the inbound rows' destination ports allowed by protocol"
            }
            Config::Nftables => {
                "inet table, input and output chains: ct state established,related accept, the rows as accepts by address and port, policy drop"
            }
        }
    }

    /// Whether this configuration lets a case through.
    fn passes(self, c: &Case) -> bool {
        match self {
            Config::None | Config::XdpPass => true,
            Config::EdgeCtl | Config::Nftables => c.matrix,
            Config::XdpFilter => c.port_list,
        }
    }

    /// Why this configuration cannot run here, if it cannot.
    fn missing(self) -> Option<String> {
        let need = |cmd: &str, pkg: &str| {
            (!has_command(cmd)).then(|| format!("`{cmd}` not installed (Debian package {pkg}): skipped"))
        };
        match self {
            Config::XdpFilter => need("xdp-filter", "xdp-tools"),
            Config::Nftables => need("nft", "nftables"),
            Config::EdgeCtl => (!edge_ctl_bin().is_file()).then(|| {
                format!("{} not built (cargo build --release -p edge-ctl): skipped", edge_ctl_bin().display())
            }),
            _ => None,
        }
    }
}

fn has_command(name: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .any(|d| d.join(name).is_file())
}

/// The two namespaces, the receiver's addresses and routes, and the files the filters need.
struct Bench {
    lab: Lab,
    snd: String,
    rcv: String,
    policy: Policy,
    policy_file: PathBuf,
    nft_file: PathBuf,
    dns: std::net::UdpSocket,
    /// libxdp (xdp-filter) creates this base directory for its dispatchers and leaves it.
    libxdp_dir_existed: bool,
}

const LIBXDP_DIR: &str = "/sys/fs/bpf/xdp";

impl Bench {
    fn build() -> Bench {
        let mut lab = Lab::new("cmp");
        let snd = lab.netns("snd");
        let rcv = lab.netns("rcv");
        // The sender stays silent: no IPv6 (no router solicitations or MLD reports reach the
        // receiver) and no addresses.
        lab.sysctl(&snd, "net.ipv6.conf.all.disable_ipv6", "1");
        lab.sysctl(&snd, "net.ipv6.conf.default.disable_ipv6", "1");
        lab.veth((&snd, SND), (&rcv, RCV));
        for a in [mix::ACCESS4, mix::WEBCONF4, mix::AV4] {
            lab.addr(&rcv, RCV, &format!("{a}/32"));
        }
        for a in [mix::ACCESS6, mix::WEBCONF6, mix::AV6] {
            lab.addr(&rcv, RCV, &format!("{a}/128"));
        }
        for key in ["all", "default", RCV] {
            lab.sysctl(&rcv, &format!("net.ipv4.conf.{key}.rp_filter"), "0");
        }
        // Answers (RST, ICMP unreachable, SYN-ACK) are built, then end at a blackhole route:
        // the receiver's work includes making them, not another namespace receiving them.
        lab.ip(&rcv, &["route", "add", "blackhole", "default"]);
        lab.ip(&rcv, &["-6", "route", "add", "blackhole", "default"]);
        // The DNS server the receiver queries sits behind the veth.
        let snd_mac = mac_text(lab.mac(&snd, SND));
        lab.ip(&rcv, &["route", "add", &format!("{}/32", mix::DNS4), "dev", RCV]);
        lab.ip(&rcv, &["neigh", "add", mix::DNS4, "lladdr", &snd_mac, "dev", RCV, "nud", "permanent"]);

        let policy = profile::policy(&Options::default()).expect("the built-in template parses");
        let tmp = std::env::temp_dir();
        let policy_file = tmp.join(format!("edge-compare-{}.toml", std::process::id()));
        write_private(&policy_file, &policy.text);
        let nft_file = tmp.join(format!("edge-compare-{}.nft", std::process::id()));
        write_private(&nft_file, &rulesets::nft_ruleset(&policy, Role::External));
        let dns = in_netns(&rcv, || {
            std::net::UdpSocket::bind((mix::ACCESS4, mix::DNS_CLIENT_PORT)).expect("bind the DNS client socket")
        });
        let libxdp_dir_existed = Path::new(LIBXDP_DIR).exists();
        Bench { lab, snd, rcv, policy, policy_file, nft_file, dns, libxdp_dir_existed }
    }

    /// The receiver asks its DNS server something: the flow the "dns answer" case replies to.
    fn query_dns(&self) {
        let _ = self.dns.send_to(b"\x12\x34query", (mix::DNS4, 53));
        cpu::sleep_ms(20);
    }

    fn delivered(&self) -> u64 {
        in_netns(&self.rcv, delivered_packets)
    }

    /// Runs a command inside the receiver's namespace (nsenter keeps the host's bpffs view).
    fn run_in_rcv(&self, program: &str, args: &[&str]) -> Result<String, String> {
        let out = self.lab.exec(&self.rcv, Path::new(program), args);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "{program} {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.policy_file);
        let _ = std::fs::remove_file(&self.nft_file);
        if !self.libxdp_dir_existed {
            // Only if empty: anything in it is someone else's.
            let _ = std::fs::remove_dir(LIBXDP_DIR);
        }
    }
}

fn write_private(path: &Path, text: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(text.as_bytes()).expect("write");
}

fn mac_text(m: [u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// A filter in place; dropping it removes the filter (also when a round panics).
enum Applied<'a> {
    Nothing,
    XdpPass { stop: std::sync::mpsc::Sender<()>, thread: Option<std::thread::JoinHandle<()>> },
    EdgeCtl(&'a Bench),
    XdpFilter(&'a Bench),
    Nftables(&'a Bench),
}

impl Drop for Applied<'_> {
    fn drop(&mut self) {
        match self {
            Applied::Nothing => {}
            Applied::XdpPass { stop, thread } => {
                let _ = stop.send(());
                if let Some(t) = thread.take() {
                    let _ = t.join();
                }
            }
            Applied::EdgeCtl(b) => {
                let _ = b.lab.edge_ctl(&b.rcv, &["detach", RCV]);
            }
            Applied::XdpFilter(b) => {
                if let Err(e) = b.run_in_rcv("xdp-filter", &["unload", RCV]) {
                    eprintln!("warning: {e}");
                }
            }
            Applied::Nftables(b) => {
                let _ = b.run_in_rcv("nft", &["delete", "table", "inet", NFT_TABLE]);
            }
        }
    }
}

fn apply(config: Config, b: &Bench) -> Result<Applied<'_>, String> {
    match config {
        Config::None => Ok(Applied::Nothing),
        Config::XdpPass => attach_xdp_pass(&b.rcv),
        Config::EdgeCtl => {
            let policy = b.policy_file.to_str().expect("utf-8 temp path");
            let out =
                b.lab.edge_ctl(&b.rcv, &["attach", RCV, "--role", "external", "--policy", policy, "--mode", "native"]);
            if !out.status.success() {
                return Err(format!("edge-ctl attach: {}", String::from_utf8_lossy(&out.stderr).trim()));
            }
            Ok(Applied::EdgeCtl(b))
        }
        Config::XdpFilter => {
            b.run_in_rcv(
                "xdp-filter",
                &["load", "--policy", "deny", "--features", "tcp,udp", "--mode", "native", RCV],
            )?;
            let applied = Applied::XdpFilter(b);
            for (port, protos) in rulesets::xdp_filter_ports(&b.policy, Role::External) {
                b.run_in_rcv("xdp-filter", &["port", "--mode", "dst", "--proto", protos, &port.to_string()])?;
            }
            Ok(applied)
        }
        Config::Nftables => {
            b.run_in_rcv("nft", &["-f", b.nft_file.to_str().expect("utf-8 temp path")])?;
            Ok(Applied::Nftables(b))
        }
    }
}

/// Loads edge-ctl's empty XDP program from its own object (maps pinned in a private directory)
/// and attaches it natively; a thread inside the namespace owns it until told to stop.
fn attach_xdp_pass(ns: &str) -> Result<Applied<'static>, String> {
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let (ready_tx, ready) = std::sync::mpsc::channel::<Result<(), String>>();
    let thread = spawn_in_netns(ns, move || {
        let dir = PathBuf::from(format!("/sys/fs/bpf/edge-compare-{}", std::process::id()));
        let attached = (|| -> Result<aya::Ebpf, String> {
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let mut ebpf = object::load(&dir, 1024).map_err(|e| e.to_string())?;
            let prog = object::load_xdp(&mut ebpf, edge_common::programs::XDP_FLOOR).map_err(|e| e.to_string())?;
            prog.attach(RCV, XdpMode::Driver).map_err(|e| format!("attach the empty XDP program: {e}"))?;
            Ok(ebpf)
        })();
        let ebpf = match attached {
            Ok(e) => {
                let _ = ready_tx.send(Ok(()));
                Some(e)
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                None
            }
        };
        if ebpf.is_some() {
            let _ = stopped.recv_timeout(Duration::from_secs(600));
        }
        drop(ebpf);
        let _ = std::fs::remove_dir_all(&dir);
    });
    match ready.recv_timeout(Duration::from_secs(30)) {
        Ok(Ok(())) => Ok(Applied::XdpPass { stop, thread: Some(thread) }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => Err("the empty XDP program did not attach within 30 s".into()),
    }
}

/// One configuration's measurement in one round.
struct Round {
    burst: Burst,
    delivered: u64,
    expected: u64,
    /// CPU time of sender and receive path together, per packet.
    ns_per_packet: f64,
    /// The receive path's part (softirq), per packet.
    rx_ns_per_packet: f64,
}

fn measure(
    config: Config,
    b: &Bench,
    load: &Load,
    warmup: &Load,
    cases: &[Case],
    irq_time: bool,
) -> Result<Round, String> {
    let applied = apply(config, b)?;
    b.query_dns();
    // Warm caches, connection tables and the route cache; not counted.
    sender::burst(&b.snd, SND, SEND_CPU, warmup);
    cpu::sleep_ms(20);
    let before = b.delivered();
    let burst = sender::burst(&b.snd, SND, SEND_CPU, load);
    cpu::sleep_ms(20);
    let delivered = b.delivered() - before;
    drop(applied);
    let expected = cases.iter().zip(&burst.sent_by_case).filter(|(c, _)| config.passes(c)).map(|(_, n)| n).sum();
    let send_cpu = burst.stat.get(SEND_CPU).copied().unwrap_or_default();
    let packets = burst.sent.max(1) as f64;
    // The receive path is the NET_RX softirq: the sending CPU's softirq time (sampled at each
    // tick without IRQ time accounting, exact with it).
    let softirq = send_cpu.softirq as f64 * cpu::tick_ns();
    let thread = (burst.thread_ns + burst.ksoftirqd_ns) as f64;
    // With IRQ time accounting the kernel keeps softirq time out of the thread's.
    let cpu_ns = if irq_time { thread + softirq } else { thread };
    let rx_ns = softirq;
    let (ns_per_packet, rx_ns_per_packet) = (cpu_ns / packets, rx_ns / packets);
    Ok(Round { burst, delivered, expected, ns_per_packet, rx_ns_per_packet })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { f64::NAN } else { v[v.len() / 2] }
}

struct Summary {
    config: Config,
    skipped: Option<String>,
    rounds: Vec<Round>,
}

impl Summary {
    fn total(&self, f: impl Fn(&Round) -> u64) -> u64 {
        self.rounds.iter().map(f).sum()
    }
    fn series(&self, f: impl Fn(&Round) -> f64) -> Vec<f64> {
        self.rounds.iter().map(f).collect()
    }
    /// How busy the other CPUs were (all work, ours or not) while this configuration ran, %.
    fn other_cpus_busy_pct(&self) -> f64 {
        let busy: u64 = self.rounds.iter().map(|r| other_cpus_busy_ticks(&r.burst.stat)).sum();
        let wall: u64 = self.rounds.iter().map(|r| r.burst.wall_ns).sum();
        let others = self.rounds.first().map_or(1, |r| r.burst.stat.len().saturating_sub(1).max(1)) as f64;
        busy as f64 * cpu::tick_ns() / wall.max(1) as f64 / others * 100.0
    }

    /// /proc/stat busy time per packet: (sending CPU, all others), medians over rounds.
    fn stat_ns(&self) -> (f64, f64) {
        let per_packet = |ticks: u64, r: &Round| ticks as f64 * cpu::tick_ns() / r.burst.sent.max(1) as f64;
        let own = median(self.series(|r| per_packet(r.burst.stat.get(SEND_CPU).map_or(0, |t| t.busy()), r)));
        let others = median(self.series(|r| per_packet(other_cpus_busy_ticks(&r.burst.stat), r)));
        (own, others)
    }
}

/// /proc/stat over idle windows between rounds: how busy the other CPUs are without our
/// traffic (other work on this shared machine).
#[derive(Default)]
struct Background {
    other_busy_ns: f64,
    wall_ns: f64,
}

impl Background {
    fn measure(&mut self, window: Duration) {
        let before = cpu::proc_stat();
        std::thread::sleep(window);
        let delta = cpu::proc_stat_delta(&before, &cpu::proc_stat());
        self.other_busy_ns += other_cpus_busy_ticks(&delta) as f64 * cpu::tick_ns();
        self.wall_ns += window.as_nanos() as f64;
    }

    fn other_cpus_busy_pct(&self) -> f64 {
        let others = cpu::proc_stat().len().saturating_sub(1).max(1) as f64;
        self.other_busy_ns / self.wall_ns.max(1.0) / others * 100.0
    }
}

fn other_cpus_busy_ticks(stat: &[cpu::CpuTicks]) -> u64 {
    stat.iter().enumerate().filter(|(i, _)| *i != SEND_CPU).map(|(_, t)| t.busy()).sum()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let json_path = args.iter().skip_while(|a| *a != "--json").nth(1).cloned();
    let (count, rounds) = if quick { (20_000u64, 2usize) } else { (400_000u64, 11usize) };
    let limit = Duration::from_secs(if quick { 5 } else { 20 });

    let irq_time = cpu::irq_time_accounting();
    let b = Bench::build();
    let cases = mix::cases();
    let frames = Arc::new(mix::frames(&cases, b.lab.mac(&b.rcv, RCV), b.lab.mac(&b.snd, SND)));
    let load = Load { frames: frames.clone(), cases: cases.len(), count, limit };
    let warmup = Load { frames, cases: cases.len(), count: (count / 10).max(frames_len(&cases)), limit };

    let mut summaries: Vec<Summary> =
        Config::ALL.iter().map(|&f| Summary { config: f, skipped: f.missing(), rounds: Vec::new() }).collect();
    println!(
        "edge-compare: {} packets x {rounds} rounds per filter, {} cases, sender and receive path on CPU {SEND_CPU}{}",
        count,
        cases.len(),
        if quick { " (quick: times mean nothing)" } else { "" }
    );
    let mut background = Background::default();
    for round in 0..rounds {
        // Rotate the order so no filter always runs first or after the same one.
        for k in 0..summaries.len() {
            let s = &mut summaries[(k + round) % Config::ALL.len()];
            if s.skipped.is_some() {
                continue;
            }
            match measure(s.config, &b, &load, &warmup, &cases, irq_time == Some(true)) {
                Ok(r) => s.rounds.push(r),
                Err(e) => s.skipped = Some(format!("{FAILED}{e}")),
            }
        }
        background.measure(Duration::from_millis(if quick { 50 } else { 300 }));
        eprint!("\rround {}/{rounds}", round + 1);
    }
    eprintln!();

    let rows = report(&summaries);
    let mismatches: Vec<String> = summaries
        .iter()
        .filter(|s| s.skipped.is_none() && s.total(|r| r.delivered) != s.total(|r| r.expected))
        .map(|s| s.config.name().to_string())
        .collect();
    if !mismatches.is_empty() {
        eprintln!("MISMATCH: received differs from expected for {}", mismatches.join(", "));
    }
    // A filter that is installed but could not be set up or measured fails the run (a missing
    // tool is only skipped).
    let failures: Vec<String> = summaries
        .iter()
        .filter_map(|s| {
            s.skipped.as_ref().filter(|why| why.starts_with(FAILED)).map(|why| format!("{}: {why}", s.config.name()))
        })
        .collect();
    for f in &failures {
        eprintln!("FAILED {f}");
    }

    if let Some(path) = json_path {
        let doc = json!({
            "quick": quick,
            "rounds": rounds,
            "packets_per_round": count,
            "send_cpu": SEND_CPU,
            "source_ports_per_case": mix::SOURCE_PORTS,
            "background_other_cpus_busy_pct": background.other_cpus_busy_pct(),
            "irq_time_accounting": irq_time,
            "cases": cases.iter().map(|c| json!({
                "name": c.name, "allowed_by_matrix": c.matrix, "allowed_by_port_list": c.port_list,
            })).collect::<Vec<_>>(),
            "filters": rows,
            "xdp_filter_ports": rulesets::xdp_filter_ports(&b.policy, Role::External)
                .iter().map(|(p, protos)| format!("{p}/{protos}")).collect::<Vec<_>>(),
            "xdp_filter_limits": XDP_FILTER_LIMITS,
            "nft_ruleset": rulesets::nft_ruleset(&b.policy, Role::External),
            "mismatches": mismatches,
            "failures": failures,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&doc).expect("JSON")).expect("write JSON");
        println!("JSON: {path}");
    }
    drop(b);
    if mismatches.is_empty() && failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// How a configuration that failed (rather than was not installed) is marked.
const FAILED: &str = "failed: ";

fn frames_len(cases: &[Case]) -> u64 {
    cases.len() as u64 * u64::from(mix::SOURCE_PORTS)
}

/// Median, minimum and maximum of a series.
fn stats(v: &[f64]) -> (f64, f64, f64) {
    let (lo, hi) = v.iter().fold((f64::MAX, f64::MIN), |(l, h), &x| (l.min(x), h.max(x)));
    (median(v.to_vec()), lo, hi)
}

/// The per-round differences from the same round's baseline.
fn paired(v: &[f64], baseline: &[f64]) -> Vec<f64> {
    v.iter().zip(baseline).map(|(x, b)| x - b).collect()
}

/// Prints the table and returns its rows as JSON.
fn report(summaries: &[Summary]) -> Vec<Value> {
    let base = &summaries[0];
    let (base_all, base_rx) = (base.series(|r| r.ns_per_packet), base.series(|r| r.rx_ns_per_packet));
    println!(
        "\n{:<17} {:>8} {:>8} {:>8} {:>8} {:>7} {:>8} {:>7} {:>8} {:>7}",
        "FILTER", "SENT", "RECEIVED", "EXPECTED", "DROPPED", "NS/PKT", "VS NONE", "RX NS", "RX VS", "SPREAD"
    );
    let mut rows = Vec::new();
    for s in summaries {
        if let Some(why) = &s.skipped {
            println!("{:<17} {why}", s.config.name());
            rows.push(json!({"filter": s.config.name(), "description": s.config.description(), "skipped": why}));
            continue;
        }
        let (all, rx) = (s.series(|r| r.ns_per_packet), s.series(|r| r.rx_ns_per_packet));
        let (med, lo, hi) = stats(&all);
        let (rx_med, rx_lo, rx_hi) = stats(&rx);
        let spread = (hi - lo) / med * 100.0;
        let (delta, delta_lo, delta_hi) = stats(&paired(&all, &base_all));
        let rx_delta = median(paired(&rx, &base_rx));
        let (sent, received, expected) = (s.total(|r| r.burst.sent), s.total(|r| r.delivered), s.total(|r| r.expected));
        let dropped = sent - received.min(sent);
        println!(
            "{:<17} {sent:>8} {received:>8} {expected:>8} {dropped:>8} {med:>7.0} {delta:>+8.0} {rx_med:>7.0} {rx_delta:>+8.0} {spread:>6.1}%",
            s.config.name(),
        );
        let (stat_own, stat_others) = s.stat_ns();
        rows.push(json!({
            "filter": s.config.name(),
            "description": s.config.description(),
            "sent": sent,
            "received": received,
            "expected": expected,
            "dropped": dropped,
            "send_errors": s.total(|r| r.burst.errors),
            "timed_out_rounds": s.rounds.iter().filter(|r| r.burst.timed_out).count(),
            "ns_per_packet": med,
            "ns_min": lo,
            "ns_max": hi,
            "spread_pct": spread,
            "delta_vs_none_ns": delta,
            "delta_vs_none_min_ns": delta_lo,
            "delta_vs_none_max_ns": delta_hi,
            "rx_ns_per_packet": rx_med,
            "rx_ns_min": rx_lo,
            "rx_ns_max": rx_hi,
            "rx_delta_vs_none_ns": rx_delta,
            "stat_send_cpu_ns_per_packet": stat_own,
            "stat_other_cpus_ns_per_packet": stat_others,
            "other_cpus_busy_pct": s.other_cpus_busy_pct(),
            "ksoftirqd_ns_per_packet": median(s.series(|r| r.burst.ksoftirqd_ns as f64 / r.burst.sent.max(1) as f64)),
            "wall_ns_per_packet": median(s.series(|r| r.burst.wall_ns as f64 / r.burst.sent.max(1) as f64)),
            "rounds_ns_per_packet": all,
            "rounds_rx_ns_per_packet": rx,
        }));
    }
    println!(
        "\nNS/PKT: CPU time per packet of the sending thread, which also runs the receive path (veth delivers in the\n\
         sender's softirq), plus ksoftirqd; median of rounds. RX NS: the receive path's part, the sending CPU's softirq\n\
         time in /proc/stat (sampled at the tick). VS NONE, RX VS: median of per-round differences from no filter.\n\
         SPREAD: (max-min)/median of NS/PKT across rounds."
    );
    rows
}
