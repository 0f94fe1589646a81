//! The connection tables: flows the edge opened (or that were open at attach), so that their
//! answers pass. Keys and entries ([`CtKeyV4`], [`CtKeyV6`], [`CtEntry`]), the flow states and
//! their idle timeouts ([`CtState`]), the direct-mapped flow slots in front of the tables and
//! their hash, the local ports that may have flows ([`CtPorts`]), and the default table size.

#[cfg(doc)]
use crate::maps;
#[cfg(doc)]
use crate::tables::{GenConfig, PacketTables};

/// Default size of each connection table (IPv4 and IPv6); a policy may change it.
pub const CT_DEFAULT_MAX: u32 = 65_536;

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
    /// TCP: the number a RST from the far side must carry to end the flow (wire order): the
    /// acknowledgment number of the edge's last segment (its sequence number, RFC 5961's exact
    /// match), or in SYN-sent the SYN's sequence number plus one (its acknowledgment number,
    /// RFC 793). 0: not known (a seeded flow until the edge's next segment).
    pub ack: u32,
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

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
}

/// Entries of the fragment table ([`crate::maps::FRAGMENTS`]), both families and directions:
/// datagrams in reassembly at once. An LRU: a flood of first fragments evicts the oldest, whose
/// later fragments are then dropped, as they would be without tracking. 4,096 (about 0.5 MiB)
/// keeps the Lync profile's maps within 8 MiB per interface; 8,192 took them to 8.1 MiB.
pub const FRAGMENTS_MAX: u32 = 4096;

/// How long a first fragment's verdict holds for its later fragments: Linux's reassembly
/// timeout (`net.ipv4.ipfrag_time`, 30 s by default).
pub const FRAGMENT_TIMEOUT_S: u64 = 30;

/// Key of the fragment table: the datagram's addresses (IPv4 in word 0), its identification
/// (IPv4's 16 bits or IPv6's 32, wire order), the IPv4 protocol (0 for IPv6, whose
/// identification is unique per address pair), and the direction (0 inbound, 1 outbound).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub id: u32,
    pub proto: u8,
    pub direction: u8,
    pub _pad: u16,
}

/// What a first fragment's verdict was, for its later fragments: `kind` 0 allowed by the rule
/// in counter slot `detail`, 1 passed for [`crate::PassReason`] `detail`, 3 would have been
/// dropped for [`crate::DropReason`] `detail` (audit, egress monitor); `seen` in jiffies.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragEntry {
    pub seen: u64,
    pub detail: u16,
    pub kind: u8,
    pub _pad0: u8,
    pub _pad1: u32,
}

/// [`FragEntry::kind`] values.
pub mod frag_kind {
    pub const RULE: u8 = 0;
    pub const PASS: u8 = 1;
    pub const WOULD_DROP: u8 = 3;
}
