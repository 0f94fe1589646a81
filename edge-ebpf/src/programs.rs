//! The entry points: parse -> classify -> track -> decide; then count, report, verdict.
//!
//! Ingress (XDP): a TCP/UDP packet passes if an inbound rule allows it or it belongs to a flow
//! the edge opened (the connection table). Egress (TC): a packet passes if an outbound rule
//! allows it (and its flow is recorded), if it belongs to a tracked flow, or if it answers from a
//! port an inbound rule allows; otherwise the role's egress mode decides.
//!
//! The logic returns a [`Decision`]; effects (counters, drop events) are applied in one place.
//! The explain programs run the same logic with `DRY = true`: no counters, no connection-table
//! writes, no events; the decision goes to a map for `edge-ctl explain`.
//!
//! Every entry point is `#[inline(always)]`: the program macros wrap the function they are
//! given, and when LLVM judged a body too big to inline into that wrapper, every packet paid a
//! BPF-to-BPF call (0.3-0.5x of the benchmark's floor here; a test in edge-ctl's
//! `dataplane::object` fails on any such call).

use aya_ebpf::bindings::{TC_ACT_OK, TC_ACT_SHOT, xdp_action};
use aya_ebpf::macros::{classifier, xdp};
use aya_ebpf::programs::{TcContext, XdpContext};
use edge_common::{
    Candidate, DropKind, DropReason, Explanation, GenConfig, Generation, NO_CLASS, PassReason, explain, flags,
    frag_kind,
};

use crate::conntrack;
use crate::maps::{EDGE_EXPLAIN, EDGE_TABLES};
use crate::parse::{
    FIRST, Frame, LATER, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, Packet, TCP_ACK, TCP_RST, TCP_SYN, WHOLE,
};
use crate::{counters, events, fragments, parse, policy};

const INBOUND: u32 = 0;
const OUTBOUND: u32 = 1;

/// Rule slot of flows no outbound rule allowed (egress `monitor`/`off`, audit).
const NO_RULE: u16 = u16::MAX;

/// What the policy says about a packet. A plain struct, not an enum with payloads: every field
/// is always initialised, because the verifier rejects reading a register LLVM left undefined
/// for the variants that do not use it ("R5 !read_ok").
#[derive(Clone, Copy, PartialEq, Eq)]
struct Decision {
    kind: Kind,
    /// Counter slot, for [`Kind::Rule`].
    slot: u16,
    pass: PassReason,
    drop: DropReason,
}

#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    /// Allowed by the rule in `slot`.
    Rule,
    /// Passed without a rule, for `pass`.
    Pass,
    /// Dropped for `drop`.
    Drop,
    /// The policy drops it for `drop`, but audit or egress monitor mode lets it pass.
    WouldDrop,
}

#[allow(non_snake_case)]
impl Decision {
    const fn of(kind: Kind, slot: u16, pass: PassReason, drop: DropReason) -> Decision {
        Decision { kind, slot, pass, drop }
    }
    const fn Rule(slot: u16) -> Decision {
        Decision::of(Kind::Rule, slot, PassReason::Arp, DropReason::PolicyDefault)
    }
    const fn Pass(reason: PassReason) -> Decision {
        Decision::of(Kind::Pass, 0, reason, DropReason::PolicyDefault)
    }
    const fn Drop(reason: DropReason) -> Decision {
        Decision::of(Kind::Drop, 0, PassReason::Arp, reason)
    }
    const fn WouldDrop(reason: DropReason) -> Decision {
        Decision::of(Kind::WouldDrop, 0, PassReason::Arp, reason)
    }
}

/// The ingress filter: judges every frame arriving on the interface.
#[xdp]
#[inline(always)]
pub fn edge_xdp(ctx: XdpContext) -> u32 {
    if ingress::<LIVE_RUN>(ctx.data(), ctx.data_end()) { xdp_action::XDP_PASS } else { xdp_action::XDP_DROP }
}

