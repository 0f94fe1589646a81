//! Drop events: the records of the drop-event ring buffer, as `edge-ctl tail` shows them
//! ([`DropEvent`]), the ring's size, and the per-CPU budget that rate-limits them
//! ([`EventBudget`]).

#[cfg(doc)]
use crate::counters::{DropKind, DropReason};

/// Size of the drop-event ring buffer in bytes.
pub const EVENTS_RING_BYTES: u32 = 256 * 1024;

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
