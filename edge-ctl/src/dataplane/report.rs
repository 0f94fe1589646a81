//! What `status` and `stats` report about attached interfaces.

use aya::programs::links::{FdLink, PinnedLink};
use edge_common::{CtEvent, DropKind, DropReason, PassReason};
use serde::Serialize;

use super::maps::MapSet;
use super::paths::{InterfacePaths, XDP_LINK};
use super::state::InterfaceState;
use super::{DataplaneError, system};
use crate::compile::CompiledRule;
use crate::policy::{Direction, Role};

/// One attached interface as `status` shows it.
#[derive(Debug, Serialize)]
pub struct InterfaceStatus {
    pub interface: String,
    pub role: Option<Role>,
    pub mode: Option<String>,
    /// How the egress program is attached: "tcx" or "clsact".
    pub egress: Option<&'static str>,
    pub program_id: Option<u32>,
    pub link_id: Option<u32>,
    pub generation: Option<u32>,
    pub policy_origin: Option<String>,
    pub policy_hash: Option<String>,
    /// The interface's addresses when the live policy was compiled (`@interface` and the
    /// martian check's own addresses stand for them).
    pub interface_addresses: Vec<std::net::IpAddr>,
    pub rules: usize,
    pub attached_at: Option<u64>,
    /// When the live policy was loaded (attach or reload), Unix seconds.
    pub policy_loaded_at: Option<u64>,
    pub interface_present: bool,
    /// The interface was deleted and created again: the attachment went with the old device,
    /// and the new one is not filtered (`attach` replaces what is left).
    pub stale: bool,
    /// The families the kernel forwards from this interface: it filters a router's traffic.
    pub forwarding: system::Forwarding,
    /// What is wrong, when something is.
    pub problem: Option<String>,
}

/// The attached interfaces of this network namespace.
pub fn status() -> Result<Vec<InterfaceStatus>, DataplaneError> {
    system::require_privileges()?;
    let ns = super::namespace()?;
    super::sweep_interrupted(&ns);
    let mut out = Vec::new();
    for name in ns.attached_names() {
        out.push(interface_status(&ns.interface(&name)));
    }
    Ok(out)
}

/// Why an attachment no longer filters its interface, which now has index `ifindex`: the
/// interface was deleted and created again, and the pinned XDP link went with the old device.
/// The link itself tells (its fdinfo reports index 0 once its device is gone), even when the
/// new device got the old index, or a new namespace the inode of a deleted one (which keys the
/// pin directory). `None` while the attachment is live. For `status` and for `attach`, which
/// replaces such an attachment.
pub(super) fn replaced_device(p: &InterfacePaths, st: &InterfaceState, ifindex: u32) -> Option<String> {
    if st.ifindex != ifindex {
        return Some(format!("the interface was deleted and created again (index {} is now {ifindex})", st.ifindex));
    }
    (system::xdp_link_ifindex(&p.pins.join(XDP_LINK)) != Some(ifindex))
        .then(|| format!("the interface was deleted and created again (with the same index {ifindex})"))
}

fn interface_status(p: &InterfacePaths) -> InterfaceStatus {
    let ifindex = system::if_index(&p.ifname).ok();
    let state = InterfaceState::load(&p.state);
    let mut s = InterfaceStatus {
        interface: p.ifname.clone(),
        role: None,
        mode: None,
        egress: None,
        program_id: None,
        link_id: None,
        generation: None,
        policy_origin: None,
        policy_hash: None,
        interface_addresses: Vec::new(),
        rules: 0,
        attached_at: None,
        policy_loaded_at: None,
        interface_present: ifindex.is_some(),
        stale: false,
        forwarding: system::forwarding(&p.ifname),
        problem: None,
    };
    match PinnedLink::from_pin(p.pins.join(XDP_LINK)) {
        Ok(link) => {
            if let Ok(info) = FdLink::from(link).info() {
                s.program_id = Some(info.program_id());
                s.link_id = Some(info.id());
            }
        }
        Err(_) => s.problem = Some("no pinned XDP link: run `edge-ctl detach` to clean up".into()),
    }
    let generation = MapSet::open(&p.pins).and_then(|m| m.active_generation());
    match (&state, generation) {
        (Ok(Some(st)), Ok(g)) => {
            if super::needs_upgrade(st) {
                s.problem = Some(format!(
                    "the live programs come from another edge-ctl build: run `edge-ctl upgrade {}`",
                    p.ifname
                ));
            }
            s.role = Some(st.role);
            s.mode = Some(st.mode.clone());
            s.egress = Some(st.egress.kind());
            s.attached_at = Some(st.attached_at);
            s.generation = Some(g);
            if let Some(live) = st.live(g) {
                s.policy_origin = Some(live.policy_origin.clone());
                s.policy_hash = Some(live.policy_hash.clone());
                s.interface_addresses = live.interface_addresses.clone();
                s.rules = live.rules.len();
                s.policy_loaded_at = Some(live.loaded_at);
            }
        }
        (Ok(None), _) => s.problem = Some("state file missing: run `edge-ctl detach` and attach again".into()),
        (Err(e), _) => s.problem = Some(e.to_string()),
        (_, Err(e)) => s.problem = Some(e.to_string()),
    }
    if !s.interface_present && s.problem.is_none() {
        s.problem =
            Some("the interface no longer exists; the filter went with it (`edge-ctl detach` cleans up)".into());
    }
    if let (Some(now), Ok(Some(st))) = (ifindex, &state)
        && p.pins.join(XDP_LINK).exists()
        && let Some(why) = replaced_device(p, st, now)
    {
        s.stale = true;
        s.problem = Some(format!("{why}: it is not filtered; run `edge-ctl attach` again"));
    }
    s
}

