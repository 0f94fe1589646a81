//! The packet mix sent to the receiver: allowed and denied TCP SYNs and UDP datagrams, IPv4
//! and IPv6, a reply to a flow the receiver opened, and packets that only a port filter lets
//! through. Frames carry valid checksums: the receiving stack checks them (the filters do not),
//! and a bad checksum would end the stack's work early and make the baseline look cheap.

use std::net::IpAddr;

use edge_ctl::frame::{self, SYN};
use edge_ctl::profile::addr;

/// The receiver is node 1 of the template: its Access, Web Conferencing and A/V addresses.
pub const ACCESS4: &str = "203.0.113.21";
pub const WEBCONF4: &str = "203.0.113.22";
pub const AV4: &str = "203.0.113.23";
pub const ACCESS6: &str = "2001:db8:e::21";
pub const WEBCONF6: &str = "2001:db8:e::22";
pub const AV6: &str = "2001:db8:e::23";
pub const CLIENT4: &str = "192.0.2.50";
pub const CLIENT6: &str = "2001:db8:c::50";
/// The DNS server the receiver queries (the reply case answers that query).
pub const DNS4: &str = "198.51.100.53";
/// The receiver's query leaves from this port; the answer comes back to it.
pub const DNS_CLIENT_PORT: u16 = 41000;

/// Source ports cycle through this many values per case, so a stateful filter sees a bounded
/// set of flows (its table stays small and warm) rather than one flow or a flood of new ones.
pub const SOURCE_PORTS: u16 = 256;
const FIRST_SOURCE_PORT: u16 = 40000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    TcpSyn,
    Udp,
}

pub struct Case {
    pub name: &'static str,
    pub l4: L4,
    pub src: &'static str,
    pub dst: &'static str,
    /// `None`: cycles through [`SOURCE_PORTS`] ports.
    pub sport: Option<u16>,
    pub dport: u16,
    /// The matrix allows it (edge-ctl and the nftables ruleset pass it).
    pub matrix: bool,
    /// A destination-port allow-list of the inbound rows (xdp-filter) passes it.
    pub port_list: bool,
}

/// The mix, in sending order (frames interleave the cases).
pub fn cases() -> Vec<Case> {
    use L4::{TcpSyn, Udp};
    let c = |name, l4, src, dst, sport, dport, matrix, port_list| Case {
        name,
        l4,
        src,
        dst,
        sport,
        dport,
        matrix,
        port_list,
    };
    vec![
        c("sip 5061 from the access vip", TcpSyn, addr::ACCESS_VIP, ACCESS4, None, 5061, true, true),
        c("psom 443 from the webconf vip", TcpSyn, addr::WEBCONF_VIP, WEBCONF4, None, 443, true, true),
        c("stun udp 3478 from a client", Udp, CLIENT4, AV4, None, 3478, true, true),
        c("stun tcp 443 from a client", TcpSyn, CLIENT4, AV4, None, 443, true, true),
        c("ipv6 sip 5061 from the access vip", TcpSyn, addr::ACCESS_VIP6, ACCESS6, None, 5061, true, true),
        c("ipv6 stun udp 3478", Udp, CLIENT6, AV6, None, 3478, true, true),
        c("dns answer (reply to the edge)", Udp, DNS4, ACCESS4, Some(53), DNS_CLIENT_PORT, true, false),
        c("sip 5061 from a client, not the vip", TcpSyn, CLIENT4, ACCESS4, None, 5061, false, true),
        c("sip 5061 to the a/v address", TcpSyn, addr::ACCESS_VIP, AV4, None, 5061, false, true),
        c("tcp 8080", TcpSyn, CLIENT4, ACCESS4, None, 8080, false, false),
        c("udp 5000 from source port 53", Udp, CLIENT4, ACCESS4, Some(53), 5000, false, false),
        c("tcp 3389 from source port 443", TcpSyn, CLIENT4, WEBCONF4, Some(443), 3389, false, false),
        c("ipv6 udp 161", Udp, CLIENT6, WEBCONF6, None, 161, false, false),
    ]
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address literal")
}

impl Case {
    /// The `k`-th frame of this case, from `src_mac` to `dst_mac`.
    pub fn frame(&self, k: u16, dst_mac: [u8; 6], src_mac: [u8; 6]) -> Vec<u8> {
        let sport = self.sport.unwrap_or(FIRST_SOURCE_PORT + k % SOURCE_PORTS);
        let (src, dst) = (ip(self.src), ip(self.dst));
        let f = match self.l4 {
            L4::TcpSyn => frame::tcp(src, dst, sport, self.dport, SYN),
            L4::Udp => frame::udp(src, dst, sport, self.dport),
        };
        let mut f = frame::pad(frame::with_macs(f, dst_mac, src_mac));
        fill_checksums(&mut f);
        f
    }
}

