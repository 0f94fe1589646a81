//! The `edge-ctl` command line: argument parsing and output. The work is done by the library.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use crate::dataplane::{self, AttachRequest, Mode};
use crate::policy::{self, Policy, Role};
use crate::profile;

/// The policy used when `attach` is given none.
pub const DEFAULT_POLICY: &str = "/etc/edge-ctl/policy.toml";

#[derive(Parser, Debug)]
#[command(
    name = "edge-ctl",
    version,
    about = "Enforce the Lync Server 2013 / Skype for Business Edge port matrix with XDP",
    long_about = "edge-ctl compiles a declarative policy (TOML) into BPF maps and attaches an XDP \
filter to the edge server's interfaces: inbound packets that no rule allows are dropped at the \
driver, before the network stack sees them. Each interface has a role, external or internal, \
and gets that role's rules. The filter stays attached after edge-ctl exits (pinned under \
/sys/fs/bpf/edge-ctl); per-rule counters are read with `edge-ctl stats`.",
    after_help = "Examples:
  edge-ctl policy template lync2013-edge-hlb --nodes 2 > /etc/edge-ctl/policy.toml
  edge-ctl policy check /etc/edge-ctl/policy.toml
  edge-ctl attach eth0 --role external
  edge-ctl attach eth1 --role internal --policy /etc/edge-ctl/policy.toml
  edge-ctl status
  edge-ctl stats eth0
  edge-ctl detach eth0"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Load the filter, fill its tables from a policy and attach it to an interface.
    #[command(after_help = "Without --policy, edge-ctl uses /etc/edge-ctl/policy.toml when it exists, \
else the built-in lync2013-edge-hlb profile with the interface's own addresses as the service \
addresses. It says which policy it used.

Examples:
  edge-ctl attach eth0 --role external
  edge-ctl attach eth1 --role internal --policy edge.toml --mode generic")]
    Attach {
        /// Interface to filter, e.g. eth0.
        interface: String,
        /// Which of the policy's rule sets applies to this interface.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Policy file (TOML).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// XDP attach mode.
        #[arg(long, value_enum, default_value = "auto")]
        mode: Mode,
        /// Attach even if the policy would cut the SSH session edge-ctl runs in.
        #[arg(long)]
        force: bool,
    },
    /// List the connection table (flows the edge opened), or flush it.
    #[command(
        after_help = "Examples:\n  edge-ctl conntrack eth0\n  edge-ctl conntrack eth0 --json\n  edge-ctl conntrack flush eth0"
    )]
    Conntrack {
        /// Only this interface (default: all attached).
        interface: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        command: Option<ConntrackCommand>,
    },
    /// Swap the policy of an attached interface atomically, without dropping a packet.
    #[command(after_help = "The new policy is parsed, validated and compiled, written beside the live \
