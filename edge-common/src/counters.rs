//! Counters: the packet and byte [`Counter`] of the rule, drop and pass counter maps, and their
//! indices: why a packet was dropped ([`DropReason`], [`DropKind`]) or passed without a rule
//! ([`PassReason`]), and the connection-table events ([`CtEvent`]). The reason enums carry the
//! names every tool prints.

#[cfg(doc)]
use crate::maps;

/// Packet and byte counter (per CPU in the maps).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

macro_rules! named_enum {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $value:literal => $text:literal,)* }) => {
        $(#[$meta])*
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        $vis enum $name { $($(#[$vmeta])* $variant = $value,)* }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];
            pub const COUNT: u32 = 0 $(+ { let _ = $value; 1 })*;
            /// The name every tool prints.
            pub const fn name(self) -> &'static str {
                match self { $($name::$variant => $text,)* }
            }
            pub const fn from_u32(v: u32) -> Option<Self> {
                match v { $($value => Some($name::$variant),)* _ => None }
            }
        }
    };
}

named_enum! {
    /// Why a packet was dropped. Indexes [`maps::DROP_COUNTERS`].
    pub enum DropReason {
        /// No rule allows the packet and it belongs to no tracked flow.
        PolicyDefault = 0 => "policy-default",
        /// A header ends beyond the frame.
        Truncated = 1 => "truncated",
        /// A header field is impossible (IPv4 IHL below 5, total length beyond the frame, TCP data
        /// offset below 5, wrong IP version), or the IP length leaves no room for the layer-4
        /// header the packet claims (a TCP header past the datagram's end).
        BadHeader = 2 => "bad-header",
        /// A non-first IPv4/IPv6 fragment whose first fragment was not seen passing (or any, with
        /// `fragments = "drop"`): it carries no ports to judge.
        Fragment = 3 => "fragment",
        /// An EtherType other than IPv4, IPv6 and ARP (after up to two VLAN tags).
        EtherType = 4 => "ethertype",
        /// An IP protocol other than TCP, UDP, ICMP and ICMPv6 (after IPv6 extension headers).
        L4Protocol = 5 => "l4-protocol",
        /// An ICMP/ICMPv6 message that is not an enabled essential.
        Icmp = 6 => "icmp",
        /// ARP or neighbour discovery with the essential switched off.
        EssentialOff = 7 => "essential-off",
        /// A TCP segment without SYN (an answer, an ACK) that belongs to no tracked flow.
        NoFlow = 8 => "no-flow",
        /// Egress: no outbound rule, tracked flow or inbound-allowed reply explains the packet.
        EgressPolicy = 9 => "egress-policy",
        /// IPv6 with more than four extension headers before the upper layer.
        ExtHeaders = 10 => "ext-headers",
        /// A TCP flag combination no stack sends (SYN+FIN, SYN+RST, RST+FIN, FIN without ACK as
        /// in xmas and FIN scans, no flags at all): the combinations Linux conntrack calls
        /// invalid.
        TcpFlags = 11 => "tcp-flags",
        /// A fragment that could rewrite or hide the layer-4 header (RFC 1858, RFC 3128, RFC
        /// 7112): a first fragment too short to hold the whole TCP, UDP or ICMP header, or a TCP
        /// fragment at offset 8 bytes, which overlaps the first one's flags.
        TinyFragment = 12 => "tiny-fragment",
        /// Neighbour or multicast listener discovery that did not come from the link: a hop
        /// limit other than 255 (ND, RFC 4861) or 1 (MLD, RFC 2710/3810), or inside a fragment
        /// (RFC 6980).
        NdpOffLink = 13 => "ndp-off-link",
        /// An IPv6 extension header no host accepts: a routing header of type 0 (RFC 5095) or
        /// hop-by-hop options anywhere but first (RFC 8200).
        BadExtHeader = 14 => "bad-ext-header",
        /// A source no packet from the wire can have (`martians = "drop"`): one of the
        /// interface's own addresses or the destination itself (LAND), 0.0.0.0/8 (but DHCP's
        /// 0.0.0.0 to 255.255.255.255), 127/8, 224/4, 255.255.255.255, :: (but neighbour
        /// discovery's duplicate address detection), ::1, ff00::/8, ::ffff:0:0/96.
        Martian = 15 => "martian",
        /// An ICMP error about no traffic of this interface: its quote is not a TCP or UDP
        /// packet of the error's IP version, the error is not addressed to the quoted packet's
        /// sender, or that packet belongs to no tracked flow and no inbound rule (inbound: an
        /// answer on an allowed connection; outbound: a packet the rule let in).
        IcmpUnrelated = 16 => "icmp-unrelated",
    }
}

/// Whether a drop counter counts real drops or drops that enforcement would make (egress
/// `monitor` mode).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropKind {
    Dropped = 0,
    WouldDrop = 1,
}

