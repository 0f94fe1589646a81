//! Bounded packet parsing: Ethernet (up to two VLAN tags), IPv4 (honouring IHL), IPv6, and the
//! first bytes of TCP, UDP, ICMP and ICMPv6. Every path ends in a [`Frame`]; nothing loops
//! without a constant bound, and every read is checked against the end of the frame first.

use core::mem::size_of;

use edge_common::DropReason;
use network_types::{
    eth::{EthHdr, EtherType},
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
};

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;

const ETH_P_IPV4: u16 = EtherType::Ipv4 as u16;
const ETH_P_IPV6: u16 = EtherType::Ipv6 as u16;
const ETH_P_ARP: u16 = EtherType::Arp as u16;
const ETH_P_8021Q: u16 = EtherType::Ieee8021q as u16;
const ETH_P_8021AD: u16 = EtherType::Ieee8021ad as u16;
const VLAN_TAG_LEN: usize = 4;

/// What the parser found. Later fragments are `Ip` packets too (see [`Packet::fragment`]): a
/// variant with payload fields of its own made LLVM hand the verifier a packet pointer as
/// another variant's value.
pub enum Frame {
    Arp,
    Ip(Packet),
    Drop(DropReason),
}

/// [`Packet::fragment`]: not a fragment (or an atomic one).
pub const WHOLE: u8 = 0;
/// The first fragment of a datagram (offset 0, more to come): its later fragments follow its
/// verdict.
pub const FIRST: u8 = 1;
/// A later fragment: no ports (zeros), only the datagram it belongs to; `proto` is the IPv4
/// protocol, 0 for IPv6.
pub const LATER: u8 = 2;
/// An IPv6 atomic fragment (a fragment header, offset 0, no more to come): a whole datagram,
/// but one in which neighbour discovery is not accepted (RFC 6980).
pub const ATOMIC: u8 = 3;

/// The fields the policy looks at. Addresses are wire-order words; IPv4 uses word 0. The
/// addresses come first and the struct is aligned to 8 bytes: IPv6 addresses are compared as
/// two 64-bit words (see `policy::differ`).
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub struct Packet {
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub v6: bool,
    pub proto: u8,
    /// TCP/UDP ports in host order; for ICMP, `sport` holds type and `dport` code.
    pub sport: u16,
    pub dport: u16,
    /// TCP flags (byte 13 of the header), 0 otherwise.
    pub tcp_flags: u8,
    /// Offset of the layer-4 header from the start of the frame.
    pub l4_offset: u16,
    /// TCP sequence and acknowledgment numbers (wire order), 0 otherwise.
    pub seq: u32,
    pub ack: u32,
    /// [`WHOLE`], [`FIRST`], [`LATER`] or [`ATOMIC`]; for a fragment, the datagram's identification (wire
    /// order; IPv4's 16 bits or IPv6's 32).
    pub fragment: u8,
    pub frag_id: u32,
    /// IPv6's hop limit (neighbour discovery must come from the link); 0 for IPv4.
    pub hop_limit: u8,
}

