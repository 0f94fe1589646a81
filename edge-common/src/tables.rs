//! The packet tables: what the packet path reads for every packet, in one value
//! ([`PacketTables`], the global variable [`maps::TABLES`]). The limits that size them, the two
//! policy generations, each generation's configuration ([`GenConfig`], with its [`flags`]), the
//! port table and its classes of candidate rules (with the hosts a class checks in place,
//! [`inline`]), the host tables, the local prefixes, and the keys of the remote-prefix tries.

use crate::conntrack::CT_STATES;
#[cfg(doc)]
use crate::conntrack::{CtState, ct_slots};
#[cfg(doc)]
use crate::maps;

/// Number of policy generations kept side by side. The live one is named by
/// [`PacketTables::active`]; a reload fills the other and flips the index, so a packet is
/// judged wholly by one policy.
pub const GENERATIONS: u32 = 2;
/// Rule counter slots (rules of both directions share the slot space).
pub const MAX_RULES: u32 = 16_384;
/// Port classes per generation (distinct ordered candidate lists over all ports). Bounded by
/// the size of [`PacketTables`], one array value, which Linux before 5.11 caps at 4 MiB: 2,048
/// classes keep it at 3.4 MiB (8,192 made it 10.3 MiB).
pub const MAX_CLASSES: u32 = 2_048;
/// Rules that can apply to one (direction, protocol, port).
pub const MAX_CANDIDATES: usize = 16;
/// Local address entries (CIDRs of the sets used as `local`) per family.
pub const MAX_LOCAL_V4: usize = 32;
pub const MAX_LOCAL_V6: usize = 32;
/// Distinct address sets usable as `local` (bit positions in a `u32`).
pub const MAX_LOCAL_SETS: usize = 32;
/// Distinct address sets usable as `remote` (bit positions in a `u64`).
pub const MAX_REMOTE_SETS: usize = 64;
/// Remote prefixes per family, over both generations.
pub const MAX_REMOTE_PREFIXES: u32 = 65_536;
/// Class 0 is the empty class: no rule applies to the port.
pub const NO_CLASS: u32 = 0;

/// Direction of a rule relative to the edge node.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// Packets arriving on the interface (judged by XDP).
    Inbound = 0,
    /// Packets the node sends (judged by TC egress).
    Outbound = 1,
}

/// Layer-4 protocols a rule can name.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum L4Proto {
    Tcp = 0,
    Udp = 1,
}

/// Index into [`Generation::ports`] for a port of a protocol (0 TCP, 1 UDP) in a direction.
#[inline(always)]
pub const fn port_index(direction: u32, proto: u32, port: u16) -> usize {
    (((direction << 1) | proto) << 16 | port as u32) as usize
}

/// Entries of [`Generation::ports`]: two directions, two protocols, every port.
pub const PORT_TABLE_LEN: usize = 2 * 2 * 65_536;

/// Flags of [`GenConfig::flags`].
pub mod flags {
    /// Pass ARP (essential: IPv4 neighbours).
    pub const ESSENTIAL_ARP: u32 = 1 << 0;
    /// Pass ICMPv6 neighbour discovery (router/neighbour solicitation and advertisement, redirect)
    /// and multicast listener discovery (query, report, done, report v2).
    pub const ESSENTIAL_NDP: u32 = 1 << 1;
    /// Pass ICMP fragmentation-needed and ICMPv6 packet-too-big (path MTU discovery).
    pub const ESSENTIAL_PMTU: u32 = 1 << 2;
    /// Egress: drop what no outbound rule, tracked flow or inbound-allowed reply explains.
    pub const EGRESS_ENFORCE: u32 = 1 << 3;
    /// Egress: count what enforcement would drop, but pass it.
    pub const EGRESS_MONITOR: u32 = 1 << 4;
    /// Audit mode: evaluate everything, drop nothing; drops are counted as would-be drops.
    pub const AUDIT: u32 = 1 << 5;
    /// Pass later fragments in both directions (`fragments = "pass"`).
    pub const FRAGMENTS_PASS: u32 = 1 << 6;
    /// All local prefixes of the family are host addresses and [`super::GenConfig`]'s host
    /// table holds them: one probe instead of the scan.
    pub const LOCAL_HASH_V4: u32 = 1 << 7;
    pub const LOCAL_HASH_V6: u32 = 1 << 8;
    /// The remote host table holds every remote host address of the family.
    pub const REMOTE_HASH_V4: u32 = 1 << 9;
    pub const REMOTE_HASH_V6: u32 = 1 << 10;
    /// Later fragments follow their first fragment (`fragments = "track"`, the default): a
    /// first fragment that passes is recorded in [`super::maps::FRAGMENTS`].
    pub const FRAGMENTS_TRACK: u32 = 1 << 11;
    /// Pass IPv6 router advertisements and redirects (essential `router`; off on the external
    /// role by default: a rogue router advertisement from outside is an attack).
    pub const ESSENTIAL_ROUTER: u32 = 1 << 12;
    /// Drop inbound packets from martian sources (`martians = "drop"`, the default): the
    /// interface's own addresses ([`super::GenConfig::own_v4`]) and the destination itself
    /// (LAND), 0.0.0.0/8, 127/8, 224/4, 255.255.255.255, ::, ::1, ff00::/8, ::ffff:0:0/96.
    pub const MARTIANS: u32 = 1 << 13;
}