one and switched in with a single map write: every packet is judged wholly by the old or wholly \
by the new policy. Counters follow rule names (a kept rule keeps counting; a removed rule's \
final counts are printed); the connection table is kept. A policy that fails to parse, \
validate or compile changes nothing.

Examples:
  edge-ctl reload eth0 --policy /etc/edge-ctl/policy.toml
  edge-ctl reload eth0 --policy new.toml --json")]
    Reload {
        interface: String,
        /// Policy file (default: /etc/edge-ctl/policy.toml, else the built-in profile).
        #[arg(long)]
        policy: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Replace the live eBPF programs with this build's, on the same links, keeping the maps.
    #[command(after_help = "The programs are swapped with bpf_link_update: there is no moment without \
a filter. When this build needs a map with another layout, nothing changes and edge-ctl says \
which map: detach and attach again.

Example:
  edge-ctl upgrade eth0")]
    Upgrade { interface: String },
    /// Detach the filter from an interface and remove its pinned maps and state.
    #[command(after_help = "Example:\n  edge-ctl detach eth0")]
    Detach { interface: String },
    /// Show the interfaces the filter is attached to in this network namespace.
    #[command(after_help = "Example:\n  edge-ctl status --json")]
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// What this kernel offers edge-ctl: the features it probes, the object it would load, and
    /// each program run through the verifier (with the instructions it processed).
    #[command(
        long_about = "What this kernel offers edge-ctl. Each feature is probed (a tiny program or map \
the kernel must accept, or a query it must answer), never read off the version. The eBPF object \
follows: `full` on kernels with the atomic compare-and-exchange (5.12) and the coarse clock \
helper (5.11), `compat` before (no flow slots in front of the connection table). Then every program \
of that object goes through this kernel's verifier with maps of its own, nothing attached, and the \
verifier's figures are shown: instructions processed against its limit of 1,000,000. Exits 1 when \
a required feature is missing or a program is refused; `attach` would fail the same way.",
        after_help = "Examples:\n  edge-ctl kernel\n  edge-ctl kernel --json"
    )]
    Kernel {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show per-rule packet and byte counters and drops by reason.
    #[command(after_help = "JSON shape (--json): {\"interfaces\": [{\"interface\", \"role\", \
\"generation\", \"policy_hash\", \"rules\": [{\"name\", \"direction\", \"protocol\", \"ports\", \
\"local\", \"remote\", \"packets\", \"bytes\"}], \"drops\": [{\"reason\", \"packets\", \"bytes\"}], \
\"passes\": [{\"reason\", \"packets\", \"bytes\"}]}]}. Counters are totals since attach.

Examples:
  edge-ctl stats
  edge-ctl stats eth0 --json")]
    Stats {
        /// Only this interface.
        interface: Option<String>,
        #[arg(long)]
        json: bool,
        /// Refresh every second (in place on a terminal; one JSON document per line with --json).
        #[arg(long)]
        watch: bool,
    },
    /// Print dropped packets as the kernel reports them (rate-limited by `[events] per_second`).
    #[command(after_help = "Each line: time, interface, direction, verdict (dropped, or would-drop in \
audit/monitor mode), protocol, source, destination, reason and what decided. The kernel limits \
events per CPU and second, so a flood yields at most that many lines. One reader at a time.

Examples:
  edge-ctl tail eth0
  edge-ctl tail --json")]
    Tail {
        /// Only this interface (default: all attached).
        interface: Option<String>,
        #[arg(long)]
        json: bool,
        /// Stop after this many seconds (default: run until interrupted).
        #[arg(long)]
        seconds: Option<u64>,
    },
    /// Which rule, default or tracked flow would decide a packet, and why (live maps, dry run).
    #[command(after_help = "The kernel's own code answers: a dry copy of the filter runs on the \
packet against the live maps without touching counters or the connection table. The direction \
follows from which address is the interface's (or --direction).

Examples:
  edge-ctl explain eth0 --proto tcp --src 192.0.2.50 --dst 203.0.113.21 --dport 5061
  edge-ctl explain eth0 --proto udp --src 198.51.100.7 --sport 53 --dst 203.0.113.21 --dport 41000")]
    Explain {
        interface: String,
        #[arg(long, value_enum)]
        proto: ProtoArg,
        #[arg(long)]
        src: std::net::IpAddr,
        #[arg(long)]
        dst: std::net::IpAddr,
        #[arg(long)]
        dport: u16,
        #[arg(long, default_value_t = 40000)]
        sport: u16,
        /// TCP flags of the probe: syn (a new connection), ack (part of one), syn-ack.
        #[arg(long, value_enum, default_value = "syn")]
        flags: FlagsArg,
        #[arg(long, value_enum)]
        direction: Option<DirectionArg>,
        #[arg(long)]
        json: bool,
    },
    /// Work with policy files without touching the kernel.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Run as a daemon: keep interfaces filtered, hot-swap changed policy files, serve metrics.
    #[command(
        long_about = "Run as a daemon (e.g. under systemd, see contrib/edge-ctl.service). At start, \
serve attaches every interface of the configuration that has no filter yet and adopts those that \
have one, reloading any whose live policy differs from its file. It then polls each policy file \
and hot-swaps it (`edge-ctl reload`) once the file has stopped changing for half a second; a \
file that does not parse or validate is logged with its file:line:column errors and the live \
policy stays. Prometheus metrics (text format) are served at http://ADDR/metrics, read fresh \
from the kernel's maps at every scrape. SIGTERM or SIGINT stops the daemon; the filters stay \
attached and counting. Log level: RUST_LOG (default info).",
        after_help = "Configuration (TOML), one table per interface:
  [[interface]]
  name = \"eth0\"                        # interface in this network namespace
  role = \"external\"                    # external | internal
  policy = \"/etc/edge-ctl/policy.toml\" # relative paths: from the configuration's directory
  mode = \"auto\"                        # optional: native | generic | auto (used at attach)