/// Passes everything: the benchmark's floor, built with the same toolchain in the same object.
#[xdp]
#[inline(always)]
pub fn edge_xdp_floor(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// The benchmark's reference: a stateless port matrix as one would write it by hand. Plain
/// IPv4 TCP/UDP passes when the live generation has any inbound rule for its port; no address
/// conditions, no connection tracking, no counters; anything else passes. What edge_xdp costs
/// beyond it is the price of the rest.
#[xdp]
#[inline(always)]
pub fn edge_xdp_matrix(ctx: XdpContext) -> u32 {
    let Some(pkt) = parse::plain_v4(ctx.data(), ctx.data_end()) else {
        return xdp_action::XDP_PASS;
    };
    let live = live();
    if policy::port_class(live.tables, &pkt, INBOUND) != NO_CLASS { xdp_action::XDP_PASS } else { xdp_action::XDP_DROP }
}

/// The egress filter and flow recorder.
#[classifier]
#[inline(always)]
pub fn edge_tc_egress(ctx: TcContext) -> i32 {
    let bytes = ctx.len() as u64;
    // The stack's own packets may carry headers outside the linear part: pull them in once.
    let mut frame = parse::parse(ctx.data(), ctx.data_end(), false);
    // (The stack's ICMP errors are built linear, quote included: the egress check reads it.)
    if let Frame::Drop(DropReason::Truncated) = frame {
        let want = if ctx.len() < 128 { ctx.len() } else { 128 };
        if ctx.pull_data(want).is_ok() {
            frame = parse::parse(ctx.data(), ctx.data_end(), false);
        }
    }
    if egress::<LIVE_RUN>(ctx.data(), ctx.data_end(), frame, bytes) { TC_ACT_OK } else { TC_ACT_SHOT }
}

/// `edge-ctl explain` for inbound packets: the ingress logic, dry.
#[xdp]
#[inline(always)]
pub fn edge_explain_in(ctx: XdpContext) -> u32 {
    ingress::<DRY_RUN>(ctx.data(), ctx.data_end());
    xdp_action::XDP_PASS
}

/// `edge-ctl explain` for outbound packets: the egress logic, dry.
#[xdp]
#[inline(always)]
pub fn edge_explain_out(ctx: XdpContext) -> u32 {
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    egress::<DRY_RUN>(ctx.data(), ctx.data_end(), parse::parse(ctx.data(), ctx.data_end(), false), bytes);
    xdp_action::XDP_PASS
}

/// Where a decision goes: live, it is counted, drops are reported, and the verdict returned;
/// dry (explain), it is recorded and nothing changes. The logic calls this where it decides,
/// with the packet at hand, so nothing large is copied back up.
#[inline(always)]
fn decide<const DRY: bool>(live: &Live, direction: u32, d: Decision, pkt: Option<&Packet>, bytes: u64) -> bool {
    if DRY {
        record_explanation(live.generation, d);
        true
    } else {
        apply(live.cfg(), direction, d, pkt, bytes)
    }
}

/// Values of the `DRY` parameter.
const LIVE_RUN: bool = false;
const DRY_RUN: bool = true;

/// What a packet is judged by: the live generation, read once per packet, and its tables. Every
/// read below uses the same generation, so a packet is judged wholly by one policy while a
/// reload flips it.
#[derive(Clone, Copy)]
struct Live {
    generation: u32,
    tables: &'static Generation,
}

impl Live {
    #[inline(always)]
    fn cfg(&self) -> &'static GenConfig {
        &self.tables.config
    }
}

/// The packet tables (see `edge_common::PacketTables`): a global variable, so its address is a
/// constant in the program and reading it costs no map lookup.
#[inline(always)]
fn live() -> Live {
    let shared = &raw const EDGE_TABLES;
    // Volatile: read exactly once, whatever the compiler would like to re-read later.
    let generation = unsafe { core::ptr::read_volatile(&raw const (*shared).active) } & 1;
    let tables = unsafe { &(*shared).generations[generation as usize] };
    Live { generation, tables }
}

