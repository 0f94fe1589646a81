//! Commands that change what filters an interface: attach, detach, reload and upgrade. Attach
//! and reload first check that the policy would not cut the SSH session edge-ctl runs in, and
//! warn loudly when the role has no rules.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use super::DEFAULT_POLICY;
use crate::dataplane::{self, AttachRequest, Mode};
use crate::policy::{Placement, Policy, Role, read_policy_text};
use crate::profile;
use crate::session::{empty_role_warning, ssh_session_cut};

/// The policy for `attach`: the given file, else /etc/edge-ctl/policy.toml, else the built-in.
fn choose_policy(arg: Option<PathBuf>) -> Result<Policy> {
    policy_source(arg)?.policy()
}

/// Where the policy comes from: a file (checked for who may write it, and read), or the
/// built-in profile.
enum PolicySource {
    File { path: PathBuf, text: String },
    Profile,
}

fn policy_source(arg: Option<PathBuf>) -> Result<PolicySource> {
    let path = match arg {
        Some(path) => path,
        None if Path::new(DEFAULT_POLICY).exists() => PathBuf::from(DEFAULT_POLICY),
        None => return Ok(PolicySource::Profile),
    };
    let text = read_policy_text(&path)?;
    Ok(PolicySource::File { path, text })
}

impl PolicySource {
    fn policy(&self) -> Result<Policy> {
        match self {
            PolicySource::File { path, text } => Ok(crate::policy::parse(text, &path.display().to_string())?),
            PolicySource::Profile => {
                let options = profile::Options { addressing: profile::Addressing::Interface, ..Default::default() };
                Ok(profile::policy(&options)?)
            }
        }
    }

    /// The connection-table size the policy most likely sets, without parsing it: the first
    /// `max_entries = N` after a `[conntrack]` header, else the default.
    fn conntrack_entries(&self) -> u32 {
        let PolicySource::File { text, .. } = self else { return profile::CONNTRACK_ENTRIES };
        let mut in_conntrack = false;
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                in_conntrack = line.split('#').next().is_some_and(|header| header.trim() == "[conntrack]");
            } else if let Some(value) = line.strip_prefix("max_entries").map(str::trim_start)
                && in_conntrack
                && let Some(n) = value.strip_prefix('=').and_then(|v| v.split('#').next()?.trim().parse().ok())
            {
                return n;
            }
        }
        edge_common::CT_DEFAULT_MAX
    }
}

fn print_warnings(p: &Policy) {
    for w in &p.warnings {
        eprintln!("{w}");
    }
}

/// Refuses a policy that would cut the admin's SSH session on this interface, unless forced;
/// warns when the role has no rules.
fn guard(policy: &Policy, role: Role, interface: &str, verb: &str, force: bool) -> Result<()> {
    let addrs = dataplane::system::interface_addresses(interface);
    if let Some(cut) = ssh_session_cut(policy, role, interface, &addrs) {
        if !force {
            bail!(
                "{cut}: {verb}ing would cut it; fix the policy (the [failsafe] section, or a rule) or pass \
                 --force to {verb} anyway"
            );
        }
        eprintln!("warning: {cut} ({verb}ing anyway: --force)");
    }
    if let Some(w) = empty_role_warning(policy, role, interface) {
        eprintln!("WARNING: {w}");
    }
    Ok(())
}

