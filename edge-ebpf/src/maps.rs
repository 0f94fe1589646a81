//! The maps of one attached interface. Names, sizes and value layouts come from edge-common; every
//! map is pinned by name so the controller can reopen it and a reload can reuse it.

use aya_ebpf::bindings::BPF_F_MMAPABLE;
use aya_ebpf::macros::map;
use aya_ebpf::maps::{Array, LpmTrie, LruHashMap, PerCpuArray, RingBuf};
use edge_common::{
    CT_DEFAULT_MAX, Counter, CtEntry, CtEvent, CtKeyV4, CtKeyV6, CtPorts, DROP_COUNTERS_LEN, EVENTS_RING_BYTES,
    EventBudget, Explanation, FRAGMENTS_MAX, FragEntry, FragKey, MAX_REMOTE_PREFIXES, MAX_RULES, PASS_COUNTERS_LEN,
    PacketTables, RemoteKeyV4, RemoteKeyV6, RemoteSets,
};
#[cfg(not(feature = "compat"))]
use edge_common::{CtSlotV4, CtSlotV6};

/// The live generation and both generations' tables (see `edge_common::PacketTables`). A global
/// variable: the loader turns it into a one-element array map and the program reads it at a
/// constant address, without a lookup. The controller creates that map (memory-mappable) and
/// pins it as `EDGE_TABLES` before loading the object; see `edge-ctl`'s `dataplane::object`.
/// Only the controller writes it.
#[unsafe(no_mangle)]
pub static mut EDGE_TABLES: PacketTables = unsafe { core::mem::zeroed() };

/// Local ports that may have tracked flows (see `edge_common::CtPorts`): written by the
/// kernel, cleared by the controller; read only by packets no rule allows.
#[map]
pub static EDGE_CTPORTS: Array<CtPorts> = Array::pinned(1, BPF_F_MMAPABLE);

#[map]
pub static EDGE_REMOTE4: LpmTrie<RemoteKeyV4, RemoteSets> = LpmTrie::pinned(MAX_REMOTE_PREFIXES, 0);

#[map]
pub static EDGE_REMOTE6: LpmTrie<RemoteKeyV6, RemoteSets> = LpmTrie::pinned(MAX_REMOTE_PREFIXES, 0);

#[map]
pub static EDGE_RULES: PerCpuArray<Counter> = PerCpuArray::pinned(MAX_RULES, 0);

#[map]
pub static EDGE_DROPS: PerCpuArray<Counter> = PerCpuArray::pinned(DROP_COUNTERS_LEN, 0);

#[map]
pub static EDGE_PASSES: PerCpuArray<Counter> = PerCpuArray::pinned(PASS_COUNTERS_LEN, 0);

/// Connection tables, shared by the XDP (ingress) and TC (egress) programs. LRU: when full, a
/// new flow evicts the least recently used one. The controller sets the size at attach.
#[map]
pub static EDGE_CT4: LruHashMap<CtKeyV4, CtEntry> = LruHashMap::pinned(CT_DEFAULT_MAX, 0);

#[map]
pub static EDGE_CT6: LruHashMap<CtKeyV6, CtEntry> = LruHashMap::pinned(CT_DEFAULT_MAX, 0);

/// Flow slots in front of the tables (see `conntrack`); sized at attach like the tables, and
/// memory-mapped so the controller can list and flush them with plain memory access. Not in the
/// `compat` object (see `conntrack::slots`).
#[cfg(not(feature = "compat"))]
#[map]
pub static EDGE_CTS4: Array<CtSlotV4> = Array::pinned(CT_DEFAULT_MAX, BPF_F_MMAPABLE);

#[cfg(not(feature = "compat"))]
#[map]
pub static EDGE_CTS6: Array<CtSlotV6> = Array::pinned(CT_DEFAULT_MAX, BPF_F_MMAPABLE);

#[map]
pub static EDGE_CTEV: PerCpuArray<u64> = PerCpuArray::pinned(CtEvent::COUNT, 0);

/// Live entries (created minus removed) of the IPv4 and the IPv6 table, updated atomically.
#[map]
pub static EDGE_CTLIVE: Array<u64> = Array::pinned(2, 0);

/// First fragments that passed, for their later fragments (see `fragments`).
#[map]
pub static EDGE_FRAGS: LruHashMap<FragKey, FragEntry> = LruHashMap::pinned(FRAGMENTS_MAX, 0);

/// The key of the first fragment being judged, for its record once it passes (see
/// `programs::remember`); per CPU, not pinned.
#[map]
pub static EDGE_FRAGKEY: PerCpuArray<FragKey> = PerCpuArray::with_max_entries(1, 0);

/// Drop events for `edge-ctl tail`, rate-limited per CPU (see `events`).
#[map]
pub static EDGE_EVENTS: RingBuf = RingBuf::pinned(EVENTS_RING_BYTES, 0);

#[map]
pub static EDGE_EVBUDGET: PerCpuArray<EventBudget> = PerCpuArray::pinned(1, 0);

/// Written by the explain programs only; not pinned, it lives as long as `edge-ctl explain`.
#[map]
pub static EDGE_EXPLAIN: Array<Explanation> = Array::with_max_entries(1, 0);