/// Counts the decision, reports drops, and says whether the packet passes. A first fragment
/// that passes leaves its verdict for its later fragments.
#[inline(always)]
fn apply(cfg: &GenConfig, direction: u32, decision: Decision, pkt: Option<&Packet>, bytes: u64) -> bool {
    let pass = match decision.kind {
        Kind::Rule => {
            counters::rule(decision.slot, bytes);
            true
        }
        Kind::Pass => {
            counters::pass(direction, decision.pass, bytes);
            true
        }
        Kind::Drop | Kind::WouldDrop => {
            let kind = if decision.kind == Kind::Drop { DropKind::Dropped } else { DropKind::WouldDrop };
            counters::drop(direction, kind, decision.drop, bytes);
            events::emit(cfg, direction, kind, decision.drop, pkt);
            decision.kind == Kind::WouldDrop
        }
    };
    if pass
        && let Some(p) = pkt
        && p.fragment == FIRST
    {
        remember(cfg, decision);
    }
    pass
}

/// Records a first fragment's verdict when it passes and the role tracks fragments, under the
/// key [`stage`] left before the decision. The key is not built here, from the packet: reading
/// the packet's fields after the decision keeps them live through every way to it, where the
/// verifier has narrowed them differently (ports, addresses), and it then walks each of those
/// ways on to the end apart; that more than doubled the instructions it walks through the
/// egress program (Debian 12's 6.1: 255,853 to 673,334 of its 1,000,000).
#[inline(always)]
fn remember(cfg: &GenConfig, d: Decision) {
    if cfg.flags & flags::FRAGMENTS_TRACK == 0 {
        return;
    }
    const _: () = assert!(
        frag_kind::RULE == Kind::Rule as u8
            && frag_kind::PASS == Kind::Pass as u8
            && frag_kind::WOULD_DROP == Kind::WouldDrop as u8
            && PassReason::Arp as u8 == 0
            && DropReason::PolicyDefault as u8 == 0
    );
    // A decision's unused fields are zero (see `Decision`), so one of these three is its detail.
    let detail = d.slot | d.pass as u16 | d.drop as u16;
    fragments::record_staged(d.kind as u8, detail);
}

/// The packet's fragment key, left for [`remember`] before the decision (see there why), for
/// every packet: a branch on the fragment or the mode here would split every state after it in
/// two (measured: twice the instructions again), and the copy costs less than that would.
#[inline(always)]
fn stage(direction: u32, pkt: &Packet) {
    let proto = if pkt.v6 { 0 } else { pkt.proto };
    fragments::stage(&fragments::key(&pkt.src, &pkt.dst, pkt.frag_id, proto, direction));
}

/// A later fragment: the verdict of its first fragment under `fragments = "track"`; without
/// one it is dropped inbound and left to the egress mode outbound. `drop` drops inbound and
/// passes the host's own; `pass` passes both.
#[inline(always)]
fn later_fragment<const DRY: bool>(live: &Live, direction: u32, f: &Packet, bytes: u64) -> bool {
    let cfg = live.cfg();
    let d = if cfg.flags & flags::FRAGMENTS_TRACK != 0 {
        match fragments::lookup(cfg, &fragments::key(&f.src, &f.dst, f.frag_id, f.proto, direction)) {
            Some((frag_kind::RULE, slot)) => Decision::Rule(slot),
            // SAFETY (both): the values were written from the enums by `remember`, and are
            // checked against their count.
            Some((frag_kind::PASS, r)) if (r as u32) < PassReason::COUNT => {
                Decision::Pass(unsafe { core::mem::transmute::<u32, PassReason>(r as u32) })
            }
            Some((frag_kind::WOULD_DROP, r)) if (r as u32) < DropReason::COUNT => {
                Decision::WouldDrop(unsafe { core::mem::transmute::<u32, DropReason>(r as u32) })
            }
            _ if direction == INBOUND => Decision::Drop(DropReason::Fragment),
            _ => egress_default(cfg, DropReason::Fragment),
        }
    } else if cfg.flags & flags::FRAGMENTS_PASS != 0 || direction == OUTBOUND {
        Decision::Pass(PassReason::Fragment)
    } else {
        Decision::Drop(DropReason::Fragment)
    };
    decide::<DRY>(live, direction, audited(cfg, d), None, bytes)
}

