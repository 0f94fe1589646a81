//! The filter's meaning, written once more as plain code: policy + frame -> decision.
//!
//! This is the oracle the kernel programs are tested against (packet tests, the differential
//! property tests). It follows the policy model and the documented parsing rules directly and
//! shares nothing with the table compiler or the eBPF code but address-set resolution. It
//! models a filter with an empty connection table: tracked flows are the stateful tests' job.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use edge_common::{DropReason, PassReason};

use crate::compile::resolve;
use crate::policy::{AddrMatch, Direction, EgressMode, Fragments, Martians, Policy, Protocol, Role, RoleMode};

pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;

/// What a packet carries, as far as the policy is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload {
    Ports {
        protocol: Protocol,
        sport: u16,
        dport: u16,
        tcp_flags: u8,
    },
    Icmp {
        v6: bool,
        kind: u8,
        code: u8,
        /// IPv6's hop limit (0 for IPv4), and whether a fragment header came before it.
        hop_limit: u8,
        fragmented: bool,
        /// The TCP or UDP packet of the same IP version that follows the 8-byte ICMP header
        /// (an error's quote), when the frame holds its addresses and ports.
        quote: Option<Quote>,
    },
    /// Another IP protocol number (or ICMP in the wrong IP version).
    OtherIp(u8),
}

/// The packet an ICMP error quotes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quote {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: Protocol,
    pub sport: u16,
    pub dport: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    Arp,
    /// Another EtherType.
    NotIp,
    Ip {
        src: IpAddr,
        dst: IpAddr,
        payload: Payload,
    },
}

/// The decision for a packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Allowed by the named rule.
    Rule(String),
    /// Passed without a rule.
    Pass(PassReason),
    Drop(DropReason),
    /// Dropped by the policy, passed by audit or egress monitor mode.
    WouldDrop(DropReason),
}

impl Decision {
    pub fn passes(&self) -> bool {
        !matches!(self, Decision::Drop(_))
    }
}

fn matches(policy: &Policy, m: &AddrMatch, addr: IpAddr, interface: &[IpAddr]) -> bool {
    match resolve(policy, m, interface) {
        None => true,
        Some(nets) => nets.iter().any(|n| n.contains(&addr)),
    }
}

/// The first enabled rule of the role and direction that allows the packet.
fn rule<'a>(
    policy: &'a Policy,
    role: Role,
    interface: &[IpAddr],
    direction: Direction,
    (src, dst): (IpAddr, IpAddr),
    (protocol, dport): (Protocol, u16),
) -> Option<&'a str> {
    let (local, remote) = match direction {
        Direction::Inbound => (dst, src),
        Direction::Outbound => (src, dst),
    };
    policy
        .rules_of(role)
        .find(|r| {
            r.direction == direction
                && r.protocol == protocol
                && r.ports.contains(dport)
                && matches(policy, &r.local, local, interface)
                && matches(policy, &r.remote, remote, interface)
        })
        .map(|r| r.name.as_str())
}

fn is_ndp(kind: u8) -> bool {
    matches!(kind, 130..=137 | 143)
}

/// A source no packet on the wire can have (see `DropReason::Martian`); `dad`: an ICMPv6
/// neighbour or listener discovery message, which may come from ::. The filter knows the
/// first `MAX_OWN` addresses of each family of the interface.
fn is_martian(src: IpAddr, dst: IpAddr, interface: &[IpAddr], dad: bool) -> bool {
    let own = |v6: bool| interface.iter().filter(move |a| a.is_ipv6() == v6).take(edge_common::MAX_OWN);
    // Discovery from :: is judged by its own checks (hop limit, switches), whatever it is sent to.
    if src.is_unspecified() && src.is_ipv6() {
        return !dad;
    }
    if src == dst || own(src.is_ipv6()).any(|a| *a == src) {
        return true;
    }
    match src {
        IpAddr::V4(a) => {
            let o = a.octets();
            o[0] == 0 || o[0] == 127 || (224..=239).contains(&o[0]) || a == Ipv4Addr::BROADCAST
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            a.is_loopback() || s[0] >> 8 == 0xff || (s[..5] == [0; 5] && s[5] == 0xffff)
        }
    }
}