Metrics, each labelled interface and role (README, \"Running as a service\", has them all):
  edge_ctl_rule_packets_total, edge_ctl_rule_bytes_total          {rule, direction}
  edge_ctl_dropped_packets_total, edge_ctl_dropped_bytes_total    {direction, reason}
  edge_ctl_would_drop_packets_total, ..._bytes_total              {direction, reason}
  edge_ctl_passed_packets_total, edge_ctl_passed_bytes_total      {direction, reason}
  edge_ctl_conntrack_entries {family}, edge_ctl_conntrack_max_entries
  edge_ctl_conntrack_{hits,created,expired,table_full,resets}_total
  edge_ctl_policy_generation, edge_ctl_policy_info {sha256}
  edge_ctl_policy_reloads_total, edge_ctl_policy_reload_failures_total
  edge_ctl_policy_last_reload_success_timestamp_seconds, edge_ctl_interface_attached

Examples:
  edge-ctl serve --config /etc/edge-ctl/serve.toml
  edge-ctl serve --config serve.toml --metrics 0.0.0.0:9469
  RUST_LOG=debug edge-ctl serve --config serve.toml
  curl -s http://127.0.0.1:9469/metrics | grep edge_ctl_rule_packets_total"
    )]
    Serve(crate::serve::ServeArgs),
}