impl Packet {
    /// A TCP or UDP packet that is not a fragment: addresses, ports, TCP flags with sequence and
    /// acknowledgment numbers, and the layer-4 offset.
    #[inline(always)]
    fn whole(
        v6: bool,
        proto: u8,
        (src, dst): ([u32; 4], [u32; 4]),
        (sport, dport): (u16, u16),
        (tcp_flags, seq, ack): (u8, u32, u32),
        l4: usize,
    ) -> Packet {
        Packet {
            v6,
            proto,
            src,
            dst,
            sport,
            dport,
            tcp_flags,
            l4_offset: l4 as u16,
            seq,
            ack,
            fragment: WHOLE,
            frag_id: 0,
            hop_limit: 0,
        }
    }
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// The TCP flag combinations a stack sends, as Linux conntrack's `tcp_valid_flags` lists them,
/// one bit per value of the flags FIN, SYN, RST, ACK and URG (PSH, ECE and CWR aside): SYN,
/// SYN+URG, SYN+ACK, RST, RST+ACK, FIN+ACK, FIN+ACK+URG, ACK, ACK+URG.
const TCP_VALID: u64 =
    1 << 0x02 | 1 << 0x22 | 1 << 0x12 | 1 << 0x04 | 1 << 0x14 | 1 << 0x11 | 1 << 0x31 | 1 << 0x10 | 1 << 0x30;

/// Whether a TCP segment's flags are a combination some stack sends (a shift and a test).
#[inline(always)]
pub fn tcp_flags_valid(flags: u8) -> bool {
    TCP_VALID >> (flags & 0x37) & 1 != 0
}

/// Reads a `T` from packet memory the caller has bounds-checked. Header fields are not aligned
/// in the frame, and network-types declares them as byte arrays, for which LLVM assembles
/// every field from single bytes. The kernel allows unaligned packet loads where the CPU does
/// them cheaply (x86-64, arm64; elsewhere the verifier would refuse the program at attach, it
/// would not misread): reading through a `T` pointer gives one load per field.
#[inline(always)]
fn load<T: Copy>(addr: usize) -> T {
    // SAFETY: the caller checked `addr + size_of::<T>() <= data_end`; see above for alignment.
    unsafe { *(addr as *const T) }
}

/// An address read as two 64-bit words, as the wire-order 32-bit words [`Packet`] holds.
#[inline(always)]
fn words(wide: [u64; 2]) -> [u32; 4] {
    // SAFETY: same size, and every bit pattern is valid for both.
    unsafe { core::mem::transmute(wide) }
}

/// A big-endian u16 at `addr` (see [`load`]).
#[inline(always)]
fn be16(addr: usize) -> u16 {
    u16::from_be(load::<u16>(addr))
}

/// [`load`] as a volatile read: the compiler cannot reuse a value it read earlier, so it need
/// not keep that value alive until here (see [`plain_again`]).
#[inline(always)]
fn reload<T: Copy>(addr: usize) -> T {
    // SAFETY: as for `load`.
    unsafe { core::ptr::read_volatile(addr as *const T) }
}

/// A bounds-checked pointer to a `T` at `offset` from the start of the frame.
#[inline(always)]
fn ptr_at<T>(data: usize, data_end: usize, offset: usize) -> Option<*const T> {
    if data + offset + size_of::<T>() > data_end {
        return None;
    }
    Some((data + offset) as *const T)
}

/// Reads the EtherType after up to two VLAN tags (802.1ad outer, 802.1Q inner).
/// Returns the EtherType (wire order) and the offset of the layer-3 header.
#[inline(always)]
fn ethertype(data: usize, data_end: usize) -> Result<(u16, usize), DropReason> {
    let eth: *const EthHdr = ptr_at(data, data_end, 0).ok_or(DropReason::Truncated)?;
    let mut proto = unsafe { (*eth).ether_type };
    let mut offset = EthHdr::LEN;
    // Two tags at most: the verifier sees two straight-line copies, not a loop.
    if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
        let tag: *const [u16; 2] = ptr_at(data, data_end, offset).ok_or(DropReason::Truncated)?;
        proto = unsafe { (*tag)[1] };
        offset += VLAN_TAG_LEN;
        if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
            let tag: *const [u16; 2] = ptr_at(data, data_end, offset).ok_or(DropReason::Truncated)?;
            proto = unsafe { (*tag)[1] };
            offset += VLAN_TAG_LEN;
        }
    }
    Ok((proto, offset))
}

/// Parses a frame. `check_len` compares the IP length fields with the frame (XDP sees whole
/// frames; TC egress may see GSO super-packets whose length fields cover more than the buffer).
#[inline(always)]
pub fn parse(data: usize, data_end: usize, check_len: bool) -> Frame {
    match parse_inner(data, data_end, check_len) {
        Ok(frame) => frame,
        Err(reason) => Frame::Drop(reason),
    }
}

#[inline(always)]
fn parse_inner(data: usize, data_end: usize, check_len: bool) -> Result<Frame, DropReason> {
    let (proto, l3) = ethertype(data, data_end)?;
    let frame_len = data_end - data;
    match proto {
        ETH_P_IPV4 => parse_v4(data, data_end, l3, frame_len, check_len),
        ETH_P_IPV6 => parse_v6(data, data_end, l3, frame_len, check_len),
        ETH_P_ARP => Ok(Frame::Arp),
        _ => Err(DropReason::EtherType),
    }
}

