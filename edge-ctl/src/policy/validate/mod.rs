//! Raw TOML -> [`Policy`]: every semantic check, each reported at its file:line:column.

use std::collections::HashMap;
use std::net::IpAddr;
use std::ops::Range;

use ipnet::IpNet;
use toml::Spanned;

use super::diag::{Diagnostics, Location};
use super::raw::{RawConntrack, RawEvents, RawFailsafe, RawPolicy, RawRole, RawRule, Scalar, Scalars};
use super::{
    AddrMatch, AddrTerm, AddressSet, ConntrackSettings, DEFAULT_EVENTS_PER_SECOND, Direction, EgressMode, Essentials,
    FAILSAFE_RULE, FORMAT_VERSION, Fragments, INTERFACE_TOKEN, Martians, Placement, Policy, PolicyError, PortRange,
    Ports, Protocol, Role, RoleMode, RoleSettings, Rule, SetEntry,
};

pub fn parse(text: &str, origin: &str) -> Result<Policy, PolicyError> {
    let mut diags = Diagnostics::new(origin, text);
    let (unknown, raw) = crate::tomlkeys::parse::<RawPolicy>(text, &super::raw::SHAPE);
    for (at, message) in unknown {
        diags.error(at, message);
    }
    let raw = match raw {
        Ok(raw) => raw,
        Err(type_errors) => {
            // Meaning is checked once the types are right: a piece left out would only cause
            // errors that are not there (a rule naming a set with a wrong type, say).
            for (offset, message) in type_errors {
                diags.error(offset, message);
            }
            return Err(diags.finish().unwrap_err());
        }
    };
    if let Some(v) = raw.version.as_ref().filter(|v| *v.get_ref() != FORMAT_VERSION) {
        diags.error(
            v.span().start,
            format!("unsupported policy version {}: this edge-ctl reads version {FORMAT_VERSION}", v.get_ref()),
        );
    }
    let placement = placement(raw.placement.as_ref(), &mut diags);
    let mut sets = sets(&raw, &mut diags);
    let external = role_settings(raw.roles.external.as_ref(), Role::External, &mut diags);
    let internal = role_settings(raw.roles.internal.as_ref(), Role::Internal, &mut diags);
    let conntrack = conntrack(raw.conntrack.as_ref(), &mut diags);
    let events_per_second = events(raw.events.as_ref(), &mut diags);
    let mut rules = rules(&raw.rules, &sets, &mut diags);
    if let Some(f) = failsafe(raw.failsafe.as_ref(), &mut diags) {
        // The failsafe's local side: the interface's own addresses (a set no file can name).
        sets.push(AddressSet { name: INTERFACE_TOKEN.to_string(), entries: vec![SetEntry::Interface], at: f.at });
        if let Some(clash) = raw.rules.iter().find(|r| r.get_ref().name.get_ref() == FAILSAFE_RULE) {
            diags.error(
                clash.get_ref().name.span().start,
                format!("rule name `{FAILSAFE_RULE}` is reserved for the failsafe; rename the rule"),
            );
        }
        rules.insert(0, f);
    }
    let warnings = diags.finish()?;
    Ok(Policy {
        origin: origin.to_string(),
        text: text.to_string(),
        placement,
        sets,
        external,
        internal,
        conntrack,
        events_per_second,
        rules,
        warnings,
    })
}

fn placement(raw: Option<&Spanned<String>>, diags: &mut Diagnostics) -> Placement {
    match raw.map(|p| (p.get_ref().as_str(), p.span().start)) {
        None | Some(("node", _)) => Placement::Node,
        Some(("perimeter", _)) => Placement::Perimeter,
        Some((other, at)) => {
            diags.error(
                at,
                format!(
                    "placement = \"{other}\": expected \"node\" (on an edge node's interface) or \"perimeter\" \
                     (on the firewall in front of the pool)"
                ),
            );
            Placement::Node
        }
    }
}

/// Names start with a letter or `_` so they never read as addresses.
fn valid_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