/// Addresses of its own per family the interface's martian check knows (the first ones it
/// has; a packet from any address to itself is a martian too).
pub const MAX_OWN: usize = 4;

/// Slots of each host table (a perfect hash, chosen by the compiler).
pub const HOST_SLOTS: usize = 256;
/// Most host addresses a host table takes (a perfect hash of more into 256 slots is hard to
/// find quickly).
pub const MAX_HASHED_HOSTS: usize = 64;

/// The host-table slot of an address: a multiplicative hash of its words (IPv4 uses word 0).
#[inline(always)]
pub const fn host_slot(addr: &[u32; 4], v6: bool, mul: u32) -> usize {
    let folded =
        if v6 { addr[0] ^ addr[1].rotate_left(7) ^ addr[2].rotate_left(13) ^ addr[3].rotate_left(19) } else { addr[0] };
    (folded.wrapping_mul(mul) >> 24) as usize
}

/// A local host address and its local sets (`sets == 0`: empty slot). Aligned to 8 bytes, like
/// every address the kernel compares: an IPv6 address is compared as two 64-bit words.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalHost {
    pub addr: [u32; 4],
    pub sets: u32,
}

/// A remote host address and its remote sets (`sets == 0`: empty slot).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RemoteHost {
    pub addr: [u32; 4],
    pub sets: u64,
}

/// Host tables of a generation (in [`GenConfig`]): local and remote host addresses by family.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostTables {
    /// Hash multipliers: local v4, local v6, remote v4, remote v6.
    pub mul: [u32; 4],
    pub local: [[LocalHost; HOST_SLOTS]; 2],
    pub remote: [[RemoteHost; HOST_SLOTS]; 2],
}

impl HostTables {
    pub const fn zeroed() -> Self {
        HostTables {
            mul: [0; 4],
            local: [[LocalHost { addr: [0; 4], sets: 0 }; HOST_SLOTS]; 2],
            remote: [[RemoteHost { addr: [0; 4], sets: 0 }; HOST_SLOTS]; 2],
        }
    }
}

/// One rule that may decide a packet of a class, in policy order. It matches when the packet's
/// local-set bits contain `local` and its remote-set bits contain `remote` (a zero mask: any):
/// one branch-free test, `(l & local) ^ local | (r & remote) ^ remote == 0`, which keeps both
/// the JIT code and the verifier's path count small.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Candidate {
    /// Counter slot of the rule in [`maps::RULE_COUNTERS`].
    pub rule: u16,
    pub _pad: u16,
    /// The local set bit the packet's local address must have (0: any).
    pub local: u32,
    /// The remote set bit the packet's remote address must have (0: any).
    pub remote: u64,
}