#[inline(always)]
fn parse_v4(data: usize, data_end: usize, l3: usize, frame_len: usize, check_len: bool) -> Result<Frame, DropReason> {
    let ip: *const Ipv4Hdr = ptr_at(data, data_end, l3).ok_or(DropReason::Truncated)?;
    let vihl = unsafe { (*ip).vihl };
    if vihl >> 4 != 4 {
        return Err(DropReason::BadHeader);
    }
    // IHL is 4 bits, so the header length is bounded by 60 and the verifier can track it.
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if ihl < Ipv4Hdr::LEN {
        return Err(DropReason::BadHeader);
    }
    let tot_len = be16(ip as usize + 2) as usize;
    if tot_len < ihl || (check_len && l3 + tot_len > frame_len) {
        return Err(DropReason::BadHeader);
    }
    let frags = be16(ip as usize + 6);
    let proto = unsafe { (*ip).proto };
    let (src, dst) = ([load::<u32>(ip as usize + 12), 0, 0, 0], [load::<u32>(ip as usize + 16), 0, 0, 0]);
    let id = load::<u16>(ip as usize + 4) as u32;
    let fragment = match frags & 0x1fff {
        0 if frags & 0x2000 != 0 => FIRST,
        0 => WHOLE,
        // Offset 8 bytes of TCP: it would overwrite the first fragment's flags (RFC 1858).
        1 if proto == PROTO_TCP => return Err(DropReason::TinyFragment),
        // A later fragment: no ports to judge.
        _ => LATER,
    };
    let mut pkt = Packet {
        v6: false,
        proto,
        src,
        dst,
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        l4_offset: 0,
        seq: 0,
        ack: 0,
        fragment,
        frag_id: id,
        hop_limit: 0,
    };
    if fragment == LATER {
        return Ok(Frame::Ip(pkt));
    }
    l4(data, data_end, l3 + ihl, l3 + tot_len, &mut pkt)?;
    Ok(Frame::Ip(pkt))
}

#[inline(always)]
fn parse_v6(data: usize, data_end: usize, l3: usize, frame_len: usize, check_len: bool) -> Result<Frame, DropReason> {
    let ip: *const Ipv6Hdr = ptr_at(data, data_end, l3).ok_or(DropReason::Truncated)?;
    let vcf = unsafe { *(ip as *const u8) };
    if vcf >> 4 != 6 {
        return Err(DropReason::BadHeader);
    }
    let payload_len = be16(ip as usize + 4) as usize;
    if check_len && l3 + Ipv6Hdr::LEN + payload_len > frame_len {
        return Err(DropReason::BadHeader);
    }
    let src: [u32; 4] = load(ip as usize + 8);
    let dst: [u32; 4] = load(ip as usize + 24);
    let walk = ext_headers(data, data_end, unsafe { (*ip).next_hdr }, l3 + Ipv6Hdr::LEN)?;
    let mut pkt = Packet {
        v6: true,
        proto: if walk.fragment == LATER { 0 } else { walk.next },
        src,
        dst,
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        l4_offset: 0,
        seq: 0,
        ack: 0,
        fragment: walk.fragment,
        frag_id: walk.id,
        hop_limit: unsafe { (*ip).hop_limit },
    };
    if walk.fragment == LATER {
        return Ok(Frame::Ip(pkt));
    }
    // Egress may see a GSO packet of more than 64 KiB with payload length 0 (BIG TCP): no
    // bound from the field then. Ingress sees wire frames, where 0 means no payload.
    let end = if payload_len == 0 && !check_len { usize::MAX } else { l3 + Ipv6Hdr::LEN + payload_len };
    l4(data, data_end, walk.off, end, &mut pkt)?;
    Ok(Frame::Ip(pkt))
}

const IPV6_HOPOPTS: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_DSTOPTS: u8 = 60;
/// Extension headers walked before giving up (`ext-headers`).
pub const MAX_EXT_HEADERS: usize = 4;

/// What [`ext_headers`] found: the upper-layer protocol and its offset, and what a fragment
/// header made this ([`Packet::fragment`]), with its identification. Plain fields, always set
/// (see `programs::Decision`).
struct Walk {
    next: u8,
    off: usize,
    fragment: u8,
    id: u32,
}

