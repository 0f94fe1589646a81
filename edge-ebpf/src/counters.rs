//! Per-CPU packet and byte counters: per rule slot, per drop reason and direction, per pass
//! reason and direction; connection-table events.

use edge_common::{Counter, CtEvent, DropKind, DropReason, PassReason, drop_index, pass_index};

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
