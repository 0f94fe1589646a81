//! `edge-ctl explain`: what the live filter would do with a packet, and why. The kernel's own
//! logic answers: the explain programs run the ingress or egress code on a synthetic frame with
//! BPF_PROG_TEST_RUN against the live maps, dry (no counter, connection-table or event changes).

use std::net::IpAddr;

use aya::maps::{Array, MapData};
use aya::programs::{TestRun, TestRunOptions};
use edge_common::{DropReason, Explanation, PassReason, explain, maps as names, programs};
use serde::Serialize;

use super::conntrack::{ConntrackEntry, list};
use super::events::decided_by;
use super::state::InterfaceState;
use super::{DataplaneError, maps::MapSet, object, system};
use crate::frame;
use crate::policy::{Direction, Protocol};

pub struct ExplainRequest<'a> {
    pub ifname: &'a str,
    pub protocol: Protocol,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    /// TCP flags of the probe (SYN: a new connection).
    pub tcp_flags: u8,
    /// Inferred from the interface's addresses when not given.
    pub direction: Option<Direction>,
}

#[derive(Debug, Serialize)]
pub struct RuleRef {
    pub name: String,
    pub ports: String,
    pub local: String,
    pub remote: String,
}

#[derive(Debug, Serialize)]
pub struct ExplainAnswer {
    pub interface: String,
    pub direction: Direction,
    /// "pass" or "drop".
    pub verdict: &'static str,
    /// Audit or egress monitor mode passed a packet the policy drops.
    pub would_drop: bool,
    /// In words.
    pub because: String,
    pub rule: Option<RuleRef>,
    pub reason: Option<&'static str>,
    pub flow: Option<ConntrackEntry>,
    pub generation: u32,
    pub policy_hash: String,
}

pub fn explain(req: &ExplainRequest) -> Result<ExplainAnswer, DataplaneError> {
    system::require_privileges()?;
    let ns = super::namespace()?;
    let p = ns.attached(req.ifname)?;
    if req.src.is_ipv4() != req.dst.is_ipv4() {
        return Err(DataplaneError::Explain("source and destination must be of the same address family".into()));
    }
    let st = InterfaceState::load_required(&p.state)?;
    let local = system::interface_addresses(req.ifname);
    let direction = match req.direction {
        Some(d) => d,
        None if local.contains(&req.dst) => Direction::Inbound,
        None if local.contains(&req.src) => Direction::Outbound,
        None => {
            return Err(DataplaneError::Explain(format!(
                "neither {} nor {} is an address of {}: say --direction inbound or outbound",
                req.src, req.dst, req.ifname
            )));
        }
    };
    let probe = match req.protocol {
        Protocol::Tcp => frame::tcp(req.src, req.dst, req.sport, req.dport, req.tcp_flags),
        Protocol::Udp => frame::udp(req.src, req.dst, req.sport, req.dport),
    };

    let ct_max = MapSet::open(&p.pins)?.ct_v4_max();
    let mut ebpf = object::load(&p.pins, ct_max)?;
    let name = if direction == Direction::Inbound { programs::EXPLAIN_IN } else { programs::EXPLAIN_OUT };
    let prog = object::load_xdp(&mut ebpf, name)?;
    prog.test_run(TestRunOptions { data_in: Some(&probe), repeat: 1, ..Default::default() })
        .map_err(|e| DataplaneError::Explain(format!("BPF_PROG_TEST_RUN: {e}")))?;
    let map = ebpf.map(names::EXPLAIN).ok_or_else(|| DataplaneError::Explain("explain map missing".into()))?;
    let result: Explanation = Array::<&MapData, Explanation>::try_from(map)
        .and_then(|a| a.get(&0, 0))
        .map_err(|e| DataplaneError::map(names::EXPLAIN, "read", e))?;

    let live = st.live(result.generation).cloned();
    let policy_hash = live.as_ref().map(|g| g.policy_hash.clone()).unwrap_or_default();
    let mut answer = ExplainAnswer {
        interface: req.ifname.into(),
        direction,
        verdict: if result.verdict == 1 { "pass" } else { "drop" },
        would_drop: result.by == explain::WOULD_DROP,
        because: String::new(),
        rule: None,
        reason: None,
        flow: None,
        generation: result.generation,
        policy_hash,
    };
    match result.by {
        explain::RULE => {
            let rule = live.and_then(|g| g.rules.into_iter().find(|r| r.slot as u32 == result.detail));
            answer.because = match &rule {
                Some(r) => format!(
                    "rule `{}` allows it ({} {} {}, local {}, remote {})",
                    r.name, r.direction, r.protocol, r.ports, r.local, r.remote
                ),
                None => format!("rule slot {} allows it", result.detail),
            };
            answer.rule = rule.map(|r| RuleRef { name: r.name, ports: r.ports, local: r.local, remote: r.remote });
        }
        explain::PASS_REASON => {
            let reason = PassReason::from_u32(result.detail).map_or("?", |r| r.name());
            answer.reason = Some(reason);
            answer.because = match PassReason::from_u32(result.detail) {
                Some(PassReason::Conntrack) => {
                    answer.flow = tracked_flow(req, direction)?;
                    "it belongs to a flow the edge opened (connection table)".into()
                }
                Some(PassReason::Reply) => "it answers from a port an inbound rule allows".into(),
                Some(PassReason::Unfiltered) => "egress is off for this role".into(),
                Some(PassReason::Pickup) => {
                    "it continues a connection an outbound rule allows, picked up in the window after attach on \
                     a router"
                        .into()
                }
                _ => format!("it passes as `{reason}`"),
            };
        }
        explain::DROP | explain::WOULD_DROP => {
            let reason = DropReason::from_u32(result.detail).unwrap_or(DropReason::PolicyDefault);
            answer.reason = Some(reason.name());
            answer.because = format!("{} ({})", decided_by(reason, direction as u8), reason.name());
            if answer.would_drop {
                answer.because += "; it passes because the role is in audit mode or egress monitor mode";
            }
        }
        other => {
            return Err(DataplaneError::Explain(format!("unexpected explanation kind {other}")));
        }
    }
    Ok(answer)
}

/// The connection-table entry of the probe's flow.
fn tracked_flow(req: &ExplainRequest, direction: Direction) -> Result<Option<ConntrackEntry>, DataplaneError> {
    let (local, lport, remote, rport) = match direction {
        Direction::Inbound => (req.dst, req.dport, req.src, req.sport),
        Direction::Outbound => (req.src, req.sport, req.dst, req.dport),
    };
    Ok(list(req.ifname)?.into_iter().find(|e| {
        e.flow.local == local
            && e.flow.local_port == lport
            && e.flow.remote == remote
            && e.flow.remote_port == rport
            && e.flow.protocol == req.protocol.as_str()
    }))
}