fn sets(raw: &RawPolicy, diags: &mut Diagnostics) -> Vec<AddressSet> {
    let mut out = Vec::new();
    for (name, value) in &raw.sets {
        let start = value.span().start;
        if !valid_name(name) || name == "any" {
            diags.error(
                start,
                format!(
                    "address set name `{name}` is not allowed: use letters, digits, `_`, `-`, `.`, \
                     starting with a letter (and not `any`)"
                ),
            );
            continue;
        }
        let mut entries = Vec::new();
        for (span, item) in value.get_ref().items(value.span()) {
            match item {
                Scalar::Str(s) if s == INTERFACE_TOKEN => entries.push(SetEntry::Interface),
                Scalar::Str(s) => {
                    if let Some(net) = net(&s, span.start, diags) {
                        entries.push(SetEntry::Net(net));
                    }
                }
                Scalar::Int(_) => diags.error(
                    span.start,
                    format!(
                        "address set `{name}`: expected an address or CIDR string such as \
                         \"192.0.2.0/24\" or \"{INTERFACE_TOKEN}\""
                    ),
                ),
            }
        }
        if entries.is_empty() {
            diags.warning(start, format!("address set `{name}` is empty: rules using it never match"));
        }
        out.push(AddressSet { name: name.clone(), entries, at: diags.at(start) });
    }
    out
}

