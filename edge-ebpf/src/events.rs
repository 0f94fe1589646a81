//! Drop events: a record per dropped (or would-be dropped) packet into a ring buffer, limited
//! per CPU to a budget per second so a flood costs a clock read and a comparison per packet,
//! not one event. The clock is the tick count, which the verifier inlines as one load, read on
//! every drop: a drop after a flood is reported as soon as the second it falls in has budget
//! (reading it only every 64th suppressed drop hid up to 63 drops, however late they came).

use core::ptr::write_volatile;

use edge_common::{DropEvent, DropKind, DropReason, GenConfig};

use crate::conntrack;
use crate::maps::{EDGE_EVBUDGET, EDGE_EVENTS};
use crate::parse::Packet;

#[inline(always)]
pub fn emit(cfg: &GenConfig, direction: u32, kind: DropKind, reason: DropReason, pkt: Option<&Packet>) {
    let limit = cfg.events_per_cpu as u64;
    if limit == 0 {
        return;
    }
    let Some(budget) = EDGE_EVBUDGET.get_ptr_mut(0) else {
        return;
    };
    // Per-CPU value: no other writer.
    let b = unsafe { &mut *budget };
    let now = conntrack::jiffies();
    if now.wrapping_sub(b.window) >= cfg.hz {
        b.window = now;
        b.emitted_in_window = 0;
    }
    if b.emitted_in_window >= limit {
        b.suppressed += 1;
        return;
    }
    let Some(mut entry) = EDGE_EVENTS.reserve::<DropEvent>(0) else {
        b.suppressed += 1;
        return;
    };
    let (src, dst, sport, dport, proto, family) = match pkt {
        Some(p) => (p.src, p.dst, p.sport, p.dport, p.proto, if p.v6 { 6 } else { 4 }),
        None => ([0; 4], [0; 4], 0, 0, 0, 0),
    };
    let e = entry.as_mut_ptr();
    // Field by field, volatile, into the reserved record: built on the stack, LLVM zeroed
    // parts of it with memset, a BPF-to-BPF call (see the test in edge-ctl's
    // `dataplane::object`).
    unsafe {
        write_volatile(&raw mut (*e).time_ns, conntrack::monotonic_ns());
        for w in 0..4 {
            write_volatile(&raw mut (*e).src[w], src[w]);
            write_volatile(&raw mut (*e).dst[w], dst[w]);
        }
        write_volatile(&raw mut (*e).sport, sport);
        write_volatile(&raw mut (*e).dport, dport);
        write_volatile(&raw mut (*e).direction, direction as u8);
        write_volatile(&raw mut (*e).kind, kind as u8);
        write_volatile(&raw mut (*e).reason, reason as u8);
        write_volatile(&raw mut (*e).proto, proto);
        write_volatile(&raw mut (*e).family, family);
        write_volatile(&raw mut (*e)._pad0, 0);
        write_volatile(&raw mut (*e)._pad1, 0);
        write_volatile(&raw mut (*e)._pad2, 0);
    }
    entry.submit(0);
    b.emitted_in_window += 1;
    b.emitted += 1;
}
