//! The connection table: flows the edge opened (allowed by an outbound rule at egress) so their
//! answers pass at ingress without opening any port. Keys are written from the edge's side
//! (local, remote), so both programs build the same key for the two directions of a flow.
//!
//! Two stores: the LRU hash tables are the record (size, eviction, the live gauge), and in
//! front of them a direct-mapped array of flow slots (`edge_common::CtSlotV4`) holds most flows
//! too, so the reply of a tracked flow usually costs an array read and a key comparison instead
//! of a hash-table lookup. Lookups try the slot first, then the table.

use core::intrinsics::{AtomicOrdering, atomic_cxchg, atomic_xadd};

use aya_ebpf::helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns};
use edge_common::{
    CT_PORTS_LEN, CtEntry, CtEvent, CtKeyV4, CtKeyV6, CtState, GenConfig, ct_origin, ct_port_slot, ct_slot_v4,
    ct_slot_v6,
};

use crate::counters;
use crate::maps::{EDGE_CT4, EDGE_CT6, EDGE_CTLIVE, EDGE_CTPORTS, EDGE_CTS4, EDGE_CTS6};
use crate::parse::{PROTO_TCP, Packet, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};

pub enum Flow {
    V4(CtKeyV4),
    V6(CtKeyV6),
}

/// The tick count: the verifier inlines bpf_jiffies64 as a single load.
#[inline(always)]
pub fn jiffies() -> u64 {
    unsafe { bpf_jiffies64() }
}