#[derive(Debug, Serialize)]
pub struct RuleStats {
    pub name: String,
    pub direction: crate::policy::Direction,
    pub protocol: crate::policy::Protocol,
    pub ports: String,
    pub local: String,
    pub remote: String,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct ReasonStats {
    pub direction: Direction,
    pub reason: &'static str,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct ConntrackStats {
    /// Live entries per family, as the kernel counts them (created minus removed).
    pub entries_v4: u64,
    pub entries_v6: u64,
    /// Size of each table.
    pub max_entries: u32,
    pub hits: u64,
    pub created: u64,
    pub expired: u64,
    /// Entries created while the table was full (each evicted the least recently used entry).
    pub table_full: u64,
    /// TCP RSTs on tracked flows (the edge's own end the flow; a peer's makes it closing).
    pub reset: u64,
}

#[derive(Debug, Serialize)]
pub struct InterfaceStats {
    pub interface: String,
    pub role: Role,
    pub generation: u32,
    pub policy_hash: String,
    pub rules: Vec<RuleStats>,
    /// Packets dropped, by direction and reason.
    pub drops: Vec<ReasonStats>,
    /// Packets egress `monitor` mode would have dropped (they passed).
    pub would_drop: Vec<ReasonStats>,
    /// Packets passed without a rule (essentials, tracked flows, replies), by reason.
    pub passes: Vec<ReasonStats>,
    pub conntrack: ConntrackStats,
    /// "enforce" or "audit" (audit: drops are reported as would-be drops and pass).
    pub mode: &'static str,
    /// Drop events reported to `tail`, and suppressed by the rate limit.
    pub events: EventStats,
}

#[derive(Debug, Default, Serialize)]
pub struct EventStats {
    pub reported: u64,
    pub suppressed: u64,
}

/// Counters of one interface, or of all attached interfaces of this namespace.
pub fn stats(ifname: Option<&str>) -> Result<Vec<InterfaceStats>, DataplaneError> {
    system::require_privileges()?;
    let ns = super::namespace()?;
    let names = match ifname {
        Some(n) => vec![ns.attached(n)?.ifname],
        None => ns.attached_names(),
    };
    names.iter().map(|n| interface_stats(&ns.interface(n))).collect()
}

fn interface_stats(p: &InterfacePaths) -> Result<InterfaceStats, DataplaneError> {
    let maps = MapSet::open(&p.pins)?;
    let st = InterfaceState::load_required(&p.state)?;
    let generation = maps.active_generation()?;
    let live = st.live_required(generation, &p.state)?;
    let rule = |r: &CompiledRule| -> Result<RuleStats, DataplaneError> {
        let c = maps.rule_counter(r.slot)?;
        Ok(RuleStats {
            name: r.name.clone(),
            direction: r.direction,
            protocol: r.protocol,
            ports: r.ports.clone(),
            local: r.local.clone(),
            remote: r.remote.clone(),
            packets: c.packets,
            bytes: c.bytes,
        })
    };
    let drops = |kind: DropKind| -> Result<Vec<ReasonStats>, DataplaneError> {
        let mut out = Vec::new();
        for direction in Direction::ALL {
            for r in DropReason::ALL {
                let c = maps.drop_counter(direction as u32, kind, *r)?;
                out.push(ReasonStats { direction, reason: r.name(), packets: c.packets, bytes: c.bytes });
            }
        }
        Ok(out)
    };
    let mut passes = Vec::new();
    for direction in Direction::ALL {
        for r in PassReason::ALL {
            let c = maps.pass_counter(direction as u32, *r)?;
            passes.push(ReasonStats { direction, reason: r.name(), packets: c.packets, bytes: c.bytes });
        }
    }
    let [entries_v4, entries_v6] = maps.ct_live()?;
    let conntrack = ConntrackStats {
        entries_v4,
        entries_v6,
        max_entries: maps.ct_v4_max(),
        hits: maps.pass_counter(Direction::Inbound as u32, PassReason::Conntrack)?.packets,
        created: maps.ct_event(CtEvent::Created)?,
        expired: maps.ct_event(CtEvent::Expired)?,
        table_full: maps.ct_event(CtEvent::TableFull)?,
        reset: maps.ct_event(CtEvent::Reset)?,
    };
    Ok(InterfaceStats {
        interface: p.ifname.clone(),
        role: st.role,
        generation,
        policy_hash: live.policy_hash.clone(),
        rules: live.rules.iter().map(rule).collect::<Result<_, _>>()?,
        drops: drops(DropKind::Dropped)?,
        would_drop: drops(DropKind::WouldDrop)?,
        passes,
        conntrack,
        mode: if live.audit { "audit" } else { "enforce" },
        events: {
            let (reported, suppressed) = maps.event_totals()?;
            EventStats { reported, suppressed }
        },
    })
}
