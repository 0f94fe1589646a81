//! The connection table: flows the edge opened (allowed by an outbound rule at egress) so their
//! answers pass at ingress without opening any port. Keys are written from the edge's side
//! (local, remote), so both programs build the same key for the two directions of a flow.
//!
//! Two stores: the LRU hash tables are the record (size, eviction, the live gauge), and in
//! front of them a direct-mapped array of flow slots (`edge_common::CtSlotV4`) holds most flows
//! too, so the reply of a tracked flow usually costs an array read and a key comparison instead
//! of a hash-table lookup. Lookups try the slot first, then the table.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::helpers::bpf_jiffies64;
use edge_common::{CT_PORTS_LEN, CtEntry, CtEvent, CtKeyV4, CtKeyV6, CtState, GenConfig, ct_origin, ct_port_slot};

use crate::maps::{EDGE_CT4, EDGE_CT6, EDGE_CTLIVE, EDGE_CTPORTS};
use crate::{bounds, counters};

#[cfg(not(feature = "compat"))]
mod slots;
#[cfg(feature = "compat")]
#[path = "conntrack/compat_slots.rs"]
mod slots;
use crate::parse::{PROTO_TCP, Packet, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};
use slots::{fill_slot, free_slot, slot_lookup};

pub enum Flow {
    V4(CtKeyV4),
    V6(CtKeyV6),
}

/// The tick count: the verifier inlines bpf_jiffies64 as a single load.
#[inline(always)]
pub fn jiffies() -> u64 {
    unsafe { bpf_jiffies64() }
}

/// CLOCK_MONOTONIC in ns, through a helper call: for the rare paths (creation, events). The
/// coarse clock is cheaper; its helper exists from Linux 5.11, so the `compat` object reads the
/// precise one (same clock, finer ticks).
#[inline(always)]
pub fn monotonic_ns() -> u64 {
    #[cfg(not(feature = "compat"))]
    let ns = unsafe { aya_ebpf::helpers::bpf_ktime_get_coarse_ns() };
    #[cfg(feature = "compat")]
    let ns = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
    ns
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
    let i = bounds::index::<CT_PORTS_LEN>(ct_port_slot(proto, local_port));
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
    let i = bounds::index::<CT_PORTS_LEN>(ct_port_slot(proto, port));
    // A byte store: CPUs marking neighbouring ports never undo each other.
    unsafe { core::ptr::write_volatile(&raw mut (*ports).0[i], 1) };
}

/// Where a flow's entry was found: its slot (with the slot's lock word and the even value it
/// had when the key matched) or the table (`seq` null). Plain fields, all always set: with an
/// `Option` payload LLVM may spill a register it never defined, which the verifier rejects.
#[derive(Clone, Copy)]
pub struct Hit {
    entry: *mut CtEntry,
    // The compat object has no slots.
    #[cfg_attr(feature = "compat", allow(dead_code))]
    seq: *mut u64,
    #[cfg_attr(feature = "compat", allow(dead_code))]
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

/// Refreshes a flow and moves a TCP flow's state on a segment.
///
/// Only the edge's own segments, which the edge's stack made, move a flow towards its end: its
/// RST removes the flow, its FIN makes it closing, and every segment records the sequence number
/// it acknowledges. From the far side, which anyone who guesses the four-tuple can forge, only a
/// RST carrying exactly that number (RFC 5961's rule for accepting a RST) makes the flow closing;
/// any other RST or FIN passes to the edge's stack, which judges it against its real window,
/// and leaves the table as it was (see docs/decisions.md, "Blind RST and FIN").
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
    let state = unsafe { (*e).state };
    let next = if inbound {
        if flags & TCP_RST != 0 {
            // In SYN-sent the RST must acknowledge the edge's SYN (RFC 793); after that it must
            // carry the sequence number the edge acknowledged last. 0: not known yet.
            let number = if state == CtState::SynSent as u8 { pkt.ack } else { pkt.seq };
            let expected = unsafe { (*e).ack };
            if number != expected || expected == 0 {
                return;
            }
            counters::ct_event(CtEvent::Reset);
            CtState::Closing as u8
        } else if state == CtState::SynSent as u8 && flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK {
            CtState::Established as u8
        } else {
            state
        }
    } else {
        if flags & TCP_RST != 0 {
            // The edge's own stack ended the connection.
            counters::ct_event(CtEvent::Reset);
            remove(f, &hit);
            return;
        }
        let number = expected_number(pkt);
        if unsafe { (*e).ack } != number {
            unsafe { (*e).ack = number };
        }
        if flags & TCP_FIN != 0 {
            CtState::Closing as u8
        } else if flags & TCP_SYN != 0 && flags & TCP_ACK == 0 {
            // The edge opens a new connection on the 4-tuple of a closing one.
            CtState::SynSent as u8
        } else if state == CtState::SynSent as u8 && flags & TCP_SYN == 0 {
            // The edge sends data: the handshake completed.
            CtState::Established as u8
        } else {
            state
        }
    };
    if next != state {
        unsafe { (*e).state = next };
    }
}

/// The number a RST from the far side must carry after the edge's segment `pkt`: what the
/// segment acknowledges, or for a bare SYN, the SYN's sequence number plus one (which the RST
/// refusing it acknowledges). Wire order.
#[inline(always)]
fn expected_number(pkt: &Packet) -> u32 {
    if pkt.tcp_flags & TCP_ACK != 0 { pkt.ack } else { u32::from_be(pkt.seq).wrapping_add(1).to_be() }
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
        ack: if pkt.proto == PROTO_TCP { expected_number(pkt) } else { 0 },
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