/// CLOCK_MONOTONIC in ns, through a helper call: for the rare paths (creation, events).
#[inline(always)]
pub fn monotonic_ns() -> u64 {
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// The flow of a packet: inbound packets have the edge as destination, outbound as source.
#[inline(always)]
pub fn flow_of(pkt: &Packet, outbound: bool) -> Flow {
    let (local, remote, lport, rport) =
        if outbound { (&pkt.src, &pkt.dst, pkt.sport, pkt.dport) } else { (&pkt.dst, &pkt.src, pkt.dport, pkt.sport) };
    flow(pkt.v6, pkt.proto, local, remote, lport, rport)
}

#[inline(always)]
pub fn flow(v6: bool, proto: u8, local: &[u32; 4], remote: &[u32; 4], lport: u16, rport: u16) -> Flow {
    if v6 {
        Flow::V6(CtKeyV6::new(*local, *remote, lport, rport, proto))
    } else {
        Flow::V4(CtKeyV4::new(local[0], remote[0], lport, rport, proto))
    }
}

#[inline(always)]
fn key_port(f: &Flow) -> (u8, u16) {
    match f {
        Flow::V4(k) => (k.proto, k.lport),
        Flow::V6(k) => (k.proto, k.lport),
    }
}

/// Whether any tracked flow may use this local port: one byte read instead of a flow lookup
/// for packets to ports the edge never opened flows from.
#[inline(always)]
pub fn may_be_tracked(proto: u8, local_port: u16) -> bool {
    let Some(ports) = EDGE_CTPORTS.get_ptr(0) else {
        return true;
    };
    let i = ct_port_slot(proto, local_port) & (CT_PORTS_LEN - 1);
    // Volatile: the controller clears the bytes (flush) while packets run.
    unsafe { core::ptr::read_volatile(&raw const (*ports).0[i]) != 0 }
}

#[inline(always)]
fn port_may_be_tracked(f: &Flow) -> bool {
    let (proto, port) = key_port(f);
    may_be_tracked(proto, port)
}

#[inline(always)]
fn mark_port(f: &Flow) {
    let Some(ports) = EDGE_CTPORTS.get_ptr_mut(0) else {
        return;
    };
    let (proto, port) = key_port(f);
    let i = ct_port_slot(proto, port) & (CT_PORTS_LEN - 1);
    // A byte store: CPUs marking neighbouring ports never undo each other.
    unsafe { core::ptr::write_volatile(&raw mut (*ports).0[i], 1) };
}

/// Where a flow's entry was found: its slot (with the slot's lock word and the even value it
/// had when the key matched) or the table (`seq` null). Plain fields, all always set: with an
/// `Option` payload LLVM may spill a register it never defined, which the verifier rejects.
#[derive(Clone, Copy)]
pub struct Hit {
    entry: *mut CtEntry,
    seq: *mut u64,
    seen: u64,
}

/// What [`live`] found: a live entry (`found`), where, and the time it read. Plain fields set on
/// every path, for the same reason as [`Hit`].
#[derive(Clone, Copy)]
pub struct Tracked {
    pub found: bool,
    hit: Hit,
    now: u64,
}

impl Tracked {
    const NONE: Tracked = Tracked {
        found: false,
        hit: Hit { entry: core::ptr::null_mut(), seq: core::ptr::null_mut(), seen: 0 },
        now: 0,
    };
}

/// A slot's lock word, its key and its entry (see `edge_common::CtSlotV4`).
#[inline(always)]
fn slot_of(cfg: &GenConfig, f: &Flow) -> Option<(*mut u64, *const u64, *mut CtEntry)> {
    match f {
        Flow::V4(k) => {
            let s = EDGE_CTS4.get_ptr_mut(ct_slot_v4(k) & cfg.ct_slot_mask)?;
            Some(unsafe { (&raw mut (*s).seq, (&raw const (*s).key).cast(), &raw mut (*s).entry) })
        }
        Flow::V6(k) => {
            let s = EDGE_CTS6.get_ptr_mut(ct_slot_v6(k) & cfg.ct_slot_mask)?;
            Some(unsafe { (&raw mut (*s).seq, (&raw const (*s).key).cast(), &raw mut (*s).entry) })
        }
    }
}

/// A key as the 64-bit words of its memory layout (little-endian), built from the fields, so
/// that they can be taken before a helper call (see `slot_lookup`) and written to a slot.
#[inline(always)]
fn key_words(f: &Flow) -> [u64; 5] {
    #[inline(always)]
    fn pair(lo: u32, hi: u32) -> u64 {
        lo as u64 | (hi as u64) << 32
    }
    let (lport, rport, proto) = match f {
        Flow::V4(k) => (k.lport, k.rport, k.proto),
        Flow::V6(k) => (k.lport, k.rport, k.proto),
    };
    let tail = lport as u64 | (rport as u64) << 16 | (proto as u64) << 32;
    match f {
        Flow::V4(k) => [pair(k.local, k.remote), tail, 0, 0, 0],
        Flow::V6(k) => [
            pair(k.local[0], k.local[1]),
            pair(k.local[2], k.local[3]),
            pair(k.remote[0], k.remote[1]),
            pair(k.remote[2], k.remote[3]),
            tail,
        ],
    }
}

/// Whether the key at `stored` equals `words` (the first 2 for IPv4, all 5 for IPv6), compared
/// as 64-bit words without a branch.
#[inline(always)]
fn same_key(words: &[u64; 5], v4: bool, stored: *const u64) -> bool {
    let n = if v4 { 2 } else { 5 };
    let mut d = 0;
    for (i, want) in words.iter().enumerate() {
        if i < n {
            d |= unsafe { core::ptr::read_volatile(stored.add(i)) } ^ want;
        }
    }
    d == 0
}

/// The flow's slot, if it holds the flow: the lock word was even and unchanged around the key
/// comparison, so the key was not being rewritten.
#[inline(always)]
fn slot_lookup(cfg: &GenConfig, f: &Flow) -> Option<Hit> {
    // Everything taken from the key before the map lookup: the compiler must assume a helper
    // call changes the stack copy of the key, and would read it (and its family) again.
    let (words, v4) = (key_words(f), matches!(f, Flow::V4(_)));
    let (seq, key, entry) = slot_of(cfg, f)?;
    let seen = unsafe { core::ptr::read_volatile(seq) };
    if seen & 1 != 0 || !same_key(&words, v4, key) || unsafe { core::ptr::read_volatile(seq) } != seen {
        return None;
    }
    Some(Hit { entry, seq, seen })
}

#[inline(always)]
fn lookup(cfg: &GenConfig, f: &Flow) -> Option<Hit> {
    if let Some(hit) = slot_lookup(cfg, f) {
        return Some(hit);
    }
    let entry = match f {
        Flow::V4(k) => EDGE_CT4.get_ptr_mut(k),
        Flow::V6(k) => EDGE_CT6.get_ptr_mut(k),
    }?;
    Some(Hit { entry, seq: core::ptr::null_mut(), seen: 0 })
}

/// Takes a slot's lock (even `seen` to odd): fails when another CPU got there first.
#[inline(always)]
fn lock_slot(seq: *mut u64, seen: u64) -> bool {
    unsafe { atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(seq, seen, seen + 1).1 }
}

/// Releases a slot's lock (odd to even).
#[inline(always)]
fn unlock_slot(seq: *mut u64) {
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(seq, 1) };
}

