//! Policy -> lookup tables for one interface role.
//!
//! The kernel answers "which rule allows this packet" with constant work per packet:
//! - per (direction, protocol) a dense 65,536-entry port table names a *class*: the ordered list
//!   of rules whose ports include that port (so a range costs the same as one port);
//! - the local address is matched against a short table of the local sets' prefixes, giving a
//!   bitmask of local sets;
//! - only when a candidate restricts the remote side, one longest-prefix lookup gives a bitmask of
//!   remote sets;
//! - the first candidate whose local and remote bits are set decides.
//!
//! This module is pure: no BPF, no I/O. The dataplane writes [`Tables`] into maps.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use edge_common::{
    Candidate, ClassEntry, HOST_SLOTS, HostTables, INLINE_HOSTS, InlineHost, LocalHost, LocalV4, LocalV6,
    MAX_CANDIDATES, MAX_CLASSES, MAX_HASHED_HOSTS, MAX_LOCAL_SETS, MAX_LOCAL_V4, MAX_LOCAL_V6, MAX_OWN,
    MAX_REMOTE_PREFIXES, MAX_REMOTE_SETS, MAX_RULES, REMOTE_HOSTS, REMOTE_LPM, REMOTE_NONE, RemoteHost, flags,
    host_slot, inline,
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::policy::{
    AddrMatch, AddrTerm, Direction, EgressMode, Fragments, Martians, Policy, PolicyError, Protocol, Role, RoleMode,
    Rule, SetEntry,
};

/// Stable counter slots by rule name. A rule keeps its slot across reloads so its counters
/// continue; a new rule gets a slot no live generation uses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotMap(pub BTreeMap<String, u16>);

impl SlotMap {
    /// Slots for `names`: kept from `keep` where present, otherwise the lowest slot not in
    /// `keep` and not in `busy`.
    pub fn assign<'a>(
        names: impl IntoIterator<Item = &'a str>,
        keep: &SlotMap,
        busy: &HashSet<u16>,
    ) -> Result<SlotMap, String> {
        let mut used: HashSet<u16> = busy.iter().copied().collect();
        used.extend(keep.0.values().copied());
        let mut next = 0u32;
        let mut out = BTreeMap::new();
        for name in names {
            let slot = match keep.0.get(name) {
                Some(s) => *s,
                None => {
                    while next < MAX_RULES && used.contains(&(next as u16)) {
                        next += 1;
                    }
                    if next >= MAX_RULES {
                        return Err(format!(
                            "more than {MAX_RULES} rule counter slots would be in use; \
                             reduce the number of rules"
                        ));
                    }
                    used.insert(next as u16);
                    next as u16
                }
            };
            out.insert(name.to_string(), slot);
        }
        Ok(SlotMap(out))
    }

    pub fn slots(&self) -> HashSet<u16> {
        self.0.values().copied().collect()
    }
}

/// A rule as compiled: its slot and how it reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompiledRule {
    pub slot: u16,
    pub name: String,
    pub direction: Direction,
    pub protocol: Protocol,
    pub ports: String,
    pub local: String,
    pub remote: String,
}

/// Everything the kernel needs for one role, ready to write into one generation.
#[derive(Clone, Debug)]
pub struct Tables {
    pub role: Role,
    pub flags: u32,
    /// Connection-table idle timeouts by [`edge_common::CtState`], nanoseconds.
    pub ct_timeout_ns: [u64; edge_common::CT_STATES],
    /// Connection-table size per address family.
    pub ct_max: u32,
    /// Drop events per second for the interface (split over CPUs when written).
    pub events_per_second: u32,
    pub local_v4: Vec<LocalV4>,
    pub local_v6: Vec<LocalV6>,
    /// The interface's own addresses for the martian check (see `GenConfig::own_v4`).
    pub own_v4: [u32; MAX_OWN],
    pub own_v6: [[u32; 4]; MAX_OWN],
    /// `ports[direction][protocol][port]` = class index (0: no rule).
    pub ports: [[Vec<u32>; 2]; 2],
    /// Class 0 is the empty class.
    pub classes: Vec<ClassEntry>,
    pub remote_v4: Vec<(Ipv4Net, u64)>,
    pub remote_v6: Vec<(Ipv6Net, u64)>,
    /// Perfect-hashed host tables (see `host_tables`); their flags are in `flags`.
    pub hosts: Box<HostTables>,
    pub rules: Vec<CompiledRule>,
    pub slots: SlotMap,
}