fn is_icmp_error(v6: bool, kind: u8) -> bool {
    if v6 { (1..=4).contains(&kind) } else { matches!(kind, 3 | 11 | 12) }
}

/// Judges a frame arriving on (inbound) or leaving (outbound) an interface of `role`, with an
/// empty connection table.
pub fn decide(policy: &Policy, role: Role, interface: &[IpAddr], direction: Direction, frame: &Frame) -> Decision {
    let settings = policy.role(role);
    let d = match direction {
        Direction::Inbound => inbound(policy, role, interface, frame),
        Direction::Outbound => outbound(policy, role, interface, frame),
    };
    audited(settings.mode, d)
}

fn audited(mode: RoleMode, d: Decision) -> Decision {
    match d {
        Decision::Drop(r) if mode == RoleMode::Audit => Decision::WouldDrop(r),
        other => other,
    }
}

fn inbound(policy: &Policy, role: Role, interface: &[IpAddr], frame: &Frame) -> Decision {
    let e = policy.role(role).essentials;
    let essential =
        |on: bool, reason| if on { Decision::Pass(reason) } else { Decision::Drop(DropReason::EssentialOff) };
    let (src, dst, payload) = match *frame {
        Frame::Arp => return essential(e.arp, PassReason::Arp),
        Frame::NotIp => return Decision::Drop(DropReason::EtherType),
        Frame::Ip { src, dst, payload } => (src, dst, payload),
    };
    if policy.role(role).martians == Martians::Drop {
        let dad = matches!(payload, Payload::Icmp { v6: true, kind, .. } if is_ndp(kind));
        if is_martian(src, dst, interface, dad) {
            return Decision::Drop(DropReason::Martian);
        }
    }
    match payload {
        Payload::OtherIp(_) => Decision::Drop(DropReason::L4Protocol),
        Payload::Icmp { v6, kind, code, hop_limit, fragmented, quote } => {
            if v6 && is_ndp(kind) {
                // From the link: hop limit 255 (ND) or 1 (MLD), and not in a fragment.
                let link = if matches!(kind, 130..=132 | 143) { 1 } else { 255 };
                if hop_limit != link || fragmented {
                    Decision::Drop(DropReason::NdpOffLink)
                } else if matches!(kind, 134 | 137) && !e.router {
                    Decision::Drop(DropReason::EssentialOff)
                } else {
                    essential(e.ndp, PassReason::Ndp)
                }
            } else if !is_icmp_error(v6, kind) {
                Decision::Drop(DropReason::Icmp)
            } else {
                // About a packet the edge sent, addressed to its sender: with no tracked flows
                // here, an answer on a connection an inbound rule allows.
                let answer = |q: &Quote| {
                    q.src == dst
                        && rule(policy, role, interface, Direction::Inbound, (q.dst, q.src), (q.protocol, q.sport))
                            .is_some()
                };
                match quote {
                    Some(q) if answer(&q) => {
                        if (v6 && kind == 2) || (!v6 && kind == 3 && code == 4) {
                            essential(e.pmtu, PassReason::Pmtu)
                        } else {
                            Decision::Pass(PassReason::Related)
                        }
                    }
                    _ => Decision::Drop(DropReason::IcmpUnrelated),
                }
            }
        }
        Payload::Ports { protocol, dport, tcp_flags, .. } => {
            match rule(policy, role, interface, Direction::Inbound, (src, dst), (protocol, dport)) {
                Some(name) => Decision::Rule(name.to_string()),
                None if protocol == Protocol::Tcp && tcp_flags & TCP_SYN == 0 => Decision::Drop(DropReason::NoFlow),
                None => Decision::Drop(DropReason::PolicyDefault),
            }
        }
    }
}

fn egress_default(mode: EgressMode, reason: DropReason) -> Decision {
    match mode {
        EgressMode::Enforce => Decision::Drop(reason),
        EgressMode::Monitor => Decision::WouldDrop(reason),
        EgressMode::Off => Decision::Pass(PassReason::Unfiltered),
    }
}

