//! The entry points: parse -> classify -> track -> count -> verdict.
//!
//! Ingress (XDP): a TCP/UDP packet passes if an inbound rule allows it or it belongs to a flow
//! the edge opened (the connection table). Egress (TC): a packet passes if an outbound rule
//! allows it (and its flow is recorded), if it belongs to a tracked flow, or if it answers from a
//! port an inbound rule allows; otherwise the role's egress mode decides.

use aya_ebpf::bindings::{TC_ACT_OK, TC_ACT_SHOT, xdp_action};
use aya_ebpf::macros::{classifier, xdp};
use aya_ebpf::programs::{TcContext, XdpContext};
use edge_common::{CtEvent, DropKind, DropReason, GenConfig, PassReason, flags};

use crate::conntrack::{self, Flow};
use crate::maps::{EDGE_ACTIVE, EDGE_GEN};
use crate::parse::{
    Frame, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, Packet, TCP_ACK, TCP_SYN,
};
use crate::{counters, parse, policy};

const INBOUND: u32 = 0;
const OUTBOUND: u32 = 1;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Pass,
    Drop,
}

/// The ingress filter: judges every frame arriving on the interface.
#[xdp]
pub fn edge_xdp(ctx: XdpContext) -> u32 {
    match ingress(ctx.data(), ctx.data_end()) {
        Verdict::Pass => xdp_action::XDP_PASS,
        Verdict::Drop => xdp_action::XDP_DROP,
    }
}