/// Walks hop-by-hop, routing, destination-options and fragment headers (a bounded walk: the
/// verifier sees four straight-line steps).
#[inline(always)]
fn ext_headers(data: usize, data_end: usize, first: u8, offset: usize) -> Result<Walk, DropReason> {
    let mut walk = Walk { next: first, off: offset, fragment: WHOLE, id: 0 };
    for i in 0..MAX_EXT_HEADERS {
        match walk.next {
            // Hop-by-hop options come first or not at all (RFC 8200).
            IPV6_HOPOPTS if i != 0 => return Err(DropReason::BadExtHeader),
            IPV6_HOPOPTS | IPV6_DSTOPTS => {
                let h: *const [u8; 2] = ptr_at(data, data_end, walk.off).ok_or(DropReason::Truncated)?;
                let (n, len) = unsafe { ((*h)[0], (*h)[1]) };
                walk.next = n;
                walk.off += (len as usize + 1) * 8;
            }
            IPV6_ROUTING => {
                let h: *const [u8; 4] = ptr_at(data, data_end, walk.off).ok_or(DropReason::Truncated)?;
                let (n, len, kind) = unsafe { ((*h)[0], (*h)[1], (*h)[2]) };
                // Type 0 makes any host a relay to any address (RFC 5095).
                if kind == 0 {
                    return Err(DropReason::BadExtHeader);
                }
                walk.next = n;
                walk.off += (len as usize + 1) * 8;
            }
            IPV6_FRAGMENT => {
                let h: *const [u8; 8] = ptr_at(data, data_end, walk.off).ok_or(DropReason::Truncated)?;
                let (n, frag) = unsafe { ((*h)[0], u16::from_be_bytes([(*h)[2], (*h)[3]])) };
                walk.id = load::<u32>(h as usize + 4);
                match frag >> 3 {
                    0 => {}
                    // Offset 8 bytes of TCP: it would overwrite the first fragment's flags.
                    1 if n == PROTO_TCP => return Err(DropReason::TinyFragment),
                    // A later fragment: no ports to judge.
                    _ => {
                        walk.fragment = LATER;
                        return Ok(walk);
                    }
                }
                if frag & 1 != 0 {
                    walk.fragment = FIRST;
                } else if walk.fragment == WHOLE {
                    walk.fragment = ATOMIC;
                }
                walk.next = n;
                walk.off += 8;
            }
            _ => return Ok(walk),
        }
    }
    match walk.next {
        IPV6_HOPOPTS | IPV6_ROUTING | IPV6_DSTOPTS | IPV6_FRAGMENT => Err(DropReason::ExtHeaders),
        _ => Ok(walk),
    }
}

/// Reads ports (TCP/UDP) or type and code (ICMP/ICMPv6). Other protocols keep zeros. What is
/// read must lie within the datagram the IP header declares, ending at offset `end`
/// (`bad-header`, or `tiny-fragment` in a first fragment): bytes past the datagram are not part
/// of the packet, and a stack that honours the length would never see a header there; then
/// within the frame (`truncated`: egress, where the datagram may be longer than the buffer).
#[inline(always)]
fn l4(data: usize, data_end: usize, offset: usize, end: usize, pkt: &mut Packet) -> Result<(), DropReason> {
    pkt.l4_offset = offset as u16;
    match pkt.proto {
        PROTO_TCP => {
            let tcp: *const TcpHdr = ptr_at(data, data_end, offset).ok_or(short(pkt, offset + TcpHdr::LEN, end))?;
            // Data offset: the high nibble of byte 12; the whole header, options included,
            // lies within the datagram.
            let doff = unsafe { *((tcp as usize + 12) as *const u8) } >> 4;
            if doff < 5 {
                return Err(DropReason::BadHeader);
            }
            if offset + doff as usize * 4 > end {
                return Err(cut(pkt));
            }
            let flags = unsafe { *((tcp as usize + 13) as *const u8) };
            if !tcp_flags_valid(flags) {
                return Err(DropReason::TcpFlags);
            }
            pkt.sport = be16(tcp as usize);
            pkt.dport = be16(tcp as usize + 2);
            pkt.tcp_flags = flags;
            pkt.seq = load::<u32>(tcp as usize + 4);
            pkt.ack = load::<u32>(tcp as usize + 8);
        }
        PROTO_UDP => {
            let udp: *const UdpHdr = ptr_at(data, data_end, offset).ok_or(short(pkt, offset + UdpHdr::LEN, end))?;
            if offset + UdpHdr::LEN > end {
                return Err(cut(pkt));
            }
            pkt.sport = be16(udp as usize);
            pkt.dport = be16(udp as usize + 2);
        }
        PROTO_ICMP | PROTO_ICMPV6 => {
            let icmp: *const [u8; 4] = ptr_at(data, data_end, offset).ok_or(short(pkt, offset + 4, end))?;
            if offset + 4 > end {
                return Err(cut(pkt));
            }
            pkt.sport = unsafe { (*icmp)[0] } as u16;
            pkt.dport = unsafe { (*icmp)[1] } as u16;
        }
        _ => {}
    }
    Ok(())
}

