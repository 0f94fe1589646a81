//! Drop events: a record per dropped (or would-be dropped) packet into a ring buffer, limited
//! per CPU to a budget per second so a flood costs one comparison per packet, not one event.
//! Once a CPU's budget is spent it reads the clock only every 64th drop, to notice the next
//! second: a flood costs no helper call per packet.

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
    if b.emitted_in_window >= limit && b.suppressed & 63 != 0 {
        b.suppressed += 1;
        return;
    }
    let now = conntrack::jiffies();
    if now.wrapping_sub(b.window) >= cfg.hz {
        b.window = now;
        b.emitted_in_window = 0;
    }
    if b.emitted_in_window >= limit {
        b.suppressed += 1;
        return;
    }
    let mut event = DropEvent {
        time_ns: conntrack::monotonic_ns(),
        direction: direction as u8,
        kind: kind as u8,
        reason: reason as u8,
        ..Default::default()
    };
    if let Some(p) = pkt {
        event.src = p.src;
        event.dst = p.dst;
        event.sport = p.sport;
        event.dport = p.dport;
        event.proto = p.proto;
        event.family = if p.v6 { 6 } else { 4 };
    }
    if EDGE_EVENTS.output::<DropEvent>(&event, 0).is_ok() {
        b.emitted_in_window += 1;
        b.emitted += 1;
    } else {
        b.suppressed += 1;
    }
}
