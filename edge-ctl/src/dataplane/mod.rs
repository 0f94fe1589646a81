//! Tables -> kernel: load the eBPF object, create and pin maps, write a policy generation,
//! attach, and read counters back. Nothing here parses policy text.

mod attach;
pub mod conntrack;
mod egress;
pub mod events;
mod explain;
pub mod kernel;
pub mod maps;
pub mod object;
pub mod paths;
mod reload;
mod report;
mod seed;
pub mod state;
pub mod system;

use std::fs::File;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::policy::PolicyError;
use paths::{InterfacePaths, NamespacePaths, XDP_LINK};

pub use attach::{AttachReport, AttachRequest, Mode, Prepared, attach, attach_prepared, detach, prepare_attach};
pub use explain::{ExplainAnswer, ExplainRequest, RuleRef, explain};
pub use reload::{ReloadReport, RemovedRule, UpgradeReport, needs_upgrade, reload, upgrade, wait_for_running_programs};
pub use report::{ConntrackStats, EventStats, InterfaceStats, InterfaceStatus, ReasonStats, RuleStats, stats, status};
pub use seed::{Forwarded, Seeded};

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
    #[error(
        "{0} is the loopback interface: filtering it would cut what the host says to itself (local \
         services, resolvers, edge-ctl's own probes) and protects nothing from outside; attach the \
         edge's external and internal interfaces instead"
    )]
    Loopback(String),
    #[error("edge-ctl is not attached to {ifname}{}", attached_hint(.attached))]
    NotAttached { ifname: String, attached: Vec<String> },
    #[error("another edge-ctl is changing {0} right now; try again when it has finished")]
    Busy(String),
    #[error("the kernel's verifier rejected {program} ({reason}); end of the verifier log:\n{log_tail}")]
    Verifier { program: String, reason: String, log_tail: String },
    #[error(
        "this kernel ({release}) lacks {feature}, which edge-ctl needs for {purpose}; it exists from \
         Linux {since}: run edge-ctl on a newer kernel (`edge-ctl kernel` lists what this one offers)"
    )]
    MissingFeature { feature: &'static str, since: &'static str, purpose: &'static str, release: String },
    #[error("loading the eBPF object failed: {0}")]
    Load(String),
    #[error("cannot attach XDP to {ifname} in {mode} mode: {reason}{}", mode_hint(.mode))]
    Attach { ifname: String, mode: String, reason: String },
    #[error("cannot attach the egress filter to {ifname}: {reason}")]
    AttachEgress { ifname: String, reason: String },
    #[error(
        "this edge-ctl's eBPF programs need map {map} as {new}, but the live one is {live}; \
         an in-place upgrade cannot migrate it: `edge-ctl detach` and `edge-ctl attach` again"
    )]
    LayoutChanged { map: String, live: String, new: String },
    #[error("explain: {0}")]
    Explain(String),
    #[error("BPF map {name}: {op} failed: {reason}")]
    Map { name: String, op: String, reason: String },
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
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
        DataplaneError::Map { name: name.into(), op: op.into(), reason: e.to_string() }
    }
    fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        DataplaneError::Io { what: what.into(), source }
    }
}

