//! The contract between the edge-ctl kernel programs and the edge-ctl controller.
//!
//! Everything both sides must agree on lives here and nowhere else: map names and sizes, the
//! layout of every key and value, the table-index arithmetic, and the verdict enums with the names
//! every tool prints. The crate is `no_std` and holds no logic beyond that arithmetic.
//!
//! Byte order: IPv4/IPv6 addresses are stored exactly as they appear on the wire, read as native
//! `u32` words (`u32::from_ne_bytes(octets)`), so the kernel compares them without swapping.
//! Ports are host order.
#![no_std]

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
/// Default size of each connection table (IPv4 and IPv6); a policy may change it.
pub const CT_DEFAULT_MAX: u32 = 65_536;
/// Class 0 is the empty class: no rule applies to the port.
pub const NO_CLASS: u32 = 0;

/// Names of the maps in the eBPF object. They are pinned by name in the interface's pin directory.
pub mod maps {
    /// The live generation and both generations' configuration, port and class tables: one
    /// [`super::PacketTables`], a global variable of the kernel programs (no lookup), memory-mapped
    /// by the controller.
    pub const TABLES: &str = "EDGE_TABLES";
    /// The local ports that may have tracked flows: one [`super::CtPorts`], memory-mapped.
    pub const CT_PORTS: &str = "EDGE_CTPORTS";
    pub const REMOTE_V4: &str = "EDGE_REMOTE4";
    pub const REMOTE_V6: &str = "EDGE_REMOTE6";
    pub const RULE_COUNTERS: &str = "EDGE_RULES";
    pub const DROP_COUNTERS: &str = "EDGE_DROPS";
    pub const PASS_COUNTERS: &str = "EDGE_PASSES";
    pub const CT_V4: &str = "EDGE_CT4";
    pub const CT_V6: &str = "EDGE_CT6";
    /// Connection-table events, per CPU, indexed by [`super::CtEvent`].
    pub const CT_EVENTS: &str = "EDGE_CTEV";
    /// Entries created minus entries removed, `[IPv4, IPv6]`, updated atomically.
    pub const CT_LIVE: &str = "EDGE_CTLIVE";
    /// Direct-mapped flow slots in front of [`CT_V4`] and [`CT_V6`] ([`super::CtSlotV4`]).
    pub const CT_SLOTS_V4: &str = "EDGE_CTS4";
    pub const CT_SLOTS_V6: &str = "EDGE_CTS6";
    /// Drop events ([`super::DropEvent`]), a ring buffer.
    pub const EVENTS: &str = "EDGE_EVENTS";
    /// Per-CPU event budget of the current second ([`super::EventBudget`]).
    pub const EVENT_BUDGET: &str = "EDGE_EVBUDGET";
    /// Result of the explain programs ([`super::Explanation`]); not pinned.
    pub const EXPLAIN: &str = "EDGE_EXPLAIN";
}

/// Size of the drop-event ring buffer in bytes.
pub const EVENTS_RING_BYTES: u32 = 256 * 1024;

/// Names of the programs in the eBPF object.
pub mod programs {
    /// The ingress filter.
    pub const XDP_FILTER: &str = "edge_xdp";
    /// An XDP program that passes everything: the floor of the benchmark harness.
    pub const XDP_FLOOR: &str = "edge_xdp_floor";
    /// A stateless port matrix (ports only, one lookup, no counters): the benchmark's reference
    /// for what any parse-and-lookup program costs on the same harness.
    pub const XDP_MATRIX: &str = "edge_xdp_matrix";
    /// The egress filter and flow recorder (TC).
    pub const TC_EGRESS: &str = "edge_tc_egress";
    /// Dry runs of the ingress and egress logic for `edge-ctl explain`: same code, no counters,
    /// no connection-table writes, no events; the decision goes to [`super::maps::EXPLAIN`].
    pub const EXPLAIN_IN: &str = "edge_explain_in";
    pub const EXPLAIN_OUT: &str = "edge_explain_out";
}

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
    /// Pass later fragments inbound (`fragments = "pass"`); dropped by default.
    pub const FRAGMENTS_PASS: u32 = 1 << 6;
    /// All local prefixes of the family are host addresses and [`super::GenConfig`]'s host
    /// table holds them: one probe instead of the scan.
    pub const LOCAL_HASH_V4: u32 = 1 << 7;
    pub const LOCAL_HASH_V6: u32 = 1 << 8;
    /// The remote host table holds every remote host address of the family.
    pub const REMOTE_HASH_V4: u32 = 1 << 9;
    pub const REMOTE_HASH_V6: u32 = 1 << 10;
}

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
    /// Drop events each CPU may emit per second (0: none).
    pub events_per_cpu: u32,
    /// Slots of each flow-slot array minus one (a power of two minus one, see [`ct_slots`]).
    pub ct_slot_mask: u32,
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
            events_per_cpu: 0,
            ct_slot_mask: 0,
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