fn outbound(policy: &Policy, role: Role, interface: &[IpAddr], frame: &Frame) -> Decision {
    let mode = policy.role(role).egress;
    let (src, dst, payload) = match *frame {
        Frame::Arp => return Decision::Pass(PassReason::NotIp),
        // What ingress cannot judge, egress does not pass.
        Frame::NotIp => return egress_default(mode, DropReason::EtherType),
        Frame::Ip { src, dst, payload } => (src, dst, payload),
    };
    match payload {
        Payload::OtherIp(_) => egress_default(mode, DropReason::L4Protocol),
        Payload::Icmp { v6: true, kind, .. } if is_ndp(kind) => Decision::Pass(PassReason::IcmpOut),
        // An error about a packet this interface let in, addressed to its sender.
        Payload::Icmp { v6, kind, quote, .. } if is_icmp_error(v6, kind) => match quote {
            Some(q)
                if q.src == dst
                    && rule(policy, role, interface, Direction::Inbound, (q.src, q.dst), (q.protocol, q.dport))
                        .is_some() =>
            {
                Decision::Pass(PassReason::IcmpOut)
            }
            _ => egress_default(mode, DropReason::IcmpUnrelated),
        },
        Payload::Icmp { .. } => egress_default(mode, DropReason::Icmp),
        Payload::Ports { protocol, sport, dport, tcp_flags } => {
            if let Some(name) = rule(policy, role, interface, Direction::Outbound, (src, dst), (protocol, dport)) {
                return Decision::Rule(name.to_string());
            }
            // An answer from a port an inbound rule allows; a bare SYN is never an answer.
            let bare_syn = protocol == Protocol::Tcp && tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
            if !bare_syn && rule(policy, role, interface, Direction::Inbound, (dst, src), (protocol, sport)).is_some() {
                return Decision::Pass(PassReason::Reply);
            }
            egress_default(mode, DropReason::EgressPolicy)
        }
    }
}

/// Judges raw frame bytes: parses them by the documented rules (below), then [`decide`].
pub fn decide_bytes(policy: &Policy, role: Role, interface: &[IpAddr], direction: Direction, bytes: &[u8]) -> Decision {
    let ingress = direction == Direction::Inbound;
    let settings = policy.role(role);
    // A later fragment: with an empty fragment table (this model's), `track` knows none.
    let d = match parse(bytes, ingress) {
        Ok(frame) => return decide(policy, role, interface, direction, &frame),
        Err(DropReason::Fragment) if settings.fragments == Fragments::Pass => Decision::Pass(PassReason::Fragment),
        Err(DropReason::Fragment) if !ingress && settings.fragments == Fragments::Drop => {
            Decision::Pass(PassReason::Fragment)
        }
        Err(reason) if ingress => Decision::Drop(reason),
        Err(reason) => egress_default(settings.egress, reason),
    };
    audited(settings.mode, d)
}

