//! The contract between the edge-ctl kernel programs and the edge-ctl controller.
//!
//! Everything both sides must agree on lives here and nowhere else: map names and sizes, the
//! layout of every key and value, the table-index arithmetic, and the verdict enums with the names
//! every tool prints. The crate is `no_std` and holds no logic beyond that arithmetic.
//!
//! Byte order: IPv4/IPv6 addresses are stored exactly as they appear on the wire, read as native
//! `u32` words (`u32::from_ne_bytes(octets)`), so the kernel compares them without swapping.
//! Ports are host order.
//!
//! The contract is split by concern, one module each, and every item is re-exported here: users
//! name it `edge_common::Item` whichever module holds it.
//!
//! - `tables`: the packet tables the kernel reads for every packet ([`PacketTables`]): limits,
//!   generations, each generation's configuration and [`flags`], port classes and their
//!   candidates ([`inline`] bits), host tables, local prefixes, remote-prefix keys.
//! - `conntrack`: the connection tables: keys, entries, states and timeouts, flow slots, the
//!   local ports that may have flows ([`CtPorts`]), and the entries' [`ct_origin`].
//! - `counters`: rule, drop and pass counters and their indices; drop and pass reasons;
//!   connection-table events.
//! - `events`: drop events (the ring buffer's records) and their per-CPU budget.
//! - `explanation`: what the explain programs answer ([`Explanation`], [`explain`]).
//! - [`maps`], [`programs`]: the names of the maps and programs in the eBPF object.
//! - `pod` (feature `user`): `aya::Pod` for the map types.
#![no_std]

pub mod maps;
pub mod programs;

mod conntrack;
mod counters;
mod events;
mod explanation;
#[cfg(feature = "user")]
mod pod;
mod tables;

pub use conntrack::*;
pub use counters::*;
pub use events::*;
pub use explanation::*;
pub use tables::*;

/// The layouts the kernel and the controller share, across the modules.
#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn layouts_are_stable() {
        // The packet tables are one array value: a multiple of 8 bytes, generations included.
        assert_eq!(core::mem::size_of::<Generation>() % 8, 0);
        assert_eq!(core::mem::size_of::<PacketTables>() % 8, 0);
        // About 3.4 MiB. Linux before 5.11 refuses an array value over KMALLOC_MAX_SIZE (4 MiB on
        // x86-64: E2BIG), and the tables are one value (a global variable).
        assert!(core::mem::size_of::<PacketTables>() <= 4 << 20);
        assert_eq!(core::mem::size_of::<FirstHosts>(), 64);
        assert_eq!(core::mem::size_of::<Candidate>(), 16);
        assert_eq!(core::mem::size_of::<RemoteHost>(), 24);
        assert_eq!(core::mem::size_of::<ClassEntry>(), 16 + 2 * 64 + 2 * 2 * INLINE_HOSTS * 24 + 16 * MAX_CANDIDATES);
        assert_eq!(core::mem::size_of::<Counter>(), 16);
        assert_eq!(core::mem::size_of::<CtKeyV4>(), 16);
        assert_eq!(core::mem::size_of::<CtKeyV6>(), 40);
        assert_eq!(core::mem::size_of::<CtEntry>(), 24);
        assert_eq!(core::mem::size_of::<CtSlotV4>(), 48);
        assert_eq!(core::mem::size_of::<CtSlotV6>(), 72);
        assert_eq!(core::mem::size_of::<DropEvent>(), 56);
        assert_eq!(core::mem::size_of::<FragKey>(), 40);
        assert_eq!(core::mem::size_of::<FragEntry>(), 16);
        assert_eq!(
            drop_index(1, DropKind::WouldDrop, DropReason::EgressPolicy),
            DROP_COUNTERS_LEN - DropReason::COUNT + 9
        );
    }
}