#[derive(Subcommand, Debug)]
pub enum ConntrackCommand {
    /// Remove every entry: answers to flows opened before are dropped from now on.
    Flush { interface: String },
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Validate a policy file; errors name file:line:column.
    #[command(after_help = "Example:\n  edge-ctl policy check /etc/edge-ctl/policy.toml")]
    Check { file: PathBuf },
    /// Print a policy as a table in the vendor document's form.
    #[command(after_help = "Example:\n  edge-ctl policy show /etc/edge-ctl/policy.toml --role external")]
    Show {
        file: PathBuf,
        /// Only this role's rules.
        #[arg(long, value_enum)]
        role: Option<RoleArg>,
    },
    /// The document's address plan for N Edge Servers: public addresses, SNAT, routing.
    #[command(after_help = "Example:\n  edge-ctl policy plan --nodes 2")]
    Plan {
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=profile::MAX_NODES as i64))]
        nodes: u8,
    },
    /// Print a built-in profile as a commented policy file.
    #[command(after_help = "Example:\n  edge-ctl policy template lync2013-edge-hlb --nodes 2 > edge.toml")]
    Template {
        /// Profile name.
        #[arg(value_enum)]
        profile: ProfileArg,
        /// Edge servers in the pool.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=profile::MAX_NODES as i64))]
        nodes: u8,
    },
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ProtoArg {
    Tcp,
    Udp,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum FlagsArg {
    Syn,
    Ack,
    SynAck,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum DirectionArg {
    Inbound,
    Outbound,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum RoleArg {
    External,
    Internal,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::External => Role::External,
            RoleArg::Internal => Role::Internal,
        }
    }
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ProfileArg {
    #[value(name = "lync2013-edge-hlb")]
    Lync2013EdgeHlb,
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Attach { interface, role, policy, mode, force } => {
            attach(&interface, role.into(), policy, mode, force)
        }
        Command::Conntrack { command: Some(ConntrackCommand::Flush { interface }), .. } => {
            let n = dataplane::conntrack::flush(&interface)?;
            println!("flushed {n} entries on {interface}");
            Ok(())
        }
        Command::Conntrack { interface: Some(interface), json, command: None } => conntrack(&interface, json),
        Command::Conntrack { interface: None, json, command: None } => {
            for s in dataplane::status()? {
                conntrack(&s.interface, json)?;
            }
            Ok(())
        }
        Command::Reload { interface, policy, json } => reload(&interface, policy, json),
        Command::Upgrade { interface } => {
            let r = dataplane::upgrade(&interface)?;
            println!("upgraded {interface}: XDP program {} -> {}", r.xdp_program.0, r.xdp_program.1);
            match r.tc_program {
                (Some(old), new) => println!("  egress program {old} -> {new}"),
                (None, new) => println!("  egress program (clsact filter) replaced by {new}"),
            }
            Ok(())
        }
        Command::Detach { interface } => {
            dataplane::detach(&interface)?;
            println!("detached from {interface}");
            Ok(())
        }
        Command::Status { json } => status(json),
        Command::Kernel { json } => kernel(json),
        Command::Stats { interface, json, watch: false } => stats(interface.as_deref(), json),
        Command::Stats { interface, json, watch: true } => watch(interface.as_deref(), json),
        Command::Tail { interface, json, seconds } => tail(interface.as_deref(), json, seconds),
        Command::Explain { interface, proto, src, dst, dport, sport, flags, direction, json } => {
            let req = dataplane::ExplainRequest {
                ifname: &interface,
                protocol: match proto {
                    ProtoArg::Tcp => policy::Protocol::Tcp,
                    ProtoArg::Udp => policy::Protocol::Udp,
                },
                src,
                dst,
                sport,
                dport,
                tcp_flags: match flags {
                    FlagsArg::Syn => crate::frame::SYN,
                    FlagsArg::Ack => crate::frame::ACK,
                    FlagsArg::SynAck => crate::frame::SYN | crate::frame::ACK,
                },
                direction: direction.map(|d| match d {
                    DirectionArg::Inbound => policy::Direction::Inbound,
                    DirectionArg::Outbound => policy::Direction::Outbound,
                }),
            };
            let a = dataplane::explain(&req)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&a)?);
            } else {
                println!(
                    "{}: {} {} {} -> {}: {}",
                    a.interface,
                    a.direction,
                    req.protocol,
                    std::net::SocketAddr::new(src, sport),
                    std::net::SocketAddr::new(dst, dport),
                    a.verdict.to_uppercase()
                );
                println!("  because {}", a.because);
                if let Some(f) = &a.flow {
                    println!(
                        "  flow: {} {}, age {:.1} s, idle {:.1} s, opened by {}",
                        f.flow.protocol, f.state, f.age_s, f.idle_s, f.rule
                    );
                }
                println!(
                    "  (generation {}, policy sha256 {})",
                    a.generation,
                    &a.policy_hash[..16.min(a.policy_hash.len())]
                );
            }
            Ok(())
        }
        Command::Serve(args) => crate::serve::run(args),
        Command::Policy(PolicyCommand::Check { file }) => check(&file),
        Command::Policy(PolicyCommand::Show { file, role }) => {
            let p = read_policy(&file)?;
            print!("{}", crate::show::render(&p, role.map(Role::from)));
            Ok(())
        }
        Command::Policy(PolicyCommand::Plan { nodes }) => {
            print!("{}", profile::plan(nodes));
            Ok(())
        }
        Command::Policy(PolicyCommand::Template { profile: ProfileArg::Lync2013EdgeHlb, nodes }) => {
            print!("{}", profile::render(&profile::Options { nodes, ..Default::default() }));
            Ok(())
        }
    }
}