/// Passes everything: the benchmark's floor, built with the same toolchain in the same object.
#[xdp]
pub fn edge_xdp_floor(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// The egress filter and flow recorder.
#[classifier]
pub fn edge_tc_egress(ctx: TcContext) -> i32 {
    match egress(&ctx) {
        Verdict::Pass => TC_ACT_OK as i32,
        Verdict::Drop => TC_ACT_SHOT as i32,
    }
}

/// The live generation and its configuration, read once per packet: every lookup below uses
/// the same generation, so a packet is judged wholly by one policy while a reload flips it.
#[inline(always)]
fn generation() -> Option<(u32, &'static GenConfig)> {
    let generation = *EDGE_ACTIVE.get(0)? & 1;
    Some((generation, EDGE_GEN.get(generation)?))
}

#[inline(always)]
fn ingress(data: usize, data_end: usize) -> Verdict {
    let bytes = (data_end - data) as u64;
    let Some((generation, cfg)) = generation() else {
        return dropped(INBOUND, DropReason::PolicyDefault, bytes);
    };
    match parse::parse(data, data_end, true) {
        Frame::Ip(pkt) => match pkt.proto {
            PROTO_TCP | PROTO_UDP => {
                if let Some(slot) = policy::match_rule(generation, cfg, &pkt, INBOUND) {
                    counters::rule(slot, bytes);
                    return Verdict::Pass;
                }
                tracked_inbound(cfg, &pkt, bytes)
            }
            PROTO_ICMP | PROTO_ICMPV6 => icmp_in(data, data_end, cfg, &pkt, bytes),
            _ => dropped(INBOUND, DropReason::L4Protocol, bytes),
        },
        Frame::Arp => essential(cfg, flags::ESSENTIAL_ARP, PassReason::Arp, bytes),
        Frame::Drop(reason) => dropped(INBOUND, reason, bytes),
    }
}

/// No rule allows it: it passes only as part of a flow the edge opened.
#[inline(always)]
fn tracked_inbound(cfg: &GenConfig, pkt: &Packet, bytes: u64) -> Verdict {
    let flow = conntrack::flow_of(pkt, false);
    let now = conntrack::now();
    if let Some(e) = conntrack::live(cfg, &flow, now) {
        conntrack::advance(&flow, e, pkt, true, now);
        counters::ct_event(CtEvent::Hit);
        counters::pass(INBOUND, PassReason::Conntrack, bytes);
        return Verdict::Pass;
    }
    // A segment without SYN claims to belong to a connection: name that separately.
    let reason = if pkt.proto == PROTO_TCP && pkt.tcp_flags & TCP_SYN == 0 {
        DropReason::NoFlow
    } else {
        DropReason::PolicyDefault
    };
    dropped(INBOUND, reason, bytes)
}

/// ICMP errors: destination unreachable, time exceeded, parameter problem (and ICMPv6 packet
/// too big).
#[inline(always)]
fn is_icmp_error(pkt: &Packet) -> bool {
    let kind = pkt.sport;
    if pkt.v6 {
        (1..=4).contains(&kind)
    } else {
        kind == 3 || kind == 11 || kind == 12
    }
}

/// ICMP: neighbour discovery, errors quoting a tracked flow, and path-MTU messages pass.
/// A path-MTU message about a tracked flow passes even with the essential off.
#[inline(always)]
fn icmp_in(data: usize, data_end: usize, cfg: &GenConfig, pkt: &Packet, bytes: u64) -> Verdict {
    if pkt.v6 != (pkt.proto == PROTO_ICMPV6) {
        return dropped(INBOUND, DropReason::L4Protocol, bytes);
    }
    let (kind, code) = (pkt.sport, pkt.dport);
    if pkt.v6 && (133..=137).contains(&kind) {
        // Router solicitation/advertisement, neighbour solicitation/advertisement, redirect.
        return essential(cfg, flags::ESSENTIAL_NDP, PassReason::Ndp, bytes);
    }
    if !is_icmp_error(pkt) {
        return dropped(INBOUND, DropReason::Icmp, bytes);
    }
    if let Some(q) = parse::quoted(data, data_end, pkt) {
        let flow = conntrack::flow(pkt.v6, q.proto, &q.local, &q.remote, q.lport, q.rport);
        if conntrack::live(cfg, &flow, conntrack::now()).is_some() {
            counters::pass(INBOUND, PassReason::Related, bytes);
            return Verdict::Pass;
        }
    }
    // ICMPv6 packet too big; ICMP destination unreachable, fragmentation needed.
    if (pkt.v6 && kind == 2) || (!pkt.v6 && kind == 3 && code == 4) {
        return essential(cfg, flags::ESSENTIAL_PMTU, PassReason::Pmtu, bytes);
    }
    dropped(INBOUND, DropReason::Icmp, bytes)
}

#[inline(always)]
fn essential(cfg: &GenConfig, flag: u32, reason: PassReason, bytes: u64) -> Verdict {
    if cfg.flags & flag != 0 {
        counters::pass(INBOUND, reason, bytes);
        Verdict::Pass
    } else {
        dropped(INBOUND, DropReason::EssentialOff, bytes)
    }
}

#[inline(always)]
fn dropped(direction: u32, reason: DropReason, bytes: u64) -> Verdict {
    counters::drop(direction, DropKind::Dropped, reason, bytes);
    Verdict::Drop
}

#[inline(always)]
fn egress(ctx: &TcContext) -> Verdict {
    let bytes = ctx.len() as u64;
    let Some((generation, cfg)) = generation() else {
        return Verdict::Pass; // Not configured yet: never cut the host off.
    };
    // The stack's own packets may carry headers outside the linear part: pull them in once.
    let mut frame = parse::parse(ctx.data(), ctx.data_end(), false);
    if let Frame::Drop(DropReason::Truncated) = frame {
        let want = if ctx.len() < 128 { ctx.len() } else { 128 };
        if ctx.pull_data(want).is_ok() {
            frame = parse::parse(ctx.data(), ctx.data_end(), false);
        }
    }
    match frame {
        Frame::Ip(pkt) => match pkt.proto {
            PROTO_TCP | PROTO_UDP => tcp_udp_out(generation, cfg, &pkt, bytes),
            PROTO_ICMP | PROTO_ICMPV6 => icmp_out(cfg, &pkt, bytes),
            _ => egress_default(cfg, DropReason::L4Protocol, bytes),
        },
        Frame::Arp | Frame::Drop(DropReason::EtherType) => {
            counters::pass(OUTBOUND, PassReason::NotIp, bytes);
            Verdict::Pass
        }
        Frame::Drop(reason) => egress_default(cfg, reason, bytes),
    }
}

#[inline(always)]
fn tcp_udp_out(generation: u32, cfg: &GenConfig, pkt: &Packet, bytes: u64) -> Verdict {
    let flow = conntrack::flow_of(pkt, true);
    let now = conntrack::now();
    let tracked = conntrack::live(cfg, &flow, now);
    if let Some(slot) = policy::match_rule(generation, cfg, pkt, OUTBOUND) {
        counters::rule(slot, bytes);
        record(cfg, &flow, tracked, pkt, slot, now);
        return Verdict::Pass;
    }
    if let Some(e) = tracked {
        // A flow opened under an earlier policy or seeded at attach.
        conntrack::advance(&flow, e, pkt, false, now);
        counters::pass(OUTBOUND, PassReason::Conntrack, bytes);
        return Verdict::Pass;
    }
    if is_reply(generation, cfg, pkt) {
        counters::pass(OUTBOUND, PassReason::Reply, bytes);
        return Verdict::Pass;
    }
    let verdict = egress_default(cfg, DropReason::EgressPolicy, bytes);
    if verdict == Verdict::Pass {
        // Monitor and off pass the flow, so its answers must come back too: observing an egress
        // policy must not break what it would allow.
        conntrack::create(cfg, &flow, pkt, NO_RULE, now);
    }
    verdict
}

/// Rule slot of flows no outbound rule allowed (egress `monitor` or `off`).
const NO_RULE: u16 = u16::MAX;

#[inline(always)]
fn record(
    cfg: &GenConfig,
    flow: &Flow,
    tracked: Option<*mut edge_common::CtEntry>,
    pkt: &Packet,
    slot: u16,
    now: u64,
) {
    match tracked {
        Some(e) => conntrack::advance(flow, e, pkt, false, now),
        None => conntrack::create(cfg, flow, pkt, slot, now),
    }
}

/// An answer from a port an inbound rule allows: the same packet reversed would be allowed in.
/// A bare SYN is never an answer.
#[inline(always)]
fn is_reply(generation: u32, cfg: &GenConfig, pkt: &Packet) -> bool {
    if pkt.proto == PROTO_TCP && pkt.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
        return false;
    }
    let mut reversed = *pkt;
    reversed.src = pkt.dst;
    reversed.dst = pkt.src;
    reversed.sport = pkt.dport;
    reversed.dport = pkt.sport;
    policy::match_rule(generation, cfg, &reversed, INBOUND).is_some()
}

/// The edge's own ICMP: errors and neighbour discovery pass; anything else is up to the mode.
#[inline(always)]
fn icmp_out(cfg: &GenConfig, pkt: &Packet, bytes: u64) -> Verdict {
    let ndp = pkt.v6 && (133..=137).contains(&pkt.sport);
    if is_icmp_error(pkt) || ndp {
        counters::pass(OUTBOUND, PassReason::IcmpOut, bytes);
        return Verdict::Pass;
    }
    egress_default(cfg, DropReason::Icmp, bytes)
}

/// What the role's egress mode does with a packet nothing allows.
#[inline(always)]
fn egress_default(cfg: &GenConfig, reason: DropReason, bytes: u64) -> Verdict {
    if cfg.flags & flags::EGRESS_ENFORCE != 0 {
        return dropped(OUTBOUND, reason, bytes);
    }
    if cfg.flags & flags::EGRESS_MONITOR != 0 {
        counters::drop(OUTBOUND, DropKind::WouldDrop, reason, bytes);
    }
    Verdict::Pass
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