/// [`CtPorts`] holds one byte per (protocol, local port): non-zero when a flow
/// with that local port may be tracked. Ingress checks it before any flow lookup, so packets to
/// ports the edge never used for its own flows cost no lookup. Set when an entry is created;
/// cleared only by the controller (flush), so it may say "maybe" for ports whose flows have
/// gone: that costs a lookup, never a wrong verdict.
pub const CT_PORTS_LEN: usize = 2 * 65_536;

/// Index into [`CtPorts`] for a protocol (6 or 17) and local port.
#[inline(always)]
pub const fn ct_port_slot(proto: u8, port: u16) -> usize {
    let p = if proto == 6 { 0 } else { 1 };
    (p << 16) | port as usize
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

/// The value of [`maps::CT_PORTS`]: local ports that may have tracked flows, at
/// [`ct_port_slot`]. Written by the kernel (byte stores) and cleared by the controller; a map
/// of its own, apart from [`PacketTables`], so the kernel never writes what the controller
/// loads with a new build.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CtPorts(pub [u8; CT_PORTS_LEN]);

/// Connection table key, IPv4. Always written from the edge's side (local, remote), so the
/// egress program and the ingress program build the same key for the two directions of a flow.
/// 8-byte aligned, so the kernel compares keys as 64-bit words.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKeyV4 {
    pub local: u32,
    pub remote: u32,
    pub lport: u16,
    pub rport: u16,
    pub proto: u8,
    // Two fields, not `[u8; 3]`: zeroing a 3-byte array is a call to memset in BPF code.
    pub _pad0: u8,
    pub _pad1: u16,
}

impl CtKeyV4 {
    #[inline(always)]
    pub const fn new(local: u32, remote: u32, lport: u16, rport: u16, proto: u8) -> Self {
        CtKeyV4 { local, remote, lport, rport, proto, _pad0: 0, _pad1: 0 }
    }
}

/// Connection table key, IPv6.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKeyV6 {
    pub local: [u32; 4],
    pub remote: [u32; 4],
    pub lport: u16,
    pub rport: u16,
    pub proto: u8,
    pub _pad0: u8,
    pub _pad1: u16,
}

impl CtKeyV6 {
    #[inline(always)]
    pub const fn new(local: [u32; 4], remote: [u32; 4], lport: u16, rport: u16, proto: u8) -> Self {
        CtKeyV6 { local, remote, lport, rport, proto, _pad0: 0, _pad1: 0 }
    }
}

/// A flow slot: a direct-mapped copy of a connection-table entry, so the reply of a tracked flow
/// costs one array read and a key comparison instead of a hash-table lookup. The connection
/// tables stay the record (their size, eviction, gauges); a flow also has a slot when its slot
/// ([`ct_slot_v4`]) was free or held an expired flow when it was created. While it holds the slot
/// the flow's timestamps and state are kept there, and the table's copy may be older
/// (`edge-ctl conntrack` shows the newer one). A flow leaves its slot only when it is removed
/// (the edge's RST, expiry, flush), never for another flow.
///
/// `seq` is a sequence lock: odd while a writer (who set it with a compare-and-exchange)
/// rewrites the key; readers take the entry only if `seq` was even and unchanged around
/// their key comparison. A slot whose key has protocol 0 is free.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtSlotV4 {
    pub seq: u64,
    pub key: CtKeyV4,
    pub entry: CtEntry,
}

/// A flow slot, IPv6 (see [`CtSlotV4`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtSlotV6 {
    pub seq: u64,
    pub key: CtKeyV6,
    pub entry: CtEntry,
}

/// Most slots per family: 262,144 (12 MiB for IPv4, 18 MiB for IPv6).
pub const CT_SLOTS_MAX: u32 = 1 << 18;

/// Slots per family for connection tables of `ct_max` entries: the next power of two, at most
/// [`CT_SLOTS_MAX`].
pub const fn ct_slots(ct_max: u32) -> u32 {
    let n = if ct_max <= 1 { 1 } else { ct_max.next_power_of_two() };
    if n > CT_SLOTS_MAX { CT_SLOTS_MAX } else { n }
}

