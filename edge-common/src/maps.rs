//! Names of the maps in the eBPF object. They are pinned by name in the interface's pin directory.

/// The live generation and both generations' configuration, port and class tables: one
/// [`super::PacketTables`], a global variable of the kernel programs (no lookup), memory-mapped
/// by the controller.
pub const TABLES: &str = "EDGE_TABLES";
/// The local ports that may have tracked flows: one [`super::CtPorts`], memory-mapped.
pub const CT_PORTS: &str = "EDGE_CTPORTS";
pub const REMOTE_V4: &str = "EDGE_REMOTE4";
pub const REMOTE_V6: &str = "EDGE_REMOTE6";
pub const RULE_COUNTERS: &str = "EDGE_RULES";
pub const DROP_COUNTERS: &str = "EDGE_DROPS";
pub const PASS_COUNTERS: &str = "EDGE_PASSES";
pub const CT_V4: &str = "EDGE_CT4";
pub const CT_V6: &str = "EDGE_CT6";
/// Connection-table events, per CPU, indexed by [`super::CtEvent`].
pub const CT_EVENTS: &str = "EDGE_CTEV";
/// Entries created minus entries removed, `[IPv4, IPv6]`, updated atomically.
pub const CT_LIVE: &str = "EDGE_CTLIVE";
/// Direct-mapped flow slots in front of [`CT_V4`] and [`CT_V6`] ([`super::CtSlotV4`]).
pub const CT_SLOTS_V4: &str = "EDGE_CTS4";
pub const CT_SLOTS_V6: &str = "EDGE_CTS6";
/// First fragments that passed ([`super::FragKey`] to [`super::FragEntry`]), so later fragments
/// follow them; an LRU hash of [`super::FRAGMENTS_MAX`] entries.
pub const FRAGMENTS: &str = "EDGE_FRAGS";
/// Drop events ([`super::DropEvent`]), a ring buffer.
pub const EVENTS: &str = "EDGE_EVENTS";
/// Per-CPU event budget of the current second ([`super::EventBudget`]).
pub const EVENT_BUDGET: &str = "EDGE_EVBUDGET";
/// Result of the explain programs ([`super::Explanation`]); not pinned.
pub const EXPLAIN: &str = "EDGE_EXPLAIN";