/// Reads a policy file, refusing one that other users may write.
pub fn read_policy(path: &Path) -> Result<Policy> {
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read policy file {}", path.display()))?;
    if meta.permissions().mode() & 0o002 != 0 {
        bail!(
            "policy file {} is writable by other users, so anyone could change the firewall; \
             fix it with `chmod o-w {}`",
            path.display(),
            path.display()
        );
    }
    Ok(policy::load(path)?)
}

/// The policy for `attach`: the given file, else /etc/edge-ctl/policy.toml, else the built-in.
fn choose_policy(arg: Option<PathBuf>) -> Result<Policy> {
    if let Some(path) = arg {
        return read_policy(&path);
    }
    let default = Path::new(DEFAULT_POLICY);
    if default.exists() {
        return read_policy(default);
    }
    let options = profile::Options { addressing: profile::Addressing::Interface, ..Default::default() };
    Ok(profile::policy(&options)?)
}

fn print_warnings(p: &Policy) {
    for w in &p.warnings {
        eprintln!("{w}");
    }
}

fn attach(interface: &str, role: Role, policy: Option<PathBuf>, mode: Mode, force: bool) -> Result<()> {
    let policy = choose_policy(policy)?;
    print_warnings(&policy);
    let addrs = dataplane::system::interface_addresses(interface);
    if let Some(cut) = ssh_session_cut(&policy, role, interface, &addrs) {
        if !force {
            bail!("{cut}; fix the policy (the [failsafe] section, or a rule) or pass --force to attach anyway");
        }
        eprintln!("warning: {cut} (attaching anyway: --force)");
    }
    let report = dataplane::attach(&AttachRequest { ifname: interface, role, policy: &policy, mode })?;
    if report.replaced_stale {
        eprintln!("note: removed a stale attachment: {interface} had been deleted and created again");
    }
    if let Some(why) = &report.fallback {
        eprintln!("note: {why}");
    }
    println!(
        "attached to {interface} as {role} ({} XDP, {} egress, program {}), policy {} ({} rules for this role)",
        report.mode, report.egress, report.program_id, policy.origin, report.rules
    );
    if report.seeded > 0 {
        println!("  {} open connection(s) allowed by the outbound rules kept working (seeded)", report.seeded);
    }
    if policy.origin.starts_with("<built-in") {
        let addrs: Vec<String> = report.interface_addresses.iter().map(|a| a.to_string()).collect();
        println!(
            "  service addresses from {interface}: {}",
            if addrs.is_empty() { "none".into() } else { addrs.join(", ") }
        );
    }
    Ok(())
}

/// When edge-ctl runs over SSH and the session arrives on this interface, whether the policy
/// would cut it ($SSH_CONNECTION: "client_ip client_port server_ip server_port").
fn ssh_session_cut(policy: &Policy, role: Role, interface: &str, addrs: &[std::net::IpAddr]) -> Option<String> {
    use crate::reference::{Frame, Payload, decide};
    let conn = std::env::var("SSH_CONNECTION").ok()?;
    let f: Vec<&str> = conn.split_whitespace().collect();
    let [client, client_port, server, server_port] = f[..] else {
        return None;
    };
    let (client, server): (std::net::IpAddr, std::net::IpAddr) = (client.parse().ok()?, server.parse().ok()?);
    if !addrs.contains(&server) {
        return None;
    }
    let frame = Frame::Ip {
        src: client,
        dst: server,
        payload: Payload::Ports {
            protocol: policy::Protocol::Tcp,
            sport: client_port.parse().ok()?,
            dport: server_port.parse().ok()?,
            tcp_flags: crate::reference::TCP_SYN,
        },
    };
    let decision = decide(policy, role, addrs, policy::Direction::Inbound, &frame);
    (!decision.passes()).then(|| {
        format!("your SSH session ({client} -> {server}:{server_port}) arrives on {interface} and the {role} rules of this policy drop it: attaching would cut it")
    })
}

