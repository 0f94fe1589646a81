//! Hot swap: a new policy replaces the live one without a packet judged by a mix of the two,
//! and a new build's programs replace the live ones on their links.
//!
//! A reload fills the generation that is not live, records it in the state file, then flips
//! the live-generation word of the packet tables. Packets read the generation once, so each is
//! judged wholly by the old or wholly by the new policy. A reload killed before the flip leaves
//! the old policy in force (the half-written generation is never read); killed after it, the
//! new one. Nothing is created or pinned, so nothing can leak.

use std::collections::{HashMap, HashSet};
use std::os::fd::AsRawFd;
use std::path::Path;

use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::tc::{SchedClassifierLink, TcHandle};
use aya::programs::{SchedClassifier, TcAttachType, Xdp};
use edge_common::programs;
use serde::Serialize;

use super::egress::EgressAttachment;
use super::maps::MapSet;
use super::paths::{TC_LINK, XDP_LINK};
use super::state::InterfaceState;
use super::{DataplaneError, object, prepare, step};
use crate::compile::{self, CompiledRule};
use crate::policy::Policy;

#[derive(Debug, Serialize)]
pub struct RemovedRule {
    pub name: String,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct ReloadReport {
    pub interface: String,
    /// The generation now live.
    pub generation: u32,
    pub policy_hash: String,
    /// The interface's addresses the policy was compiled for.
    pub interface_addresses: Vec<std::net::IpAddr>,
    pub added: Vec<String>,
    /// Removed rules with their final counts.
    pub removed: Vec<RemovedRule>,
    pub changed: Vec<String>,
    pub unchanged: usize,
    /// Settings the reload could not apply (they need a new attach).
    pub notes: Vec<String>,
}

pub fn reload(ifname: &str, policy: &Policy) -> Result<ReloadReport, DataplaneError> {
    let (ns, locked) = prepare(ifname)?;
    let p = &locked.paths;
    ns.attached(ifname)?;
    let mut st = InterfaceState::load_required(&p.state)?;
    let mut maps = MapSet::open(&p.pins)?;
    let live_gen = maps.active_generation()?;
    let next_gen = live_gen ^ 1;
    let live = st.live_required(live_gen, &p.state)?.clone();

    // Compile first: a bad policy changes nothing.
    let addrs = super::system::interface_addresses(ifname);
    let tables = compile::compile(policy, st.role, &addrs, &live.slots)?;
    let mut notes = Vec::new();
    if tables.ct_max != maps.ct_v4_max() {
        notes.push(format!(
            "conntrack.max_entries {} takes effect at the next attach (the live tables hold {})",
            tables.ct_max,
            maps.ct_v4_max()
        ));
    }
    step();

    // Packets that read the previous generation before the last flip may still be running:
    // wait for them before overwriting it.
    wait_for_running_programs()?;
    step();
    let kept: HashSet<u16> = live.slots.slots();
    for slot in tables.slots.slots().difference(&kept) {
        maps.reset_rule_counter(*slot)?;
    }
    maps.write_generation(next_gen, &tables)?;
    step();

    let new_gen = super::attach::generation_state(policy, &addrs, &tables);
    st.generations[next_gen as usize] = Some(new_gen);
    st.save(&p.state)?;
    step();

    // Read before the switch: once it is made, the reload must not report a failure.
    let (added, removed, changed, unchanged) = diff(&live.rules, &tables.rules);
    let removed = removed
        .into_iter()
        .map(|r| {
            maps.rule_counter(r.slot).map(|c| RemovedRule { name: r.name.clone(), packets: c.packets, bytes: c.bytes })
        })
        .collect::<Result<_, _>>()?;

    // The switch: one aligned store.
    maps.set_active_generation(next_gen)?;
    step();

    Ok(ReloadReport {
        interface: ifname.into(),
        generation: next_gen,
        policy_hash: policy.hash(),
        interface_addresses: addrs,
        added,
        removed,
        changed,
        unchanged,
        notes,
    })
}

type Diff<'a> = (Vec<String>, Vec<&'a CompiledRule>, Vec<String>, usize);