/// Why a layer-4 header the frame does not hold is dropped: it runs past the datagram too
/// (ending at `header_end`; see [`cut`]), or only the frame is short (`truncated`). The frame
/// is checked first: a check against the datagram first let LLVM drop the frame's, which it
/// implies on ingress, and the verifier then refused the read.
#[inline(always)]
fn short(pkt: &Packet, header_end: usize, end: usize) -> DropReason {
    if header_end > end { cut(pkt) } else { DropReason::Truncated }
}

/// Why a layer-4 header that runs past the datagram is dropped: in a first fragment the rest
/// would come in a later one, which could rewrite it (RFC 3128, RFC 7112).
#[inline(always)]
fn cut(pkt: &Packet) -> DropReason {
    if pkt.fragment == FIRST { DropReason::TinyFragment } else { DropReason::BadHeader }
}

/// The packet an ICMP error quotes: the offending packet's IP header and first 8 bytes follow
/// the 8-byte ICMP header. Only a TCP or UDP packet of the error's own IP version (an IPv6
/// header without extension headers), read within the frame.
pub struct Quoted {
    pub proto: u8,
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub sport: u16,
    pub dport: u16,
}

#[inline(always)]
pub fn quoted(data: usize, data_end: usize, pkt: &Packet) -> Option<Quoted> {
    // Bounded for the verifier: with the offset's full 16 bits, 6.12 does not carry a bounds
    // check of `inner + 20` over to the pointer it reads through (offset plus check past
    // 0xffff), and refuses the read. An ICMP header deeper than this is no error to judge.
    let l4_offset = pkt.l4_offset as usize;
    if l4_offset > 1000 {
        return None;
    }
    let inner = crate::bounds::index::<1024>(l4_offset) + 8;
    let (proto, src, dst, l4) = if pkt.v6 {
        let ip: *const Ipv6Hdr = ptr_at(data, data_end, inner)?;
        if load::<u8>(ip as usize) >> 4 != 6 {
            return None;
        }
        let src: [u32; 4] = unsafe { *((ip as usize + 8) as *const [u32; 4]) };
        let dst: [u32; 4] = unsafe { *((ip as usize + 24) as *const [u32; 4]) };
        (unsafe { (*ip).next_hdr }, src, dst, inner + Ipv6Hdr::LEN)
    } else {
        let ip: *const Ipv4Hdr = ptr_at(data, data_end, inner)?;
        let vihl = unsafe { (*ip).vihl };
        let ihl = ((vihl & 0x0f) as usize) * 4;
        if vihl >> 4 != 4 || ihl < Ipv4Hdr::LEN {
            return None;
        }
        let src = u32::from_ne_bytes(unsafe { (*ip).src_addr });
        let dst = u32::from_ne_bytes(unsafe { (*ip).dst_addr });
        (unsafe { (*ip).proto }, [src, 0, 0, 0], [dst, 0, 0, 0], inner + ihl)
    };
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return None;
    }
    let ports: *const [u8; 4] = ptr_at(data, data_end, l4)?;
    let p = unsafe { *ports };
    Some(Quoted { proto, src, dst, sport: u16::from_be_bytes([p[0], p[1]]), dport: u16::from_be_bytes([p[2], p[3]]) })
}

/// The common cases, read straight: an untagged IPv4 packet without options or fragmentation
/// ([`plain_v4`]) or IPv6 packet without extension headers ([`plain_v6`]), carrying TCP (with a
/// whole 20-byte header) or UDP, whose headers the frame holds. Anything else is `None` and
/// goes to [`parse`], which gives the same fields for these packets.
#[inline(always)]
pub fn plain_v4(data: usize, data_end: usize) -> Option<Packet> {
    const L3: usize = EthHdr::LEN;
    const L4: usize = L3 + Ipv4Hdr::LEN;
    if data + L4 + UdpHdr::LEN > data_end {
        return None;
    }
    if load::<u16>(data + 12) != ETH_P_IPV4 || load::<u8>(data + L3) != 0x45 {
        return None;
    }
    let tot_len = be16(data + L3 + 2) as usize;
    // Fragments (more to come, or an offset) take the general path.
    if tot_len < Ipv4Hdr::LEN || L3 + tot_len > data_end - data || be16(data + L3 + 6) & 0x3fff != 0 {
        return None;
    }
    let (src, dst) = ([load::<u32>(data + L3 + 12), 0, 0, 0], [load::<u32>(data + L3 + 16), 0, 0, 0]);
    plain_l4(data, data_end, false, load::<u8>(data + L3 + 9), src, dst, L4, L3 + tot_len)
}