/// Mixes an address word, the ports and the protocol into a slot hash (two multiplications:
/// cheaper than the table's jhash, and the low bits depend on every input bit).
#[inline(always)]
const fn ct_mix(addrs: u32, lport: u16, rport: u16, proto: u8) -> u32 {
    let h = (addrs ^ proto as u32).wrapping_mul(0x9e37_79b1) ^ ((lport as u32) << 16 | rport as u32);
    let h = h.wrapping_mul(0x85eb_ca77);
    h ^ (h >> 15)
}

/// The slot hash of an IPv4 flow (mask it with [`GenConfig::ct_slot_mask`]).
#[inline(always)]
pub const fn ct_slot_v4(k: &CtKeyV4) -> u32 {
    ct_mix(k.remote ^ k.local.rotate_left(16), k.lport, k.rport, k.proto)
}

/// The slot hash of an IPv6 flow.
#[inline(always)]
pub const fn ct_slot_v6(k: &CtKeyV6) -> u32 {
    let r = k.remote[0] ^ k.remote[1] ^ k.remote[2] ^ k.remote[3];
    let l = k.local[0] ^ k.local[1] ^ k.local[2] ^ k.local[3];
    ct_mix(r ^ l.rotate_left(16), k.lport, k.rport, k.proto)
}

/// States of a tracked flow; each has its own idle timeout.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtState {
    /// TCP: the edge sent a SYN, no answer yet.
    SynSent = 0,
    /// TCP: both sides have spoken.
    Established = 1,
    /// TCP: a FIN was seen.
    Closing = 2,
    /// UDP.
    Udp = 3,
}

pub const CT_STATES: usize = 4;

impl CtState {
    pub const fn from_u8(v: u8) -> Option<CtState> {
        match v {
            0 => Some(CtState::SynSent),
            1 => Some(CtState::Established),
            2 => Some(CtState::Closing),
            3 => Some(CtState::Udp),
            _ => None,
        }
    }
    pub const fn name(self) -> &'static str {
        match self {
            CtState::SynSent => "syn-sent",
            CtState::Established => "established",
            CtState::Closing => "closing",
            CtState::Udp => "udp",
        }
    }
}

/// How an entry came to be.
pub mod ct_origin {
    /// An outbound packet allowed by an outbound rule.
    pub const OUTBOUND: u8 = 0;
    /// Seeded at attach from the kernel's socket table (a connection already open).
    pub const SEEDED: u8 = 1;
}

/// Value of the connection tables. `created_ns` is CLOCK_MONOTONIC (read once, at creation);
/// `last_seen` is in jiffies, which the verifier inlines as one load: reading a clock through a
/// helper on every tracked packet would cost more than the rest of the lookup.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtEntry {
    pub created_ns: u64,
    pub last_seen: u64,
    /// Counter slot of the rule that allowed the flow.
    pub rule: u16,
    /// A [`CtState`].
    pub state: u8,
    /// A [`ct_origin`] value.
    pub origin: u8,
    pub _pad: u32,
}

/// A dropped (or, in audit/monitor mode, would-be dropped) packet, as `edge-ctl tail` shows it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropEvent {
    /// `bpf_ktime_get_coarse_ns` (CLOCK_MONOTONIC).
    pub time_ns: u64,
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub sport: u16,
    pub dport: u16,
    /// 0 inbound, 1 outbound.
    pub direction: u8,
    /// A [`DropKind`].
    pub kind: u8,
    /// A [`DropReason`].
    pub reason: u8,
    /// IP protocol number (0 when not IP).
    pub proto: u8,
    /// 4 or 6 (0 when not IP).
    pub family: u8,
    // Three fields, not `[u8; 7]`: zeroing a byte array is a call to memset in BPF code.
    pub _pad0: u8,
    pub _pad1: u16,
    pub _pad2: u32,
}

/// Per-CPU event budget: how many events this CPU emitted in the second that began at jiffy
/// `window`, and how many it suppressed in total.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventBudget {
    pub window: u64,
    pub emitted_in_window: u64,
    pub emitted: u64,
    pub suppressed: u64,
}

/// What the explain programs decided.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Explanation {
    /// 1 pass, 2 drop.
    pub verdict: u32,
    /// Why, one of [`explain`].
    pub by: u32,
    /// Rule slot (by rule), [`DropReason`] (by drop), [`PassReason`] (by pass reason).
    pub detail: u32,
    /// The generation that decided.
    pub generation: u32,
}

