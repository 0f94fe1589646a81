//! The flow slots in front of the connection tables (see `edge_common::CtSlotV4`): a
//! direct-mapped array, each slot guarded by a sequence lock that writers take with an atomic
//! compare-and-exchange. That instruction exists from Linux 5.12; the object built for older
//! kernels (feature `compat`) has no slots (`compat_slots.rs`) and finds every flow in the
//! tables.

use core::intrinsics::{AtomicOrdering, atomic_cxchg, atomic_xadd};

use edge_common::{CtEntry, GenConfig, ct_slot_v4, ct_slot_v6};

use super::{Flow, Hit, timeout};
use crate::maps::{EDGE_CTS4, EDGE_CTS6};

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
pub fn slot_lookup(cfg: &GenConfig, f: &Flow) -> Option<Hit> {
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
pub fn free_slot(f: &Flow, hit: &Hit) {
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
pub fn fill_slot(cfg: &GenConfig, f: &Flow, entry: &CtEntry, now: u64) {
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