/// An entry of [`Generation::classes`]: the ordered rules that can apply to the ports of this
/// class. The first candidate whose address conditions hold decides.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassEntry {
    pub len: u32,
    /// How the remote sets are found: [`REMOTE_NONE`] (no candidate restricts the remote side),
    /// [`REMOTE_HOSTS`] (only sets of host addresses: the host table will do when it has the
    /// family), [`REMOTE_LPM`] (the longest-prefix trie).
    pub remote_mode: u32,
    /// Which sides and families the class checks in place, from [`ClassEntry::local`] and
    /// [`ClassEntry::remote`], instead of the host tables or the trie ([`inline`] bits).
    pub inline: u32,
    pub _pad: u32,
    /// Per family: the first candidate's conditions as exact host comparisons, when they are
    /// ([`inline::FIRST_V4`], [`inline::FIRST_V6`]).
    pub first: [FirstHosts; 2],
    /// Per family: every host of the local sets the candidates name, when they are few host
    /// addresses (at most [`INLINE_HOSTS`]), each with the bits of those sets that hold it.
    pub local: [[InlineHost; INLINE_HOSTS]; 2],
    /// The same for the remote sets.
    pub remote: [[InlineHost; INLINE_HOSTS]; 2],
    pub candidates: [Candidate; MAX_CANDIDATES],
}

/// Host addresses a class can check in place, per side and family.
pub const INLINE_HOSTS: usize = 2;

/// A host address a class checks in place, with its set bits (an unused entry has no bits).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InlineHost {
    pub addr: [u32; 4],
    pub sets: u64,
}

/// The first candidate of a class, for one family, as host comparisons: it matches when the
/// packet's local address is `local[0]` or `local[1]` (or any, with the `FIRST_ANY_LOCAL` bit)
/// and its remote address is `remote[0]` or `remote[1]` (or any, with `FIRST_ANY_REMOTE`). One
/// host is written twice. The compiler writes it only when the candidate's sets hold one or two
/// host addresses of the family (or the side is any), so it says exactly what the candidate
/// says: most allowed packets match the first candidate, and this is their short path.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FirstHosts {
    pub local: [[u32; 4]; 2],
    pub remote: [[u32; 4]; 2],
}

/// Bits of [`ClassEntry::inline`].
pub mod inline {
    pub const LOCAL_V4: u32 = 1 << 0;
    pub const LOCAL_V6: u32 = 1 << 1;
    pub const REMOTE_V4: u32 = 1 << 2;
    pub const REMOTE_V6: u32 = 1 << 3;
    /// [`super::ClassEntry::first`] holds the first candidate's hosts for the family.
    pub const FIRST_V4: u32 = 1 << 4;
    pub const FIRST_V6: u32 = 1 << 5;
    /// The first candidate takes any local (remote) address of the family.
    pub const FIRST_ANY_LOCAL_V4: u32 = 1 << 6;
    pub const FIRST_ANY_LOCAL_V6: u32 = 1 << 7;
    pub const FIRST_ANY_REMOTE_V4: u32 = 1 << 8;
    pub const FIRST_ANY_REMOTE_V6: u32 = 1 << 9;

    /// The family's `[FIRST, FIRST_ANY_LOCAL, FIRST_ANY_REMOTE]` bits.
    #[inline(always)]
    pub const fn first(v6: bool) -> [u32; 3] {
        if v6 {
            [FIRST_V6, FIRST_ANY_LOCAL_V6, FIRST_ANY_REMOTE_V6]
        } else {
            [FIRST_V4, FIRST_ANY_LOCAL_V4, FIRST_ANY_REMOTE_V4]
        }
    }
}

pub const REMOTE_NONE: u32 = 0;
pub const REMOTE_HOSTS: u32 = 1;
pub const REMOTE_LPM: u32 = 2;

/// A local IPv4 prefix and the local sets it belongs to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalV4 {
    pub addr: u32,
    pub mask: u32,
    pub sets: u32,
    pub _pad: u32,
}

/// A local IPv6 prefix and the local sets it belongs to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalV6 {
    pub addr: [u32; 4],
    pub mask: [u32; 4],
    pub sets: u32,
    pub _pad: u32,
}