/// Values of [`Explanation::by`].
pub mod explain {
    pub const RULE: u32 = 1;
    pub const DROP: u32 = 2;
    pub const PASS_REASON: u32 = 3;
    /// Dropped by the rules but passed because of audit or egress monitor/off mode.
    pub const WOULD_DROP: u32 = 4;
}

/// Packet and byte counter (per CPU in the maps).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

macro_rules! named_enum {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $value:literal => $text:literal,)* }) => {
        $(#[$meta])*
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        $vis enum $name { $($(#[$vmeta])* $variant = $value,)* }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];
            pub const COUNT: u32 = 0 $(+ { let _ = $value; 1 })*;
            /// The name every tool prints.
            pub const fn name(self) -> &'static str {
                match self { $($name::$variant => $text,)* }
            }
            pub const fn from_u32(v: u32) -> Option<Self> {
                match v { $($value => Some($name::$variant),)* _ => None }
            }
        }
    };
}

named_enum! {
    /// Why a packet was dropped. Indexes [`maps::DROP_COUNTERS`].
    pub enum DropReason {
        /// No rule allows the packet and it belongs to no tracked flow.
        PolicyDefault = 0 => "policy-default",
        /// A header ends beyond the frame.
        Truncated = 1 => "truncated",
        /// A header field is impossible (IPv4 IHL below 5, total length beyond the frame, TCP data
        /// offset below 5, wrong IP version).
        BadHeader = 2 => "bad-header",
        /// A non-first IPv4/IPv6 fragment: it carries no ports to judge.
        Fragment = 3 => "fragment",
        /// An EtherType other than IPv4, IPv6 and ARP (after up to two VLAN tags).
        EtherType = 4 => "ethertype",
        /// An IP protocol other than TCP, UDP, ICMP and ICMPv6 (after IPv6 extension headers).
        L4Protocol = 5 => "l4-protocol",
        /// An ICMP/ICMPv6 message that is not an enabled essential.
        Icmp = 6 => "icmp",
        /// ARP or neighbour discovery with the essential switched off.
        EssentialOff = 7 => "essential-off",
        /// A TCP segment without SYN (an answer, an ACK) that belongs to no tracked flow.
        NoFlow = 8 => "no-flow",
        /// Egress: no outbound rule, tracked flow or inbound-allowed reply explains the packet.
        EgressPolicy = 9 => "egress-policy",
        /// IPv6 with more than four extension headers before the upper layer.
        ExtHeaders = 10 => "ext-headers",
    }
}

/// Whether a drop counter counts real drops or drops that enforcement would make (egress
/// `monitor` mode).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropKind {
    Dropped = 0,
    WouldDrop = 1,
}

/// Index into [`maps::DROP_COUNTERS`].
#[inline(always)]
pub const fn drop_index(direction: u32, kind: DropKind, reason: DropReason) -> u32 {
    ((direction * 2) + kind as u32) * DropReason::COUNT + reason as u32
}

/// Entries of [`maps::DROP_COUNTERS`].
pub const DROP_COUNTERS_LEN: u32 = 4 * DropReason::COUNT;

/// Index into [`maps::PASS_COUNTERS`].
#[inline(always)]
pub const fn pass_index(direction: u32, reason: PassReason) -> u32 {
    direction * PassReason::COUNT + reason as u32
}

/// Entries of [`maps::PASS_COUNTERS`].
pub const PASS_COUNTERS_LEN: u32 = 2 * PassReason::COUNT;

named_enum! {
    /// Why a packet passed without a rule. Indexes [`maps::PASS_COUNTERS`].
    pub enum PassReason {
        /// ARP (essential).
        Arp = 0 => "arp",
        /// IPv6 neighbour and multicast listener discovery (essential).
        Ndp = 1 => "ndp",
        /// ICMP fragmentation-needed / ICMPv6 packet-too-big (essential).
        Pmtu = 2 => "pmtu",
        /// Ingress: a packet of a tracked flow (an answer to the edge's own connection).
        Conntrack = 3 => "conntrack",
        /// Ingress: an ICMP error quoting a tracked flow.
        Related = 4 => "related",
        /// Egress: an answer from a port an inbound rule allows (a reply to an allowed client).
        Reply = 5 => "reply",
        /// Egress: an ICMP error or neighbour discovery the edge's stack sends.
        IcmpOut = 6 => "icmp-out",
        /// Egress: not IP (ARP and other link-layer traffic of the host).
        NotIp = 7 => "not-ip",
        /// Egress `off`: not filtered.
        Unfiltered = 8 => "unfiltered",
        /// A later fragment: passed by `fragments = "pass"` (ingress), or the host's own (egress).
        Fragment = 9 => "fragment",
    }
}