/// See [`plain_v4`].
#[inline(always)]
pub fn plain_v6(data: usize, data_end: usize) -> Option<Packet> {
    const L3: usize = EthHdr::LEN;
    const L4: usize = L3 + Ipv6Hdr::LEN;
    if data + L4 + UdpHdr::LEN > data_end {
        return None;
    }
    if load::<u16>(data + 12) != ETH_P_IPV6 || load::<u8>(data + L3) >> 4 != 6 {
        return None;
    }
    let end = L4 + be16(data + L3 + 4) as usize;
    if end > data_end - data {
        return None;
    }
    // Each address as two 64-bit loads, the width it is compared at.
    let (src, dst) = (words(load::<[u64; 2]>(data + L3 + 8)), words(load::<[u64; 2]>(data + L3 + 24)));
    plain_l4(data, data_end, true, load::<u8>(data + L3 + 6), src, dst, L4, end)
}

/// The second look at a packet [`plain_v4`] (`v6` false) or [`plain_v6`] (`v6` true) accepted:
/// the same fields, read anew. The ingress filter reads a plain packet once for the rules,
/// and only when no rule allows it a second time for everything else, so the allowed path
/// keeps no field alive that only the other paths need.
///
/// The first look's checks still hold (nothing writes the packet in between) and are not
/// repeated, except one bound: the verifier does not know that the protocol read again is the
/// one read first, so a TCP header is bounds-checked again before its flags are read.
#[inline(always)]
pub fn plain_again(data: usize, data_end: usize, v6: bool) -> Option<Packet> {
    const L3: usize = EthHdr::LEN;
    let (l4, proto, src, dst) = if v6 {
        let address = |at: usize| words([reload::<u64>(at), reload::<u64>(at + 8)]);
        (L3 + Ipv6Hdr::LEN, reload::<u8>(data + L3 + 6), address(data + L3 + 8), address(data + L3 + 24))
    } else {
        let (src, dst) = (reload::<u32>(data + L3 + 12), reload::<u32>(data + L3 + 16));
        (L3 + Ipv4Hdr::LEN, reload::<u8>(data + L3 + 9), [src, 0, 0, 0], [dst, 0, 0, 0])
    };
    // The first look checked this; the compiler knows, and so does the verifier.
    if data + l4 + UdpHdr::LEN > data_end {
        return None;
    }
    let (tcp_flags, seq, ack) = match proto {
        PROTO_TCP if data + l4 + TcpHdr::LEN <= data_end => {
            (reload::<u8>(data + l4 + 13), reload::<u32>(data + l4 + 4), reload::<u32>(data + l4 + 8))
        }
        PROTO_UDP => (0, 0, 0),
        _ => return None,
    };
    let (sport, dport) = (u16::from_be(reload::<u16>(data + l4)), u16::from_be(reload::<u16>(data + l4 + 2)));
    Some(Packet::whole(v6, proto, (src, dst), (sport, dport), (tcp_flags, seq, ack), l4))
}

/// The packet, when TCP (with its whole header and valid flags) or UDP is at `l4` and within
/// the datagram ending at offset `end` (which the caller has checked against the frame), and
/// the frame holds its first 8 bytes; `None` for anything [`l4`] would judge otherwise.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn plain_l4(
    data: usize,
    data_end: usize,
    v6: bool,
    proto: u8,
    src: [u32; 4],
    dst: [u32; 4],
    l4: usize,
    end: usize,
) -> Option<Packet> {
    let (tcp_flags, seq, ack) = match proto {
        PROTO_TCP if data + l4 + TcpHdr::LEN <= data_end => {
            let (doff, flags) = (load::<u8>(data + l4 + 12) >> 4, load::<u8>(data + l4 + 13));
            if doff < 5 || l4 + doff as usize * 4 > end || !tcp_flags_valid(flags) {
                return None;
            }
            (flags, load::<u32>(data + l4 + 4), load::<u32>(data + l4 + 8))
        }
        PROTO_UDP if l4 + UdpHdr::LEN <= end => (0, 0, 0),
        _ => return None,
    };
    let (sport, dport) = (be16(data + l4), be16(data + l4 + 2));
    Some(Packet::whole(v6, proto, (src, dst), (sport, dport), (tcp_flags, seq, ack), l4))
}
