//! Hand-built frames: Ethernet, optional VLAN tags, IPv4 (with options)
//! or IPv6, then TCP, UDP, ICMP or raw payload. Checksums are left zero: the filter does not
//! read them.

use std::net::IpAddr;

pub const ETH_IPV4: u16 = 0x0800;
pub const ETH_IPV6: u16 = 0x86dd;
pub const ETH_ARP: u16 = 0x0806;
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;
pub const ICMPV6: u8 = 58;

pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const RST: u8 = 0x04;
pub const FIN: u8 = 0x01;

const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

pub fn ethernet(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&DST_MAC);
    f.extend_from_slice(&SRC_MAC);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Inserts a VLAN tag (TPID 0x8100, or 0x88a8 for an outer 802.1ad tag) after the MACs.
pub fn vlan(frame: &[u8], tpid: u16, vid: u16) -> Vec<u8> {
    let mut f = frame[..12].to_vec();
    f.extend_from_slice(&tpid.to_be_bytes());
    f.extend_from_slice(&vid.to_be_bytes());
    f.extend_from_slice(&frame[12..]);
    f
}

/// An IPv4 header (with `options`, a multiple of 4 bytes) and payload.
pub fn ipv4_with(src: [u8; 4], dst: [u8; 4], proto: u8, options: &[u8], frag: u16, payload: &[u8]) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0);
    let ihl = (20 + options.len()) / 4;
    let total = 20 + options.len() + payload.len();
    let mut p = vec![0x40 | ihl as u8, 0];
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&[0, 1]);
    p.extend_from_slice(&frag.to_be_bytes());
    p.extend_from_slice(&[64, proto, 0, 0]);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(options);
    p.extend_from_slice(payload);
    p
}

pub fn ipv6_with(src: [u8; 16], dst: [u8; 16], next: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    p.extend_from_slice(&[next, 64]);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(payload);
    p
}

/// An IP packet in an Ethernet frame; the family follows the addresses.
pub fn ip(src: IpAddr, dst: IpAddr, proto: u8, l4: &[u8]) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => ethernet(ETH_IPV4, &ipv4_with(s.octets(), d.octets(), proto, &[], 0, l4)),
        (IpAddr::V6(s), IpAddr::V6(d)) => ethernet(ETH_IPV6, &ipv6_with(s.octets(), d.octets(), proto, l4)),
        _ => panic!("mixed address families"),
    }
}

/// A 20-byte TCP header with sequence number 1 and acknowledgment number 0.
pub fn tcp_header(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    tcp_header_seq(sport, dport, flags, 1, 0)
}

/// A 20-byte TCP header with the given sequence and acknowledgment numbers.
pub fn tcp_header_seq(sport: u16, dport: u16, flags: u8, seq: u32, ack: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(20);
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&seq.to_be_bytes());
    h.extend_from_slice(&ack.to_be_bytes());
    h.extend_from_slice(&[5 << 4, flags, 0xff, 0xff, 0, 0, 0, 0]);
    h
}

pub fn udp_header(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::with_capacity(8 + payload.len());
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(payload);
    h
}

pub fn tcp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    ip(src, dst, TCP, &tcp_header(sport, dport, flags))
}

/// [`tcp`] with sequence and acknowledgment numbers.
pub fn tcp_seq(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, flags: u8, seq: u32, ack: u32) -> Vec<u8> {
    ip(src, dst, TCP, &tcp_header_seq(sport, dport, flags, seq, ack))
}

pub fn udp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Vec<u8> {
    ip(src, dst, UDP, &udp_header(sport, dport, b"payload"))
}

/// ICMP (IPv4) or ICMPv6 with a type, code and 4 more header bytes. Neighbour discovery
/// (ICMPv6 133-137) gets hop limit 255 and multicast listener discovery (130-132, 143) 1, as
/// their senders on the link set them.
pub fn icmp(src: IpAddr, dst: IpAddr, kind: u8, code: u8) -> Vec<u8> {
    let proto = if src.is_ipv4() { ICMP } else { ICMPV6 };
    let mut f = ip(src, dst, proto, &[kind, code, 0, 0, 0, 0, 0, 0]);
    if src.is_ipv6() {
        match kind {
            133..=137 => f[14 + 7] = 255,
            130..=132 | 143 => f[14 + 7] = 1,
            _ => {}
        }
    }
    f
}

/// An ICMP (IPv4) or ICMPv6 error from `src` to `dst` about `about` (a frame from [`ip`] or
/// its helpers): it quotes the packet's IP header and the 8 bytes after it, as routers do.
/// Packet-too-big and fragmentation-needed carry an MTU of 1280.
pub fn icmp_error(src: IpAddr, dst: IpAddr, kind: u8, code: u8, about: &[u8]) -> Vec<u8> {
    let (proto, mtu) = if src.is_ipv4() { (ICMP, kind == 3 && code == 4) } else { (ICMPV6, kind == 2) };
    let packet = &about[14..];
    let header = if packet[0] >> 4 == 4 { (packet[0] & 0x0f) as usize * 4 } else { 40 };
    let mut body = vec![kind, code, 0, 0, 0, 0, 0, 0];
    if mtu {
        body[6..8].copy_from_slice(&1280u16.to_be_bytes());
    }
    body.extend_from_slice(&packet[..(header + 8).min(packet.len())]);
    ip(src, dst, proto, &body)
}

/// An ARP request.
pub fn arp() -> Vec<u8> {
    let mut p = vec![0, 1, 8, 0, 6, 4, 0, 1];
    p.extend_from_slice(&SRC_MAC);
    p.extend_from_slice(&[192, 0, 2, 1]);
    p.extend_from_slice(&[0; 6]);
    p.extend_from_slice(&[192, 0, 2, 2]);
    ethernet(ETH_ARP, &p)
}

/// Pads a frame to the 60-byte Ethernet minimum, as a NIC delivers it.
pub fn pad(mut frame: Vec<u8>) -> Vec<u8> {
    if frame.len() < 60 {
        frame.resize(60, 0);
    }
    frame
}

/// Sets a frame's destination and source MAC addresses.
pub fn with_macs(mut frame: Vec<u8>, dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    frame[..6].copy_from_slice(&dst);
    frame[6..12].copy_from_slice(&src);
    frame
}

/// IPv6 with extension headers before the upper layer: each `(kind, body)` is one header (its
/// body padded to a multiple of 8 bytes with the 2-byte next/length prefix; a fragment header
/// takes `body` as its 6 bytes after the next-header byte and reserved byte).
pub fn ipv6_ext(src: [u8; 16], dst: [u8; 16], headers: &[(u8, Vec<u8>)], upper: u8, payload: &[u8]) -> Vec<u8> {
    let mut chain = Vec::new();
    for (i, (_, body)) in headers.iter().enumerate() {
        let next = headers.get(i + 1).map_or(upper, |h| h.0);
        if headers[i].0 == 44 {
            chain.push(next);
            chain.push(0);
            let mut b = body.clone();
            b.resize(6, 0);
            chain.extend_from_slice(&b);
        } else {
            let len = (2 + body.len()).div_ceil(8) * 8;
            chain.push(next);
            chain.push((len / 8 - 1) as u8);
            let mut b = body.clone();
            b.resize(len - 2, 0);
            chain.extend_from_slice(&b);
        }
    }
    let first = headers.first().map_or(upper, |h| h.0);
    chain.extend_from_slice(payload);
    ipv6_with(src, dst, first, &chain)
}
