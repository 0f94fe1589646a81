//! Per-CPU packet and byte counters: per rule slot, per drop reason and direction, per pass
//! reason and direction; connection-table events.

use aya_ebpf::cty::c_void;
use aya_ebpf::helpers::bpf_map_lookup_elem;
use edge_common::{Candidate, Counter, CtEvent, DropKind, DropReason, PassReason, drop_index, pass_index};

use crate::maps::{EDGE_CTEV, EDGE_DROPS, EDGE_PASSES, EDGE_RULES};

#[inline(always)]
fn bump(counter: Option<*mut Counter>, bytes: u64) {
    if let Some(c) = counter {
        // Per-CPU value: no other writer, no atomics needed.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}

#[inline(always)]
pub fn rule(slot: u16, bytes: u64) {
    bump(EDGE_RULES.get_ptr_mut(slot as u32), bytes);
}

/// [`rule`], for the candidate that allowed the packet. Its first four bytes are the rule's
/// slot and zero padding, a little-endian u32: the map lookup reads its key from the packet
/// tables instead of a copy on the stack (one store and one load fewer on the allowed path).
#[inline(always)]
pub fn rule_of(candidate: &Candidate, bytes: u64) {
    const _: () = assert!(core::mem::offset_of!(Candidate, rule) == 0 && core::mem::offset_of!(Candidate, _pad) == 2);
    let key = (&raw const candidate.rule).cast::<c_void>();
    // SAFETY: the map is a per-CPU array of `Counter`s with u32 keys; the key is four readable
    // bytes (the candidate's `rule` and `_pad`, which the controller writes as zero).
    let counter = unsafe { bpf_map_lookup_elem((&raw const EDGE_RULES).cast_mut().cast(), key) };
    bump((!counter.is_null()).then_some(counter.cast()), bytes);
}

#[inline(always)]
pub fn drop(direction: u32, kind: DropKind, reason: DropReason, bytes: u64) {
    bump(EDGE_DROPS.get_ptr_mut(drop_index(direction, kind, reason)), bytes);
}

#[inline(always)]
pub fn pass(direction: u32, reason: PassReason, bytes: u64) {
    bump(EDGE_PASSES.get_ptr_mut(pass_index(direction, reason)), bytes);
}

#[inline(always)]
pub fn ct_event(event: CtEvent) {
    if let Some(c) = EDGE_CTEV.get_ptr_mut(event as u32) {
        unsafe { *c += 1 };
    }
}
