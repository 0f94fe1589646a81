//! The pipeline the fuzz target (fuzz/fuzz_targets/policy.rs) drives, shared with the unit test
//! below so the suite exercises it on every run: text -> parse -> validate -> compile (both
//! roles) -> analysis -> show -> the reference model on a few frames. Nothing may panic.

use std::net::IpAddr;

use crate::policy::{self, Direction, Role};

/// Runs every stage that takes operator input on `data`.
pub fn policy_pipeline(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(p) = policy::parse(text, "fuzz.toml") else { return };
    let iface: [IpAddr; 2] = ["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()];
    for role in Role::ALL {
        let _ = crate::compile::compile(&p, role, &iface, &Default::default());
        for (dir, bytes) in [
            (
                Direction::Inbound,
                crate::frame::tcp(iface[0], "192.0.2.9".parse().unwrap(), 40000, 443, crate::frame::SYN),
            ),
            (Direction::Outbound, crate::frame::udp(iface[1], "2001:db8::9".parse().unwrap(), 40000, 53)),
        ] {
            let _ = crate::reference::decide_bytes(&p, role, &iface, dir, &bytes);
        }
    }
    let _ = crate::analysis::findings(&p);
    let _ = crate::show::render(&p, None);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mutations of the Lync template (the richest valid policy) and of short snippets: cut,
    /// spliced, bytes changed. A quick, deterministic stand-in for `cargo xtask fuzz`.
    #[test]
    fn mutated_policies_never_panic() {
        let template = crate::profile::render(&Default::default());
        let seeds = [
            template.as_str(),
            "[[rule]]\nname='a'\nrole='external'\ndirection='inbound'\nprotocol='tcp'\nports=[1,'2-3']\nremote=['192.0.2.0/24','s']\n",
            "[sets]\na=['@interface','2001:db8::/200','1.2.3.4/0']\n[failsafe]\nssh_from=['x']\n[conntrack]\nudp=99999999999\n",
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for i in 0..3000 {
            let mut bytes = seeds[i % seeds.len()].as_bytes().to_vec();
            for _ in 0..(next() % 8) {
                let at = (next() as usize) % bytes.len().max(1);
                match next() % 4 {
                    0 => bytes.truncate(at),
                    1 => bytes.insert(at, b"[]='\"\n=-,.0123456789/:"[(next() % 21) as usize]),
                    2 if !bytes.is_empty() => {
                        let last = bytes.len() - 1;
                        bytes[at.min(last)] = next() as u8;
                    }
                    _ => {
                        let len = bytes.len();
                        let (a, b) = ((next() as usize) % len.max(1), (next() as usize) % len.max(1));
                        let piece = bytes[a.min(b)..a.max(b)].to_vec();
                        bytes.splice(at.min(bytes.len())..at.min(bytes.len()), piece);
                    }
                }
            }
            policy_pipeline(&bytes);
        }
    }
}
