//! Seeding the connection table at attach, so connections that are open and allowed by an
//! outbound rule keep working when the filter goes on: the host's own from its socket table
//! (netlink sock_diag), and on a router the ones it forwards for the hosts behind it from the
//! kernel's connection tracking (ctnetlink), when nf_conntrack is loaded. Only the flows the
//! outbound rules allow are seeded.

use std::net::IpAddr;

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkDeserializable, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    NetlinkSerializable,
};
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoInfo, ProtoInfoTCP, ProtoTuple, Protocol as CtProtocol, Tuple,
};
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER, protocols::NETLINK_SOCK_DIAG};

use super::DataplaneError;
use super::conntrack::{FlowKey, seeded_entry};
use super::maps::MapSet;
use crate::compile::Tables;
use crate::policy::{Direction, Policy, Protocol, Role};
use crate::reference::{self, Decision, Frame, Payload};

/// A socket of this network namespace with a remote end, or a forwarded connection as it
/// leaves this host (`local` is the host behind, after any address translation here).
struct OpenSocket {
    tcp: bool,
    local: IpAddr,
    local_port: u16,
    remote: IpAddr,
    remote_port: u16,
}

fn err(what: &str, e: impl std::fmt::Display) -> DataplaneError {
    DataplaneError::Io { what: what.into(), source: std::io::Error::other(e.to_string()) }
}

/// Sends one dump request on a netlink socket of `protocol` and returns the messages of the
/// answer, up to its end (`what` names it in errors).
fn netlink_dump<T>(protocol: isize, what: &str, request: NetlinkPayload<T>) -> Result<Vec<T>, DataplaneError>
where
    T: NetlinkSerializable + NetlinkDeserializable + std::fmt::Debug,
{
    let mut socket = Socket::new(protocol).map_err(|e| err(what, e))?;
    socket.bind_auto().map_err(|e| err(what, e))?;
    socket.connect(&SocketAddr::new(0, 0)).map_err(|e| err(what, e))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut request = NetlinkMessage::new(header, request);
    request.finalize();
    let mut buf = vec![0; request.header.length as usize];
    request.serialize(&mut buf[..]);
    socket.send(&buf, 0).map_err(|e| err(what, e))?;

    let mut out = Vec::new();
    let mut rx = vec![0u8; 65536];
    loop {
        let size = socket.recv(&mut &mut rx[..], 0).map_err(|e| err(what, e))?;
        let mut offset = 0;
        while offset < size {
            let msg = <NetlinkMessage<T>>::deserialize(&rx[offset..size]).map_err(|e| err(what, e))?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::InnerMessage(m) => out.push(m),
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) => return Err(err(what, format!("{e:?}"))),
                _ => {}
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
    }
}

/// Established TCP connections and connected UDP sockets of one family.
fn dump(family: u8, protocol: u8) -> Result<Vec<OpenSocket>, DataplaneError> {
    let states = if protocol == IPPROTO_TCP { StateFlags::ESTABLISHED } else { StateFlags::all() };
    let socket_id = if family == AF_INET { SocketId::new_v4() } else { SocketId::new_v6() };
    let request = SockDiagMessage::InetRequest(InetRequest {
        family,
        protocol,
        extensions: ExtensionFlags::empty(),
        states,
        socket_id,
    });
    let mut out = Vec::new();
    for msg in netlink_dump(NETLINK_SOCK_DIAG, "sock_diag dump", request.into())? {
        if let SockDiagMessage::InetResponse(r) = msg {
            let id = &r.header.socket_id;
            if id.destination_port != 0 && !id.destination_address.is_unspecified() {
                out.push(OpenSocket {
                    tcp: protocol == IPPROTO_TCP,
                    local: id.source_address,
                    local_port: id.source_port,
                    remote: id.destination_address,
                    remote_port: id.destination_port,
                });
            }
        }
    }
    Ok(out)
}

/// What the connection tracking of a forwarding interface gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Forwarded {
    /// The interface does not forward: the host's own sockets are all there is.
    NotForwarding,
    /// The kernel's connection tracking tracks nothing in this namespace (nf_conntrack is not
    /// loaded, or nothing here uses it): attach picks flows up instead ([`PICKUP_SECONDS`]).
    NotTracked,
    /// Read: this many connections the hosts behind opened were seeded.
    Seeded(usize),
    /// The dump failed (the message); the host's own sockets were still seeded.
    Failed(String),
}

/// How long after attach a forwarding interface picks up inbound mid-stream TCP of connections
/// its outbound rules allow, when the kernel's connection tracking could not give them.
pub const PICKUP_SECONDS: u64 = 60;

/// What seeding put into the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seeded {
    /// The host's own open connections.
    pub sockets: usize,
    pub forwarded: Forwarded,
}

/// Whether the kernel's connection tracking tracks anything in this network namespace:
/// nf_conntrack is loaded (its sysctls exist then; reading the table through ctnetlink would
/// load it otherwise, which seeding must not do) and holds entries here (it tracks a namespace
/// only once something there uses it: an nftables or iptables rule with `ct`, NAT).
pub fn conntrack_tracking() -> bool {
    std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count")
        .ok()
        .and_then(|c| c.trim().parse::<u64>().ok())
        .is_some_and(|n| n > 0)
}

