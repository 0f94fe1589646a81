//! The entry points: parse -> classify -> count -> verdict.

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use edge_common::{DropReason, GenConfig, PassReason, flags};

use crate::maps::{EDGE_ACTIVE, EDGE_GEN};
use crate::parse::{Frame, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, Packet};
use crate::{counters, parse, policy};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Pass,
    Drop,
}

/// The ingress filter: judges every frame arriving on the interface by the inbound rules.
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

#[inline(always)]
fn ingress(data: usize, data_end: usize) -> Verdict {
    let bytes = (data_end - data) as u64;
    // The generation is read once: every lookup below uses it, so a packet is judged wholly by
    // one policy even while a reload flips the index.
    let generation = match EDGE_ACTIVE.get(0) {
        Some(g) => *g & 1,
        None => return dropped(DropReason::PolicyDefault, bytes),
    };
    let Some(cfg) = EDGE_GEN.get(generation) else {
        return dropped(DropReason::PolicyDefault, bytes);
    };
    match parse::parse(data, data_end, true) {
        Frame::Ip(pkt) => match pkt.proto {
            PROTO_TCP | PROTO_UDP => match policy::match_rule(generation, cfg, &pkt, 0) {
                Some(slot) => {
                    counters::rule(slot, bytes);
                    Verdict::Pass
                }
                None => dropped(DropReason::PolicyDefault, bytes),
            },
            PROTO_ICMP | PROTO_ICMPV6 => icmp(cfg, &pkt, bytes),
            _ => dropped(DropReason::L4Protocol, bytes),
        },
        Frame::Arp => essential(cfg, flags::ESSENTIAL_ARP, PassReason::Arp, bytes),
        Frame::Drop(reason) => dropped(reason, bytes),
    }
}

/// ICMP: only the essentials (path MTU discovery, IPv6 neighbour discovery) pass.
#[inline(always)]
fn icmp(cfg: &GenConfig, pkt: &Packet, bytes: u64) -> Verdict {
    let (kind, code) = (pkt.sport, pkt.dport);
    if pkt.v6 {
        if pkt.proto != PROTO_ICMPV6 {
            return dropped(DropReason::L4Protocol, bytes);
        }
        match kind {
            // Packet Too Big.
            2 => return essential(cfg, flags::ESSENTIAL_PMTU, PassReason::Pmtu, bytes),
            // Router solicitation/advertisement, neighbour solicitation/advertisement, redirect.
            133..=137 => return essential(cfg, flags::ESSENTIAL_NDP, PassReason::Ndp, bytes),
            _ => {}
        }
    } else {
        if pkt.proto != PROTO_ICMP {
            return dropped(DropReason::L4Protocol, bytes);
        }
        // Destination unreachable, fragmentation needed.
        if kind == 3 && code == 4 {
            return essential(cfg, flags::ESSENTIAL_PMTU, PassReason::Pmtu, bytes);
        }
    }
    dropped(DropReason::Icmp, bytes)
}

#[inline(always)]
fn essential(cfg: &GenConfig, flag: u32, reason: PassReason, bytes: u64) -> Verdict {
    if cfg.flags & flag != 0 {
        counters::pass(reason, bytes);
        Verdict::Pass
    } else {
        dropped(DropReason::EssentialOff, bytes)
    }
}

#[inline(always)]
fn dropped(reason: DropReason, bytes: u64) -> Verdict {
    counters::drop(reason, bytes);
    Verdict::Drop
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