fn tail(interface: Option<&str>, json: bool, seconds: Option<u64>) -> Result<()> {
    use std::io::Write;
    let mut t = dataplane::events::Tail::open(interface)?;
    if !json {
        eprintln!("reading drop events of {} (Ctrl-C to stop)", t.interfaces().join(", "));
    }
    let deadline = seconds.map(|s| std::time::Instant::now() + std::time::Duration::from_secs(s));
    let mut out = std::io::stdout().lock();
    while deadline.is_none_or(|d| std::time::Instant::now() < d) {
        for e in t.wait(std::time::Duration::from_millis(250)) {
            if json {
                writeln!(out, "{}", serde_json::to_string(&e)?)?;
            } else {
                let end = |a: Option<std::net::IpAddr>, p: Option<u16>| match (a, p) {
                    (Some(a), Some(p)) => std::net::SocketAddr::new(a, p).to_string(),
                    (Some(a), None) => a.to_string(),
                    _ => "-".into(),
                };
                writeln!(
                    out,
                    "{} {} {:<8} {:<10} {:<6} {} -> {} {} ({})",
                    e.time,
                    e.interface,
                    e.direction,
                    e.verdict,
                    e.protocol,
                    end(e.src, e.sport),
                    end(e.dst, e.dport),
                    e.reason,
                    e.decided_by
                )?;
            }
        }
        out.flush()?;
    }
    Ok(())
}

/// `stats --watch`: refreshed in place on a terminal, plain blocks otherwise.
fn watch(interface: Option<&str>, json: bool) -> Result<()> {
    use std::io::IsTerminal;
    let tty = std::io::stdout().is_terminal() && !json;
    let mut previous: Option<(std::time::Instant, Vec<dataplane::InterfaceStats>)> = None;
    loop {
        let now = std::time::Instant::now();
        let all = dataplane::stats(interface)?;
        if json {
            println!("{}", serde_json::to_string(&serde_json::json!({ "interfaces": all }))?);
        } else {
            if tty {
                print!("\x1b[2J\x1b[H");
            }
            println!("{}", humantime::format_rfc3339_seconds(std::time::SystemTime::now()));
            for s in &all {
                let prev =
                    previous.as_ref().and_then(|(t, p)| p.iter().find(|x| x.interface == s.interface).map(|x| (t, x)));
                let rate = |name: &str, packets: u64| -> String {
                    match prev.and_then(|(t, p)| p.rules.iter().find(|r| r.name == name).map(|r| (t, r.packets))) {
                        Some((t, before)) => {
                            format!(
                                "{:.0}/s",
                                packets.saturating_sub(before) as f64 / now.duration_since(*t).as_secs_f64()
                            )
                        }
                        None => "-".into(),
                    }
                };
                println!("{} ({}, {}, generation {})", s.interface, s.role, s.mode, s.generation);
                println!(
                    "  {:<26} {:<8} {:<5} {:<13} {:>12} {:>14} {:>10}",
                    "RULE", "DIR", "PROTO", "PORTS", "PACKETS", "BYTES", "RATE"
                );
                for r in &s.rules {
                    println!(
                        "  {:<26} {:<8} {:<5} {:<13} {:>12} {:>14} {:>10}",
                        r.name,
                        r.direction,
                        r.protocol,
                        r.ports,
                        r.packets,
                        r.bytes,
                        rate(&r.name, r.packets)
                    );
                }
                for (title, rows) in [("dropped", &s.drops), ("would drop", &s.would_drop)] {
                    for d in rows.iter().filter(|d| d.packets > 0) {
                        println!("  {title:<10} {:<9} {:<22} {:>12}", d.direction, d.reason, d.packets);
                    }
                }
                let c = &s.conntrack;
                println!("  conntrack {} + {} of {} each", c.entries_v4, c.entries_v6, c.max_entries);
            }
        }
        previous = Some((now, all));
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

fn reload(interface: &str, policy: Option<PathBuf>, json: bool) -> Result<()> {
    let policy = choose_policy(policy)?;
    print_warnings(&policy);
    let r = dataplane::reload(interface, &policy)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "reloaded {interface}: policy {} (sha256 {}), generation {} live",
        policy.origin,
        &r.policy_hash[..16],
        r.generation
    );
    for name in &r.added {
        println!("  + {name}");
    }
    for name in &r.changed {
        println!("  ~ {name}");
    }
    for rm in &r.removed {
        println!("  - {} (final count: {} packets, {} bytes)", rm.name, rm.packets, rm.bytes);
    }
    println!("  {} rules unchanged", r.unchanged);
    for n in &r.notes {
        eprintln!("note: {n}");
    }
    Ok(())
}

fn conntrack(interface: &str, json: bool) -> Result<()> {
    let entries = dataplane::conntrack::list(interface)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "interface": interface, "entries": entries }))?
        );
        return Ok(());
    }
    println!("{:<5} {:<40} {:<40} {:<12} {:>8} {:>8}  RULE", "PROTO", "LOCAL", "REMOTE", "STATE", "AGE s", "IDLE s");
    for e in &entries {
        let local = std::net::SocketAddr::new(e.flow.local, e.flow.local_port).to_string();
        let remote = std::net::SocketAddr::new(e.flow.remote, e.flow.remote_port).to_string();
        let state = if e.expired { format!("{} (expired)", e.state) } else { e.state.to_string() };
        println!(
            "{:<5} {local:<40} {remote:<40} {state:<12} {:>8.1} {:>8.1}  {}",
            e.flow.protocol, e.age_s, e.idle_s, e.rule
        );
    }
    println!("{} entries", entries.len());
    Ok(())
}

