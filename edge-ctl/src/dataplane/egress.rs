//! The egress program's attachment: a TCX link where the kernel has TCX (6.6), a cls_bpf filter
//! on the clsact qdisc otherwise; how it is made, recorded in the state file
//! ([`EgressAttachment`]) and taken off again. Attach, reload/upgrade, detach and the sweep of
//! interrupted commands all use it; it depends on none of them.

use std::path::Path;

use aya::programs::TcAttachType;
use aya::programs::links::{FdLink, Link, LinkOrder};
use aya::programs::tc::{NlOptions, SchedClassifierLink, TcAttachOptions, TcError, TcHandle};
use serde::{Deserialize, Serialize};

use super::paths::TC_LINK;
use super::{DataplaneError, object};

/// How the egress program is attached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum EgressAttachment {
    /// A TCX bpf_link, pinned beside the maps.
    Tcx,
    /// A cls_bpf filter on the clsact qdisc (kernels before 6.6), found again by these values.
    Clsact { priority: u16, handle: u32 },
}

impl EgressAttachment {
    pub fn kind(&self) -> &'static str {
        match self {
            EgressAttachment::Tcx => "tcx",
            EgressAttachment::Clsact { .. } => "clsact",
        }
    }
}

/// The cls_bpf filter's priority and handle when clsact is used.
const CLSACT_PRIORITY: u16 = 0xed;
const CLSACT_HANDLE: u32 = 0xed;

/// An attached egress program that is detached again on drop unless disarmed.
pub(super) struct Egress {
    ifname: String,
    pub(super) attachment: EgressAttachment,
    pub(super) armed: bool,
}

impl Drop for Egress {
    fn drop(&mut self) {
        if self.armed {
            detach_clsact(&self.ifname, &self.attachment);
        }
    }
}

/// TCX when the kernel has it, clsact otherwise. `EDGE_CTL_TC=clsact` forces clsact (tests).
pub(super) fn attach_egress(ebpf: &mut aya::Ebpf, ifname: &str, pins: &Path) -> Result<Egress, DataplaneError> {
    let err = |e: &dyn std::fmt::Display| DataplaneError::AttachEgress { ifname: ifname.into(), reason: e.to_string() };
    let prog = object::load_tc(ebpf)?;
    let force_clsact = std::env::var("EDGE_CTL_TC").is_ok_and(|v| v == "clsact");
    // TCX arrived in Linux 6.6; probed, not read off the version (see `kernel`).
    let tcx = !force_clsact && super::kernel::features().has(super::kernel::Feature::Tcx);
    if tcx {
        let id = prog
            .attach_with_options(ifname, TcAttachType::Egress, TcAttachOptions::TcxOrder(LinkOrder::default()))
            .map_err(|e| err(&e))?;
        let link = prog.take_link(id).map_err(|e| err(&e))?;
        let link = FdLink::try_from(link).map_err(|e| err(&e))?;
        link.pin(pins.join(TC_LINK)).map_err(|e| err(&e))?;
        return Ok(Egress { ifname: ifname.into(), attachment: EgressAttachment::Tcx, armed: true });
    }
    // The qdisc stays after a detach (other filters may use it): EEXIST is expected.
    if let Err(e) = aya::programs::tc::qdisc_add_clsact(ifname) {
        let exists = match &e {
            TcError::NetlinkError(n) => n.raw_os_error() == Some(libc::EEXIST),
            TcError::IoError(io) => io.kind() == std::io::ErrorKind::AlreadyExists,
            TcError::AlreadyAttached => true,
            _ => false,
        };
        if !exists {
            return Err(err(&e));
        }
    }
    let options = NlOptions { priority: CLSACT_PRIORITY, handle: TcHandle::from(CLSACT_HANDLE), classid: None };
    let id = prog
        .attach_with_options(ifname, TcAttachType::Egress, TcAttachOptions::Netlink(options))
        .map_err(|e| err(&e))?;
    let link = prog.take_link(id).map_err(|e| err(&e))?;
    // The filter lives in the qdisc; dropping the link would remove it.
    std::mem::forget(link);
    Ok(Egress { ifname: ifname.into(), attachment: EgressAttachment::default_clsact(), armed: true })
}

impl EgressAttachment {
    /// The clsact filter attach creates.
    pub(super) fn default_clsact() -> Self {
        EgressAttachment::Clsact { priority: CLSACT_PRIORITY, handle: CLSACT_HANDLE }
    }
}

/// Removes a clsact egress filter (a TCX link goes with its pin).
pub(super) fn detach_clsact(ifname: &str, attachment: &EgressAttachment) {
    if let EgressAttachment::Clsact { priority, handle } = attachment
        && let Ok(link) =
            SchedClassifierLink::attached(ifname, TcAttachType::Egress, *priority, TcHandle::from(*handle), None)
    {
        let _ = link.detach();
    }
}
