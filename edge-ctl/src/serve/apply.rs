//! Bringing one configured interface to its policy file: attach it when it has no filter,
//! reload it when the live policy differs from the file, leave it alone otherwise.

use anyhow::{Result, bail};

use super::config::InterfaceConfig;
use crate::dataplane::{self, AttachReport, AttachRequest, DataplaneError, ReloadReport};

/// What applying a policy file did.
#[derive(Debug)]
pub enum Applied {
    Attached(AttachReport),
    Reloaded(ReloadReport),
    /// The live policy already is the file's, compiled for the interface's addresses.
    Unchanged {
        generation: Option<u32>,
    },
    /// The interface does not exist (yet): nothing to filter. The daemon attaches it when it
    /// appears (a driver still loading at boot, a VLAN or bond created later).
    Absent,
}

/// Reads the interface's policy file and makes it the live policy. A file that does not
/// parse or validate changes nothing (the error names file:line:col).
pub fn apply(iface: &InterfaceConfig) -> Result<Applied> {
    let policy = crate::policy::read_policy(&iface.policy)?;
    if dataplane::system::if_index(&iface.name).is_err() {
        return Ok(Applied::Absent);
    }
    for w in &policy.warnings {
        log::warn!("{w}");
    }
    // A stale attachment (the interface was created again) filters nothing: attach replaces it.
    let live = dataplane::status()?.into_iter().find(|s| s.interface == iface.name && !s.stale);
    let addrs = dataplane::system::interface_addresses(&iface.name);
    // The daemon started from an SSH session: a policy that cuts it is not applied (a live one
    // stays; the failure is logged and counted), as `edge-ctl attach` and `reload` refuse it.
    if let Some(cut) = crate::session::ssh_session_cut(&policy, iface.role, &iface.name, &addrs) {
        bail!("{cut}: not applied; fix the policy (the [failsafe] section, or a rule)");
    }
    let Some(live) = live else {
        if let Some(w) = crate::session::empty_role_warning(&policy, iface.role, &iface.name) {
            log::warn!("{w}");
        }
        let report = dataplane::attach(&AttachRequest {
            ifname: &iface.name,
            role: iface.role,
            policy: &policy,
            mode: iface.mode,
        })?;
        return Ok(Applied::Attached(report));
    };
    if let Some(role) = live.role
        && role != iface.role
    {
        bail!(
            "{} is attached with role {role}, but the configuration says {}: run \
             `edge-ctl detach {}` and let serve attach it, or fix the configuration",
            iface.name,
            iface.role,
            iface.name
        );
    }
    // The interface's addresses are compiled in (`@interface`, the martian check's own
    // addresses): when they changed since (an address configured after boot, DHCP), the same
    // policy is compiled again for them.
    if live.policy_hash.as_deref() == Some(policy.hash().as_str()) && live.interface_addresses == addrs {
        return Ok(Applied::Unchanged { generation: live.generation });
    }
    if let Some(w) = crate::session::empty_role_warning(&policy, iface.role, &iface.name) {
        log::warn!("{w}");
    }
    Ok(Applied::Reloaded(dataplane::reload(&iface.name, &policy)?))
}

/// Whether a failure may pass by itself (another edge-ctl holds the interface's lock).
pub fn is_transient(e: &anyhow::Error) -> bool {
    e.chain().any(|c| matches!(c.downcast_ref::<DataplaneError>(), Some(DataplaneError::Busy(_))))
}