pub(super) fn attach(interface: &str, role: Role, policy: Option<PathBuf>, mode: Mode, force: bool) -> Result<()> {
    // The policy is read while the kernel verifies the programs, which needs of it only the
    // connection-table size: read off the file's text, or the default (a wrong guess costs a
    // second load, never a wrong table).
    let source = policy_source(policy)?;
    let forwarding = dataplane::system::forwarding(interface);
    if forwarding.any() && matches!(source, PolicySource::Profile) {
        bail!(
            "{interface} forwards {} (net.ipv4/ipv6.conf.{interface}.forwarding = 1): this host routes for the \
             hosts behind it, and the built-in policy would take this host's own addresses for the edge's, \
             allowing nothing of the pool. Generate the firewall's policy, set the pool's addresses in its \
             [sets], and attach with it:\n  edge-ctl policy template {} --placement perimeter > {DEFAULT_POLICY}\n  \
             edge-ctl attach {interface} --role {role} --policy {DEFAULT_POLICY}",
            forwarding.families(),
            profile::NAME
        );
    }
    let guess = source.conntrack_entries();
    let (policy, prepared) = std::thread::scope(|scope| {
        let reading = scope.spawn(|| source.policy());
        let prepared = dataplane::prepare_attach(interface, guess);
        (reading.join().expect("the reading thread does not panic"), prepared)
    });
    // A policy error first: it is what the admin came to fix.
    let policy = policy?;
    print_warnings(&policy);
    guard(&policy, role, interface, "attach", force)?;
    let report =
        dataplane::attach_prepared(prepared?, &AttachRequest { ifname: interface, role, policy: &policy, mode })?;
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
    if report.seeded.sockets > 0 {
        println!("  {} open connection(s) allowed by the outbound rules kept working (seeded)", report.seeded.sockets);
    }
    if forwarding.any() {
        println!(
            "  routing: {interface} forwards {}; the policy (placement {}) filters the traffic routed through \
             this host",
            forwarding.families(),
            policy.placement.as_str()
        );
        if policy.placement == Placement::Node {
            eprintln!(
                "warning: the policy is written for an edge node (placement = \"node\"), but {interface} routes for \
                 the hosts behind it: behind no HLB, rows written for its source NAT allow nothing; for the firewall \
                 in front of the pool use `edge-ctl policy template {} --placement perimeter`",
                profile::NAME
            );
        }
        let pickup = match report.pickup_seconds {
            Some(s) => format!(
                "for {s} s the filter picks up their mid-stream TCP (a segment of a connection an outbound rule \
                 allows) into the connection table; UDP and connections quiet for longer wait until the host \
                 behind sends"
            ),
            None => "their answers are dropped as no-flow until the host behind sends again".to_string(),
        };
        match &report.seeded.forwarded {
            dataplane::Forwarded::Seeded(n) => println!(
                "  {n} connection(s) the hosts behind opened through this router, allowed by the outbound rules, kept \
                 working (seeded from the kernel's connection tracking)"
            ),
            dataplane::Forwarded::NotTracked => println!(
                "  the kernel's connection tracking tracks nothing here (nf_conntrack not loaded, or no ruleset uses \
                 it), so connections the hosts behind {interface} opened before this attach could not be read: \
                 {pickup}"
            ),
            dataplane::Forwarded::Failed(e) => eprintln!(
                "note: reading the kernel's connection tracking failed ({e}): connections the hosts behind \
                 {interface} opened before this attach are not in the connection table: {pickup}"
            ),
            dataplane::Forwarded::NotForwarding => {}
        }
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

pub(super) fn reload(interface: &str, policy: Option<PathBuf>, json: bool, force: bool) -> Result<()> {
    dataplane::require_attached(interface)?;
    let policy = choose_policy(policy)?;
    print_warnings(&policy);
    // The role is the live one's; an interface without the filter gets reload's own error.
    let live = dataplane::status()?.into_iter().find(|s| s.interface == interface && !s.stale);
    if let Some(role) = live.and_then(|s| s.role) {
        guard(&policy, role, interface, "reload", force)?;
    }
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

pub(super) fn upgrade(interface: &str) -> Result<()> {
    let r = dataplane::upgrade(interface)?;
    println!("upgraded {interface}: XDP program {} -> {}", r.xdp_program.0, r.xdp_program.1);
    match r.tc_program {
        (Some(old), new) => println!("  egress program {old} -> {new}"),
        (None, new) => println!("  egress program (clsact filter) replaced by {new}"),
    }
    Ok(())
}

pub(super) fn detach(interface: &str) -> Result<()> {
    dataplane::detach(interface)?;
    println!("detached from {interface}");
    Ok(())
}
