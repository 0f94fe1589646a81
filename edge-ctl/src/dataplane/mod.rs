//! Tables -> kernel: load the eBPF object, create and pin maps, write a policy generation,
//! attach, and read counters back. Nothing here parses policy text.

pub mod maps;
pub mod object;
pub mod paths;
pub mod state;
pub mod system;

use std::fs::File;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use aya::programs::XdpMode;
use aya::programs::links::{FdLink, PinnedLink};
use edge_common::{DropReason, PassReason, programs};
use serde::Serialize;

use crate::compile::{self, CompiledRule, SlotMap};
use crate::policy::{Policy, PolicyError, Role};
use maps::MapSet;
use paths::{InterfacePaths, NamespacePaths, XDP_LINK};
use state::{GenerationState, InterfaceState};

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("edge-ctl needs CAP_BPF (or CAP_SYS_ADMIN) and CAP_NET_ADMIN: run it as root")]
    NotPrivileged,
    #[error(
        "no BPF filesystem at {path} and mounting one failed ({reason}); mount it with \
         `mount -t bpf bpf {path}`"
    )]
    Bpffs { path: String, reason: String },
    #[error("no interface named `{name}` in this network namespace (interfaces here: {})", .known.join(", "))]
    UnknownInterface { name: String, known: Vec<String> },
    #[error(
        "edge-ctl is already attached to {0}: change its policy with `edge-ctl reload {0} --policy FILE`, \
         or run `edge-ctl detach {0}` first"
    )]
    AlreadyAttached(String),
    #[error("edge-ctl is not attached to {ifname}{}", attached_hint(.attached))]
    NotAttached {
        ifname: String,
        attached: Vec<String>,
    },
    #[error("another edge-ctl is changing {0} right now; try again when it has finished")]
    Busy(String),
    #[error(
        "the kernel's verifier rejected {program} ({reason}); end of the verifier log:\n{log_tail}"
    )]
    Verifier {
        program: String,
        reason: String,
        log_tail: String,
    },
    #[error("loading the eBPF object failed: {0}")]
    Load(String),
    #[error("cannot attach XDP to {ifname} in {mode} mode: {reason}{}", mode_hint(.mode))]
    Attach {
        ifname: String,
        mode: String,
        reason: String,
    },
    #[error("BPF map {name}: {op} failed: {reason}")]
    Map {
        name: String,
        op: String,
        reason: String,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("state file {path} is unreadable ({reason}); `edge-ctl detach` removes it")]
    State { path: String, reason: String },
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

fn attached_hint(attached: &[String]) -> String {
    if attached.is_empty() {
        " (it is attached to no interface in this network namespace)".into()
    } else {
        format!(" (attached here: {})", attached.join(", "))
    }
}

fn mode_hint(mode: &str) -> &'static str {
    if mode == "native" {
        "; the driver may lack native XDP: use --mode generic, or --mode auto to fall back by itself"
    } else {
        ""
    }
}

impl DataplaneError {
    pub fn map(name: &str, op: &str, e: impl std::fmt::Display) -> Self {
        DataplaneError::Map {
            name: name.into(),
            op: op.into(),
            reason: e.to_string(),
        }
    }
    fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        DataplaneError::Io {
            what: what.into(),
            source,
        }
    }
}

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
    pub program_id: u32,
    pub rules: usize,
    pub interface_addresses: Vec<IpAddr>,
}

/// Everything a command on one interface needs, with the interface's lock held.
struct Locked {
    paths: InterfacePaths,
    _lock: nix::fcntl::Flock<File>,
}

fn prepare(ifname: &str) -> Result<(NamespacePaths, Locked), DataplaneError> {
    system::require_privileges()?;
    system::ensure_bpffs(Path::new(paths::BPFFS))?;
    let ns = NamespacePaths::new(system::netns_id()?);
    let paths = ns.interface(ifname);
    std::fs::create_dir_all(&ns.state_root)
        .map_err(|e| DataplaneError::io("create /run/edge-ctl", e))?;
    std::fs::create_dir_all(&ns.pin_root)
        .map_err(|e| DataplaneError::io("create pin directory", e))?;
    for dir in [&ns.state_root, &ns.pin_root] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| DataplaneError::io(format!("chmod {}", dir.display()), e))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&paths.lock)
        .map_err(|e| DataplaneError::io(format!("open {}", paths.lock.display()), e))?;
    let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|_| DataplaneError::Busy(ifname.to_string()))?;
    sweep(&paths)?;
    Ok((ns, Locked { paths, _lock: lock }))
}

/// Removes what an interrupted attach or detach left behind. Unpinning a staged link detaches
/// it; the live pin directory is never touched here.
fn sweep(p: &InterfacePaths) -> Result<(), DataplaneError> {
    for dir in [&p.staging, &p.retiring] {
        if dir.exists() {
            std::fs::remove_dir_all(dir)
                .map_err(|e| DataplaneError::io(format!("remove {}", dir.display()), e))?;
        }
    }
    // A state file without live pins is what an attach killed before its final rename leaves.
    if p.state.exists() && !p.pins.join(XDP_LINK).exists() {
        std::fs::remove_file(&p.state)
            .map_err(|e| DataplaneError::io(format!("remove {}", p.state.display()), e))?;
    }
    Ok(())
}