/// A matchable rule's (local bit, remote bit); `None` on a side is any.
type Cond = (Option<u8>, Option<u8>);

/// Compiles the enabled rules of `role`. `interface` holds the attached interface's addresses,
/// which `@interface` set entries stand for.
pub fn compile(policy: &Policy, role: Role, interface: &[IpAddr], slots: &SlotMap) -> Result<Tables, PolicyError> {
    let rules: Vec<&Rule> = policy.rules_of(role).collect();
    let first_at = |pred: &dyn Fn(&Rule) -> bool| rules.iter().find(|r| pred(r)).map(|r| r.at).unwrap_or_default();
    let mut local_bits = SetBits::new(MAX_LOCAL_SETS);
    let mut remote_bits = SetBits::new(MAX_REMOTE_SETS);
    // Per rule: (local bit, remote bit), or None when the rule can never match.
    let mut conds = Vec::with_capacity(rules.len());
    // Rules share address matches (many name the same sets): each pair is resolved once.
    let mut seen: HashMap<(&AddrMatch, &AddrMatch), Option<Cond>> = HashMap::new();
    // Distinct remote prefixes so far: the remote tables' size, checked at the rule that crosses it.
    let mut remote_prefixes: HashSet<IpNet> = HashSet::new();
    for rule in &rules {
        if let Some(cond) = seen.get(&(&rule.local, &rule.remote)) {
            conds.push(*cond);
            continue;
        }
        let local = resolve(policy, &rule.local, interface);
        let remote = resolve(policy, &rule.remote, interface);
        let cond = match (local, remote) {
            (Some(l), _) if l.is_empty() => None,
            (_, Some(r)) if r.is_empty() => None,
            (l, r) => {
                let lb = local_bits.bit(l).map_err(|n| {
                    policy.error_at(
                        rule.at,
                        format!(
                            "role {role}: more than {n} distinct local address sets; \
                             local sets name the edge's own addresses, merge them"
                        ),
                    )
                })?;
                let new_remote = r.as_ref().is_some_and(|r| !remote_bits.specs.contains(r));
                if let (true, Some(nets)) = (new_remote, &r) {
                    remote_prefixes.extend(nets.iter().copied());
                    let v4 = remote_prefixes.iter().filter(|n| matches!(n, IpNet::V4(_))).count();
                    let v6 = remote_prefixes.len() - v4;
                    let max = (MAX_REMOTE_PREFIXES / 2) as usize;
                    if v4 > max || v6 > max {
                        let family = if v4 > max { "IPv4" } else { "IPv6" };
                        return Err(policy.error_at(
                            rule.at,
                            format!(
                                "role {role}: with rule `{}` (remote {}{}), the remote sets of this role hold more than \
                                 {max} {family} prefixes; at most {max} per address family fit the remote tables: \
                                 use shorter prefixes, or move rules to the other role's interface",
                                rule.name,
                                rule.remote,
                                set_lines(policy, &rule.remote)
                            ),
                        ));
                    }
                }
                let rb = remote_bits.bit(r).map_err(|n| {
                    policy.error_at(
                        rule.at,
                        format!(
                            "role {role}: more than {n} distinct remote address sets; \
                             merge rules that differ only in remote addresses into one set"
                        ),
                    )
                })?;
                Some((lb, rb))
            }
        };
        seen.insert((&rule.local, &rule.remote), cond);
        conds.push(cond);
    }
    let (local_v4, local_v6) = local_table(&local_bits)
        .map_err(|msg| policy.error_at(first_at(&|r| r.local != AddrMatch::Any), format!("role {role}: {msg}")))?;
    let (remote_v4, remote_v6) = remote_table(&remote_bits);
    let (hashable, remote_hosts) = remote_bits.hashable();
    let (hosts, host_flags) = host_tables(&local_v4, &local_v6, &remote_hosts);
    debug_assert!(
        remote_v4.len() as u32 <= MAX_REMOTE_PREFIXES / 2 && remote_v6.len() as u32 <= MAX_REMOTE_PREFIXES / 2
    );
    let slots = SlotMap::assign(rules.iter().map(|r| r.name.as_str()), slots, &HashSet::new())
        .map_err(|msg| policy.error_at(first_at(&|_| true), msg))?;
    let mut classes = ClassTable::new(hashable, &local_bits.specs, &remote_bits.specs);
    let mut ports: [[Vec<u32>; 2]; 2] = Default::default();
    for direction in Direction::ALL {
        for protocol in Protocol::ALL {
            let members: Vec<(usize, &Rule)> = rules
                .iter()
                .enumerate()
                .filter(|(_, r)| r.direction == direction && r.protocol == protocol)
                .map(|(i, r)| (i, *r))
                .collect();
            let table = port_table(&members, &conds, &slots, &mut classes).map_err(|e| match e {
                PortTableError::Candidates(rule, port) => policy.error_at(
                    rule.at,
                    format!(
                        "role {role}: more than {MAX_CANDIDATES} rules apply to {protocol} port {port} \
                         {direction}; merge rules that differ only in their addresses"
                    ),
                ),
                PortTableError::Classes(rule, port) => policy.error_at(
                    rule.at,
                    format!(
                        "role {role}: with rule `{}` at {protocol} port {port} {direction}, the rules form more \
                         than {} distinct port classes (each distinct list of rules that apply to a port is one); \
                         give rules that share ports the same port list, or merge rules",
                        rule.name,
                        MAX_CLASSES - 1
                    ),
                ),
            })?;
            ports[direction as usize][protocol as usize] = table;
        }
    }
    let settings = policy.role(role);
    let mut f = host_flags;
    if settings.essentials.arp {
        f |= flags::ESSENTIAL_ARP;
    }
    if settings.essentials.ndp {
        f |= flags::ESSENTIAL_NDP;
    }
    if settings.essentials.pmtu {
        f |= flags::ESSENTIAL_PMTU;
    }
    if settings.essentials.router {
        f |= flags::ESSENTIAL_ROUTER;
    }
    if settings.mode == RoleMode::Audit {
        f |= flags::AUDIT;
    }
    f |= match settings.fragments {
        Fragments::Track => flags::FRAGMENTS_TRACK,
        Fragments::Drop => 0,
        Fragments::Pass => flags::FRAGMENTS_PASS,
    };
    if settings.martians == Martians::Drop {
        f |= flags::MARTIANS;
    }
    f |= match settings.egress {
        EgressMode::Enforce => flags::EGRESS_ENFORCE,
        EgressMode::Monitor => flags::EGRESS_MONITOR,
        EgressMode::Off => 0,
    };
    let ct = &policy.conntrack;
    let secs = |s: u32| s as u64 * 1_000_000_000;
    let compiled = rules
        .iter()
        .map(|r| CompiledRule {
            slot: slots.0[&r.name],
            name: r.name.clone(),
            direction: r.direction,
            protocol: r.protocol,
            ports: r.ports.to_string(),
            local: r.local.to_string(),
            remote: r.remote.to_string(),
        })
        .collect();
    Ok(Tables {
        role,
        flags: f,
        ct_timeout_ns: [secs(ct.tcp_syn_sent), secs(ct.tcp_established), secs(ct.tcp_closing), secs(ct.udp)],
        ct_max: ct.max_entries,
        events_per_second: policy.events_per_second,
        local_v4,
        local_v6,
        own_v4: own(interface, |a| match a {
            IpAddr::V4(a) => Some(u32::from_ne_bytes(a.octets())),
            IpAddr::V6(_) => None,
        }),
        own_v6: own(interface, |a| match a {
            IpAddr::V6(a) => Some(words_v6(*a)),
            IpAddr::V4(_) => None,
        }),
        ports,
        classes: classes.entries,
        remote_v4,
        remote_v6,
        hosts,
        rules: compiled,
        slots,
    })
}

