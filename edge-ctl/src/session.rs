//! Guards for the admin at the keyboard: a policy must not cut the SSH session edge-ctl runs in,
//! and a role without rules is said loudly. Used by `attach`, `reload` and `serve` alike.

use std::net::IpAddr;

use crate::policy::{self, Policy, Role};
use crate::reference::{Frame, Payload, TCP_SYN, decide};

/// When edge-ctl runs over SSH and the session arrives on this interface, whether the policy
/// would cut it ($SSH_CONNECTION: "client_ip client_port server_ip server_port"). `addrs` are
/// the interface's addresses.
pub fn ssh_session_cut(policy: &Policy, role: Role, interface: &str, addrs: &[IpAddr]) -> Option<String> {
    let conn = std::env::var("SSH_CONNECTION").ok()?;
    let f: Vec<&str> = conn.split_whitespace().collect();
    let [client, client_port, server, server_port] = f[..] else {
        return None;
    };
    let (client, server): (IpAddr, IpAddr) = (client.parse().ok()?, server.parse().ok()?);
    if !addrs.contains(&server) {
        return None;
    }
    let frame = Frame::Ip {
        src: client,
        dst: server,
        payload: Payload::Ports {
            protocol: policy::Protocol::Tcp,
            sport: client_port.parse().ok()?,
            dport: server_port.parse().ok()?,
            tcp_flags: TCP_SYN,
        },
    };
    let decision = decide(policy, role, addrs, policy::Direction::Inbound, &frame);
    (!decision.passes()).then(|| {
        format!(
            "your SSH session ({client} -> {server}:{server_port}) arrives on {interface} and the {role} rules \
             of this policy drop it"
        )
    })
}

/// A warning when the role has no enabled rule: the interface then passes only what no policy
/// can take away (the essentials, answers to the host's own flows), which is rarely meant.
pub fn empty_role_warning(policy: &Policy, role: Role, interface: &str) -> Option<String> {
    if policy.rules_of(role).next().is_some() {
        return None;
    }
    let outbound = match policy.role(role).egress {
        policy::EgressMode::Enforce => "and every packet it sends but ARP, ICMP errors and neighbour discovery",
        _ => "while what it sends passes (egress is not enforced)",
    };
    let audit =
        if policy.role(role).mode == policy::RoleMode::Audit { " (audit mode: counted, not dropped)" } else { "" };
    Some(format!(
        "the {role} role of {} has NO enabled rules: {interface} will drop every packet it receives but \
         ARP, neighbour discovery and path-MTU messages, {outbound}{audit}; add rules for the {role} role, \
         or check that --role is right",
        policy.origin
    ))
}
