//! The policy's meaning, written once as plain code: policy + packet -> decision.
//!
//! This is the oracle the kernel program is tested against (unit tests of the compiled tables,
//! BPF_PROG_TEST_RUN packet tests). It follows the policy model directly and shares nothing with
//! the table compiler but the address resolution.

use std::net::IpAddr;

use edge_common::{DropReason, PassReason};

use crate::compile::resolve;
use crate::policy::{AddrMatch, Direction, Policy, Protocol, Role};

/// What a packet carries, as far as the policy is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload {
    Ports {
        protocol: Protocol,
        sport: u16,
        dport: u16,
    },
    Icmp {
        v6: bool,
        kind: u8,
        code: u8,
    },
    /// Another IP protocol number.
    OtherIp(u8),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    Arp,
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
    /// Passed as an essential.
    Essential(PassReason),
    Drop(DropReason),
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

/// Judges a frame arriving on (inbound) or leaving (outbound) an interface of `role`.
pub fn decide(
    policy: &Policy,
    role: Role,
    interface: &[IpAddr],
    direction: Direction,
    frame: &Frame,
) -> Decision {
    let essentials = policy.role(role).essentials;
    let essential = |on: bool, reason| {
        if on {
            Decision::Essential(reason)
        } else {
            Decision::Drop(DropReason::EssentialOff)
        }
    };
    let (src, dst, payload) = match *frame {
        Frame::Arp => return essential(essentials.arp, PassReason::Arp),
        Frame::Ip { src, dst, payload } => (src, dst, payload),
    };
    match payload {
        Payload::OtherIp(_) => Decision::Drop(DropReason::L4Protocol),
        Payload::Icmp { v6, kind, code } => match (v6, kind, code) {
            (false, 3, 4) | (true, 2, _) => essential(essentials.pmtu, PassReason::Pmtu),
            (true, 133..=137, _) => essential(essentials.ndp, PassReason::Ndp),
            _ => Decision::Drop(DropReason::Icmp),
        },
        Payload::Ports {
            protocol, dport, ..
        } => {
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
                .map_or(Decision::Drop(DropReason::PolicyDefault), |r| {
                    Decision::Rule(r.name.clone())
                })
        }
    }
}
