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
    #[command(
        after_help = "Without --policy, edge-ctl uses /etc/edge-ctl/policy.toml when it exists, \
else the built-in lync2013-edge-hlb profile with the interface's own addresses as the service \
addresses. It says which policy it used.

Examples:
  edge-ctl attach eth0 --role external
  edge-ctl attach eth1 --role internal --policy edge.toml --mode generic"
    )]
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
    },
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
    /// Show per-rule packet and byte counters and drops by reason.
    #[command(
        after_help = "JSON shape (--json): {\"interfaces\": [{\"interface\", \"role\", \
\"generation\", \"policy_hash\", \"rules\": [{\"name\", \"direction\", \"protocol\", \"ports\", \
\"local\", \"remote\", \"packets\", \"bytes\"}], \"drops\": [{\"reason\", \"packets\", \"bytes\"}], \
\"passes\": [{\"reason\", \"packets\", \"bytes\"}]}]}. Counters are totals since attach.

Examples:
  edge-ctl stats
  edge-ctl stats eth0 --json"
    )]
    Stats {
        /// Only this interface.
        interface: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Work with policy files without touching the kernel.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Validate a policy file; errors name file:line:column.
    #[command(after_help = "Example:\n  edge-ctl policy check /etc/edge-ctl/policy.toml")]
    Check { file: PathBuf },
    /// Print a policy as a table in the vendor document's form.
    #[command(
        after_help = "Example:\n  edge-ctl policy show /etc/edge-ctl/policy.toml --role external"
    )]
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
    #[command(
        after_help = "Example:\n  edge-ctl policy template lync2013-edge-hlb --nodes 2 > edge.toml"
    )]
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
        Command::Attach {
            interface,
            role,
            policy,
            mode,
        } => attach(&interface, role.into(), policy, mode),
        Command::Detach { interface } => {
            dataplane::detach(&interface)?;
            println!("detached from {interface}");
            Ok(())
        }
        Command::Status { json } => status(json),
        Command::Stats { interface, json } => stats(interface.as_deref(), json),
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
        Command::Policy(PolicyCommand::Template {
            profile: ProfileArg::Lync2013EdgeHlb,
            nodes,
        }) => {
            print!(
                "{}",
                profile::render(&profile::Options {
                    nodes,
                    ..Default::default()
                })
            );
            Ok(())
        }
    }
}

/// Reads a policy file, refusing one that other users may write.
pub fn read_policy(path: &Path) -> Result<Policy> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read policy file {}", path.display()))?;
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
    let options = profile::Options {
        addressing: profile::Addressing::Interface,
        ..Default::default()
    };
    Ok(profile::policy(&options)?)
}

fn print_warnings(p: &Policy) {
    for w in &p.warnings {
        eprintln!("{w}");
    }
}

fn attach(interface: &str, role: Role, policy: Option<PathBuf>, mode: Mode) -> Result<()> {
    let policy = choose_policy(policy)?;
    print_warnings(&policy);
    let report = dataplane::attach(&AttachRequest {
        ifname: interface,
        role,
        policy: &policy,
        mode,
    })?;
    if let Some(why) = &report.fallback {
        eprintln!("note: {why}");
    }
    let addrs: Vec<String> = report
        .interface_addresses
        .iter()
        .map(|a| a.to_string())
        .collect();
    println!(
        "attached to {interface} as {role} ({} XDP, program {}), policy {} ({} rules for this role)",
        report.mode, report.program_id, policy.origin, report.rules
    );
    if policy.origin.starts_with("<built-in") {
        println!(
            "  service addresses from {interface}: {}",
            if addrs.is_empty() {
                "none".into()
            } else {
                addrs.join(", ")
            }
        );
    }
    Ok(())
}

fn status(json: bool) -> Result<()> {
    let list = dataplane::status()?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "interfaces": list }))?
        );
        return Ok(());
    }
    if list.is_empty() {
        println!("edge-ctl is not attached to any interface in this network namespace");
        return Ok(());
    }
    for s in list {
        let role = s.role.map_or("?".to_string(), |r| r.to_string());
        println!(
            "{}: role {role}, {} XDP",
            s.interface,
            s.mode.as_deref().unwrap_or("?")
        );
        println!(
            "  program id {}, link id {}",
            opt(s.program_id),
            opt(s.link_id)
        );
        println!(
            "  policy {} (sha256 {}), {} rules, generation {}",
            s.policy_origin.as_deref().unwrap_or("?"),
            s.policy_hash
                .as_deref()
                .map_or("?", |h| &h[..16.min(h.len())]),
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
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix))
        .to_string()
}

fn stats(interface: Option<&str>, json: bool) -> Result<()> {
    let all = dataplane::stats(interface)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "interfaces": all }))?
        );
        return Ok(());
    }
    if all.is_empty() {
        println!("edge-ctl is not attached to any interface in this network namespace");
    }
    for s in all {
        println!(
            "{} ({}, generation {}, policy {})",
            s.interface,
            s.role,
            s.generation,
            &s.policy_hash[..16]
        );
        println!(
            "  {:<26} {:<8} {:<5} {:<13} {:>12} {:>14}",
            "RULE", "DIR", "PROTO", "PORTS", "PACKETS", "BYTES"
        );
        for r in &s.rules {
            println!(
                "  {:<26} {:<8} {:<5} {:<13} {:>12} {:>14}",
                r.name, r.direction, r.protocol, r.ports, r.packets, r.bytes
            );
        }
        println!(
            "  {:<26} {:>12} {:>14}",
            "DROPPED (reason)", "PACKETS", "BYTES"
        );
        for d in &s.drops {
            println!("  {:<26} {:>12} {:>14}", d.reason, d.packets, d.bytes);
        }
        println!(
            "  {:<26} {:>12} {:>14}",
            "PASSED (essential)", "PACKETS", "BYTES"
        );
        for d in &s.passes {
            println!("  {:<26} {:>12} {:>14}", d.reason, d.packets, d.bytes);
        }
    }
    Ok(())
}

fn check(file: &Path) -> Result<()> {
    let p = read_policy(file)?;
    for role in Role::ALL {
        crate::compile::compile(&p, role, &[], &Default::default())?;
    }
    let mut warnings = p.warnings.clone();
    warnings.extend(
        crate::analysis::findings(&p)
            .into_iter()
            .map(|f| f.diagnostic),
    );
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