#[inline(always)]
fn record_explanation(generation: u32, decision: Decision) {
    let (verdict, by, detail) = match decision.kind {
        Kind::Rule => (1, explain::RULE, decision.slot as u32),
        Kind::Pass => (1, explain::PASS_REASON, decision.pass as u32),
        Kind::Drop => (2, explain::DROP, decision.drop as u32),
        Kind::WouldDrop => (1, explain::WOULD_DROP, decision.drop as u32),
    };
    let e = Explanation { verdict, by, detail, generation };
    let _ = EDGE_EXPLAIN.set(0, e, 0);
}

/// In audit mode nothing is dropped: drops become would-be drops.
#[inline(always)]
fn audited(cfg: &GenConfig, d: Decision) -> Decision {
    if d.kind == Kind::Drop && cfg.flags & flags::AUDIT != 0 { Decision::WouldDrop(d.drop) } else { d }
}

#[inline(always)]
fn ingress<const DRY: bool>(data: usize, data_end: usize) -> bool {
    let bytes = (data_end - data) as u64;
    let live = live();
    let cfg = live.cfg();
    // Most packets are plain IPv4 or IPv6: read them straight, the same fields `parse` gives,
    // first for the rules alone (see `parse::plain_again`).
    let plain = if let Some(pkt) = parse::plain_v4(data, data_end) {
        plain_in::<DRY, false>(data, data_end, &live, pkt, bytes)
    } else if let Some(pkt) = parse::plain_v6(data, data_end) {
        plain_in::<DRY, true>(data, data_end, &live, pkt, bytes)
    } else {
        None
    };
    if let Some(verdict) = plain {
        return verdict;
    }
    match parse::parse(data, data_end, true) {
        Frame::Ip(pkt) if pkt.fragment == LATER => later_fragment::<DRY>(&live, INBOUND, &pkt, bytes),
        // One copy of the logic per family, so that IPv4 never carries IPv6's address words.
        Frame::Ip(pkt) if pkt.v6 => ip_in::<DRY, true>(data, data_end, &live, pkt, bytes),
        Frame::Ip(pkt) => ip_in::<DRY, false>(data, data_end, &live, pkt, bytes),
        Frame::Arp => decide::<DRY>(
            &live,
            INBOUND,
            audited(cfg, essential(cfg, flags::ESSENTIAL_ARP, PassReason::Arp)),
            None,
            bytes,
        ),
        Frame::Drop(reason) => decide::<DRY>(&live, INBOUND, audited(cfg, Decision::Drop(reason)), None, bytes),
    }
}

/// A TCP, UDP or ICMP packet (or another IP protocol), of one family: `pkt.v6` is the constant
/// `V6` from here on.
#[inline(always)]
fn ip_in<const DRY: bool, const V6: bool>(data: usize, data_end: usize, live: &Live, pkt: Packet, bytes: u64) -> bool {
    let pkt = Packet { v6: V6, ..pkt };
    let cfg = live.cfg();
    if !DRY {
        stage(INBOUND, &pkt);
    }
    let d = match pkt.proto {
        // Neighbour discovery first: its duplicate address detection comes from ::.
        PROTO_ICMPV6 if V6 && is_ndp(pkt.sport) => {
            if martian::<true>(cfg, &pkt) {
                Decision::Drop(DropReason::Martian)
            } else {
                ndp_in(cfg, &pkt)
            }
        }
        _ if martian::<false>(cfg, &pkt) => Decision::Drop(DropReason::Martian),
        PROTO_TCP | PROTO_UDP => match policy::match_candidate(live.generation, live.tables, &pkt, INBOUND) {
            // Decided here, not after the other cases join: the common case stays straight code.
            Some(c) => {
                if !DRY && pkt.fragment == FIRST {
                    remember(cfg, Decision::Rule(c.rule));
                }
                return allowed::<DRY>(live, c, bytes);
            }
            None => return no_rule_in::<DRY, V6>(live, pkt, bytes),
        },
        PROTO_ICMP | PROTO_ICMPV6 => icmp_in::<DRY>(data, data_end, live, &pkt),
        _ => Decision::Drop(DropReason::L4Protocol),
    };
    decide::<DRY>(live, INBOUND, audited(cfg, d), Some(&pkt), bytes)
}

