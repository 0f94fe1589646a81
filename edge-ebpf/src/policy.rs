//! Classification: which rule (if any) allows a TCP/UDP packet in a direction.
//!
//! Cost per packet: plain memory reads in the generation's tables (port -> class, class ->
//! candidates, the host tables; no map lookup of their own). The local address is compared
//! with the class's own hosts when its candidates' local sets are at most two host addresses
//! of the family, else found by one probe of a perfect hash (or a scan of at most 32 local
//! prefixes when they are networks). The remote address likewise: the class's own hosts, else
//! one probe of the remote host table, or one longest-prefix lookup when the remote sets hold
//! networks. None of it grows with the number of rules.

use aya_ebpf::maps::lpm_trie::Key;
use edge_common::{
    Candidate, ClassEntry, GenConfig, Generation, HOST_SLOTS, HostTables, INLINE_HOSTS, InlineHost, MAX_CANDIDATES,
    MAX_CLASSES, MAX_LOCAL_V4, MAX_LOCAL_V6, NO_CLASS, PORT_TABLE_LEN, REMOTE_HOSTS, REMOTE_NONE, RemoteKeyV4,
    RemoteKeyV6, flags, host_slot, inline, port_index,
};

use crate::bounds;
use crate::maps::{EDGE_REMOTE4, EDGE_REMOTE6};
use crate::parse::{PROTO_TCP, Packet};

/// The class of rules for a TCP/UDP packet's destination port in a direction ([`NO_CLASS`]:
/// no rule has the port).
#[inline(always)]
pub fn port_class(tables: &Generation, pkt: &Packet, direction: u32) -> u32 {
    let proto = if pkt.proto == PROTO_TCP { 0 } else { 1 };
    // The mask is a no-op for the values that occur; it proves the bound to the verifier
    // without a branch.
    tables.ports[bounds::index::<PORT_TABLE_LEN>(port_index(direction, proto, pkt.dport))] as u32
}

/// The rule slot that allows the packet, or `None` when no rule does.
#[inline(always)]
pub fn match_rule(generation: u32, tables: &Generation, pkt: &Packet, direction: u32) -> Option<u16> {
    match_candidate(generation, tables, pkt, direction).map(|c| c.rule)
}

/// The candidate (in the packet tables) whose rule allows the packet, or `None`: the rule's
/// counter can be looked up with the candidate's own memory as the key (see
/// `counters::rule_of`).
#[inline(always)]
pub fn match_candidate<'a>(
    generation: u32,
    tables: &'a Generation,
    pkt: &Packet,
    direction: u32,
) -> Option<&'a Candidate> {
    // Inbound: the local address is the destination; outbound: the source.
    let (local, remote) = if direction == 0 { (&pkt.dst, &pkt.src) } else { (&pkt.src, &pkt.dst) };
    let class = port_class(tables, pkt, direction);
    if class == NO_CLASS {
        return None;
    }
    let class = &tables.classes[bounds::index::<{ MAX_CLASSES as usize }>(class as usize)];
    let family = pkt.v6 as usize;
    if first_matches(class, pkt.v6, local, remote) {
        return Some(&class.candidates[0]);
    }
    let cfg = &tables.config;
    let hosts = &cfg.hosts;
    let (inline_local, inline_remote) =
        if pkt.v6 { (inline::LOCAL_V6, inline::REMOTE_V6) } else { (inline::LOCAL_V4, inline::REMOTE_V4) };
    let local_sets = if class.inline & inline_local != 0 {
        inline_sets(&class.local[family], pkt.v6, local)
    } else {
        // An interface has few addresses of its own: the other branch is the common one, and
        // laying it out straight (this one away) saves taken branches on the allowed path.
        core::hint::cold_path();
        local_sets(cfg, hosts, pkt.v6, local) as u64
    };
    let remote_sets = match class.remote_mode {
        REMOTE_NONE => 0,
        _ if class.inline & inline_remote != 0 => inline_sets(&class.remote[family], pkt.v6, remote),
        REMOTE_HOSTS if cfg.flags & if pkt.v6 { flags::REMOTE_HASH_V6 } else { flags::REMOTE_HASH_V4 } != 0 => {
            remote_host_sets(hosts, pkt.v6, remote)
        }
        _ => remote_sets(generation, pkt.v6, remote),
    };
    // One test for both sides (a zero mask requires nothing).
    // In 64 bits throughout: a u32 result widened at the end costs two shifts (BPF's 32-bit
    // operations are not known to clear the upper half). Local set bits are the low 32.
    let missing = |c: &Candidate| {
        let local = c.local as u64;
        ((local_sets & local) ^ local) | ((remote_sets & c.remote) ^ c.remote)
    };
    // The first candidate on its own, outside the loop: most packets a rule allows match the
    // first rule of their class (every class but the empty one has one), and straight code
    // is cheaper than the loop's setup.
    let first = &class.candidates[0];
    if missing(first) == 0 {
        return Some(first);
    }
    // The rest is laid out away from the allowed path, like every cold branch here.
    core::hint::cold_path();
    let len = class.len as usize;
    for i in 1..MAX_CANDIDATES {
        if i >= len {
            break;
        }
        let c = &class.candidates[i];
        if missing(c) == 0 {
            return Some(c);
        }
    }
    None
}

