//! Commands that change what filters an interface: attach, detach, reload and upgrade. Attach
//! first checks that the policy would not cut the SSH session edge-ctl runs in.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use super::DEFAULT_POLICY;
use crate::dataplane::{self, AttachRequest, Mode};
use crate::policy::{self, Policy, Role, read_policy};
use crate::profile;

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

pub(super) fn attach(interface: &str, role: Role, policy: Option<PathBuf>, mode: Mode, force: bool) -> Result<()> {
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

pub(super) fn reload(interface: &str, policy: Option<PathBuf>, json: bool) -> Result<()> {
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
