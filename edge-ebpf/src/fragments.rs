//! Later fragments follow their first fragment, as Cilium's fragment map has them do: a first
//! fragment that passes records its verdict under the datagram's addresses, identification and
//! (IPv4) protocol, per direction; a later fragment of that datagram gets the same verdict (the
//! same rule counts it) for [`edge_common::FRAGMENT_TIMEOUT_S`]; one whose first fragment was
//! not seen passing is dropped. Fragments that arrive before their first are lost, as without
//! tracking.

use edge_common::{FRAGMENT_TIMEOUT_S, FragEntry, FragKey, GenConfig};

use crate::conntrack::jiffies;
use crate::maps::{EDGE_FRAGKEY, EDGE_FRAGS};

#[inline(always)]
pub fn key(src: &[u32; 4], dst: &[u32; 4], id: u32, proto: u8, direction: u32) -> FragKey {
    FragKey { src: *src, dst: *dst, id, proto, direction: direction as u8, _pad: 0 }
}

/// Leaves a first fragment's key for [`record_staged`], in a per-CPU scratch value: a program
/// runs to its end on one CPU, and neither the XDP nor the TC program interrupts the other there.
#[inline(always)]
pub fn stage(key: &FragKey) {
    if let Some(k) = EDGE_FRAGKEY.get_ptr_mut(0) {
        unsafe { *k = *key };
    }
}

/// Records a first fragment's verdict (`kind`, `detail`: see [`FragEntry`]) under the key
/// [`stage`] left.
#[inline(always)]
pub fn record_staged(kind: u8, detail: u16) {
    let entry = FragEntry { seen: jiffies(), detail, kind, _pad0: 0, _pad1: 0 };
    if let Some(key) = EDGE_FRAGKEY.get(0) {
        let _ = EDGE_FRAGS.insert(key, entry, 0);
    }
}

/// The verdict of a later fragment's first fragment, if it passed in the last
/// [`FRAGMENT_TIMEOUT_S`] seconds: `(kind, detail)`.
#[inline(always)]
pub fn lookup(cfg: &GenConfig, key: &FragKey) -> Option<(u8, u16)> {
    let e = unsafe { EDGE_FRAGS.get(key) }?;
    if jiffies().wrapping_sub(e.seen) > FRAGMENT_TIMEOUT_S * cfg.hz {
        return None;
    }
    Some((e.kind, e.detail))
}