/// Removes a directory when dropped unless disarmed: a failed attach leaves nothing behind.
struct Staging<'a> {
    dir: &'a Path,
    armed: bool,
}

impl Drop for Staging<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_dir_all(self.dir);
        }
    }
}

/// Loads, fills, attaches and pins the filter on an interface. The policy is compiled before
/// anything touches the kernel; any failure leaves the interface as it was.
pub fn attach(req: &AttachRequest) -> Result<AttachReport, DataplaneError> {
    let ifindex = system::if_index(req.ifname)?;
    let (ns, locked) = prepare(req.ifname)?;
    let p = &locked.paths;
    if p.pins.join(XDP_LINK).exists() {
        return Err(DataplaneError::AlreadyAttached(req.ifname.to_string()));
    }
    if p.pins.exists() {
        // Pins without a link: left by a detach interrupted before it could finish.
        std::fs::remove_dir_all(&p.pins).map_err(|e| DataplaneError::io("remove stale pins", e))?;
    }
    let addrs = system::interface_addresses(req.ifname);
    let tables = compile::compile(req.policy, req.role, &addrs, &SlotMap::default())?;

    std::fs::create_dir_all(&p.staging)
        .map_err(|e| DataplaneError::io("create staging pins", e))?;
    let mut staging = Staging {
        dir: &p.staging,
        armed: true,
    };
    let mut ebpf = object::load(&p.staging)?;
    let mut maps = MapSet::open(&p.staging)?;
    maps.write_generation(0, &tables)?;
    maps.set_active_generation(0)?;

    let prog = object::load_xdp(&mut ebpf, programs::XDP_FILTER)?;
    let (mode, fallback, link_id) = attach_xdp(prog, req.ifname, req.mode)?;
    let link = prog
        .take_link(link_id)
        .map_err(|e| DataplaneError::Load(e.to_string()))?;
    let link = FdLink::try_from(link)
        .map_err(|e| DataplaneError::Load(format!("XDP link is not a bpf_link: {e}")))?;
    let program_id = link.info().map(|i| i.program_id()).unwrap_or(0);
    link.pin(p.staging.join(XDP_LINK))
        .map_err(|e| DataplaneError::Load(format!("pin XDP link: {e}")))?;

    let st = InterfaceState {
        format: state::STATE_FORMAT,
        ifname: req.ifname.to_string(),
        ifindex,
        netns: ns.netns,
        role: req.role,
        mode: mode.to_string(),
        attached_at: state::now(),
        generations: [Some(generation_state(req.policy, &addrs, &tables)), None],
    };
    st.save(&p.state)?;
    // The commit point: until this rename, the next command removes everything above.
    std::fs::rename(&p.staging, &p.pins)
        .map_err(|e| DataplaneError::io("move pins into place", e))?;
    staging.armed = false;
    Ok(AttachReport {
        mode,
        fallback,
        program_id,
        rules: tables.rules.len(),
        interface_addresses: addrs,
    })
}

fn generation_state(
    policy: &Policy,
    addrs: &[IpAddr],
    tables: &compile::Tables,
) -> GenerationState {
    GenerationState {
        policy_origin: policy.origin.clone(),
        policy_hash: policy.hash(),
        policy_text: policy.text.clone(),
        interface_addresses: addrs.to_vec(),
        loaded_at: state::now(),
        rules: tables.rules.clone(),
        slots: tables.slots.clone(),
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
        Mode::Native => prog
            .attach(ifname, XdpMode::Driver)
            .map(|l| ("native", None, l))
            .map_err(|e| err("native", e)),
        Mode::Generic => prog
            .attach(ifname, XdpMode::Skb)
            .map(|l| ("generic", None, l))
            .map_err(|e| err("generic", e)),
        Mode::Auto => match prog.attach(ifname, XdpMode::Driver) {
            Ok(l) => Ok(("native", None, l)),
            Err(native) => {
                let l = prog
                    .attach(ifname, XdpMode::Skb)
                    .map_err(|e| err("generic", e))?;
                Ok((
                    "generic",
                    Some(format!(
                        "native XDP failed ({native}); attached in generic mode"
                    )),
                    l,
                ))
            }
        },
    }
}

/// Detaches the filter and removes its pins and state.
pub fn detach(ifname: &str) -> Result<(), DataplaneError> {
    let (ns, locked) = prepare(ifname)?;
    let p = &locked.paths;
    if !p.pins.exists() {
        return Err(DataplaneError::NotAttached {
            ifname: ifname.into(),
            attached: ns.attached_names(),
        });
    }
    std::fs::rename(&p.pins, &p.retiring).map_err(|e| DataplaneError::io("retire pins", e))?;
    if p.state.exists() {
        std::fs::remove_file(&p.state).map_err(|e| DataplaneError::io("remove state", e))?;
    }
    // Removing the link pin (the last reference) detaches the program.
    std::fs::remove_dir_all(&p.retiring).map_err(|e| DataplaneError::io("remove pins", e))?;
    // Leave no empty directories on bpffs; fails harmlessly while other interfaces are attached.
    let _ = std::fs::remove_dir(&ns.pin_root);
    let _ = std::fs::remove_dir(Path::new(paths::BPFFS).join("edge-ctl"));
    Ok(())
}

