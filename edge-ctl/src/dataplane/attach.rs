//! Attach and detach: load, fill, attach and pin; and the reverse.

use std::net::IpAddr;

use aya::programs::XdpMode;
use aya::programs::links::FdLink;
use edge_common::programs;

use super::egress::{attach_egress, detach_clsact};
use super::maps::MapSet;
use super::paths::XDP_LINK;
use super::state::{self, GenerationState, InterfaceState};
use super::{DataplaneError, Staging, object, prepare, seed, step, system};
use crate::compile::{self, SlotMap};
use crate::policy::{Policy, Role};

/// How to attach XDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// In the driver (fastest); fails if the driver lacks XDP support.
    Native,
    /// In the generic network stack (works on every interface, slower).
    Generic,
    /// Native when the driver supports it, generic otherwise.
    Auto,
}

pub struct AttachRequest<'a> {
    pub ifname: &'a str,
    pub role: Role,
    pub policy: &'a Policy,
    pub mode: Mode,
}

#[derive(Debug)]
pub struct AttachReport {
    pub mode: &'static str,
    /// Set when `auto` fell back to generic mode, with the reason.
    pub fallback: Option<String>,
    /// "tcx" or "clsact".
    pub egress: &'static str,
    pub program_id: u32,
    pub rules: usize,
    /// Open connections put into the connection table: the host's own, and on a forwarding
    /// interface those the kernel's connection tracking holds for the hosts behind.
    pub seeded: seed::Seeded,
    /// Seconds the filter picks up mid-stream TCP of connections the outbound rules allow, on
    /// a forwarding interface the kernel's connection tracking could not seed.
    pub pickup_seconds: Option<u64>,
    /// A stale attachment (the interface had been deleted and created again) was removed first.
    pub replaced_stale: bool,
    pub interface_addresses: Vec<IpAddr>,
}

/// The first half of an attach, which needs of the policy only its connection-table size: the
/// interface checked and locked, the eBPF object loaded under the staging pins and both
/// programs verified (most of the time an attach takes). Nothing is on the interface yet;
/// dropping it removes the staged object and releases the lock. The command line prepares
/// while it reads the policy ([`attach_prepared`] finishes).
pub struct Prepared {
    // Dropped in this order: the programs, the staged pins, then the lock (which removes the
    // lock file when nothing is left for the interface).
    ebpf: aya::Ebpf,
    staging: Staging,
    locked: super::Locked,
    ns: super::paths::NamespacePaths,
    ct_max: u32,
    ifindex: u32,
    replaced_stale: bool,
}

/// Checks, locks, loads and verifies for an attach to `ifname` with connection tables of
/// `ct_max` entries per family (a guess is fine: [`attach_prepared`] loads again if the policy
/// says otherwise).
pub fn prepare_attach(ifname: &str, ct_max: u32) -> Result<Prepared, DataplaneError> {
    let ifindex = system::if_index(ifname)?;
    if system::is_loopback(ifname) {
        return Err(DataplaneError::Loopback(ifname.to_string()));
    }
    let (ns, locked) = prepare(ifname)?;
    let p = &locked.paths;
    let mut replaced_stale = false;
    if p.pins.join(XDP_LINK).exists() {
        // Attached, unless the interface was deleted and created again since: then the old link
        // went with the old device, and what is left is stale.
        match InterfaceState::load(&p.state) {
            Ok(Some(st)) if super::report::replaced_device(p, &st, ifindex).is_some() => {
                std::fs::remove_dir_all(&p.pins).map_err(|e| DataplaneError::io("remove stale pins", e))?;
                let _ = std::fs::remove_file(&p.state);
                replaced_stale = true;
            }
            _ => return Err(DataplaneError::AlreadyAttached(ifname.to_string())),
        }
    }
    if p.pins.exists() {
        // Pins without a link: left by a detach interrupted before it could finish.
        std::fs::remove_dir_all(&p.pins).map_err(|e| DataplaneError::io("remove stale pins", e))?;
    }
    super::kernel::features().check_required()?;
    std::fs::create_dir_all(&p.staging).map_err(|e| DataplaneError::io("create staging pins", e))?;
    let staging = Staging { dir: p.staging.clone(), armed: true };
    let mut ebpf = object::load(&p.staging, ct_max)?;
    object::verify_filters(&mut ebpf)?;
    Ok(Prepared { ebpf, staging, locked, ns, ct_max, ifindex, replaced_stale })
}

