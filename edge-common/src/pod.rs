//! Userspace only (feature `user`): `aya::Pod` for the types the controller reads and writes in
//! the maps, so aya can copy them as bytes.

use super::*;
// SAFETY: all are repr(C) plain old data without padding holes that matter.
unsafe impl aya::Pod for PacketTables {}
unsafe impl aya::Pod for CtPorts {}
unsafe impl aya::Pod for Candidate {}
unsafe impl aya::Pod for ClassEntry {}
unsafe impl aya::Pod for InlineHost {}
unsafe impl aya::Pod for LocalV4 {}
unsafe impl aya::Pod for LocalV6 {}
unsafe impl aya::Pod for GenConfig {}
unsafe impl aya::Pod for Counter {}
unsafe impl aya::Pod for CtKeyV4 {}
unsafe impl aya::Pod for CtKeyV6 {}
unsafe impl aya::Pod for CtEntry {}
unsafe impl aya::Pod for CtSlotV4 {}
unsafe impl aya::Pod for CtSlotV6 {}
unsafe impl aya::Pod for DropEvent {}
unsafe impl aya::Pod for EventBudget {}
unsafe impl aya::Pod for Explanation {}
unsafe impl aya::Pod for FragKey {}
unsafe impl aya::Pod for FragEntry {}
