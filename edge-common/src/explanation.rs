//! What the explain programs (`edge-ctl explain`'s dry runs of the filter) answer: the
//! [`Explanation`] they write to [`maps::EXPLAIN`](crate::maps::EXPLAIN), and the values of its
//! `by` field ([`explain`]).

#[cfg(doc)]
use crate::counters::{DropReason, PassReason};

/// What the explain programs decided.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Explanation {
    /// 1 pass, 2 drop.
    pub verdict: u32,
    /// Why, one of [`explain`].
    pub by: u32,
    /// Rule slot (by rule), [`DropReason`] (by drop), [`PassReason`] (by pass reason).
    pub detail: u32,
    /// The generation that decided.
    pub generation: u32,
}

/// Values of [`Explanation::by`].
pub mod explain {
    pub const RULE: u32 = 1;
    pub const DROP: u32 = 2;
    pub const PASS_REASON: u32 = 3;
    /// Dropped by the rules but passed because of audit or egress monitor/off mode.
    pub const WOULD_DROP: u32 = 4;
}