/// The first [`MAX_OWN`] addresses of a family, zeros after (see `GenConfig::own_v4`).
fn own<T: Copy + Default>(interface: &[IpAddr], of: impl Fn(&IpAddr) -> Option<T>) -> [T; MAX_OWN] {
    let mut own = [T::default(); MAX_OWN];
    for (slot, a) in own.iter_mut().zip(interface.iter().filter_map(of)) {
        *slot = a;
    }
    own
}

/// " (set `a`, line N; ...)" for the named sets of an address match: where to make it smaller.
fn set_lines(policy: &Policy, m: &AddrMatch) -> String {
    let AddrMatch::Terms(terms) = m else { return String::new() };
    let sets: Vec<String> = terms
        .iter()
        .filter_map(|t| match t {
            AddrTerm::Set(name) => policy.set(name).map(|s| format!("set `{name}`, line {}", s.at.line)),
            AddrTerm::Net(_) => None,
        })
        .collect();
    if sets.is_empty() { String::new() } else { format!("; {}", sets.join("; ")) }
}

/// The prefixes an address match stands for, sorted and deduplicated; `None` for any.
pub fn resolve(policy: &Policy, m: &AddrMatch, interface: &[IpAddr]) -> Option<Vec<IpNet>> {
    let AddrMatch::Terms(terms) = m else {
        return None;
    };
    let mut nets = BTreeSet::new();
    for term in terms {
        match term {
            AddrTerm::Net(n) => {
                nets.insert(*n);
            }
            AddrTerm::Set(name) => {
                for entry in policy.set(name).map(|s| s.entries.as_slice()).unwrap_or_default() {
                    match entry {
                        SetEntry::Net(n) => {
                            nets.insert(*n);
                        }
                        SetEntry::Interface => nets.extend(interface.iter().map(|a| IpNet::from(*a))),
                    }
                }
            }
        }
    }
    Some(nets.into_iter().collect())
}