/// The key word that holds the protocol (0 in a free slot): after the addresses and ports.
#[inline(always)]
fn proto_word(f: &Flow) -> usize {
    if let Flow::V4(_) = f { 1 } else { 4 }
}

/// Frees the slot of a removed flow, unless another CPU changed it meanwhile.
#[inline(always)]
fn free_slot(f: &Flow, hit: &Hit) {
    let seq = hit.seq;
    if !seq.is_null() && lock_slot(seq, hit.seen) {
        // The key follows the lock word.
        let key = unsafe { seq.add(1) };
        unsafe { core::ptr::write_volatile(key.add(proto_word(f)), 0) };
        unlock_slot(seq);
    }
}

/// Copies a new flow into its slot when the slot is free or its flow has expired.
#[inline(always)]
fn fill_slot(cfg: &GenConfig, f: &Flow, entry: &CtEntry, now: u64) {
    let Some((seq, key, stored)) = slot_of(cfg, f) else { return };
    let seen = unsafe { core::ptr::read_volatile(seq) };
    if seen & 1 != 0 {
        return;
    }
    // Protocol 0: free. A flow that still lives keeps its slot.
    let (taken, last, state) =
        unsafe { (core::ptr::read_volatile(key.add(proto_word(f))), (*stored).last_seen, (*stored).state) };
    if taken != 0 && now.wrapping_sub(last) <= timeout(cfg, state) {
        return;
    }
    if !lock_slot(seq, seen) {
        return;
    }
    let words = key_words(f);
    let n = if let Flow::V4(_) = f { 2 } else { 5 };
    let key = key as *mut u64;
    for (i, w) in words.iter().enumerate() {
        if i < n {
            unsafe { core::ptr::write_volatile(key.add(i), *w) };
        }
    }
    unsafe { *stored = *entry };
    unlock_slot(seq);
}

#[inline(always)]
fn family(f: &Flow) -> u32 {
    match f {
        Flow::V4(_) => 0,
        Flow::V6(_) => 1,
    }
}

/// Removes a flow from both stores.
#[inline(always)]
fn remove(f: &Flow, hit: &Hit) {
    free_slot(f, hit);
    let removed = match f {
        Flow::V4(k) => EDGE_CT4.remove(k),
        Flow::V6(k) => EDGE_CT6.remove(k),
    };
    if removed.is_ok() {
        live_add(family(f), u64::MAX); // -1
    }
}

#[inline(always)]
fn live_add(family: u32, delta: u64) {
    if let Some(p) = EDGE_CTLIVE.get_ptr_mut(family) {
        atomic_add(p, delta);
    }
}

/// Shared by all CPUs: an atomic add (BPF_ATOMIC). core's AtomicU64 has no fetch_add on the
/// BPF target; the intrinsic lowers to the instruction directly.
#[inline(always)]
fn atomic_add(p: *mut u64, delta: u64) {
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, delta) };
}

#[inline(always)]
fn timeout(cfg: &GenConfig, state: u8) -> u64 {
    cfg.ct_timeout_jiffies.get(state as usize).copied().unwrap_or(0)
}

/// A live entry for the flow and the time, removing the entry (and counting the expiry) when it
/// is past its timeout. The clock is read only when there is an entry. `DRY` (explain) leaves
/// the table and the counters as they are.
#[inline(always)]
pub fn live<const DRY: bool>(cfg: &GenConfig, f: &Flow) -> Tracked {
    if !port_may_be_tracked(f) {
        return Tracked::NONE;
    }
    live_checked::<DRY>(cfg, f)
}