/// Index into [`maps::DROP_COUNTERS`].
#[inline(always)]
pub const fn drop_index(direction: u32, kind: DropKind, reason: DropReason) -> u32 {
    ((direction * 2) + kind as u32) * DropReason::COUNT + reason as u32
}

/// Entries of [`maps::DROP_COUNTERS`].
pub const DROP_COUNTERS_LEN: u32 = 4 * DropReason::COUNT;

/// Index into [`maps::PASS_COUNTERS`].
#[inline(always)]
pub const fn pass_index(direction: u32, reason: PassReason) -> u32 {
    direction * PassReason::COUNT + reason as u32
}

/// Entries of [`maps::PASS_COUNTERS`].
pub const PASS_COUNTERS_LEN: u32 = 2 * PassReason::COUNT;

named_enum! {
    /// Why a packet passed without a rule. Indexes [`maps::PASS_COUNTERS`].
    pub enum PassReason {
        /// ARP (essential).
        Arp = 0 => "arp",
        /// IPv6 neighbour and multicast listener discovery (essential).
        Ndp = 1 => "ndp",
        /// ICMP fragmentation-needed / ICMPv6 packet-too-big (essential).
        Pmtu = 2 => "pmtu",
        /// Ingress: a packet of a tracked flow (an answer to the edge's own connection).
        Conntrack = 3 => "conntrack",
        /// Ingress: an ICMP error quoting a tracked flow.
        Related = 4 => "related",
        /// Egress: an answer from a port an inbound rule allows (a reply to an allowed client).
        Reply = 5 => "reply",
        /// Egress: an ICMP error or neighbour discovery the edge's stack sends.
        IcmpOut = 6 => "icmp-out",
        /// Egress: ARP (other link-layer traffic is judged by the egress mode: what ingress cannot
        /// judge, egress does not pass).
        NotIp = 7 => "not-ip",
        /// Egress `off`: not filtered.
        Unfiltered = 8 => "unfiltered",
        /// A later fragment passed by `fragments = "pass"` (ingress), or the host's own under
        /// `pass` or `drop` (egress). Under `track` a later fragment is counted as its first
        /// fragment was.
        Fragment = 9 => "fragment",
        /// Ingress, for a short window after attach on a forwarding interface whose flows the
        /// kernel's connection tracking could not give: a mid-stream TCP segment (ACK, no SYN
        /// or RST) of a connection an outbound rule allows a host behind to have opened. Its
        /// flow is put into the table, as Linux conntrack's loose pickup does.
        Pickup = 10 => "pickup",
    }
}

named_enum! {
    /// Connection-table events. Indexes [`maps::CT_EVENTS`].
    pub enum CtEvent {
        /// An entry was created by an outbound packet.
        Created = 0 => "created",
        /// An entry was found past its idle timeout and removed.
        Expired = 1 => "expired",
        /// An entry was created while the table was full, evicting the least recently used.
        TableFull = 2 => "table-full",
        /// A TCP RST on a tracked flow: the edge's own ends the flow, one from outside with the
        /// exact sequence number the edge last acknowledged makes it closing (see
        /// docs/design.md). (Hits, packets passed for a tracked flow, are the inbound
        /// `conntrack` pass counter.)
        Reset = 3 => "reset",
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn enums_round_trip_by_value() {
        for r in DropReason::ALL {
            assert_eq!(DropReason::from_u32(*r as u32), Some(*r));
        }
        assert_eq!(DropReason::COUNT as usize, DropReason::ALL.len());
        assert_eq!(PassReason::COUNT as usize, PassReason::ALL.len());
    }
}
