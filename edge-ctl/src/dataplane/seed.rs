//! Seeding the connection table at attach from the kernel's socket table (netlink sock_diag),
//! so connections that are open and allowed by an outbound rule keep working when the filter
//! goes on. Only the flows the outbound rules allow are seeded.

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};

use super::DataplaneError;
use super::conntrack::{FlowKey, seeded_entry};
use super::maps::MapSet;
use crate::compile::Tables;
use crate::policy::{Direction, Policy, Protocol, Role};
use crate::reference::{self, Decision, Frame, Payload};

/// A socket of this network namespace with a remote end.
struct OpenSocket {
    tcp: bool,
    local: IpAddr,
    local_port: u16,
    remote: IpAddr,
    remote_port: u16,
}

fn err(e: impl std::fmt::Display) -> DataplaneError {
    DataplaneError::Io { what: "sock_diag dump".into(), source: std::io::Error::other(e.to_string()) }
}

/// Established TCP connections and connected UDP sockets of one family.
fn dump(family: u8, protocol: u8) -> Result<Vec<OpenSocket>, DataplaneError> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(err)?;
    socket.bind_auto().map_err(err)?;
    socket.connect(&SocketAddr::new(0, 0)).map_err(err)?;
    let states = if protocol == IPPROTO_TCP { StateFlags::ESTABLISHED } else { StateFlags::all() };
    let socket_id = if family == AF_INET { SocketId::new_v4() } else { SocketId::new_v6() };
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut request = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol,
            extensions: ExtensionFlags::empty(),
            states,
            socket_id,
        })
        .into(),
    );
    request.finalize();
    let mut buf = vec![0; request.header.length as usize];
    request.serialize(&mut buf[..]);
    socket.send(&buf, 0).map_err(err)?;

    let mut out = Vec::new();
    let mut rx = vec![0u8; 65536];
    loop {
        let size = socket.recv(&mut &mut rx[..], 0).map_err(err)?;
        let mut offset = 0;
        while offset < size {
            let msg = <NetlinkMessage<SockDiagMessage>>::deserialize(&rx[offset..size]).map_err(err)?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
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
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) => return Err(err(format!("{e:?}"))),
                _ => {}
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
    }
}

/// Seeds the tables with the open connections that the role's outbound rules allow; returns
/// how many. Sets the live-entry gauges to match.
pub fn established(
    policy: &Policy,
    role: Role,
    interface: &[IpAddr],
    tables: &Tables,
    maps: &mut MapSet,
) -> Result<usize, DataplaneError> {
    let mut counts = [0u64; 2];
    for family in [AF_INET, AF_INET6] {
        for protocol in [IPPROTO_TCP, IPPROTO_UDP] {
            for s in dump(family, protocol)? {
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
                let Decision::Rule(name) = reference::decide(policy, role, interface, Direction::Outbound, &frame)
                else {
                    continue;
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
                counts[usize::from(family == AF_INET6)] += 1;
            }
        }
    }
    maps.set_ct_live(0, counts[0])?;
    maps.set_ct_live(1, counts[1])?;
    Ok((counts[0] + counts[1]) as usize)
}
