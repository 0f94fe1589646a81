//! Where an attached interface keeps its pins (bpffs) and its state (tmpfs).
//!
//! Both are keyed by (network namespace, interface name), so two namespaces that each have an
//! `eth0` never collide: `/sys/fs/bpf/edge-ctl/<netns inode>/<ifname>/` holds the maps and the
//! link, `/run/edge-ctl/<netns inode>/<ifname>.json` the state. Work in progress is built under
//! a staging name and renamed into place, so a killed command leaves only staging leftovers,
//! which the next command for that interface removes.
//!
//! bpffs refuses names containing '.', which interface names may hold (`eth0.100`): pin
//! directory names escape '%' as `%25` and '.' as `%2E`, so the `%attach%`/`%detach%` staging
//! prefixes can never be an escaped interface name.

use std::path::PathBuf;

/// bpffs mount point.
pub const BPFFS: &str = "/sys/fs/bpf";
/// Where the pins of every namespace live.
pub const PIN_BASE: &str = "/sys/fs/bpf/edge-ctl";
/// Where the state of every namespace lives.
pub const STATE_BASE: &str = "/run/edge-ctl";

/// Name of the pinned XDP link inside the pin directory.
pub const XDP_LINK: &str = "link_xdp";
/// Name of the pinned TCX egress link inside the pin directory.
pub const TC_LINK: &str = "link_tc";

const STAGING: &str = "%attach%";
const RETIRING: &str = "%detach%";

fn escape(ifname: &str) -> String {
    ifname.replace('%', "%25").replace('.', "%2E")
}

fn unescape(name: &str) -> String {
    name.replace("%2E", ".").replace("%25", "%")
}

#[derive(Clone, Debug)]
pub struct NamespacePaths {
    pub netns: u64,
    pub pin_root: PathBuf,
    pub state_root: PathBuf,
}

impl NamespacePaths {
    pub fn new(netns: u64) -> Self {
        NamespacePaths {
            netns,
            pin_root: PathBuf::from(PIN_BASE).join(netns.to_string()),
            state_root: PathBuf::from(STATE_BASE).join(netns.to_string()),
        }
    }

    pub fn interface(&self, ifname: &str) -> InterfacePaths {
        InterfacePaths {
            ifname: ifname.to_string(),
            pins: self.pin_root.join(escape(ifname)),
            staging: self.pin_root.join(format!("{STAGING}{}", escape(ifname))),
            retiring: self.pin_root.join(format!("{RETIRING}{}", escape(ifname))),
            state: self.state_root.join(format!("{ifname}.json")),
            lock: self.state_root.join(format!("{ifname}.lock")),
        }
    }

    /// The paths of an interface that has a pin directory, or the error naming those that do.
    pub fn attached(&self, ifname: &str) -> Result<InterfacePaths, super::DataplaneError> {
        let p = self.interface(ifname);
        if p.pins.exists() {
            Ok(p)
        } else {
            Err(super::DataplaneError::NotAttached { ifname: ifname.into(), attached: self.attached_names() })
        }
    }

    /// Interfaces with a pin directory in this namespace.
    pub fn attached_names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.pin_root)
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| !n.starts_with(STAGING) && !n.starts_with(RETIRING))
                    .map(|n| unescape(&n))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Interfaces with the pins of an interrupted (or running) attach or detach.
    pub fn interrupted_names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.pin_root)
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter_map(|n| Some(unescape(n.strip_prefix(STAGING).or_else(|| n.strip_prefix(RETIRING))?)))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names.dedup();
        names
    }
}

#[derive(Clone, Debug)]
pub struct InterfacePaths {
    pub ifname: String,
    /// The live pin directory.
    pub pins: PathBuf,
    /// Pins of an attach in progress.
    pub staging: PathBuf,
    /// Pins of a detach in progress.
    pub retiring: PathBuf,
    pub state: PathBuf,
    pub lock: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_round_trips_and_avoids_dots() {
        for name in ["eth0", "eth0.100", "a%2Eb", "%attach%x", "x.y.z"] {
            let e = escape(name);
            assert!(!e.contains('.'), "{e}");
            assert_eq!(unescape(&e), name);
            assert!(!e.starts_with(STAGING) && !e.starts_with(RETIRING));
        }
    }
}
