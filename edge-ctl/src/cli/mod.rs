//! The `edge-ctl` command line: argument parsing and output. The work is done by the library.
//!
//! This module holds the clap definitions ([`Cli`], [`Command`] and the nested subcommands) and
//! [`run`], which hands each command to the module of its group:
//!
//! - `args`: the value enums of the arguments, and what each value stands for.
//! - `attach`: attach, detach, reload and upgrade, and the check that an attach would not cut the
//!   SSH session edge-ctl runs in.
//! - `observe`: status, stats (`--watch` too), tail, conntrack and explain: the live filter, read.
//! - `policy_cmd`: `policy check|show|plan|template`, policy files without the kernel.
//! - `kernel`: what this kernel offers edge-ctl.
//!
//! `serve` is a module of the library (`crate::serve`), started from here.

mod args;
mod attach;
mod kernel;
mod observe;
mod policy_cmd;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::dataplane::{self, Mode};
use crate::policy::Role;
use crate::profile;

pub use args::{DirectionArg, FlagsArg, PlacementArg, ProfileArg, ProtoArg, RoleArg};
pub use observe::format_time;

/// Exit codes of every command (`edge-ctl --help` lists them; docs/operations.md too).
pub mod exit {
    /// Done. For `status`: every attached interface is filtered as its state says (or none is).
    pub const OK: u8 = 0;
    /// The command failed and changed nothing it could not finish; the message says what to do.
    pub const ERROR: u8 = 1;
    /// Bad arguments (clap's usage errors).
    pub const USAGE: u8 = 2;
    /// `status` ran and reports a problem on at least one interface (gone, stale, renamed).
    pub const PROBLEM: u8 = 3;
}

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
  edge-ctl detach eth0

Exit status: 0 done; 1 failed (the message says what to do); 2 bad arguments; 3 `status` reports
a problem. Writing to a closed pipe (`edge-ctl ... | head`) ends a command quietly, as other
tools do."
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
        /// Reload even if the new policy would cut the SSH session edge-ctl runs in.
        #[arg(long)]
        force: bool,
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
    #[command(after_help = "Exit status: 0 when every attached interface is filtered as its state \
says (or none is attached), 3 when a problem is reported (the interface is gone, was created again, \
or the programs are stale), 1 when status itself fails.

Example:
  edge-ctl status --json")]
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

The kernel keeps events of drops that happened while nobody was reading (up to 256 KiB). tail \
shows only what is dropped after it starts, and says how many older events it skipped; \
--since shows those of the given time before it started as well.

Examples:
  edge-ctl tail eth0
  edge-ctl tail eth0 --since 10m
  edge-ctl tail --json")]
    Tail {
        /// Only this interface (default: all attached).
        interface: Option<String>,
        #[arg(long)]
        json: bool,
        /// Stop after this many seconds (default: run until interrupted).
        #[arg(long)]
        seconds: Option<u64>,
        /// Also show buffered events of this long before tail started, e.g. 30s, 10m, 1h.
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Option<std::time::Duration>,
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

Metrics, each labelled interface and role (docs/operations.md, \"Metrics reference\", has them all):
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
    #[command(after_help = "Examples:\n  edge-ctl policy plan --nodes 2\n  edge-ctl policy plan --placement perimeter")]
    Plan {
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=profile::MAX_NODES as i64))]
        nodes: u8,
        /// Where the filter sits: on the nodes, or on the firewalls in front of the pool.
        #[arg(long, value_enum, default_value_t)]
        placement: PlacementArg,
    },
    /// Print a built-in profile as a commented policy file.
    #[command(after_help = "Examples:\n  edge-ctl policy template lync2013-edge-hlb --nodes 2 > edge.toml\n  \
                      edge-ctl policy template lync2013-edge-hlb --placement perimeter > perimeter.toml")]
    Template {
        /// Profile name.
        #[arg(value_enum)]
        profile: ProfileArg,
        /// Edge servers in the pool.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=profile::MAX_NODES as i64))]
        nodes: u8,
        /// Where the filter sits: on an edge node's interfaces (behind the HLB's source NAT), or on
        /// the firewalls in front of the pool (the document's Source and Destination columns).
        #[arg(long, value_enum, default_value_t)]
        placement: PlacementArg,
    },
}

/// Runs a command; the exit code is [`exit::OK`] unless the command reports otherwise (an error
/// is [`exit::ERROR`], printed by the caller).
pub fn run(cli: Cli) -> Result<u8> {
    let done = match cli.command {
        Command::Attach { interface, role, policy, mode, force } => {
            attach::attach(&interface, role.into(), policy, mode, force)
        }
        Command::Conntrack { command: Some(ConntrackCommand::Flush { interface }), .. } => {
            observe::conntrack_flush(&interface)
        }
        Command::Conntrack { interface: Some(interface), json, command: None } => observe::conntrack(&interface, json),
        Command::Conntrack { interface: None, json, command: None } => observe::conntrack_all(json),
        Command::Reload { interface, policy, json, force } => attach::reload(&interface, policy, json, force),
        Command::Upgrade { interface } => attach::upgrade(&interface),
        Command::Detach { interface } => attach::detach(&interface),
        Command::Status { json } => return observe::status(json),
        Command::Kernel { json } => kernel::kernel(json),
        Command::Stats { interface, json, watch: false } => observe::stats(interface.as_deref(), json),
        Command::Stats { interface, json, watch: true } => observe::watch(interface.as_deref(), json),
        Command::Tail { interface, json, seconds, since } => observe::tail(interface.as_deref(), json, seconds, since),
        Command::Explain { interface, proto, src, dst, dport, sport, flags, direction, json } => {
            let req = dataplane::ExplainRequest {
                ifname: &interface,
                protocol: proto.into(),
                src,
                dst,
                sport,
                dport,
                tcp_flags: flags.tcp_flags(),
                direction: direction.map(Into::into),
            };
            observe::explain(&req, json)
        }
        Command::Serve(args) => crate::serve::run(args),
        Command::Policy(PolicyCommand::Check { file }) => policy_cmd::check(&file),
        Command::Policy(PolicyCommand::Show { file, role }) => policy_cmd::show(&file, role.map(Role::from)),
        Command::Policy(PolicyCommand::Plan { nodes, placement }) => policy_cmd::plan(nodes, placement.into()),
        Command::Policy(PolicyCommand::Template { profile, nodes, placement }) => {
            policy_cmd::template(profile, nodes, placement.into())
        }
    };
    done.map(|()| exit::OK)
}