/// Parses an address or CIDR, with errors that tell IPv4 and IPv6 mistakes apart.
fn net(s: &str, offset: usize, diags: &mut Diagnostics) -> Option<IpNet> {
    let s = s.trim();
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let Ok(addr) = addr.parse::<IpAddr>() else {
        diags.error(offset, format!("`{s}` is not an IPv4 or IPv6 address or CIDR"));
        return None;
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let family = if addr.is_ipv4() { "IPv4" } else { "IPv6" };
    let len = match len {
        None => max,
        Some(l) => match l.parse::<u8>() {
            Ok(l) if l <= max => l,
            Ok(l) => {
                diags.error(
                    offset,
                    format!("`{s}`: prefix length {l} is too long for an {family} address (at most {max})"),
                );
                return None;
            }
            Err(_) => {
                diags.error(offset, format!("`{s}`: prefix length `{l}` is not a number"));
                return None;
            }
        },
    };
    let net = IpNet::new(addr, len).expect("length checked");
    if net.trunc() != net {
        diags.warning(offset, format!("`{s}` has host bits set; it is read as {}", net.trunc()));
    }
    Some(net.trunc())
}

fn role_settings(raw: Option<&Spanned<RawRole>>, role: Role, diags: &mut Diagnostics) -> RoleSettings {
    let mut settings = RoleSettings { essentials: Essentials::for_role(role), ..RoleSettings::default() };
    let Some(raw) = raw else { return settings };
    let raw = raw.get_ref();
    if let Some(d) = raw.default.as_ref().filter(|d| d.get_ref() != "drop") {
        diags.error(
            d.span().start,
            format!(
                "default `{}` is not supported: the default action is \"drop\" (allow traffic with rules)",
                d.get_ref()
            ),
        );
    }
    if let Some(e) = &raw.essentials {
        let d = settings.essentials;
        settings.essentials = Essentials {
            arp: e.arp.unwrap_or(d.arp),
            ndp: e.ndp.unwrap_or(d.ndp),
            pmtu: e.pmtu.unwrap_or(d.pmtu),
            router: e.router.unwrap_or(d.router),
        };
    }
    if let Some(m) = &raw.mode {
        match m.get_ref().as_str() {
            "enforce" => settings.mode = RoleMode::Enforce,
            "audit" => settings.mode = RoleMode::Audit,
            other => diags.error(m.span().start, format!("unknown mode `{other}`: expected \"enforce\" or \"audit\"")),
        }
    }
    if let Some(f) = &raw.fragments {
        match f.get_ref().as_str() {
            "track" => settings.fragments = Fragments::Track,
            "drop" => settings.fragments = Fragments::Drop,
            "pass" => settings.fragments = Fragments::Pass,
            other => diags.error(
                f.span().start,
                format!("unknown fragments policy `{other}`: expected \"track\", \"drop\" or \"pass\""),
            ),
        }
    }
    if let Some(m) = &raw.martians {
        match m.get_ref().as_str() {
            "drop" => settings.martians = Martians::Drop,
            "pass" => settings.martians = Martians::Pass,
            other => {
                diags.error(m.span().start, format!("unknown martians policy `{other}`: expected \"drop\" or \"pass\""))
            }
        }
    }
    if let Some(e) = &raw.egress {
        match EgressMode::parse(e.get_ref()) {
            Some(mode) => settings.egress = mode,
            None => diags.error(
                e.span().start,
                format!("unknown egress mode `{}`: expected \"enforce\", \"monitor\" or \"off\"", e.get_ref()),
            ),
        }
    }
    settings
}

fn events(raw: Option<&Spanned<RawEvents>>, diags: &mut Diagnostics) -> u32 {
    match raw.and_then(|r| r.get_ref().per_second.as_ref()) {
        None => DEFAULT_EVENTS_PER_SECOND,
        Some(v) if (0..=100_000).contains(v.get_ref()) => *v.get_ref() as u32,
        Some(v) => {
            diags.error(v.span().start, format!("events.per_second = {} is out of range: 0-100000", v.get_ref()));
            DEFAULT_EVENTS_PER_SECOND
        }
    }
}

fn conntrack(raw: Option<&Spanned<RawConntrack>>, diags: &mut Diagnostics) -> ConntrackSettings {
    let mut c = ConntrackSettings::default();
    let Some(raw) = raw else { return c };
    let raw = raw.get_ref();
    let mut field = |v: &Option<Spanned<i64>>, name: &str, min: i64, max: i64, unit: &str, dst: &mut u32| {
        if let Some(v) = v {
            let n = *v.get_ref();
            if (min..=max).contains(&n) {
                *dst = n as u32;
            } else {
                diags.error(v.span().start, format!("conntrack.{name} = {n} is out of range: {min}-{max}{unit}"));
            }
        }
    };
    field(&raw.max_entries, "max_entries", 64, 16_777_216, " entries per address family", &mut c.max_entries);
    field(&raw.tcp_syn_sent, "tcp_syn_sent", 1, 86_400, " seconds", &mut c.tcp_syn_sent);
    field(&raw.tcp_established, "tcp_established", 1, 864_000, " seconds", &mut c.tcp_established);
    field(&raw.tcp_closing, "tcp_closing", 1, 86_400, " seconds", &mut c.tcp_closing);
    field(&raw.udp, "udp", 1, 86_400, " seconds", &mut c.udp);
    c
}

/// The failsafe: management SSH (TCP 22) in on the internal role, first among the rules, so a
/// policy mistake cannot lock the operator out. On unless `ssh = false`; `ssh_from` narrows it.
fn failsafe(raw: Option<&Spanned<RawFailsafe>>, diags: &mut Diagnostics) -> Option<Rule> {
    let (on, from, at) = match raw {
        None => (true, None, Location::default()),
        Some(r) => (r.get_ref().ssh.unwrap_or(true), r.get_ref().ssh_from.as_ref(), diags.at(r.span().start)),
    };
    if !on {
        return None;
    }
    let remote = match from {
        None => AddrMatch::Any,
        Some(f) => {
            let mut nets = Vec::new();
            for (span, item) in f.get_ref().items(f.span()) {
                match item {
                    Scalar::Str(s) if s == "any" => return Some(failsafe_rule(AddrMatch::Any, at)),
                    Scalar::Str(s) => nets.extend(net(&s, span.start, diags).map(AddrTerm::Net)),
                    Scalar::Int(_) => {
                        diags.error(span.start, "failsafe.ssh_from: expected CIDR strings such as \"192.0.2.0/24\"")
                    }
                }
            }
            if nets.is_empty() {
                diags.error(f.span().start, "failsafe.ssh_from is empty: name admin CIDRs, or set ssh = false");
            }
            AddrMatch::Terms(nets)
        }
    };
    Some(failsafe_rule(remote, at))
}

fn failsafe_rule(remote: AddrMatch, at: Location) -> Rule {
    Rule {
        name: FAILSAFE_RULE.to_string(),
        role: Role::Internal,
        direction: Direction::Inbound,
        protocol: Protocol::Tcp,
        ports: Ports(vec![PortRange { first: 22, last: 22 }]),
        // The filtering host itself, never the hosts behind it when it forwards.
        local: AddrMatch::Terms(vec![AddrTerm::Set(INTERFACE_TOKEN.to_string())]),
        remote,
        note: Some(
            "failsafe: management SSH to the internal interface's own addresses ([failsafe] ssh = false to remove)"
                .into(),
        ),
        service: Some("Management/SSH".into()),
        enabled: true,
        at,
    }
}

fn rules(raw: &[Spanned<RawRule>], sets: &[AddressSet], diags: &mut Diagnostics) -> Vec<Rule> {
    let mut out = Vec::new();
    let mut seen: HashMap<String, Location> = HashMap::new();
    for r in raw {
        let rule_at = diags.at(r.span().start);
        let r = r.get_ref();
        let name = r.name.get_ref().clone();
        if !valid_name(&name) {
            diags.error(
                r.name.span().start,
                format!(
                    "rule name `{name}` is not allowed: use 1-64 letters, digits, `_`, `-`, `.`, starting with a letter"
                ),
            );
        } else if let Some(first) = seen.get(&name) {
            diags.error(
                r.name.span().start,
                format!(
                    "duplicate rule name `{name}` (first defined at line {}): rule names must be unique",
                    first.line
                ),
            );
        } else {
            seen.insert(name.clone(), rule_at);
        }
        let role = keyword(&r.role, Role::parse, "role", "\"external\" or \"internal\"", diags);
        let direction = keyword(&r.direction, Direction::parse, "direction", "\"inbound\" or \"outbound\"", diags);
        let protocol = keyword(&r.protocol, Protocol::parse, "protocol", "\"tcp\" or \"udp\"", diags);
        let ports = ports(&r.ports, diags);
        let local = addr_match(r.local.as_ref(), sets, "local", diags);
        let remote = addr_match(r.remote.as_ref(), sets, "remote", diags);
        if let (Some(l), Some(rm)) = (&local, &remote) {
            family_check(&name, l, rm, sets, r, diags);
        }
        if let (Some(role), Some(direction), Some(protocol), Some(ports), Some(local), Some(remote)) =
            (role, direction, protocol, ports, local, remote)
        {
            out.push(Rule {
                name,
                role,
                direction,
                protocol,
                ports,
                local,
                remote,
                note: r.note.clone(),
                service: r.service.clone(),
                enabled: r.enabled.unwrap_or(true),
                at: rule_at,
            });
        }
    }
    out
}

fn keyword<T>(
    value: &Spanned<String>,
    parse: fn(&str) -> Option<T>,
    what: &str,
    expected: &str,
    diags: &mut Diagnostics,
) -> Option<T> {
    let v = parse(value.get_ref());
    if v.is_none() {
        diags.error(value.span().start, format!("unknown {what} `{}`: expected {expected}", value.get_ref()));
    }
    v
}

fn ports(raw: &Spanned<Scalars>, diags: &mut Diagnostics) -> Option<Ports> {
    let items = raw.get_ref().items(raw.span());
    if items.is_empty() {
        diags.error(raw.span().start, "ports is empty: name at least one port or range");
        return None;
    }
    let mut out = Vec::new();
    let mut ok = true;
    for (span, item) in items {
        match port_item(&item, span, diags) {
            Some(r) => out.push(r),
            None => ok = false,
        }
    }
    ok.then_some(Ports(out))
}

fn port_item(item: &Scalar, span: Range<usize>, diags: &mut Diagnostics) -> Option<PortRange> {
    let one = |v: i64, diags: &mut Diagnostics| -> Option<u16> {
        if (1..=65535).contains(&v) {
            Some(v as u16)
        } else {
            diags.error(span.start, format!("port {v} is out of range: ports are 1-65535"));
            None
        }
    };
    let number = |s: &str, diags: &mut Diagnostics| -> Option<u16> {
        match s.trim().parse::<i64>() {
            Ok(v) => one(v, diags),
            Err(_) => {
                diags.error(
                    span.start,
                    format!("`{s}` is not a port: write a number such as 5061 or a range such as \"50000-59999\""),
                );
                None
            }
        }
    };
    match item {
        Scalar::Int(v) => one(*v, diags).map(|p| PortRange { first: p, last: p }),
        Scalar::Str(s) => match s.split_once('-') {
            None => number(s, diags).map(|p| PortRange { first: p, last: p }),
            Some((a, b)) => {
                let (first, last) = (number(a, diags)?, number(b, diags)?);
                if first > last {
                    diags.error(span.start, format!("port range \"{s}\" is inverted: write \"{last}-{first}\""));
                    return None;
                }
                Some(PortRange { first, last })
            }
        },
    }
}

fn addr_match(
    raw: Option<&Spanned<Scalars>>,
    sets: &[AddressSet],
    field: &str,
    diags: &mut Diagnostics,
) -> Option<AddrMatch> {
    let Some(raw) = raw else {
        return Some(AddrMatch::Any);
    };
    let items = raw.get_ref().items(raw.span());
    if items.is_empty() {
        diags.error(raw.span().start, format!("{field} is empty: write \"any\", a set name or CIDRs"));
        return None;
    }
    let mut terms = Vec::new();
    let mut ok = true;
    for (span, item) in &items {
        match item {
            Scalar::Str(s) if s == "any" => {
                if items.len() > 1 {
                    diags.error(span.start, format!("{field}: \"any\" cannot be combined with other entries"));
                    ok = false;
                }
                return ok.then_some(AddrMatch::Any);
            }
            Scalar::Str(s) if s.starts_with(|c: char| c.is_ascii_digit()) || s.contains([':', '/']) => {
                match net(s, span.start, diags) {
                    Some(n) => terms.push(AddrTerm::Net(n)),
                    None => ok = false,
                }
            }
            Scalar::Str(s) => {
                if sets.iter().any(|set| &set.name == s) {
                    terms.push(AddrTerm::Set(s.clone()));
                } else {
                    let known: Vec<&str> = sets.iter().map(|s| s.name.as_str()).collect();
                    diags.error(
                        span.start,
                        format!(
                            "{field}: unknown address set `{s}` (defined sets: {}); define it under [sets]",
                            if known.is_empty() { "none".to_string() } else { known.join(", ") }
                        ),
                    );
                    ok = false;
                }
            }
            Scalar::Int(_) => {
                diags.error(span.start, format!("{field}: expected \"any\", a set name or a CIDR string"));
                ok = false;
            }
        }
    }
    ok.then_some(AddrMatch::Terms(terms))
}

/// The address families (v4, v6) a match can hold; `@interface` may hold either.
fn families(m: &AddrMatch, sets: &[AddressSet]) -> (bool, bool) {
    let mut fam = (false, false);
    let add_net = |n: &IpNet, fam: &mut (bool, bool)| match n {
        IpNet::V4(_) => fam.0 = true,
        IpNet::V6(_) => fam.1 = true,
    };
    match m {
        AddrMatch::Any => return (true, true),
        AddrMatch::Terms(terms) => {
            for t in terms {
                match t {
                    AddrTerm::Net(n) => add_net(n, &mut fam),
                    AddrTerm::Set(name) => {
                        for e in sets.iter().filter(|s| &s.name == name).flat_map(|s| &s.entries) {
                            match e {
                                SetEntry::Net(n) => add_net(n, &mut fam),
                                SetEntry::Interface => return (true, true),
                            }
                        }
                    }
                }
            }
        }
    }
    fam
}

/// A rule whose local side holds only one family and remote side only the other never matches:
/// almost always an IPv4/IPv6 mix-up.
fn family_check(
    name: &str,
    local: &AddrMatch,
    remote: &AddrMatch,
    sets: &[AddressSet],
    raw: &RawRule,
    diags: &mut Diagnostics,
) {
    let (l4, l6) = families(local, sets);
    let (r4, r6) = families(remote, sets);
    let empty = |f: (bool, bool)| !f.0 && !f.1;
    if empty((l4, l6)) || empty((r4, r6)) {
        return; // Empty sets are warned about where they are defined.
    }
    if !(l4 && r4 || l6 && r6) {
        let fam = |v4: bool| if v4 { "IPv4" } else { "IPv6" };
        let offset = raw.remote.as_ref().map_or(raw.name.span().start, |r| r.span().start);
        diags.error(
            offset,
            format!(
                "rule `{name}` can never match: local addresses are {} only but remote addresses are {} only",
                fam(l4),
                fam(r4)
            ),
        );
    }
}

#[cfg(test)]
mod tests;