/// Interns distinct address specs as bit positions.
struct SetBits {
    max: usize,
    specs: Vec<Vec<IpNet>>,
}

impl SetBits {
    fn new(max: usize) -> Self {
        SetBits { max, specs: Vec::new() }
    }

    /// The bit for a spec (`None` for any); `Err(max)` when there are too many.
    fn bit(&mut self, spec: Option<Vec<IpNet>>) -> Result<Option<u8>, usize> {
        let Some(spec) = spec else { return Ok(None) };
        if let Some(i) = self.specs.iter().position(|s| *s == spec) {
            return Ok(Some(i as u8));
        }
        if self.specs.len() == self.max {
            return Err(self.max);
        }
        self.specs.push(spec);
        Ok(Some((self.specs.len() - 1) as u8))
    }

    /// The specs made only of host addresses (/32, /128) that fit the remote host table
    /// together, smallest first: their bits, and each of their hosts (as the kernel's words)
    /// with the bits of the chosen specs that hold it.
    fn hashable(&self) -> (u64, HostBits<u64>) {
        let mut order: Vec<usize> = (0..self.specs.len())
            .filter(|&b| self.specs[b].iter().all(|n| n.prefix_len() == n.max_prefix_len()))
            .collect();
        order.sort_by_key(|&b| self.specs[b].len());
        let (mut mask, mut hosts): (u64, [BTreeMap<[u32; 4], u64>; 2]) = (0, Default::default());
        for bit in order {
            let mut next = hosts.clone();
            for n in &self.specs[bit] {
                let (family, key) = match n {
                    IpNet::V4(n) => (0, [u32::from_ne_bytes(n.addr().octets()), 0, 0, 0]),
                    IpNet::V6(n) => (1, words_v6(n.addr())),
                };
                *next[family].entry(key).or_insert(0) |= 1 << bit;
            }
            if next.iter().all(|h| h.len() <= MAX_HASHED_HOSTS) {
                hosts = next;
                mask |= 1 << bit;
            }
        }
        (mask, hosts.map(|h| h.into_iter().collect()))
    }

    /// Each distinct prefix with the bits of the specs that list it.
    fn direct(&self) -> BTreeMap<IpNet, u64> {
        let mut out = BTreeMap::new();
        for (bit, spec) in self.specs.iter().enumerate() {
            for net in spec {
                *out.entry(*net).or_insert(0) |= 1u64 << bit;
            }
        }
        out
    }
}

/// Host addresses as the kernel's words, each with its set bits; one list per family.
type HostBits<T> = [Vec<([u32; 4], T)>; 2];

fn words_v6(a: std::net::Ipv6Addr) -> [u32; 4] {
    let o = a.octets();
    std::array::from_fn(|i| u32::from_ne_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]]))
}