/// Loads, fills, attaches and pins the filter on an interface. The policy is compiled before
/// anything is attached; any failure leaves the interface as it was.
pub fn attach(req: &AttachRequest) -> Result<AttachReport, DataplaneError> {
    // The kernel verifies the programs (most of an attach) while the policy compiles.
    let addrs = system::interface_addresses(req.ifname);
    let (prepared, tables) = std::thread::scope(|scope| {
        let preparing = scope.spawn(|| prepare_attach(req.ifname, req.policy.conntrack.max_entries));
        let tables = compile::compile(req.policy, req.role, &addrs, &SlotMap::default());
        (preparing.join().expect("the preparing thread does not panic"), tables)
    });
    let tables = tables?;
    finish(prepared?, req, addrs, tables)
}

/// The second half of an attach (see [`Prepared`]): compiles the policy, fills the tables,
/// attaches and pins.
pub fn attach_prepared(prepared: Prepared, req: &AttachRequest) -> Result<AttachReport, DataplaneError> {
    let addrs = system::interface_addresses(req.ifname);
    let tables = compile::compile(req.policy, req.role, &addrs, &SlotMap::default())?;
    finish(prepared, req, addrs, tables)
}

/// Order matters: the connection table is seeded with the connections already open, the egress
/// program (which records new flows) goes on before the ingress filter, and the pins are moved
/// into place last.
fn finish(
    prepared: Prepared,
    req: &AttachRequest,
    addrs: Vec<IpAddr>,
    tables: compile::Tables,
) -> Result<AttachReport, DataplaneError> {
    // Bindings drop in reverse: the programs, the staged pins, then the lock.
    let Prepared { ns, locked, mut staging, mut ebpf, ct_max, ifindex, replaced_stale } = prepared;
    let p = &locked.paths;
    assert_eq!(p.ifname, req.ifname, "prepared for one interface, attached to another");
    if tables.ct_max != ct_max {
        // Prepared for another size: the connection tables are sized when the object loads.
        drop(ebpf);
        std::fs::remove_dir_all(&p.staging).map_err(|e| DataplaneError::io("remove staging pins", e))?;
        std::fs::create_dir_all(&p.staging).map_err(|e| DataplaneError::io("create staging pins", e))?;
        ebpf = object::load(&p.staging, tables.ct_max)?;
        object::verify_filters(&mut ebpf)?;
    }
    let mut maps = MapSet::open(&p.staging)?;
    maps.write_generation(0, &tables)?;
    maps.set_active_generation(0)?;
    let forwarding = system::forwarding(req.ifname);
    let seeded = seed::established(req.policy, req.role, &addrs, &tables, &mut maps, forwarding.any())?;
    // Flows through a router that nothing could seed are picked up for a while instead.
    let pickup = match (&seeded.forwarded, system::jiffies_now()) {
        (seed::Forwarded::NotTracked | seed::Forwarded::Failed(_), Some(now)) => {
            maps.set_pickup_until(0, now + seed::PICKUP_SECONDS * system::kernel_hz())?;
            Some(seed::PICKUP_SECONDS)
        }
        _ => None,
    };
    step();

    let mut egress = attach_egress(&mut ebpf, req.ifname, &p.staging)?;
    step();
    let prog = object::load_xdp(&mut ebpf, programs::XDP_FILTER)?;
    let (mode, fallback, link_id) = attach_xdp(prog, req.ifname, req.mode)?;
    let link = prog.take_link(link_id).map_err(|e| DataplaneError::Load(e.to_string()))?;
    let link = FdLink::try_from(link).map_err(|e| DataplaneError::Load(format!("XDP link is not a bpf_link: {e}")))?;
    let program_id = link.info().map(|i| i.program_id()).unwrap_or(0);
    link.pin(p.staging.join(XDP_LINK)).map_err(|e| DataplaneError::Load(format!("pin XDP link: {e}")))?;
    step();

    let st = InterfaceState {
        format: state::STATE_FORMAT,
        ifname: req.ifname.to_string(),
        ifindex,
        netns: ns.netns,
        role: req.role,
        mode: mode.to_string(),
        egress: egress.attachment.clone(),
        attached_at: state::now(),
        object_hash: object::hash(),
        generations: [Some(generation_state(req.policy, &addrs, &tables)), None],
    };
    st.save(&p.state)?;
    step();
    // The commit point: until this rename, the next command removes everything above.
    std::fs::rename(&p.staging, &p.pins).map_err(|e| DataplaneError::io("move pins into place", e))?;
    staging.armed = false;
    egress.armed = false;
    Ok(AttachReport {
        mode,
        fallback,
        egress: egress.attachment.kind(),
        program_id,
        rules: tables.rules.len(),
        seeded,
        pickup_seconds: pickup,
        replaced_stale,
        interface_addresses: addrs,
    })
}