/// Test hook: `EDGE_CTL_STEP_DELAY_MS` pauses after each step of attach and reload and says so
/// on stderr (`edge-ctl: step done`), so a test can kill them at every step: it waits for the
/// k-th line, not for a time, which holds on a slow (emulated) machine as on a fast one.
pub(crate) fn step() {
    if let Some(ms) = std::env::var("EDGE_CTL_STEP_DELAY_MS").ok().and_then(|v| v.parse().ok()) {
        eprintln!("{STEP_MARK}");
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// What [`step`] prints.
pub const STEP_MARK: &str = "edge-ctl: step done";

/// Everything a command on one interface needs, with the interface's lock held. When it is
/// dropped and the interface has no filter (detached, or an attach failed), the lock file and
/// the directories nothing else uses are removed, so nothing piles up for names used once.
struct Locked {
    ns: NamespacePaths,
    paths: InterfacePaths,
    _lock: nix::fcntl::Flock<File>,
}

impl Drop for Locked {
    fn drop(&mut self) {
        // Still locked here (fields drop after this): whoever opened the file before the unlink
        // sees, once it gets the lock, that the path no longer leads to it, and starts again.
        if !self.paths.pins.exists() && !self.paths.staging.exists() && !self.paths.retiring.exists() {
            let _ = std::fs::remove_file(&self.paths.lock);
            remove_empty_roots(&self.ns);
        }
    }
}

/// Removes the namespace's directories and edge-ctl's top directories when they are empty
/// (fails harmlessly while anything is in them).
fn remove_empty_roots(ns: &NamespacePaths) {
    for dir in [&ns.state_root, &ns.pin_root] {
        let _ = std::fs::remove_dir(dir);
    }
    for top in [ns.state_root.parent(), ns.pin_root.parent()].into_iter().flatten() {
        let _ = std::fs::remove_dir(top);
    }
}

/// Takes the interface's lock (without waiting: a held lock is [`DataplaneError::Busy`]).
fn lock(ns: &NamespacePaths, paths: &InterfacePaths) -> Result<nix::fcntl::Flock<File>, DataplaneError> {
    use std::os::unix::fs::MetadataExt;
    // A finishing command may remove the lock file (and its directory) between our open and our
    // lock: then the lock is on a file no longer at the path. Start again; it settles at once.
    for _ in 0..5 {
        std::fs::create_dir_all(&ns.state_root).map_err(|e| DataplaneError::io("create /run/edge-ctl", e))?;
        std::fs::set_permissions(&ns.state_root, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| DataplaneError::io(format!("chmod {}", ns.state_root.display()), e))?;
        let file =
            match std::fs::OpenOptions::new().create(true).truncate(false).write(true).mode(0o600).open(&paths.lock) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(DataplaneError::io(format!("open {}", paths.lock.display()), e)),
            };
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|_| DataplaneError::Busy(paths.ifname.clone()))?;
        let held = lock.metadata().map(|m| (m.dev(), m.ino())).ok();
        let at_path = std::fs::metadata(&paths.lock).map(|m| (m.dev(), m.ino())).ok();
        if held.is_some() && held == at_path {
            return Ok(lock);
        }
    }
    Err(DataplaneError::Busy(paths.ifname.clone()))
}

/// Fails as `reload` would when the filter is not on `ifname`: before a policy is read and
/// compiled for nothing.
pub fn require_attached(ifname: &str) -> Result<(), DataplaneError> {
    system::require_privileges()?;
    namespace()?.attached(ifname).map(|_| ())
}

/// This network namespace's paths, after following renamed interfaces.
fn namespace() -> Result<NamespacePaths, DataplaneError> {
    let ns = NamespacePaths::new(system::netns_id()?);
    follow_renames(&ns);
    Ok(ns)
}

/// An interface renamed since attach (`ip link set eth8 name wan8`) keeps its filter: the
/// kernel's links hold the device, not its name. Its pins, state and lock move to the new
/// name, so every command finds it there. Only when the XDP link is still on the recorded
/// device (a device deleted and created again is not a rename), the old name no longer names
/// that device, and nothing is attached under the new name; an interface whose lock is held is
/// left to the command holding it.
fn follow_renames(ns: &NamespacePaths) {
    for old in ns.attached_names() {
        let from = ns.interface(&old);
        let Ok(Some(mut st)) = state::InterfaceState::load(&from.state) else { continue };
        if system::if_index(&old).ok() == Some(st.ifindex)
            || system::xdp_link_ifindex(&from.pins.join(XDP_LINK)) != Some(st.ifindex)
        {
            continue;
        }
        let Some(new) = system::if_name(st.ifindex) else { continue };
        let to = ns.interface(&new);
        if new == old || to.pins.exists() {
            continue;
        }
        let (Ok(old_lock), Ok(new_lock)) = (lock(ns, &from), lock(ns, &to)) else { continue };
        let _held = [
            Locked { ns: ns.clone(), paths: from.clone(), _lock: old_lock },
            Locked { ns: ns.clone(), paths: to.clone(), _lock: new_lock },
        ];
        // Checked again under the locks: another command may have followed it first.
        if !from.pins.exists() || to.pins.exists() {
            continue;
        }
        st.ifname = new.clone();
        if st.save(&to.state).is_err() {
            let _ = std::fs::remove_file(&to.state);
            continue;
        }
        if std::fs::rename(&from.pins, &to.pins).is_err() {
            let _ = std::fs::remove_file(&to.state);
            continue;
        }
        let _ = std::fs::remove_file(&from.state);
    }
}