/// A plain TCP/UDP packet of one family: the rules on the first look, and only when none
/// allows it, the rest on a second look (`parse::plain_again`). `None` only if the second look
/// failed, which it cannot for a packet the first accepted; the general parser then judges.
#[inline(always)]
fn plain_in<const DRY: bool, const V6: bool>(
    data: usize,
    data_end: usize,
    live: &Live,
    pkt: Packet,
    bytes: u64,
) -> Option<bool> {
    if martian::<false>(live.cfg(), &pkt) {
        let d = audited(live.cfg(), Decision::Drop(DropReason::Martian));
        return Some(decide::<DRY>(live, INBOUND, d, Some(&pkt), bytes));
    }
    if let Some(c) = policy::match_candidate(live.generation, live.tables, &pkt, INBOUND) {
        return Some(allowed::<DRY>(live, c, bytes));
    }
    let pkt = parse::plain_again(data, data_end, V6)?;
    Some(no_rule_in::<DRY, V6>(live, pkt, bytes))
}

/// An inbound packet the rule of candidate `c` allows: [`decide`] for [`Decision::Rule`], with
/// the counter looked up by the candidate's own memory (see `counters::rule_of`).
#[inline(always)]
fn allowed<const DRY: bool>(live: &Live, c: &Candidate, bytes: u64) -> bool {
    if DRY {
        record_explanation(live.generation, Decision::Rule(c.rule));
    } else {
        counters::rule_of(c, bytes);
    }
    true
}

/// A TCP or UDP packet no rule allows, of one family.
#[inline(always)]
fn no_rule_in<const DRY: bool, const V6: bool>(live: &Live, pkt: Packet, bytes: u64) -> bool {
    let pkt = Packet { v6: V6, ..pkt };
    decide::<DRY>(live, INBOUND, audited(live.cfg(), tracked_inbound::<DRY>(live, &pkt)), Some(&pkt), bytes)
}

/// No rule allows it: it passes only as part of a flow the edge opened.
#[inline(always)]
fn tracked_inbound<const DRY: bool>(live: &Live, pkt: &Packet) -> Decision {
    // The tracked-port byte first, before a key is even built: a flood to untracked ports
    // costs one memory read (the benchmark shows that building the key first makes every
    // denied packet dearer).
    if conntrack::may_be_tracked(pkt.proto, pkt.dport) {
        // A bare SYN opens a connection: it answers nothing, even on a tracked four-tuple.
        if pkt.proto == PROTO_TCP && pkt.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
            return Decision::Drop(DropReason::PolicyDefault);
        }
        let flow = conntrack::flow_of(pkt, false);
        let t = conntrack::live_checked::<DRY>(live.cfg(), &flow);
        if t.found {
            conntrack::advance::<DRY>(&flow, &t, pkt, true);
            return Decision::Pass(PassReason::Conntrack);
        }
    }
    if let Some(slot) = picked_up(live, pkt) {
        let host = as_sent_by_the_host(pkt);
        conntrack::create::<DRY>(live.cfg(), &conntrack::flow_of(&host, true), &host, slot);
        return Decision::Pass(PassReason::Pickup);
    }
    untracked(pkt)
}

/// Loose pickup, for a window after attach on a forwarding interface whose open flows the
/// kernel's connection tracking could not give (`GenConfig::pickup_until`): a mid-stream TCP
/// segment (ACK, neither SYN nor RST) of a connection an outbound rule allows the host behind
/// to have opened (the segment reversed matches it). The rule's slot, for the flow's entry.
#[inline(always)]
fn picked_up(live: &Live, pkt: &Packet) -> Option<u16> {
    let cfg = live.cfg();
    if cfg.pickup_until == 0 || pkt.proto != PROTO_TCP || pkt.tcp_flags & (TCP_SYN | TCP_RST | TCP_ACK) != TCP_ACK {
        return None;
    }
    if conntrack::jiffies() >= cfg.pickup_until {
        return None;
    }
    policy::match_rule(live.generation, live.tables, &as_sent_by_the_host(pkt), OUTBOUND)
}

/// An inbound segment as the host behind would send its answer: addresses and ports swapped,
/// and acknowledging what this segment carries (so the flow's RST check starts from the far
/// side's sequence number; the host's next segment updates it).
#[inline(always)]
fn as_sent_by_the_host(pkt: &Packet) -> Packet {
    Packet { ack: pkt.seq, ..reversed(pkt) }
}