/// The kernel ORs the bits of every local entry that contains the address, so one entry per
/// distinct prefix is enough.
fn local_table(bits: &SetBits) -> Result<(Vec<LocalV4>, Vec<LocalV6>), String> {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for (net, sets) in bits.direct() {
        match net {
            IpNet::V4(n) => v4.push(LocalV4 {
                addr: u32::from_ne_bytes(n.network().octets()),
                mask: u32::from_ne_bytes(n.netmask().octets()),
                sets: sets as u32,
                _pad: 0,
            }),
            IpNet::V6(n) => v6.push(LocalV6 {
                addr: words_v6(n.network()),
                mask: words_v6(n.netmask()),
                sets: sets as u32,
                _pad: 0,
            }),
        }
    }
    if v4.len() > MAX_LOCAL_V4 || v6.len() > MAX_LOCAL_V6 {
        return Err(format!(
            "the local address sets hold {} IPv4 and {} IPv6 prefixes; at most {MAX_LOCAL_V4} of each \
             fit the kernel's local table (local sets name the edge's own addresses)",
            v4.len(),
            v6.len()
        ));
    }
    Ok((v4, v6))
}

/// A multiplier that sends every key to its own slot, if one is found quickly.
fn perfect_hash(keys: &[[u32; 4]], v6: bool) -> Option<u32> {
    if keys.len() > MAX_HASHED_HOSTS {
        return None;
    }
    (0..50_000u32).map(|i| 0x9e37_79b1u32.wrapping_add(i.wrapping_mul(0x6a09_e668)) | 1).find(|&mul| {
        let mut used = [false; HOST_SLOTS];
        keys.iter().all(|k| !std::mem::replace(&mut used[host_slot(k, v6, mul)], true))
    })
}

/// Host tables: when every local prefix of a family is a host address, the kernel finds the
/// local sets with one probe instead of a scan; the remote host addresses likewise spare
/// classes whose remote sets are made of hosts (the HLB's VIPs, say) the trie lookup.
fn host_tables(local_v4: &[LocalV4], local_v6: &[LocalV6], remotes: &HostBits<u64>) -> (Box<HostTables>, u32) {
    let mut t = Box::new(HostTables::zeroed());
    let mut f = 0;
    let locals: HostBits<u32> = [
        local_v4.iter().filter(|e| e.mask == u32::MAX).map(|e| ([e.addr, 0, 0, 0], e.sets)).collect(),
        local_v6.iter().filter(|e| e.mask == [u32::MAX; 4]).map(|e| (e.addr, e.sets)).collect(),
    ];
    let all_hosts = [local_v4.iter().all(|e| e.mask == u32::MAX), local_v6.iter().all(|e| e.mask == [u32::MAX; 4])];
    for (family, (hosts, all_hosts)) in locals.iter().zip(all_hosts).enumerate() {
        let keys: Vec<[u32; 4]> = hosts.iter().map(|h| h.0).collect();
        if let (true, Some(mul)) = (all_hosts, perfect_hash(&keys, family == 1)) {
            t.mul[family] = mul;
            for (addr, sets) in hosts {
                t.local[family][host_slot(addr, family == 1, mul)] = LocalHost { addr: *addr, sets: *sets };
            }
            f |= if family == 0 { flags::LOCAL_HASH_V4 } else { flags::LOCAL_HASH_V6 };
        }
    }
    for (family, hosts) in remotes.iter().enumerate() {
        let keys: Vec<[u32; 4]> = hosts.iter().map(|h| h.0).collect();
        if let Some(mul) = perfect_hash(&keys, family == 1) {
            t.mul[2 + family] = mul;
            for (addr, sets) in hosts {
                t.remote[family][host_slot(addr, family == 1, mul)] = RemoteHost { addr: *addr, sets: *sets };
            }
            f |= if family == 0 { flags::REMOTE_HASH_V4 } else { flags::REMOTE_HASH_V6 };
        }
    }
    (t, f)
}

/// The kernel looks up the longest prefix only, so each prefix carries the bits of every spec
/// holding it or a shorter prefix that contains it.
type RemoteTables = (Vec<(Ipv4Net, u64)>, Vec<(Ipv6Net, u64)>);