named_enum! {
    /// Connection-table events. Indexes [`maps::CT_EVENTS`].
    pub enum CtEvent {
        /// An entry was created by an outbound packet.
        Created = 0 => "created",
        /// An entry was found past its idle timeout and removed.
        Expired = 1 => "expired",
        /// An entry was created while the table was full, evicting the least recently used.
        TableFull = 2 => "table-full",
        /// A TCP RST on a tracked flow: the edge's own ends the flow, one from outside makes it
        /// closing (see the README). (Hits, packets passed for a tracked flow, are the inbound
        /// `conntrack` pass counter.)
        Reset = 3 => "reset",
    }
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all are repr(C) plain old data without padding holes that matter.
    unsafe impl aya::Pod for PacketTables {}
    unsafe impl aya::Pod for CtPorts {}
    unsafe impl aya::Pod for Candidate {}
    unsafe impl aya::Pod for ClassEntry {}
    unsafe impl aya::Pod for InlineHost {}
    unsafe impl aya::Pod for LocalV4 {}
    unsafe impl aya::Pod for LocalV6 {}
    unsafe impl aya::Pod for GenConfig {}
    unsafe impl aya::Pod for Counter {}
    unsafe impl aya::Pod for CtKeyV4 {}
    unsafe impl aya::Pod for CtKeyV6 {}
    unsafe impl aya::Pod for CtEntry {}
    unsafe impl aya::Pod for CtSlotV4 {}
    unsafe impl aya::Pod for CtSlotV6 {}
    unsafe impl aya::Pod for DropEvent {}
    unsafe impl aya::Pod for EventBudget {}
    unsafe impl aya::Pod for Explanation {}
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

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

    #[test]
    fn flow_slots_spread() {
        assert_eq!(
            (ct_slots(64), ct_slots(65_536), ct_slots(65_537), ct_slots(16_777_216)),
            (64, 65_536, 131_072, CT_SLOTS_MAX)
        );
        // 4,096 flows of one local address and port range to one remote: few share a slot.
        let mask = ct_slots(65_536) - 1;
        let mut used = std::collections::HashSet::new();
        for p in 0..4096u16 {
            let k = CtKeyV4::new(0x0a00_0001, 0xc633_6435, 30_000 + p, 53, 17);
            used.insert(ct_slot_v4(&k) & mask);
        }
        assert!(used.len() > 3900, "{} distinct slots of 4096", used.len());
    }

    #[test]
    fn enums_round_trip_by_value() {
        for r in DropReason::ALL {
            assert_eq!(DropReason::from_u32(*r as u32), Some(*r));
        }
        assert_eq!(DropReason::COUNT as usize, DropReason::ALL.len());
        assert_eq!(PassReason::COUNT as usize, PassReason::ALL.len());
    }

    #[test]
    fn layouts_are_stable() {
        // The packet tables are one array value: a multiple of 8 bytes, generations included.
        assert_eq!(core::mem::size_of::<Generation>() % 8, 0);
        assert_eq!(core::mem::size_of::<PacketTables>() % 8, 0);
        // About 3.4 MiB. Linux before 5.11 refuses an array value over KMALLOC_MAX_SIZE (4 MiB on
        // x86-64: E2BIG), and the tables are one value (a global variable).
        assert!(core::mem::size_of::<PacketTables>() <= 4 << 20);
        assert_eq!(core::mem::size_of::<FirstHosts>(), 64);
        assert_eq!(core::mem::size_of::<Candidate>(), 16);
        assert_eq!(core::mem::size_of::<RemoteHost>(), 24);
        assert_eq!(core::mem::size_of::<ClassEntry>(), 16 + 2 * 64 + 2 * 2 * INLINE_HOSTS * 24 + 16 * MAX_CANDIDATES);
        assert_eq!(core::mem::size_of::<Counter>(), 16);
        assert_eq!(core::mem::size_of::<CtKeyV4>(), 16);
        assert_eq!(core::mem::size_of::<CtKeyV6>(), 40);
        assert_eq!(core::mem::size_of::<CtEntry>(), 24);
        assert_eq!(core::mem::size_of::<CtSlotV4>(), 48);
        assert_eq!(core::mem::size_of::<CtSlotV6>(), 72);
        assert_eq!(core::mem::size_of::<DropEvent>(), 56);
        assert_eq!(
            drop_index(1, DropKind::WouldDrop, DropReason::EgressPolicy),
            DROP_COUNTERS_LEN - DropReason::COUNT + 9
        );
    }
}