/// The drop for a TCP/UDP packet no rule allows and no flow explains. A segment without SYN
/// claims to belong to a connection: that is named separately.
#[inline(always)]
fn untracked(pkt: &Packet) -> Decision {
    if pkt.proto == PROTO_TCP && pkt.tcp_flags & TCP_SYN == 0 {
        Decision::Drop(DropReason::NoFlow)
    } else {
        Decision::Drop(DropReason::PolicyDefault)
    }
}

/// An ICMP error's quote ([`parse::quoted`]) when the error goes to the quoted packet's sender.
#[inline(always)]
fn quote_to_sender(data: usize, data_end: usize, pkt: &Packet) -> Option<parse::Quoted> {
    let q = parse::quoted(data, data_end, pkt)?;
    if same_address(&q.src, &pkt.dst) { Some(q) } else { None }
}

/// Whether two addresses are the same, with one comparison of a scratch value (see
/// [`martian`] for why).
#[inline(always)]
fn same_address(a: &[u32; 4], b: &[u32; 4]) -> bool {
    (a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) == 0
}

/// Whether an inbound packet comes from a source no packet on the wire can have, with
/// `martians = "drop"`: one of the interface's own addresses or the destination itself (LAND),
/// 0.0.0.0/8, 127/8, 224/4, 255.255.255.255; :: (but neighbour discovery's, `DAD`), ::1,
/// ff00::/8, ::ffff:0:0/96.
///
/// Written for the verifier. BPF has no instruction that sets a flag from a comparison, so
/// every comparison is a branch: each returns at once (one more way to the drop, not twice the
/// ways on). And no address word is compared with a constant: the verifier would then know the
/// word on the way on (say, zero), where the host-table probes make it matter, and walk the
/// rest of the program once more for each such way (measured: XDP 158k to 352k instructions).
/// Words are combined with XOR and OR first, so only a scratch register is compared. (An
/// exception that carries on, such as DHCP's 0.0.0.0 to 255.255.255.255, would cost a walk
/// too; there is none.)
#[inline(always)]
fn martian<const DAD: bool>(cfg: &GenConfig, pkt: &Packet) -> bool {
    // The address words as the packet holds them (network order).
    const ONE: u32 = u32::from_ne_bytes([0, 0, 0, 1]);
    const MAPPED: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);
    if cfg.flags & flags::MARTIANS == 0 {
        return false;
    }
    let s = &pkt.src;
    if !pkt.v6 {
        let first = u32::from_be(s[0]) >> 24;
        if first == 0 || first == 127 || first >> 4 == 0xe || !s[0] == 0 || s[0] ^ pkt.dst[0] == 0 {
            return true;
        }
        for o in &cfg.own_v4 {
            if *o ^ s[0] == 0 {
                return true;
            }
        }
        return false;
    }
    if s[0] | s[1] | s[2] | s[3] == 0 {
        return !DAD;
    }
    if same_address(s, &pkt.dst) || u32::from_be(s[0]) >> 24 == 0xff {
        return true;
    }
    if s[0] | s[1] | s[2] | (s[3] ^ ONE) == 0 || s[0] | s[1] | (s[2] ^ MAPPED) == 0 {
        return true;
    }
    for o in &cfg.own_v6 {
        if same_address(s, o) {
            return true;
        }
    }
    false
}

/// ICMPv6 neighbour discovery (router and neighbour solicitation/advertisement, redirect) and
/// multicast listener discovery (query, report, done, report v2): IPv6 needs both.
#[inline(always)]
fn is_ndp(kind: u16) -> bool {
    (133..=137).contains(&kind) || is_mld(kind)
}

/// Multicast listener discovery: query, report, done, report v2.
#[inline(always)]
fn is_mld(kind: u16) -> bool {
    (130..=132).contains(&kind) || kind == 143
}

/// ICMP errors: destination unreachable, time exceeded, parameter problem (and ICMPv6 packet
/// too big).
#[inline(always)]
fn is_icmp_error(pkt: &Packet) -> bool {
    let kind = pkt.sport;
    if pkt.v6 { (1..=4).contains(&kind) } else { kind == 3 || kind == 11 || kind == 12 }
}

