//! No flow slots: the object for kernels before 5.12 (feature `compat`). The slots' sequence
//! lock needs the atomic compare-and-exchange instruction, which those kernels' verifiers
//! refuse anywhere in a program ("BPF_STX uses reserved fields"), reachable or not. Every flow
//! is found in the connection tables, one hash lookup per tracked packet.

use edge_common::{CtEntry, GenConfig};

use super::{Flow, Hit};

#[inline(always)]
pub fn slot_lookup(_cfg: &GenConfig, _f: &Flow) -> Option<Hit> {
    None
}

#[inline(always)]
pub fn free_slot(_f: &Flow, _hit: &Hit) {}

#[inline(always)]
pub fn fill_slot(_cfg: &GenConfig, _f: &Flow, _entry: &CtEntry, _now: u64) {}