/// One attached interface as `status` shows it.
#[derive(Debug, Serialize)]
pub struct InterfaceStatus {
    pub interface: String,
    pub role: Option<Role>,
    pub mode: Option<String>,
    pub program_id: Option<u32>,
    pub link_id: Option<u32>,
    pub generation: Option<u32>,
    pub policy_origin: Option<String>,
    pub policy_hash: Option<String>,
    pub rules: usize,
    pub attached_at: Option<u64>,
    pub interface_present: bool,
    /// What is wrong, when something is.
    pub problem: Option<String>,
}

/// The attached interfaces of this network namespace.
pub fn status() -> Result<Vec<InterfaceStatus>, DataplaneError> {
    system::require_privileges()?;
    let ns = NamespacePaths::new(system::netns_id()?);
    let mut out = Vec::new();
    for name in ns.attached_names() {
        out.push(interface_status(&ns.interface(&name)));
    }
    Ok(out)
}

fn interface_status(p: &InterfacePaths) -> InterfaceStatus {
    let mut s = InterfaceStatus {
        interface: p.ifname.clone(),
        role: None,
        mode: None,
        program_id: None,
        link_id: None,
        generation: None,
        policy_origin: None,
        policy_hash: None,
        rules: 0,
        attached_at: None,
        interface_present: system::if_index(&p.ifname).is_ok(),
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
    match (InterfaceState::load(&p.state), generation) {
        (Ok(Some(st)), Ok(g)) => {
            s.role = Some(st.role);
            s.mode = Some(st.mode.clone());
            s.attached_at = Some(st.attached_at);
            s.generation = Some(g);
            if let Some(live) = st.live(g) {
                s.policy_origin = Some(live.policy_origin.clone());
                s.policy_hash = Some(live.policy_hash.clone());
                s.rules = live.rules.len();
            }
        }
        (Ok(None), _) => {
            s.problem = Some("state file missing: run `edge-ctl detach` and attach again".into())
        }
        (Err(e), _) | (_, Err(e)) => s.problem = Some(e.to_string()),
    }
    if !s.interface_present && s.problem.is_none() {
        s.problem = Some("the interface no longer exists".into());
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
    pub reason: &'static str,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct InterfaceStats {
    pub interface: String,
    pub role: Role,
    pub generation: u32,
    pub policy_hash: String,
    pub rules: Vec<RuleStats>,
    pub drops: Vec<ReasonStats>,
    pub passes: Vec<ReasonStats>,
}

/// Counters of one interface, or of all attached interfaces of this namespace.
pub fn stats(ifname: Option<&str>) -> Result<Vec<InterfaceStats>, DataplaneError> {
    system::require_privileges()?;
    let ns = NamespacePaths::new(system::netns_id()?);
    let names = match ifname {
        Some(n) => {
            if !ns.interface(n).pins.exists() {
                return Err(DataplaneError::NotAttached {
                    ifname: n.into(),
                    attached: ns.attached_names(),
                });
            }
            vec![n.to_string()]
        }
        None => ns.attached_names(),
    };
    names
        .iter()
        .map(|n| interface_stats(&ns.interface(n)))
        .collect()
}

fn interface_stats(p: &InterfacePaths) -> Result<InterfaceStats, DataplaneError> {
    let maps = MapSet::open(&p.pins)?;
    let st = InterfaceState::load(&p.state)?.ok_or_else(|| DataplaneError::State {
        path: p.state.display().to_string(),
        reason: "missing".into(),
    })?;
    let generation = maps.active_generation()?;
    let live = st.live(generation).ok_or_else(|| DataplaneError::State {
        path: p.state.display().to_string(),
        reason: format!("no policy recorded for live generation {generation}"),
    })?;
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
    let drops = DropReason::ALL
        .iter()
        .map(|r| {
            maps.drop_counter(*r as u32).map(|c| ReasonStats {
                reason: r.name(),
                packets: c.packets,
                bytes: c.bytes,
            })
        })
        .collect::<Result<_, _>>()?;
    let passes = PassReason::ALL
        .iter()
        .map(|r| {
            maps.pass_counter(*r as u32).map(|c| ReasonStats {
                reason: r.name(),
                packets: c.packets,
                bytes: c.bytes,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(InterfaceStats {
        interface: p.ifname.clone(),
        role: st.role,
        generation,
        policy_hash: live.policy_hash.clone(),
        rules: live.rules.iter().map(rule).collect::<Result<_, _>>()?,
        drops,
        passes,
    })
}