fn remote_table(bits: &SetBits) -> RemoteTables {
    let direct = bits.direct();
    // Only the prefix lengths some prefix has can hold a containing prefix (a policy uses a few).
    let lengths: [BTreeSet<u8>; 2] = [false, true]
        .map(|v6| direct.keys().filter(|n| matches!(n, IpNet::V6(_)) == v6).map(|n| n.prefix_len()).collect());
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for net in direct.keys() {
        let mut sets = 0;
        let family = &lengths[matches!(net, IpNet::V6(_)) as usize];
        for &len in family.range(..=net.prefix_len()) {
            let sup = IpNet::new(net.addr(), len).expect("len <= prefix_len").trunc();
            sets |= direct.get(&sup).copied().unwrap_or(0);
        }
        match net {
            IpNet::V4(n) => v4.push((*n, sets)),
            IpNet::V6(n) => v6.push((*n, sets)),
        }
    }
    (v4, v6)
}

struct ClassTable<'a> {
    entries: Vec<ClassEntry>,
    index: HashMap<Vec<Candidate>, u32>,
    /// Remote set bits whose hosts are all in the remote host table.
    host_only: u64,
    /// The local and the remote sets, by bit.
    local_specs: &'a [Vec<IpNet>],
    remote_specs: &'a [Vec<IpNet>],
}

impl<'a> ClassTable<'a> {
    /// Starts with class 0, the empty class.
    fn new(host_only: u64, local_specs: &'a [Vec<IpNet>], remote_specs: &'a [Vec<IpNet>]) -> Self {
        ClassTable { entries: vec![ClassEntry::default()], index: HashMap::new(), host_only, local_specs, remote_specs }
    }

    fn intern(&mut self, cands: Vec<Candidate>) -> u32 {
        if cands.is_empty() {
            return 0;
        }
        if let Some(i) = self.index.get(&cands) {
            return *i;
        }
        let mut entry = ClassEntry {
            len: cands.len() as u32,
            remote_mode: if cands.iter().all(|c| c.remote == 0) {
                REMOTE_NONE
            } else if cands.iter().all(|c| c.remote & !self.host_only == 0) {
                REMOTE_HOSTS
            } else {
                REMOTE_LPM
            },
            ..Default::default()
        };
        entry.candidates[..cands.len()].copy_from_slice(&cands);
        // Few hosts are compared in place (the kernel then needs no host table and no trie).
        let local_bits = cands.iter().fold(0, |m, c| m | c.local as u64);
        let remote_bits = cands.iter().fold(0, |m, c| m | c.remote);
        for (family, v6) in [(0, false), (1, true)] {
            if let Some(hosts) = inline_hosts(self.local_specs, local_bits, v6) {
                entry.local[family] = hosts;
                entry.inline |= if v6 { inline::LOCAL_V6 } else { inline::LOCAL_V4 };
            }
            if let Some(hosts) = inline_hosts(self.remote_specs, remote_bits, v6) {
                entry.remote[family] = hosts;
                entry.inline |= if v6 { inline::REMOTE_V6 } else { inline::REMOTE_V4 };
            }
            // The first candidate as host comparisons, when its sides are any or a few hosts.
            let first = &cands[0];
            let side = |specs: &[Vec<IpNet>], bits: u64| {
                if bits == 0 { Some(None) } else { first_hosts(specs, bits, v6).map(Some) }
            };
            if let (Some(local), Some(remote)) =
                (side(self.local_specs, first.local as u64), side(self.remote_specs, first.remote))
            {
                let [valid, any_local, any_remote] = inline::first(v6);
                entry.inline |= valid;
                match local {
                    Some(hosts) => entry.first[family].local = hosts,
                    None => entry.inline |= any_local,
                }
                match remote {
                    Some(hosts) => entry.first[family].remote = hosts,
                    None => entry.inline |= any_remote,
                }
            }
        }
        let i = self.entries.len() as u32;
        self.entries.push(entry);
        self.index.insert(cands, i);
        i
    }
}

/// The one or two host addresses of one family that the sets of `bits` hold, the one written
/// twice, when these sets hold nothing else of that family; `None` otherwise (a network, more
/// hosts, or none: a candidate no address of the family can match is left to the general path).
fn first_hosts(specs: &[Vec<IpNet>], bits: u64, v6: bool) -> Option<[[u32; 4]; 2]> {
    let hosts = inline_hosts(specs, bits, v6)?;
    match hosts.iter().filter(|h| h.sets != 0).count() {
        1 => Some([hosts[0].addr, hosts[0].addr]),
        2 => Some([hosts[0].addr, hosts[1].addr]),
        _ => None,
    }
}