/// ICMP other than neighbour discovery (see [`ndp_in`]): errors quoting a tracked flow and
/// path-MTU messages pass. A path-MTU message about a tracked flow passes even with the
/// essential off.
#[inline(always)]
fn icmp_in<const DRY: bool>(data: usize, data_end: usize, live: &Live, pkt: &Packet) -> Decision {
    let cfg = live.cfg();
    if pkt.v6 != (pkt.proto == PROTO_ICMPV6) {
        return Decision::Drop(DropReason::L4Protocol);
    }
    let (kind, code) = (pkt.sport, pkt.dport);
    if !is_icmp_error(pkt) {
        return Decision::Drop(DropReason::Icmp);
    }
    // About a packet this interface sent, addressed to its sender.
    let Some(q) = quote_to_sender(data, data_end, pkt) else {
        return Decision::Drop(DropReason::IcmpUnrelated);
    };
    // A tracked flow's.
    let flow = conntrack::flow(pkt.v6, q.proto, &q.src, &q.dst, q.sport, q.dport);
    if conntrack::live::<DRY>(cfg, &flow).found {
        return Decision::Pass(PassReason::Related);
    }
    // An answer on a connection an inbound rule allows: that packet reversed would be allowed in.
    let answered = Packet { proto: q.proto, src: q.dst, dst: q.src, sport: q.dport, dport: q.sport, ..*pkt };
    if policy::match_rule(live.generation, live.tables, &answered, INBOUND).is_none() {
        return Decision::Drop(DropReason::IcmpUnrelated);
    }
    // ICMPv6 packet too big; ICMP destination unreachable, fragmentation needed.
    if (pkt.v6 && kind == 2) || (!pkt.v6 && kind == 3 && code == 4) {
        return essential(cfg, flags::ESSENTIAL_PMTU, PassReason::Pmtu);
    }
    Decision::Pass(PassReason::Related)
}

/// ICMPv6 neighbour and multicast listener discovery: from the link only (ND with hop limit
/// 255, MLD with 1, never in fragments); router advertisements and redirects need their own
/// switch as well.
#[inline(always)]
fn ndp_in(cfg: &GenConfig, pkt: &Packet) -> Decision {
    let kind = pkt.sport;
    let hop_limit = if is_mld(kind) { 1 } else { 255 };
    if pkt.hop_limit != hop_limit || pkt.fragment != WHOLE {
        return Decision::Drop(DropReason::NdpOffLink);
    }
    if (kind == 134 || kind == 137) && cfg.flags & flags::ESSENTIAL_ROUTER == 0 {
        return Decision::Drop(DropReason::EssentialOff);
    }
    essential(cfg, flags::ESSENTIAL_NDP, PassReason::Ndp)
}

#[inline(always)]
fn essential(cfg: &GenConfig, flag: u32, reason: PassReason) -> Decision {
    if cfg.flags & flag != 0 { Decision::Pass(reason) } else { Decision::Drop(DropReason::EssentialOff) }
}

#[inline(always)]
fn egress<const DRY: bool>(data: usize, data_end: usize, frame: Frame, bytes: u64) -> bool {
    let live = live();
    let cfg = live.cfg();
    let live = &live;
    match frame {
        Frame::Ip(pkt) if pkt.fragment == LATER => later_fragment::<DRY>(live, OUTBOUND, &pkt, bytes),
        Frame::Ip(pkt) => {
            if !DRY {
                stage(OUTBOUND, &pkt);
            }
            let d = match pkt.proto {
                PROTO_TCP | PROTO_UDP => tcp_udp_out::<DRY>(live, &pkt),
                PROTO_ICMP | PROTO_ICMPV6 => icmp_out::<DRY>(data, data_end, live, &pkt),
                _ => egress_default(cfg, DropReason::L4Protocol),
            };
            decide::<DRY>(live, OUTBOUND, audited(cfg, d), Some(&pkt), bytes)
        }
        Frame::Arp => decide::<DRY>(live, OUTBOUND, Decision::Pass(PassReason::NotIp), None, bytes),

        Frame::Drop(reason) => decide::<DRY>(live, OUTBOUND, audited(cfg, egress_default(cfg, reason)), None, bytes),
    }
}