/// The frames of one pass through the mix: every case with each of its source ports, cases
/// interleaved.
pub fn frames(cases: &[Case], dst_mac: [u8; 6], src_mac: [u8; 6]) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(cases.len() * SOURCE_PORTS as usize);
    for k in 0..SOURCE_PORTS {
        for c in cases {
            out.push(c.frame(k, dst_mac, src_mac));
        }
    }
    out
}

fn sum16(data: &[u8], mut acc: u32) -> u32 {
    for pair in data.chunks(2) {
        acc += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// Fills in the IPv4 header checksum and the TCP or UDP checksum (with the pseudo-header) of
/// an untagged Ethernet frame from [`edge_ctl::frame`].
pub fn fill_checksums(f: &mut [u8]) {
    let ethertype = u16::from_be_bytes([f[12], f[13]]);
    let (l4_at, l4_len, proto, pseudo) = match ethertype {
        frame::ETH_IPV4 => {
            let ihl = usize::from(f[14] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
            f[24..26].fill(0);
            let c = fold(sum16(&f[14..14 + ihl], 0));
            f[24..26].copy_from_slice(&c.to_be_bytes());
            let l4_len = total - ihl;
            let mut pseudo = sum16(&f[26..34], 0);
            pseudo += u32::from(f[23]) + l4_len as u32;
            (14 + ihl, l4_len, f[23], pseudo)
        }
        frame::ETH_IPV6 => {
            let l4_len = usize::from(u16::from_be_bytes([f[18], f[19]]));
            let mut pseudo = sum16(&f[22..54], 0);
            pseudo += u32::from(f[20]) + l4_len as u32;
            (54, l4_len, f[20], pseudo)
        }
        _ => return,
    };
    let at = match proto {
        frame::TCP => 16,
        frame::UDP => 6,
        _ => return,
    };
    let seg = l4_at..l4_at + l4_len;
    f[seg.start + at..seg.start + at + 2].fill(0);
    let mut c = fold(sum16(&f[seg.clone()], pseudo));
    if proto == frame::UDP && c == 0 {
        c = 0xffff;
    }
    f[seg.start + at..seg.start + at + 2].copy_from_slice(&c.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    const MACS: ([u8; 6], [u8; 6]) = ([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1]);

    /// A correct checksum makes the one's-complement sum over the covered bytes 0xffff.
    fn verifies(f: &[u8]) {
        if u16::from_be_bytes([f[12], f[13]]) == frame::ETH_IPV4 {
            assert_eq!(fold(sum16(&f[14..34], 0)), 0, "ipv4 header");
            let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
            let pseudo = sum16(&f[26..34], 0) + u32::from(f[23]) + (total - 20) as u32;
            assert_eq!(fold(sum16(&f[34..14 + total], pseudo)), 0, "l4 over ipv4");
        } else {
            let len = usize::from(u16::from_be_bytes([f[18], f[19]]));
            let pseudo = sum16(&f[22..54], 0) + u32::from(f[20]) + len as u32;
            assert_eq!(fold(sum16(&f[54..54 + len], pseudo)), 0, "l4 over ipv6");
        }
    }

    #[test]
    fn every_frame_has_valid_checksums() {
        let frames = frames(&cases(), MACS.0, MACS.1);
        assert_eq!(frames.len(), cases().len() * SOURCE_PORTS as usize);
        for f in &frames {
            assert!(f.len() >= 60);
            verifies(f);
        }
    }

    #[test]
    fn known_ipv4_header_checksum() {
        // Checked by hand: 0x4500 + 0x001c + 0x4000 + 0x4011 + 0xc0a8 + 0x0001 + 0xc0a8 + 0x00c7.
        let mut f = vec![0u8; 14];
        f[12..14].copy_from_slice(&frame::ETH_IPV4.to_be_bytes());
        f.extend_from_slice(&[
            0x45, 0x00, 0x00, 0x1c, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0, 0, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00,
            0xc7,
        ]);
        f.extend_from_slice(&[0, 1, 0, 2, 0, 8, 0, 0]);
        fill_checksums(&mut f);
        assert_eq!(&f[24..26], &[0xb8, 0xb8]);
        verifies(&f);
    }
}