pub(super) fn generation_state(policy: &Policy, addrs: &[IpAddr], tables: &compile::Tables) -> GenerationState {
    GenerationState {
        policy_origin: policy.origin.clone(),
        policy_hash: policy.hash(),
        policy_text: policy.text.clone(),
        interface_addresses: addrs.to_vec(),
        loaded_at: state::now(),
        rules: tables.rules.clone(),
        slots: tables.slots.clone(),
        ct_timeout_ns: tables.ct_timeout_ns,
        audit: tables.flags & edge_common::flags::AUDIT != 0,
    }
}

fn attach_xdp(
    prog: &mut aya::programs::Xdp,
    ifname: &str,
    mode: Mode,
) -> Result<(&'static str, Option<String>, aya::programs::xdp::XdpLinkId), DataplaneError> {
    let err = |mode: &str, e: aya::programs::ProgramError| DataplaneError::Attach {
        ifname: ifname.into(),
        mode: mode.into(),
        reason: e.to_string(),
    };
    match mode {
        Mode::Native => prog.attach(ifname, XdpMode::Driver).map(|l| ("native", None, l)).map_err(|e| err("native", e)),
        Mode::Generic => prog.attach(ifname, XdpMode::Skb).map(|l| ("generic", None, l)).map_err(|e| err("generic", e)),
        Mode::Auto => match prog.attach(ifname, XdpMode::Driver) {
            Ok(l) => Ok(("native", None, l)),
            Err(native) => {
                let l = prog.attach(ifname, XdpMode::Skb).map_err(|e| err("generic", e))?;
                Ok(("generic", Some(format!("native XDP failed ({native}); attached in generic mode")), l))
            }
        },
    }
}

/// Detaches the filter and removes its pins and state.
pub fn detach(ifname: &str) -> Result<(), DataplaneError> {
    let (ns, locked) = prepare(ifname)?;
    let p = &locked.paths;
    ns.attached(ifname)?;
    let st = InterfaceState::load(&p.state).ok().flatten();
    std::fs::rename(&p.pins, &p.retiring).map_err(|e| DataplaneError::io("retire pins", e))?;
    if let Some(st) = &st {
        detach_clsact(ifname, &st.egress);
    }
    if p.state.exists() {
        std::fs::remove_file(&p.state).map_err(|e| DataplaneError::io("remove state", e))?;
    }
    // Off the hooks now; removing the link pins (the last references) would also detach them,
    // a grace period later.
    for link in [super::paths::XDP_LINK, super::paths::TC_LINK] {
        super::system::link_detach(&p.retiring.join(link));
    }
    std::fs::remove_dir_all(&p.retiring).map_err(|e| DataplaneError::io("remove pins", e))?;
    // The lock file and the directories left empty go when `locked` is dropped.
    Ok(())
}