/// The parsing rules, in order:
/// - Ethernet: 14 bytes; up to two VLAN tags (0x8100, 0x88a8) of 4 bytes each.
/// - ARP passes as an essential; other EtherTypes than IPv4/IPv6 are `ethertype` drops.
/// - IPv4: 20 bytes; version 4; IHL at least 5; total length at least IHL and, inbound, within
///   the frame; a non-zero fragment offset is a later fragment (`fragment`), except offset 1
///   (8 bytes) of TCP, which overlaps the first fragment's flags (`tiny-fragment`).
/// - IPv6: 40 bytes; version 6; payload length within the frame (inbound); at most four
///   hop-by-hop/routing/destination-options/fragment headers (`ext-headers` beyond; a fragment
///   header needs its 8 bytes, a routing header 4), a fragment header with a non-zero offset is
///   a later fragment (offset 1 of TCP: `tiny-fragment`); hop-by-hop options anywhere but
///   first and a routing header of type 0 are `bad-ext-header`.
/// - TCP: 20 bytes and a data offset of at least 5; UDP: 8 bytes; ICMP/ICMPv6: 4 bytes.
///   A header cut short anywhere is `truncated`; an impossible field is `bad-header`.
/// - The layer-4 header (TCP with its options) lies within the datagram the IP length field
///   declares, else `bad-header`, or `tiny-fragment` in a first fragment. A header the frame
///   cuts short is `truncated` only if the datagram would hold it (an egress datagram longer
///   than its buffer); TCP's data offset is checked (`bad-header`) before its options' reach.
/// - TCP flags are a combination a stack sends (see [`tcp_flags_valid`]), else `tcp-flags`.
pub fn parse(b: &[u8], ingress: bool) -> Result<Frame, DropReason> {
    let get = |at: usize, n: usize| b.get(at..at + n).ok_or(DropReason::Truncated);
    let mut ethertype = u16::from_be_bytes(get(12, 2)?.try_into().unwrap());
    let mut l3 = 14;
    for _ in 0..2 {
        if ethertype == 0x8100 || ethertype == 0x88a8 {
            ethertype = u16::from_be_bytes(get(l3 + 2, 2)?.try_into().unwrap());
            l3 += 4;
        }
    }
    let (src, dst, proto, l4, v6, end, first_fragment, fragmented, hop_limit) = match ethertype {
        0x0806 => return Ok(Frame::Arp),
        0x0800 => {
            let h = get(l3, 20)?;
            let ihl = (h[0] & 0x0f) as usize * 4;
            if h[0] >> 4 != 4 || ihl < 20 {
                return Err(DropReason::BadHeader);
            }
            let total = u16::from_be_bytes([h[2], h[3]]) as usize;
            if total < ihl || (ingress && l3 + total > b.len()) {
                return Err(DropReason::BadHeader);
            }
            let frag = u16::from_be_bytes([h[6], h[7]]);
            match frag & 0x1fff {
                0 => {}
                1 if h[9] == 6 => return Err(DropReason::TinyFragment),
                _ => return Err(DropReason::Fragment),
            }
            let src = IpAddr::V4(Ipv4Addr::new(h[12], h[13], h[14], h[15]));
            let dst = IpAddr::V4(Ipv4Addr::new(h[16], h[17], h[18], h[19]));
            (src, dst, h[9], l3 + ihl, false, l3 + total, frag & 0x2000 != 0, false, 0)
        }
        0x86dd => {
            let h = get(l3, 40)?;
            if h[0] >> 4 != 6 {
                return Err(DropReason::BadHeader);
            }
            let payload = u16::from_be_bytes([h[4], h[5]]) as usize;
            // Egress: 0 may be a GSO packet over 64 KiB (BIG TCP), bounded by nothing.
            let end = if payload == 0 && !ingress { usize::MAX } else { l3 + 40 + payload };
            if ingress && l3 + 40 + payload > b.len() {
                return Err(DropReason::BadHeader);
            }
            let src = IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&h[8..24]).unwrap()));
            let dst = IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&h[24..40]).unwrap()));
            let (mut next, mut off, mut first, mut fragmented) = (h[6], l3 + 40, false, false);
            let mut walked = 0;
            while matches!(next, 0 | 43 | 60 | 44) {
                if walked == 4 {
                    return Err(DropReason::ExtHeaders);
                }
                // Hop-by-hop options only first; no routing header of type 0.
                if next == 0 && walked != 0 {
                    return Err(DropReason::BadExtHeader);
                }
                let e = get(
                    off,
                    match next {
                        44 => 8,
                        43 => 4,
                        _ => 2,
                    },
                )?;
                if next == 43 && e[2] == 0 {
                    return Err(DropReason::BadExtHeader);
                }
                if next == 44 {
                    let frag = u16::from_be_bytes([e[2], e[3]]);
                    match frag >> 3 {
                        0 => {}
                        1 if e[0] == 6 => return Err(DropReason::TinyFragment),
                        _ => return Err(DropReason::Fragment),
                    }
                    first |= frag & 1 != 0;
                    fragmented = true;
                    off += 8;
                } else {
                    off += (e[1] as usize + 1) * 8;
                }
                next = e[0];
                walked += 1;
            }
            (src, dst, next, off, true, end, first, fragmented, h[7])
        }
        _ => return Ok(Frame::NotIp),
    };
    // A header the frame holds but the datagram does not; in a first fragment, one that the
    // fragment cuts (the rest would come in a later fragment, which could rewrite it).
    let cut = if first_fragment { DropReason::TinyFragment } else { DropReason::BadHeader };
    let within = |n: usize| if l4 + n > end { Err(cut) } else { Ok(()) };
    // The header's first `n` bytes from the frame; when the frame is short, the reason is the
    // datagram's if it is short too.
    let reach = |n: usize| b.get(l4..l4 + n).ok_or(if l4 + n > end { cut } else { DropReason::Truncated });
    let payload = match proto {
        6 => {
            let t = reach(20)?;
            let header = (t[12] >> 4) as usize * 4;
            if header < 20 {
                return Err(DropReason::BadHeader);
            }
            within(header)?;
            if !tcp_flags_valid(t[13]) {
                return Err(DropReason::TcpFlags);
            }
            let (sport, dport) = (u16::from_be_bytes([t[0], t[1]]), u16::from_be_bytes([t[2], t[3]]));
            Payload::Ports { protocol: Protocol::Tcp, sport, dport, tcp_flags: t[13] }
        }
        17 => {
            let u = reach(8)?;
            within(8)?;
            let (sport, dport) = (u16::from_be_bytes([u[0], u[1]]), u16::from_be_bytes([u[2], u[3]]));
            Payload::Ports { protocol: Protocol::Udp, sport, dport, tcp_flags: 0 }
        }
        1 | 58 => {
            let i = reach(4)?;
            within(4)?;
            if (proto == 58) != v6 {
                Payload::OtherIp(proto)
            } else {
                Payload::Icmp { v6, kind: i[0], code: i[1], hop_limit, fragmented, quote: quote(b, l4 + 8, v6) }
            }
        }
        other => Payload::OtherIp(other),
    };
    Ok(Frame::Ip { src, dst, payload })
}