#[inline(always)]
fn tcp_udp_out<const DRY: bool>(live: &Live, pkt: &Packet) -> Decision {
    let cfg = live.cfg();
    let flow = conntrack::flow_of(pkt, true);
    let tracked = conntrack::live::<DRY>(cfg, &flow);
    if let Some(slot) = policy::match_rule(live.generation, live.tables, pkt, OUTBOUND) {
        if tracked.found {
            conntrack::advance::<DRY>(&flow, &tracked, pkt, false);
        } else {
            conntrack::create::<DRY>(cfg, &flow, pkt, slot);
        }
        return Decision::Rule(slot);
    }
    if tracked.found {
        // A flow opened under an earlier policy, seeded at attach, or passed by monitor/off.
        conntrack::advance::<DRY>(&flow, &tracked, pkt, false);
        return Decision::Pass(PassReason::Conntrack);
    }
    if is_reply(live, pkt) {
        return Decision::Pass(PassReason::Reply);
    }
    let d = audited(cfg, egress_default(cfg, DropReason::EgressPolicy));
    if d.kind != Kind::Drop {
        // Monitor, off and audit pass the flow, so its answers must come back too: observing
        // a policy must not break what it would allow.
        conntrack::create::<DRY>(cfg, &flow, pkt, NO_RULE);
    }
    d
}

/// An answer from a port an inbound rule allows: the same packet reversed would be allowed in.
/// A bare SYN is never an answer.
#[inline(always)]
fn is_reply(live: &Live, pkt: &Packet) -> bool {
    if pkt.proto == PROTO_TCP && pkt.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
        return false;
    }
    policy::match_rule(live.generation, live.tables, &reversed(pkt), INBOUND).is_some()
}

/// The same packet the other way: addresses and ports swapped.
#[inline(always)]
fn reversed(pkt: &Packet) -> Packet {
    let mut r = *pkt;
    r.src = pkt.dst;
    r.dst = pkt.src;
    r.sport = pkt.dport;
    r.dport = pkt.sport;
    r
}

/// The edge's own ICMP: neighbour discovery passes, and errors about a packet this interface
/// received, sent back to its sender: a packet of a tracked flow, or one an inbound rule allows
/// (an error about anything else would tell the world what the filter hides, or carry data
/// out). Anything else is up to the mode.
#[inline(always)]
fn icmp_out<const DRY: bool>(data: usize, data_end: usize, live: &Live, pkt: &Packet) -> Decision {
    let cfg = live.cfg();
    if pkt.v6 != (pkt.proto == PROTO_ICMPV6) {
        return egress_default(cfg, DropReason::L4Protocol);
    }
    if pkt.v6 && is_ndp(pkt.sport) {
        return Decision::Pass(PassReason::IcmpOut);
    }
    if !is_icmp_error(pkt) {
        return egress_default(cfg, DropReason::Icmp);
    }
    let Some(q) = quote_to_sender(data, data_end, pkt) else {
        return egress_default(cfg, DropReason::IcmpUnrelated);
    };
    let flow = conntrack::flow(pkt.v6, q.proto, &q.dst, &q.src, q.dport, q.sport);
    if conntrack::live::<DRY>(cfg, &flow).found {
        return Decision::Pass(PassReason::IcmpOut);
    }
    let received = Packet { proto: q.proto, src: q.src, dst: q.dst, sport: q.sport, dport: q.dport, ..*pkt };
    if policy::match_rule(live.generation, live.tables, &received, INBOUND).is_some() {
        return Decision::Pass(PassReason::IcmpOut);
    }
    egress_default(cfg, DropReason::IcmpUnrelated)
}

/// What the role's egress mode does with a packet nothing allows.
#[inline(always)]
fn egress_default(cfg: &GenConfig, reason: DropReason) -> Decision {
    if cfg.flags & flags::EGRESS_ENFORCE != 0 {
        Decision::Drop(reason)
    } else if cfg.flags & flags::EGRESS_MONITOR != 0 {
        Decision::WouldDrop(reason)
    } else {
        Decision::Pass(PassReason::Unfiltered)
    }
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