fn kernel(json: bool) -> Result<()> {
    use dataplane::kernel::{self, Feature};
    use dataplane::object::{self, Flavor};
    dataplane::system::require_privileges()?;
    let features = kernel::features();
    let flavor = Flavor::for_kernel();
    let checks = object::verify(flavor)?;
    let missing = features.all().iter().any(|(f, ok): &(Feature, bool)| f.required() && !ok);
    let refused: Vec<&str> = checks.iter().filter(|c| !c.accepted).map(|c| c.program.as_str()).collect();
    if json {
        let features: Vec<_> = features
            .all()
            .iter()
            .map(|(f, ok)| {
                serde_json::json!({ "feature": f.name(), "present": ok, "since": f.since(), "required": f.required() })
            })
            .collect();
        let out = serde_json::json!({
            "release": kernel::release(), "features": features, "object": flavor.name(), "programs": checks,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("kernel {}", kernel::release());
        println!("features (probed):");
        for (f, ok) in features.all() {
            let need = if f.required() { "required" } else { "optional" };
            let answer = if *ok { "yes" } else { "no" };
            println!("  {:<24} {answer:<3}  Linux {}+, {need}: {}", f.name(), f.since(), f.purpose());
        }
        println!("object: {}", flavor.name());
        println!("programs (this kernel's verifier; instructions processed, limit 1,000,000):");
        for c in &checks {
            let insns = c.insns_processed.map_or("?".to_string(), |n| n.to_string());
            let verdict = if c.accepted { "accepted" } else { "REFUSED" };
            // The stats line after its "processed N insns (limit ...)" part: the states.
            let states = c.stats.split_once(") ").map_or("", |(_, rest)| rest);
            println!("  {:<20} {verdict:<8} {insns:>7} insns  {states}", c.program);
            if let Some(e) = &c.error {
                println!("    {}", e.replace('\n', "\n    "));
            }
        }
    }
    if missing {
        features.check_required()?;
    }
    if !refused.is_empty() {
        bail!("this kernel's verifier refuses {}: edge-ctl cannot attach here", refused.join(", "));
    }
    Ok(())
}

fn status(json: bool) -> Result<()> {
    let list = dataplane::status()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "interfaces": list }))?);
        return Ok(());
    }
    if list.is_empty() {
        println!("edge-ctl is not attached to any interface in this network namespace");
        return Ok(());
    }
    for s in list {
        let role = s.role.map_or("?".to_string(), |r| r.to_string());
        println!(
            "{}: role {role}, {} XDP, {} egress",
            s.interface,
            s.mode.as_deref().unwrap_or("?"),
            s.egress.unwrap_or("?")
        );
        println!("  program id {}, link id {}", opt(s.program_id), opt(s.link_id));
        println!(
            "  policy {} (sha256 {}), {} rules, generation {}",
            s.policy_origin.as_deref().unwrap_or("?"),
            s.policy_hash.as_deref().map_or("?", |h| &h[..16.min(h.len())]),
            s.rules,
            opt(s.generation)
        );
        if let Some(t) = s.attached_at {
            println!("  attached at {}", format_time(t));
        }
        if let Some(p) = s.problem {
            println!("  problem: {p}");
        }
    }
    Ok(())
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or("?".to_string(), |v| v.to_string())
}