/// TCP connections the kernel's connection tracking holds as established, and UDP flows, of one
/// family, as their packets leave this host toward the connection's responder: the reply
/// tuple reversed, so that address translation on this host is accounted for.
fn conntrack_dump(family: NetfilterProtoFamily) -> Result<Vec<OpenSocket>, DataplaneError> {
    const TCP_CONNTRACK_ESTABLISHED: u8 = 3;
    let request = NetfilterMessage::new(NetfilterHeader::new(family, 0, 0), ConntrackMessage::Get(vec![]));
    let mut out = Vec::new();
    for msg in netlink_dump(NETLINK_NETFILTER, "ctnetlink dump", NetlinkPayload::from(request))? {
        let NetfilterMessageInner::Conntrack(ConntrackMessage::New(attributes)) = msg.inner else { continue };
        let mut reply = None;
        let mut tcp_state = None;
        for a in &attributes {
            match a {
                ConntrackAttribute::CtaTupleReply(t) => reply = tuple(t),
                ConntrackAttribute::CtaProtoInfo(info) => {
                    for i in info {
                        if let ProtoInfo::TCP(tcp) = i {
                            for t in tcp {
                                if let ProtoInfoTCP::State(s) = t {
                                    tcp_state = Some(*s);
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some((tcp, src, sport, dst, dport)) = reply
            && (!tcp || tcp_state == Some(TCP_CONNTRACK_ESTABLISHED))
        {
            // The reply comes from the responder to the originator as this host rewrote it:
            // the originator's packets leave with the reverse.
            out.push(OpenSocket { tcp, local: dst, local_port: dport, remote: src, remote_port: sport });
        }
    }
    Ok(out)
}

/// A conntrack tuple of TCP or UDP: (tcp, source, source port, destination, destination port).
fn tuple(t: &[Tuple]) -> Option<(bool, IpAddr, u16, IpAddr, u16)> {
    let (mut src, mut dst, mut proto, mut sport, mut dport) = (None, None, None, None, None);
    for part in t {
        match part {
            Tuple::Ip(ips) => {
                for ip in ips {
                    match ip {
                        IPTuple::SourceAddress(a) => src = Some(*a),
                        IPTuple::DestinationAddress(a) => dst = Some(*a),
                        _ => {}
                    }
                }
            }
            Tuple::Proto(ps) => {
                for p in ps {
                    match p {
                        ProtoTuple::Protocol(CtProtocol::Tcp) => proto = Some(true),
                        ProtoTuple::Protocol(CtProtocol::Udp) => proto = Some(false),
                        ProtoTuple::SourcePort(p) => sport = Some(*p),
                        ProtoTuple::DestinationPort(p) => dport = Some(*p),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some((proto?, src?, sport?, dst?, dport?))
}

/// Seeds the tables with the open connections that the role's outbound rules allow: the host's
/// own, and when the interface forwards (`forwarding`), those the kernel's connection tracking
/// holds for the hosts behind. Sets the live-entry gauges to match.
pub fn established(
    policy: &Policy,
    role: Role,
    interface: &[IpAddr],
    tables: &Tables,
    maps: &mut MapSet,
    forwarding: bool,
) -> Result<Seeded, DataplaneError> {
    let mut counts = [0u64; 2];
    let mut seed = |s: &OpenSocket, maps: &mut MapSet| -> Result<bool, DataplaneError> {
        let frame = Frame::Ip {
            src: s.local,
            dst: s.remote,
            payload: Payload::Ports {
                protocol: if s.tcp { Protocol::Tcp } else { Protocol::Udp },
                sport: s.local_port,
                dport: s.remote_port,
                tcp_flags: crate::reference::TCP_ACK,
            },
        };
        let Decision::Rule(name) = reference::decide(policy, role, interface, Direction::Outbound, &frame) else {
            return Ok(false);
        };
        let slot = tables.slots.0[&name];
        let flow = FlowKey {
            protocol: if s.tcp { "tcp" } else { "udp" },
            local: s.local,
            local_port: s.local_port,
            remote: s.remote,
            remote_port: s.remote_port,
        };
        maps.ct_insert(&flow, seeded_entry(s.tcp, slot))?;
        counts[usize::from(s.local.is_ipv6())] += 1;
        Ok(true)
    };
    let mut sockets = 0;
    for family in [AF_INET, AF_INET6] {
        for protocol in [IPPROTO_TCP, IPPROTO_UDP] {
            for s in dump(family, protocol)? {
                sockets += usize::from(seed(&s, maps)?);
            }
        }
    }
    let forwarded = if !forwarding {
        Forwarded::NotForwarding
    } else if !conntrack_tracking() {
        Forwarded::NotTracked
    } else {
        let mut n = 0;
        let mut failed = None;
        for family in [NetfilterProtoFamily::IPv4, NetfilterProtoFamily::IPv6] {
            match conntrack_dump(family) {
                Ok(flows) => {
                    for s in &flows {
                        n += usize::from(seed(s, maps)?);
                    }
                }
                Err(e) => failed = Some(e.to_string()),
            }
        }
        failed.map_or(Forwarded::Seeded(n), Forwarded::Failed)
    };
    maps.set_ct_live(0, counts[0])?;
    maps.set_ct_live(1, counts[1])?;
    Ok(Seeded { sockets, forwarded })
}