/// [`live`] for a caller that has checked [`may_be_tracked`] itself.
#[inline(always)]
pub fn live_checked<const DRY: bool>(cfg: &GenConfig, f: &Flow) -> Tracked {
    let Some(hit) = lookup(cfg, f) else { return Tracked::NONE };
    let e = hit.entry;
    let now = jiffies();
    let (last, state) = unsafe { ((*e).last_seen, (*e).state) };
    if now.wrapping_sub(last) > timeout(cfg, state) {
        if !DRY {
            remove(f, &hit);
            counters::ct_event(CtEvent::Expired);
        }
        return Tracked::NONE;
    }
    Tracked { found: true, hit, now }
}

/// Refreshes a flow and moves a TCP flow's state on a segment; the edge's own RST removes the
/// flow, a RST from outside makes it closing.
#[inline(always)]
pub fn advance<const DRY: bool>(f: &Flow, t: &Tracked, pkt: &Packet, inbound: bool) {
    if DRY {
        return;
    }
    let (hit, now) = (t.hit, t.now);
    let e = hit.entry;
    // Only when the tick moved: the value is shared with the other direction's CPU.
    if unsafe { (*e).last_seen } != now {
        unsafe { (*e).last_seen = now };
    }
    if pkt.proto != PROTO_TCP {
        return;
    }
    let flags = pkt.tcp_flags;
    if flags & TCP_RST != 0 {
        counters::ct_event(CtEvent::Reset);
        if !inbound {
            // The edge's own stack ended the connection.
            remove(f, &hit);
            return;
        }
    }
    let state = unsafe { (*e).state };
    // A RST from outside only moves the flow to closing: the edge's stack checks its sequence
    // number and this table cannot, so a spoofed RST must not cut a live connection (its next
    // packets keep the flow), while after a real one the flow idles out.
    let next = if flags & (TCP_FIN | TCP_RST) != 0 {
        CtState::Closing as u8
    } else if !inbound && flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
        // The edge opens a new connection on the 4-tuple of a closing one.
        CtState::SynSent as u8
    } else if state == CtState::SynSent as u8 && inbound && flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK {
        CtState::Established as u8
    } else if state == CtState::SynSent as u8 && !inbound && flags & TCP_SYN == 0 {
        // The edge sends data: the handshake completed.
        CtState::Established as u8
    } else {
        state
    };
    if next != state {
        unsafe { (*e).state = next };
    }
}

/// Records a new outbound flow allowed by rule `slot`.
#[inline(always)]
pub fn create<const DRY: bool>(cfg: &GenConfig, f: &Flow, pkt: &Packet, slot: u16) {
    if DRY {
        return;
    }
    let now = jiffies();
    let state = if pkt.proto == PROTO_TCP {
        if pkt.tcp_flags & TCP_RST != 0 {
            return; // Nothing to track.
        }
        if pkt.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN { CtState::SynSent } else { CtState::Established }
    } else {
        CtState::Udp
    };
    let entry = CtEntry {
        created_ns: monotonic_ns(),
        last_seen: now,
        rule: slot,
        state: state as u8,
        origin: ct_origin::OUTBOUND,
        _pad: 0,
    };
    let inserted = match f {
        Flow::V4(k) => EDGE_CT4.insert(k, entry, 0),
        Flow::V6(k) => EDGE_CT6.insert(k, entry, 0),
    };
    if inserted.is_ok() {
        mark_port(f);
        fill_slot(cfg, f, &entry, now);
        counters::ct_event(CtEvent::Created);
        let Some(live) = EDGE_CTLIVE.get_ptr_mut(family(f)) else { return };
        // An LRU table at capacity evicts on insert: count it instead of growing the gauge.
        if unsafe { *live } >= cfg.ct_max as u64 {
            counters::ct_event(CtEvent::TableFull);
        } else {
            atomic_add(live, 1);
        }
    }
}