pub fn format_time(unix: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix)).to_string()
}

fn stats(interface: Option<&str>, json: bool) -> Result<()> {
    let all = dataplane::stats(interface)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "interfaces": all }))?);
        return Ok(());
    }
    if all.is_empty() {
        println!("edge-ctl is not attached to any interface in this network namespace");
    }
    for s in all {
        println!("{} ({}, generation {}, policy {})", s.interface, s.role, s.generation, &s.policy_hash[..16]);
        println!("  {:<26} {:<8} {:<5} {:<13} {:>12} {:>14}", "RULE", "DIR", "PROTO", "PORTS", "PACKETS", "BYTES");
        for r in &s.rules {
            println!(
                "  {:<26} {:<8} {:<5} {:<13} {:>12} {:>14}",
                r.name, r.direction, r.protocol, r.ports, r.packets, r.bytes
            );
        }
        let section = |title: &str, rows: &[dataplane::ReasonStats]| {
            let rows: Vec<_> = rows.iter().filter(|r| r.packets > 0).collect();
            println!("  {title}");
            if rows.is_empty() {
                println!("    (none)");
            }
            for r in rows {
                println!("    {:<9} {:<22} {:>12} {:>14}", r.direction, r.reason, r.packets, r.bytes);
            }
        };
        section("DROPPED by reason", &s.drops);
        section("WOULD DROP (egress monitor mode, passed)", &s.would_drop);
        section("PASSED without a rule", &s.passes);
        let c = &s.conntrack;
        println!(
            "  CONNTRACK  entries {} IPv4 + {} IPv6 of {} each; hits {}, created {}, expired {}, table-full {}, reset {}",
            c.entries_v4, c.entries_v6, c.max_entries, c.hits, c.created, c.expired, c.table_full, c.reset
        );
    }
    Ok(())
}

fn check(file: &Path) -> Result<()> {
    let p = read_policy(file)?;
    for role in Role::ALL {
        crate::compile::compile(&p, role, &[], &Default::default())?;
    }
    let mut warnings = p.warnings.clone();
    warnings.extend(crate::analysis::findings(&p).into_iter().map(|f| f.diagnostic));
    warnings.sort_by_key(|d| d.at);
    for w in &warnings {
        eprintln!("{w}");
    }
    let count = |r| p.rules_of(r).count();
    println!(
        "{}: ok ({} rules: {} external, {} internal enabled; {} warnings)",
        file.display(),
        p.rules.len(),
        count(Role::External),
        count(Role::Internal),
        warnings.len()
    );
    Ok(())
}