/// The hosts of one family in the sets of `bits` (a mask over `specs`), each with the bits of
/// those sets that hold it, when these sets hold only host addresses of that family, at most
/// [`INLINE_HOSTS`] of them; `None` otherwise. A class checks such hosts in place: an address
/// that is none of them is in none of the sets (and the sets' bits are all the candidates
/// test), so the answer equals the host tables' or the trie's.
fn inline_hosts(specs: &[Vec<IpNet>], bits: u64, v6: bool) -> Option<[InlineHost; INLINE_HOSTS]> {
    let mut hosts: BTreeMap<[u32; 4], u64> = BTreeMap::new();
    for (bit, spec) in specs.iter().enumerate().filter(|(bit, _)| bits & (1 << bit) != 0) {
        for net in spec.iter().filter(|n| n.addr().is_ipv6() == v6) {
            if net.prefix_len() != net.max_prefix_len() {
                return None;
            }
            let key = match net {
                IpNet::V4(n) => [u32::from_ne_bytes(n.addr().octets()), 0, 0, 0],
                IpNet::V6(n) => words_v6(n.addr()),
            };
            *hosts.entry(key).or_insert(0) |= 1 << bit;
            if hosts.len() > INLINE_HOSTS {
                return None;
            }
        }
    }
    let mut out = [InlineHost::default(); INLINE_HOSTS];
    for (slot, (addr, sets)) in out.iter_mut().zip(hosts) {
        *slot = InlineHost { addr, sets };
    }
    Some(out)
}

/// Why a port table cannot be built: the rule and port where a limit is crossed.
enum PortTableError<'a> {
    /// More than [`MAX_CANDIDATES`] rules apply to the port.
    Candidates(&'a Rule, u16),
    /// The port's list of rules would be class number [`MAX_CLASSES`].
    Classes(&'a Rule, u16),
}

/// The class of every port for the rules of one (direction, protocol), by a sweep over range
/// boundaries; stops at the first port that crosses a limit.
fn port_table<'a>(
    members: &[(usize, &'a Rule)],
    conds: &[Option<Cond>],
    slots: &SlotMap,
    classes: &mut ClassTable,
) -> Result<Vec<u32>, PortTableError<'a>> {
    // Boundary -> (rules starting, rules ending just before it).
    let mut events: BTreeMap<u32, (Vec<usize>, Vec<usize>)> = BTreeMap::new();
    for (pos, (i, rule)) in members.iter().enumerate() {
        if conds[*i].is_none() {
            continue;
        }
        for r in &rule.ports.0 {
            events.entry(r.first as u32).or_default().0.push(pos);
            events.entry(r.last as u32 + 1).or_default().1.push(pos);
        }
    }
    let mut table = vec![0u32; 65_536];
    // Active members by policy position, counting overlapping ranges of the same rule.
    let mut active: BTreeMap<usize, u32> = BTreeMap::new();
    let bounds: Vec<u32> = events.keys().copied().collect();
    for (k, start) in bounds.iter().enumerate() {
        let (adds, removes) = &events[start];
        for p in removes {
            let n = active.get_mut(p).expect("removed after added");
            *n -= 1;
            if *n == 0 {
                active.remove(p);
            }
        }
        for p in adds {
            *active.entry(*p).or_insert(0) += 1;
        }
        let end = bounds.get(k + 1).copied().unwrap_or(65_536).min(65_536);
        if *start >= 65_536 || active.is_empty() {
            continue;
        }
        let mut cands = Vec::new();
        for p in active.keys() {
            let (i, rule) = members[*p];
            let (local, remote) = conds[i].expect("only matchable rules are active");
            if cands.len() == MAX_CANDIDATES {
                return Err(PortTableError::Candidates(rule, *start as u16));
            }
            let local = local.map_or(0, |b| 1u32 << b);
            let remote = remote.map_or(0, |b| 1u64 << b);
            cands.push(Candidate { rule: slots.0[&rule.name], _pad: 0, local, remote });
            if local == 0 && remote == 0 {
                break; // Later rules can never decide.
            }
        }
        let class = classes.intern(cands);
        if class >= MAX_CLASSES {
            // The rule that made this list new: the last one to start here, else the latest active.
            let newest = adds.iter().max().or(active.keys().next_back()).expect("a class has rules");
            return Err(PortTableError::Classes(members[*newest].1, *start as u16));
        }
        table[*start as usize..end as usize].fill(class);
    }
    Ok(table)
}

#[cfg(test)]
mod tests;