fn prepare(ifname: &str) -> Result<(NamespacePaths, Locked), DataplaneError> {
    system::require_privileges()?;
    system::ensure_bpffs(Path::new(paths::BPFFS))?;
    let ns = namespace()?;
    let paths = ns.interface(ifname);
    let lock = lock(&ns, &paths)?;
    let locked = Locked { ns: ns.clone(), paths, _lock: lock };
    std::fs::create_dir_all(&ns.pin_root).map_err(|e| DataplaneError::io("create pin directory", e))?;
    std::fs::set_permissions(&ns.pin_root, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| DataplaneError::io(format!("chmod {}", ns.pin_root.display()), e))?;
    sweep(&locked.paths)?;
    Ok((ns, locked))
}

/// Finishes what killed commands left behind (a staged link still filters until it is
/// unpinned), so that a read-only command reports what the kernel does. Interfaces whose lock
/// is held are left to the command holding it. Then removes what namespaces that are gone left.
fn sweep_interrupted(ns: &NamespacePaths) {
    for name in ns.interrupted_names() {
        let paths = ns.interface(&name);
        if let Ok(lock) = lock(ns, &paths) {
            let locked = Locked { ns: ns.clone(), paths, _lock: lock };
            let _ = sweep(&locked.paths);
        }
    }
    sweep_dead_namespaces(ns.netns);
}

/// Removes the pins and state kept for network namespaces that no longer exist: no process is
/// in them and no nsfs mount holds them, and every XDP link pinned for them has lost its device
/// (the kernel reports index 0). Both conditions, so a namespace held only by an open
/// descriptor never loses a working filter.
fn sweep_dead_namespaces(current: u64) {
    let roots = [paths::PIN_BASE, paths::STATE_BASE];
    let mut inodes: Vec<u64> = roots
        .iter()
        .flat_map(|r| std::fs::read_dir(r).into_iter().flatten())
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&ino| ino != current)
        .collect();
    inodes.sort_unstable();
    inodes.dedup();
    if inodes.is_empty() {
        return;
    }
    let live = system::live_netns_inodes();
    for ino in inodes.into_iter().filter(|i| !live.contains(i)) {
        let ns = NamespacePaths::new(ino);
        let links_gone = std::fs::read_dir(&ns.pin_root).into_iter().flatten().filter_map(|e| e.ok()).all(|e| {
            let link = e.path().join(XDP_LINK);
            !link.exists() || system::xdp_link_ifindex(&link) == Some(0)
        });
        if links_gone {
            let _ = std::fs::remove_dir_all(&ns.pin_root);
            let _ = std::fs::remove_dir_all(&ns.state_root);
            remove_empty_roots(&ns);
        }
    }
}

/// Removes what an interrupted attach or detach left behind. Unpinning a staged link detaches
/// it; the live pin directory is never touched here.
fn sweep(p: &InterfacePaths) -> Result<(), DataplaneError> {
    for dir in [&p.staging, &p.retiring] {
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| DataplaneError::io(format!("remove {}", dir.display()), e))?;
            // A clsact egress filter lives in the qdisc, not in a pin: take it off too, unless a
            // live attachment owns it.
            if !p.pins.exists() {
                egress::detach_clsact(&p.ifname, &egress::EgressAttachment::default_clsact());
            }
        }
    }
    // A state file without live pins is what an attach killed before its final rename leaves.
    if p.state.exists() && !p.pins.join(XDP_LINK).exists() {
        std::fs::remove_file(&p.state).map_err(|e| DataplaneError::io(format!("remove {}", p.state.display()), e))?;
    }
    Ok(())
}

/// Removes a directory when dropped unless disarmed: a failed attach leaves nothing behind.
struct Staging {
    dir: std::path::PathBuf,
    armed: bool,
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