/// The TCP or UDP packet at `at` (an ICMP error's quote): an IP header of version 6 (`v6`,
/// without extension headers) or 4 (any IHL of at least 5), then four bytes of ports, all
/// within the frame.
fn quote(b: &[u8], at: usize, v6: bool) -> Option<Quote> {
    let (src, dst, proto, l4) = if v6 {
        let h = b.get(at..at + 40)?;
        let addr = |o: usize| IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&h[o..o + 16]).unwrap()));
        (h[0] >> 4 == 6).then_some(())?;
        (addr(8), addr(24), h[6], at + 40)
    } else {
        let h = b.get(at..at + 20)?;
        let ihl = (h[0] & 0x0f) as usize * 4;
        (h[0] >> 4 == 4 && ihl >= 20).then_some(())?;
        let addr = |o: usize| IpAddr::V4(Ipv4Addr::new(h[o], h[o + 1], h[o + 2], h[o + 3]));
        (addr(12), addr(16), h[9], at + ihl)
    };
    let protocol = match proto {
        6 => Protocol::Tcp,
        17 => Protocol::Udp,
        _ => return None,
    };
    let p = b.get(l4..l4 + 4)?;
    Some(Quote { src, dst, protocol, sport: u16::from_be_bytes([p[0], p[1]]), dport: u16::from_be_bytes([p[2], p[3]]) })
}

/// Whether a stack sends these TCP flags: with PSH, ECE and CWR set aside, one of SYN,
/// SYN+URG, SYN+ACK, RST, RST+ACK, FIN+ACK, FIN+ACK+URG, ACK or ACK+URG (Linux conntrack's
/// list). Everything else (no flags, SYN+FIN, SYN+RST, FIN without ACK, ...) is a scan or an
/// attack.
pub fn tcp_flags_valid(flags: u8) -> bool {
    const FIN: u8 = 0x01;
    const SYN: u8 = 0x02;
    const RST: u8 = 0x04;
    const ACK: u8 = 0x10;
    const URG: u8 = 0x20;
    let f = flags & (FIN | SYN | RST | ACK | URG);
    [SYN, SYN | URG, SYN | ACK, RST, RST | ACK, FIN | ACK, FIN | ACK | URG, ACK, ACK | URG].contains(&f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame;

    #[test]
    fn parse_rules_by_example() {
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let f = frame::tcp(a, b, 1, 2, frame::SYN);
        assert!(matches!(parse(&f, true), Ok(Frame::Ip { payload: Payload::Ports { dport: 2, .. }, .. })));
        assert_eq!(parse(&f[..30], true), Err(DropReason::Truncated));
        assert_eq!(parse(&f[..40], true), Err(DropReason::BadHeader), "total length beyond the frame");
        assert!(parse(&f[..40], false).is_err(), "egress skips the length check but still needs the TCP header");
        assert_eq!(parse(&frame::ethernet(0x88cc, &[0; 46]), true), Ok(Frame::NotIp));
    }
}
