//! Per-CPU packet and byte counters: per rule slot, per drop reason, per pass reason.

use edge_common::{Counter, DropReason, PassReason};

use crate::maps::{EDGE_DROPS, EDGE_PASSES, EDGE_RULES};

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
pub fn drop(reason: DropReason, bytes: u64) {
    bump(EDGE_DROPS.get_ptr_mut(reason as u32), bytes);
}

#[inline(always)]
pub fn pass(reason: PassReason, bytes: u64) {
    bump(EDGE_PASSES.get_ptr_mut(reason as u32), bytes);
}