/// Whether the class's first candidate matches, by its hosts written out for the family
/// (`ClassEntry::first`): two address compares per side at most, none of the set arithmetic
/// below. `false` when the class has no such hosts for the family, and then the general path
/// decides (it tests the first candidate again).
#[inline(always)]
fn first_matches(class: &ClassEntry, v6: bool, local: &[u32; 4], remote: &[u32; 4]) -> bool {
    let [valid, any_local, any_remote] = inline::first(v6);
    let bits = class.inline;
    if bits & valid == 0 {
        return false;
    }
    let first = &class.first[v6 as usize];
    let one_of =
        |addr: &[u32; 4], hosts: &[[u32; 4]; 2]| differ(v6, addr, &hosts[0]) == 0 || differ(v6, addr, &hosts[1]) == 0;
    (bits & any_local != 0 || one_of(local, &first.local)) && (bits & any_remote != 0 || one_of(remote, &first.remote))
}

/// All ones when `x` is zero, else zero: equality without a branch (BPF has no conditional
/// move, and every branch inside a loop multiplies the paths the verifier walks).
#[inline(always)]
fn all_ones_if_zero(x: u32) -> u32 {
    // For x != 0, x | -x has its top bit set.
    (((x | x.wrapping_neg()) >> 31) ^ 1).wrapping_neg()
}

/// [`all_ones_if_zero`] for 64 bits.
#[inline(always)]
fn all_ones_if_zero64(x: u64) -> u64 {
    (((x | x.wrapping_neg()) >> 63) ^ 1).wrapping_neg()
}

/// Whether two addresses differ (nonzero) or not (zero), without a branch. IPv4 compares
/// word 0 only; IPv6 compares two 64-bit words, half the loads and registers of four 32-bit
/// ones. Both addresses must be 8-byte aligned (the packet's and every table's are).
#[inline(always)]
fn differ(v6: bool, a: &[u32; 4], b: &[u32; 4]) -> u64 {
    if v6 {
        // SAFETY: same size, 8-byte aligned (see above), any bit pattern is valid.
        let (a, b) =
            unsafe { (&*(a as *const [u32; 4] as *const [u64; 2]), &*(b as *const [u32; 4] as *const [u64; 2])) };
        (a[0] ^ b[0]) | (a[1] ^ b[1])
    } else {
        (a[0] ^ b[0]) as u64
    }
}

/// The set bits of `addr` among a class's few hosts: compared in place, no table to index.
#[inline(always)]
fn inline_sets(hosts: &[InlineHost; INLINE_HOSTS], v6: bool, addr: &[u32; 4]) -> u64 {
    // Written out for two hosts: a loop over the array compiled to eight more instructions on
    // the allowed path. The assertion keeps the two in step.
    const _: () = assert!(INLINE_HOSTS == 2, "inline_sets compares exactly two hosts");
    if differ(v6, addr, &hosts[0].addr) == 0 {
        hosts[0].sets
    } else if differ(v6, addr, &hosts[1].addr) == 0 {
        hosts[1].sets
    } else {
        0
    }
}

/// The remote sets of a host address: one probe of the generation's remote host table.
#[inline(always)]
fn remote_host_sets(hosts: &HostTables, v6: bool, addr: &[u32; 4]) -> u64 {
    let family = v6 as usize;
    let e = &hosts.remote[family][bounds::index::<HOST_SLOTS>(host_slot(addr, v6, hosts.mul[2 + family]))];
    e.sets & all_ones_if_zero64(differ(v6, addr, &e.addr))
}

/// The local sets containing `addr`: one probe of the host table when every local prefix of the
/// family is a host address, else a bounded, branch-free scan of the local prefixes.
#[inline(always)]
fn local_sets(cfg: &GenConfig, hosts: &HostTables, v6: bool, addr: &[u32; 4]) -> u32 {
    let hashed = if v6 { flags::LOCAL_HASH_V6 } else { flags::LOCAL_HASH_V4 };
    if cfg.flags & hashed != 0 {
        let family = v6 as usize;
        let e = &hosts.local[family][bounds::index::<HOST_SLOTS>(host_slot(addr, v6, hosts.mul[family]))];
        return e.sets & all_ones_if_zero64(differ(v6, addr, &e.addr)) as u32;
    }
    let mut sets = 0;
    if v6 {
        let n = cfg.local_v6_len as usize;
        for i in 0..MAX_LOCAL_V6 {
            if i >= n {
                break;
            }
            let e = &cfg.local_v6[i];
            let diff = (addr[0] & e.mask[0] ^ e.addr[0])
                | (addr[1] & e.mask[1] ^ e.addr[1])
                | (addr[2] & e.mask[2] ^ e.addr[2])
                | (addr[3] & e.mask[3] ^ e.addr[3]);
            sets |= e.sets & all_ones_if_zero(diff);
        }
    } else {
        let n = cfg.local_v4_len as usize;
        for i in 0..MAX_LOCAL_V4 {
            if i >= n {
                break;
            }
            let e = &cfg.local_v4[i];
            sets |= e.sets & all_ones_if_zero(addr[0] & e.mask ^ e.addr);
        }
    }
    sets
}

/// The remote sets containing `addr`: one longest-prefix lookup in the generation's trie.
#[inline(always)]
fn remote_sets(generation: u32, v6: bool, addr: &[u32; 4]) -> u64 {
    if v6 {
        let mut data: RemoteKeyV6 = [0; 17];
        data[0] = generation as u8;
        for w in 0..4 {
            let b = addr[w].to_ne_bytes();
            data[1 + 4 * w..5 + 4 * w].copy_from_slice(&b);
        }
        EDGE_REMOTE6.get(Key::new(8 + 128, data)).copied().unwrap_or(0)
    } else {
        let b = addr[0].to_ne_bytes();
        let data: RemoteKeyV4 = [generation as u8, b[0], b[1], b[2], b[3]];
        EDGE_REMOTE4.get(Key::new(8 + 32, data)).copied().unwrap_or(0)
    }
}