/// Added, removed, changed (same name, different match) and unchanged rules.
fn diff<'a>(old: &'a [CompiledRule], new: &[CompiledRule]) -> Diff<'a> {
    let same = |a: &CompiledRule, b: &CompiledRule| {
        (a.direction, a.protocol, &a.ports, &a.local, &a.remote)
            == (b.direction, b.protocol, &b.ports, &b.local, &b.remote)
    };
    let old_by_name: HashMap<&str, &CompiledRule> = old.iter().map(|r| (r.name.as_str(), r)).collect();
    let new_names: HashSet<&str> = new.iter().map(|r| r.name.as_str()).collect();
    let (mut added, mut changed, mut unchanged) = (Vec::new(), Vec::new(), 0);
    for n in new {
        match old_by_name.get(n.name.as_str()) {
            None => added.push(n.name.clone()),
            Some(o) if same(o, n) => unchanged += 1,
            Some(_) => changed.push(n.name.clone()),
        }
    }
    let removed = old.iter().filter(|o| !new_names.contains(o.name.as_str())).collect();
    (added, removed, changed, unchanged)
}

/// Returns once every BPF program that was running when it was called has finished. Updating
/// an array-of-maps makes the kernel wait for an RCU grace period (maybe_wait_bpf_programs),
/// and XDP and TC programs run inside RCU read-side sections. aya cannot create a standalone
/// map-in-map, so this is three raw bpf(2) calls.
pub fn wait_for_running_programs() -> Result<(), DataplaneError> {
    use std::os::fd::{FromRawFd, OwnedFd};
    // union bpf_attr for BPF_MAP_CREATE: map_type, key_size, value_size, max_entries,
    // map_flags, inner_map_fd, then zeroes.
    let create = |fields: [u32; 6]| -> Result<OwnedFd, DataplaneError> {
        let mut attr = [0u32; 32];
        attr[..6].copy_from_slice(&fields);
        let fd = bpf(0 /* BPF_MAP_CREATE */, attr.as_mut_ptr().cast(), std::mem::size_of_val(&attr))?;
        // SAFETY: the kernel returned a new file descriptor we own.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    };
    let inner = create([2 /* BPF_MAP_TYPE_ARRAY */, 4, 4, 1, 0, 0])?;
    let outer = create([12 /* BPF_MAP_TYPE_ARRAY_OF_MAPS */, 4, 4, 1, 0, inner.as_raw_fd() as u32])?;
    // BPF_MAP_UPDATE_ELEM: map_fd (u32, padded), key pointer, value pointer, flags.
    let key = 0u32;
    let value = inner.as_raw_fd() as u32;
    let mut attr = [0u64; 8];
    attr[0] = outer.as_raw_fd() as u64;
    attr[1] = &key as *const u32 as u64;
    attr[2] = &value as *const u32 as u64;
    bpf(2 /* BPF_MAP_UPDATE_ELEM */, attr.as_mut_ptr().cast(), std::mem::size_of_val(&attr))?;
    Ok(())
}

fn bpf(cmd: i64, attr: *mut libc::c_void, size: usize) -> Result<i64, DataplaneError> {
    // SAFETY: `attr` points at a zero-padded bpf_attr of `size` bytes for `cmd`.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr, size) };
    if r < 0 {
        return Err(DataplaneError::Io {
            what: "bpf(2) map-in-map sync".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(r)
}

#[derive(Debug, Serialize)]
pub struct UpgradeReport {
    pub interface: String,
    pub xdp_program: (u32, u32),
    /// The old egress program's id when known (TCX), and the new one's.
    pub tc_program: (Option<u32>, u32),
}

/// Replaces the live programs with this build's, on the same links (bpf_link_update: atomic,
/// no moment without a filter), keeping the pinned maps. Refuses when a map's layout differs.
pub fn upgrade(ifname: &str) -> Result<UpgradeReport, DataplaneError> {
    let (ns, locked) = prepare(ifname)?;
    let p = &locked.paths;
    ns.attached(ifname)?;
    let mut st = InterfaceState::load_required(&p.state)?;
    let ct_max = super::maps::pinned_ct_max(&p.pins)?;
    check_layouts(&p.pins, ct_max)?;
    let mut ebpf = object::load(&p.pins, ct_max)?;
    // Both programs pass the verifier before either link changes: a failure changes nothing.
    object::load_xdp(&mut ebpf, programs::XDP_FILTER)?;
    object::load_tc(&mut ebpf)?;
    let load_err = |what: &str, e: &dyn std::fmt::Display| DataplaneError::Load(format!("{what}: {e}"));

    let xdp_link = FdLink::from(PinnedLink::from_pin(p.pins.join(XDP_LINK)).map_err(|e| load_err("XDP link", &e))?);
    let old_xdp = xdp_link.info().map(|i| i.program_id()).unwrap_or(0);
    let prog: &mut Xdp = object::program(&mut ebpf, programs::XDP_FILTER)?;
    let link = aya::programs::xdp::XdpLink::try_from(xdp_link).map_err(|e| load_err("XDP link", &e))?;
    let id = prog.attach_to_link(link).map_err(|e| load_err("bpf_link_update (XDP)", &e))?;
    let link = FdLink::try_from(prog.take_link(id).map_err(|e| load_err("XDP link", &e))?)
        .map_err(|e| load_err("XDP link", &e))?;
    let new_xdp = link.info().map(|i| i.program_id()).unwrap_or(0);
    // The link stays pinned; dropping our handle leaves it attached.

    let prog: &mut SchedClassifier = object::program(&mut ebpf, programs::TC_EGRESS)?;
    let (old_tc, link) = match st.egress {
        EgressAttachment::Tcx => {
            let fd = FdLink::from(PinnedLink::from_pin(p.pins.join(TC_LINK)).map_err(|e| load_err("TCX link", &e))?);
            let old = fd.info().map(|i| i.program_id()).ok();
            (old, SchedClassifierLink::try_from(fd).map_err(|e| load_err("TCX link", &e))?)
        }
        // Netlink replaces a filter of the same priority and handle in place.
        // (The filter's program id is not at hand: netlink would have to be asked.)
        EgressAttachment::Clsact { priority, handle } => (
            None,
            SchedClassifierLink::attached(ifname, TcAttachType::Egress, priority, TcHandle::from(handle), None)
                .map_err(|e| load_err("clsact filter", &e))?,
        ),
    };
    let id = prog.attach_to_link(link).map_err(|e| load_err("replace the egress program", &e))?;
    let link = prog.take_link(id).map_err(|e| load_err("egress link", &e))?;
    // Dropping the link would detach it: the TCX link stays pinned, the filter stays in the qdisc.
    std::mem::forget(link);
    let new_tc = prog.info().map(|i| i.id()).unwrap_or(0);
    let tc_program = (old_tc, new_tc);
    st.object_hash = object::hash();
    st.save(&p.state)?;
    Ok(UpgradeReport { interface: ifname.into(), xdp_program: (old_xdp, new_xdp), tc_program })
}

/// Every map this build would use must match the pinned one exactly (type, key and value
/// size, flags, and size), or the upgrade is refused: the programs would misread the maps.
/// A missing map is created at load, except the packet tables: created empty, they would
/// drop everything (builds before them kept the policy in four other maps).
fn check_layouts(pins: &Path, ct_max: u32) -> Result<(), DataplaneError> {
    let obj = aya_obj::Object::parse(object::bytes()).map_err(|e| DataplaneError::Load(e.to_string()))?;
    for (section, map) in obj.maps.iter() {
        // The global variables' map is the packet tables, pinned under that name and
        // memory-mappable (see `object::load`).
        let (name, flags) = if section == object::TABLES_SECTION {
            (edge_common::maps::TABLES, map.map_flags() | aya_obj::generated::BPF_F_MMAPABLE)
        } else {
            (section.as_str(), map.map_flags())
        };
        let path = pins.join(name);
        if !path.exists() && name == edge_common::maps::TABLES {
            return Err(DataplaneError::LayoutChanged {
                map: name.into(),
                live: "missing (an older build keeps the policy in other maps)".into(),
                new: format!("an array of one {} B value", map.value_size()),
            });
        }
        if !path.exists() {
            continue; // A new map: created at load.
        }
        let info = super::maps::pinned(pins, name)?.info().map_err(|e| DataplaneError::map(name, "read info", e))?;
        let want_entries = object::sized_at_attach(name, ct_max).unwrap_or(map.max_entries());
        // MapType's discriminants are the kernel's map type numbers.
        let live_type = info.map_type().map(|t| t as u32).unwrap_or(u32::MAX);
        let want_type = map.map_type();
        let (have, want) = (
            (live_type, info.key_size(), info.value_size(), info.max_entries(), info.map_flags()),
            (want_type, map.key_size(), map.value_size(), want_entries, flags),
        );
        if have != want {
            let show = |l: &(u32, u32, u32, u32, u32)| {
                format!("type {}, key {} B, value {} B, {} entries, flags {:#x}", l.0, l.1, l.2, l.3, l.4)
            };
            return Err(DataplaneError::LayoutChanged { map: name.into(), live: show(&have), new: show(&want) });
        }
    }
    Ok(())
}

/// Whether the live programs came from another build than this edge-ctl's.
pub fn needs_upgrade(st: &InterfaceState) -> bool {
    st.object_hash != object::hash()
}
