//! Commands that read the live filter and change nothing in it (a flush of the connection table
//! aside): status, stats and its `--watch`, tail, conntrack and explain.

use anyhow::Result;

use crate::dataplane;

/// Prints the status; the exit code says whether any interface has a problem.
pub(super) fn status(json: bool) -> Result<u8> {
    let list = dataplane::status()?;
    let code = if list.iter().any(|s| s.problem.is_some()) { super::exit::PROBLEM } else { super::exit::OK };
    if json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "interfaces": list }))?);
        return Ok(code);
    }
    if list.is_empty() {
        println!("edge-ctl is not attached to any interface in this network namespace");
        return Ok(code);
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
        if s.forwarding.any() {
            println!(
                "  routing: forwards {} (it filters the traffic routed through this host, for the hosts behind it)",
                s.forwarding.families()
            );
        }
        if let Some(p) = s.problem {
            println!("  problem: {p}");
        }
    }
    Ok(code)
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or("?".to_string(), |v| v.to_string())
}

pub fn format_time(unix: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix)).to_string()
}

pub(super) fn stats(interface: Option<&str>, json: bool) -> Result<()> {
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

/// `stats --watch`: refreshed in place on a terminal, plain blocks otherwise.
pub(super) fn watch(interface: Option<&str>, json: bool) -> Result<()> {
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
                let prev = previous.as_ref().and_then(|(t, p)| {
                    p.iter().find(|x| x.interface == s.interface).map(|x| (now.duration_since(*t).as_secs_f64(), x))
                });
                print!("{}", watch_block(s, prev));
            }
        }
        previous = Some((now, all));
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// One interface's block of `stats --watch`: counters, and rates against the previous sample
/// (`seconds` before) for rules and drops alike.
fn watch_block(s: &dataplane::InterfaceStats, prev: Option<(f64, &dataplane::InterfaceStats)>) -> String {
    use std::fmt::Write;
    let rate = |before: Option<u64>, now: u64| match (prev, before) {
        (Some((seconds, _)), Some(before)) if seconds > 0.0 => {
            format!("{:.0}/s", now.saturating_sub(before) as f64 / seconds)
        }
        _ => "-".into(),
    };
    let mut out = String::new();
    let _ = writeln!(out, "{} ({}, {}, generation {})", s.interface, s.role, s.mode, s.generation);
    let _ = writeln!(
        out,
        "  {:<26} {:<8} {:<5} {:<13} {:>12} {:>14} {:>10}",
        "RULE", "DIR", "PROTO", "PORTS", "PACKETS", "BYTES", "RATE"
    );
    for r in &s.rules {
        let before = prev.and_then(|(_, p)| p.rules.iter().find(|x| x.name == r.name)).map(|x| x.packets);
        let _ = writeln!(
            out,
            "  {:<26} {:<8} {:<5} {:<13} {:>12} {:>14} {:>10}",
            r.name,
            r.direction,
            r.protocol,
            r.ports,
            r.packets,
            r.bytes,
            rate(before, r.packets)
        );
    }
    let reasons = |p: &dataplane::InterfaceStats, would: bool| -> Vec<(String, &'static str, u64)> {
        let rows = if would { &p.would_drop } else { &p.drops };
        rows.iter().map(|d| (d.direction.to_string(), d.reason, d.packets)).collect()
    };
    for (title, would) in [("dropped", false), ("would drop", true)] {
        let earlier = prev.map(|(_, p)| reasons(p, would)).unwrap_or_default();
        for (direction, reason, packets) in reasons(s, would).into_iter().filter(|d| d.2 > 0) {
            // A reason not counted before had 0 then.
            let before = prev.map(|_| earlier.iter().find(|e| e.0 == direction && e.1 == reason).map_or(0, |e| e.2));
            let _ =
                writeln!(out, "  {title:<10} {direction:<9} {reason:<22} {packets:>12} {:>10}", rate(before, packets));
        }
    }
    let c = &s.conntrack;
    let _ = writeln!(out, "  conntrack {} + {} of {} each", c.entries_v4, c.entries_v6, c.max_entries);
    out
}