/// The configuration of a generation ([`Generation::config`]): switches, connection-tracking
/// timeouts and the local address table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenConfig {
    pub flags: u32,
    pub local_v4_len: u32,
    pub local_v6_len: u32,
    /// Size of each connection table (to tell when an insert evicts).
    pub ct_max: u32,
    /// Idle timeouts in jiffies, indexed by [`CtState`].
    pub ct_timeout_jiffies: [u64; CT_STATES],
    /// The kernel's tick rate (CONFIG_HZ): jiffies per second.
    pub hz: u64,
    /// Until when (jiffies) inbound mid-stream TCP of a connection an outbound rule allows is
    /// picked up into the connection table ([`crate::PassReason::Pickup`]); 0: never.
    pub pickup_until: u64,
    /// Drop events each CPU may emit per second (0: none).
    pub events_per_cpu: u32,
    /// Slots of each flow-slot array minus one (a power of two minus one, see [`ct_slots`]).
    pub ct_slot_mask: u32,
    /// The interface's own addresses when the policy was compiled, as the packet has them
    /// (network order); unused entries are 0.0.0.0 and ::, martians anyway.
    pub own_v4: [u32; MAX_OWN],
    pub own_v6: [[u32; 4]; MAX_OWN],
    pub local_v4: [LocalV4; MAX_LOCAL_V4],
    pub local_v6: [LocalV6; MAX_LOCAL_V6],
    /// In the same value as the rest, so the packet path needs no extra lookup for them.
    pub hosts: HostTables,
}

impl GenConfig {
    pub const fn zeroed() -> Self {
        Self {
            flags: 0,
            local_v4_len: 0,
            local_v6_len: 0,
            ct_max: 0,
            ct_timeout_jiffies: [0; CT_STATES],
            hz: 0,
            pickup_until: 0,
            events_per_cpu: 0,
            ct_slot_mask: 0,
            own_v4: [0; MAX_OWN],
            own_v6: [[0; 4]; MAX_OWN],
            local_v4: [LocalV4 { addr: 0, mask: 0, sets: 0, _pad: 0 }; MAX_LOCAL_V4],
            local_v6: [LocalV6 { addr: [0; 4], mask: [0; 4], sets: 0, _pad: 0 }; MAX_LOCAL_V6],
            hosts: HostTables::zeroed(),
        }
    }
}

/// Key data of [`maps::REMOTE_V4`]: the generation byte, then the address. The LPM prefix length
/// counts the generation byte, so it is `8 + prefix`.
pub type RemoteKeyV4 = [u8; 5];
/// Key data of [`maps::REMOTE_V6`]: the generation byte, then the address.
pub type RemoteKeyV6 = [u8; 17];
/// Value of the remote tries: bit `i` set when the prefix lies in remote set `i`.
pub type RemoteSets = u64;

/// One generation of the classification tables: everything a policy compiles to except the
/// remote prefixes (in the tries, keyed by generation).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Generation {
    pub config: GenConfig,
    /// The class of rules for each (direction, protocol, port), at [`port_index`];
    /// [`NO_CLASS`] when no rule applies.
    pub ports: [u16; PORT_TABLE_LEN],
    /// The classes, indexed by the values of `ports` (below [`MAX_CLASSES`]).
    pub classes: [ClassEntry; MAX_CLASSES as usize],
}

/// The value of [`maps::TABLES`] (one element, about 3.4 MiB): what the packet path reads for
/// every packet, in one place. The kernel programs reference it as a global variable, so its
/// address is a constant in their code and reading it costs no map lookup. Only the controller
/// writes it, through a memory mapping: a reload fills the generation that is not live, then
/// stores `active` (one aligned 32-bit store, which packets read once).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PacketTables {
    /// The live generation (0 or 1).
    pub active: u32,
    pub _pad: u32,
    pub generations: [Generation; GENERATIONS as usize],
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::conntrack::{CT_PORTS_LEN, ct_port_slot};

    #[test]
    fn port_index_covers_table_without_overlap() {
        assert_eq!(port_index(0, 0, 0), 0);
        assert_eq!(port_index(1, 1, 65535), PORT_TABLE_LEN - 1);
        assert_eq!(port_index(0, 1, 0), 65_536);
        assert_eq!(port_index(1, 0, 0), 2 * 65_536);
        assert_eq!(ct_port_slot(6, 0), 0);
        assert_eq!(ct_port_slot(17, 65535), CT_PORTS_LEN - 1);
    }

    #[test]
    fn host_slots_are_in_range() {
        for mul in [1u32, 0x9e37_79b1, u32::MAX] {
            for a in [[0u32; 4], [u32::MAX; 4], [1, 2, 3, 4]] {
                assert!(host_slot(&a, true, mul) < HOST_SLOTS && host_slot(&a, false, mul) < HOST_SLOTS);
            }
        }
    }
}