pub(super) fn tail(
    interface: Option<&str>,
    json: bool,
    seconds: Option<u64>,
    since: Option<std::time::Duration>,
) -> Result<()> {
    use std::io::Write;
    let mut t = dataplane::events::Tail::open(interface, since)?;
    // On stderr also with --json: it says from when on events are new (scripts wait for it).
    eprintln!("reading drop events of {} (Ctrl-C to stop)", t.interfaces().join(", "));
    let deadline = seconds.map(|s| std::time::Instant::now() + std::time::Duration::from_secs(s));
    let mut out = std::io::stdout().lock();
    let mut told = false;
    while deadline.is_none_or(|d| std::time::Instant::now() < d) {
        let events = t.wait(std::time::Duration::from_millis(250));
        if !told && t.skipped() > 0 {
            told = true;
            let older = since.map_or(String::new(), |s| format!(" more than {} before", humantime::format_duration(s)));
            eprintln!(
                "note: skipped {} event(s) buffered{older} before tail started; --since DURATION shows them",
                t.skipped()
            );
        }
        for e in events {
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

pub(super) fn conntrack(interface: &str, json: bool) -> Result<()> {
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

/// `conntrack` without an interface: every attached one.
pub(super) fn conntrack_all(json: bool) -> Result<()> {
    for s in dataplane::status()? {
        conntrack(&s.interface, json)?;
    }
    Ok(())
}

pub(super) fn conntrack_flush(interface: &str) -> Result<()> {
    let n = dataplane::conntrack::flush(interface)?;
    println!("flushed {n} entries on {interface}");
    Ok(())
}

pub(super) fn explain(req: &dataplane::ExplainRequest, json: bool) -> Result<()> {
    let a = dataplane::explain(req)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&a)?);
    } else {
        println!(
            "{}: {} {} {} -> {}: {}",
            a.interface,
            a.direction,
            req.protocol,
            std::net::SocketAddr::new(req.src, req.sport),
            std::net::SocketAddr::new(req.dst, req.dport),
            a.verdict.to_uppercase()
        );
        println!("  because {}", a.because);
        if let Some(f) = &a.flow {
            println!(
                "  flow: {} {}, age {:.1} s, idle {:.1} s, opened by {}",
                f.flow.protocol, f.state, f.age_s, f.idle_s, f.rule
            );
        }
        println!("  (generation {}, policy sha256 {})", a.generation, &a.policy_hash[..16.min(a.policy_hash.len())]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::{InterfaceStats, ReasonStats, RuleStats};
    use crate::policy::{Direction, Protocol, Role};

    fn sample(rule_packets: u64, drops: &[(&'static str, u64)]) -> InterfaceStats {
        InterfaceStats {
            interface: "eth0".into(),
            role: Role::External,
            generation: 0,
            policy_hash: "0".repeat(64),
            rules: vec![RuleStats {
                name: "sip".into(),
                direction: Direction::Inbound,
                protocol: Protocol::Tcp,
                ports: "5061".into(),
                local: "any".into(),
                remote: "any".into(),
                packets: rule_packets,
                bytes: rule_packets * 60,
            }],
            drops: drops
                .iter()
                .map(|&(reason, packets)| ReasonStats { direction: Direction::Inbound, reason, packets, bytes: 0 })
                .collect(),
            would_drop: Vec::new(),
            passes: Vec::new(),
            conntrack: Default::default(),
            mode: "enforce",
            events: Default::default(),
        }
    }

    fn line<'a>(block: &'a str, start: &str) -> &'a str {
        block.lines().find(|l| l.trim_start().starts_with(start)).unwrap_or_else(|| panic!("no {start:?} in\n{block}"))
    }

    #[test]
    fn watch_shows_rates_for_rules_and_drops() {
        let first = sample(100, &[("policy-default", 10)]);
        let block = watch_block(&first, None);
        assert!(line(&block, "sip").ends_with(" -"), "no rate without an earlier sample:\n{block}");
        assert!(line(&block, "dropped").ends_with(" -"), "{block}");
        // Two seconds later: 100 more allowed, 40 more dropped, and a new reason with 6.
        let second = sample(200, &[("policy-default", 50), ("no-flow", 6)]);
        let block = watch_block(&second, Some((2.0, &first)));
        assert!(line(&block, "sip").ends_with(" 50/s"), "{block}");
        let drops: Vec<&str> = block.lines().filter(|l| l.trim_start().starts_with("dropped")).collect();
        assert!(drops.iter().any(|l| l.contains("policy-default") && l.ends_with(" 20/s")), "{block}");
        assert!(drops.iter().any(|l| l.contains("no-flow") && l.ends_with(" 3/s")), "{block}");
    }
}
