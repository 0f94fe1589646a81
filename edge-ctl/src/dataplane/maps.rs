//! The pinned maps of one attached interface: open them, write a policy generation into them,
//! read the counters back.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray, PerCpuValues};
use edge_common::{
    Counter, CtEntry, CtEvent, CtKeyV4, CtKeyV6, CtPorts, DropKind, DropReason, EventBudget, GenConfig, LocalV4,
    LocalV6, PacketTables, PassReason, RemoteKeyV4, RemoteKeyV6, RemoteSets, drop_index, maps as names, pass_index,
    port_index,
};

use super::DataplaneError;
use crate::compile::Tables;

/// A pinned map of the interface, untyped.
pub fn pinned(dir: &Path, name: &str) -> Result<MapData, DataplaneError> {
    MapData::from_pin(dir.join(name)).map_err(|e| DataplaneError::map(name, "open pinned map", e))
}

fn open(dir: &Path, name: &str) -> Result<Map, DataplaneError> {
    Map::from_map_data(pinned(dir, name)?).map_err(|e| DataplaneError::map(name, "open pinned map", e))
}

/// Size of the connection tables pinned in `dir` (set at attach; a reload cannot change it).
pub fn pinned_ct_max(dir: &Path) -> Result<u32, DataplaneError> {
    pinned(dir, names::CT_V4)?
        .info()
        .map(|i| i.max_entries())
        .map_err(|e| DataplaneError::map(names::CT_V4, "read size", e))
}

macro_rules! typed {
    ($dir:expr, $name:expr) => {
        open($dir, $name)?.try_into().map_err(|e| DataplaneError::map($name, "open pinned map", e))?
    };
}

/// Handles on every map of an interface, opened from its pin directory.
pub struct MapSet {
    /// The packet tables (`edge_common::PacketTables`), read and written through a memory
    /// mapping (see [`MapSet::tables`]).
    pub tables: MapData,
    /// The local ports that may have tracked flows (`edge_common::CtPorts`), memory-mapped.
    pub ct_ports: MapData,
    pub remote_v4: LpmTrie<MapData, RemoteKeyV4, RemoteSets>,
    pub remote_v6: LpmTrie<MapData, RemoteKeyV6, RemoteSets>,
    pub rules: PerCpuArray<MapData, Counter>,
    pub drops: PerCpuArray<MapData, Counter>,
    pub passes: PerCpuArray<MapData, Counter>,
    pub ct_v4: HashMap<MapData, CtKeyV4, CtEntry>,
    /// Size of each connection table.
    ct_max: u32,
    pub ct_v6: HashMap<MapData, CtKeyV6, CtEntry>,
    pub ct_events: PerCpuArray<MapData, u64>,
    pub ct_live: Array<MapData, u64>,
    pub event_budget: PerCpuArray<MapData, EventBudget>,
    /// The flow slots, memory-mapped; `None` when the live programs came from a build without
    /// them (until `edge-ctl upgrade`).
    pub ct_slots_v4: Option<MapData>,
    pub ct_slots_v6: Option<MapData>,
}

impl MapSet {
    pub fn open(dir: &Path) -> Result<MapSet, DataplaneError> {
        Ok(MapSet {
            tables: pinned(dir, names::TABLES)?,
            ct_ports: pinned(dir, names::CT_PORTS)?,
            remote_v4: typed!(dir, names::REMOTE_V4),
            remote_v6: typed!(dir, names::REMOTE_V6),
            rules: typed!(dir, names::RULE_COUNTERS),
            drops: typed!(dir, names::DROP_COUNTERS),
            passes: typed!(dir, names::PASS_COUNTERS),
            ct_v4: typed!(dir, names::CT_V4),
            ct_max: pinned_ct_max(dir)?,
            ct_v6: typed!(dir, names::CT_V6),
            ct_events: typed!(dir, names::CT_EVENTS),
            ct_live: typed!(dir, names::CT_LIVE),
            event_budget: typed!(dir, names::EVENT_BUDGET),
            ct_slots_v4: dir.join(names::CT_SLOTS_V4).exists().then(|| pinned(dir, names::CT_SLOTS_V4)).transpose()?,
            ct_slots_v6: dir.join(names::CT_SLOTS_V6).exists().then(|| pinned(dir, names::CT_SLOTS_V6)).transpose()?,
        })
    }

    /// The packet tables, mapped into this process: the kernel's live memory, about 3.4 MiB.
    pub fn tables(&self) -> Result<Mmapped<PacketTables>, DataplaneError> {
        use std::os::fd::AsFd;
        Mmapped::map(self.tables.fd().as_fd(), 1, names::TABLES)
    }

    /// The tracked-port bytes, mapped into this process.
    pub fn ct_ports(&self) -> Result<Mmapped<CtPorts>, DataplaneError> {
        use std::os::fd::AsFd;
        Mmapped::map(self.ct_ports.fd().as_fd(), 1, names::CT_PORTS)
    }

    /// The live generation.
    pub fn active_generation(&self) -> Result<u32, DataplaneError> {
        let mut t = self.tables()?;
        Ok(t.active().load(Ordering::SeqCst) & 1)
    }

    /// Makes `generation` live: one aligned 32-bit store, after which every new packet uses it.
    pub fn set_active_generation(&mut self, generation: u32) -> Result<(), DataplaneError> {
        let mut t = self.tables()?;
        t.active().store(generation & 1, Ordering::SeqCst);
        Ok(())
    }

    /// Writes `tables` into `generation`, which must not be live. Nothing the kernel reads for
    /// the live generation changes.
    pub fn write_generation(&mut self, generation: u32, tables: &Tables) -> Result<(), DataplaneError> {
        self.write_remotes(generation, tables)?;
        let mut mapped = self.tables()?;
        // In place: a generation is megabytes, no copy of it goes through the stack.
        let g = &mut mapped.entries_mut()[0].generations[(generation & 1) as usize];
        for (direction, per_proto) in tables.ports.iter().enumerate() {
            for (proto, classes) in per_proto.iter().enumerate() {
                let base = port_index(direction as u32, proto as u32, 0);
                for (port, class) in classes.iter().enumerate() {
                    // Classes are below MAX_CLASSES (checked by the compiler), so they fit.
                    g.ports[base + port] = *class as u16;
                }
            }
        }
        g.classes[..tables.classes.len()].copy_from_slice(&tables.classes);
        g.config = gen_config(tables, self.ct_max);
        Ok(())
    }

    /// Sets until when (jiffies; 0: never) generation `generation` picks up inbound mid-stream
    /// TCP of connections its outbound rules allow (see `edge_common::PassReason::Pickup`).
    pub fn set_pickup_until(&mut self, generation: u32, until: u64) -> Result<(), DataplaneError> {
        let mut mapped = self.tables()?;
        mapped.entries_mut()[0].generations[(generation & 1) as usize].config.pickup_until = until;
        Ok(())
    }

    fn write_remotes(&mut self, generation: u32, tables: &Tables) -> Result<(), DataplaneError> {
        let g = generation as u8;
        let stale4: Vec<Key<RemoteKeyV4>> =
            self.remote_v4.keys().filter_map(Result::ok).filter(|k| k.data()[0] == g).collect();
        for k in stale4 {
            self.remote_v4.remove(&k).map_err(|e| DataplaneError::map(names::REMOTE_V4, "delete", e))?;
        }
        let stale6: Vec<Key<RemoteKeyV6>> =
            self.remote_v6.keys().filter_map(Result::ok).filter(|k| k.data()[0] == g).collect();
        for k in stale6 {
            self.remote_v6.remove(&k).map_err(|e| DataplaneError::map(names::REMOTE_V6, "delete", e))?;
        }
        for (net, sets) in &tables.remote_v4 {
            let o = net.network().octets();
            let key = Key::new(8 + net.prefix_len() as u32, [g, o[0], o[1], o[2], o[3]]);
            self.remote_v4.insert(&key, sets, 0).map_err(|e| DataplaneError::map(names::REMOTE_V4, "insert", e))?;
        }
        for (net, sets) in &tables.remote_v6 {
            let mut data = [0u8; 17];
            data[0] = g;
            data[1..].copy_from_slice(&net.network().octets());
            let key = Key::new(8 + net.prefix_len() as u32, data);
            self.remote_v6.insert(&key, sets, 0).map_err(|e| DataplaneError::map(names::REMOTE_V6, "insert", e))?;
        }
        Ok(())
    }

    /// Zeroes the counters of a rule slot (before a new rule takes it).
    pub fn reset_rule_counter(&mut self, slot: u16) -> Result<(), DataplaneError> {
        let zeros = per_cpu_zeros()?;
        self.rules.set(slot as u32, zeros, 0).map_err(|e| DataplaneError::map(names::RULE_COUNTERS, "write", e))
    }

    pub fn rule_counter(&self, slot: u16) -> Result<Counter, DataplaneError> {
        sum(&self.rules, slot as u32, names::RULE_COUNTERS)
    }

    /// Drops by reason; `direction` 0 is inbound, 1 outbound.
    pub fn drop_counter(&self, direction: u32, kind: DropKind, reason: DropReason) -> Result<Counter, DataplaneError> {
        sum(&self.drops, drop_index(direction, kind, reason), names::DROP_COUNTERS)
    }

    pub fn pass_counter(&self, direction: u32, reason: PassReason) -> Result<Counter, DataplaneError> {
        sum(&self.passes, pass_index(direction, reason), names::PASS_COUNTERS)
    }

    pub fn ct_event(&self, event: CtEvent) -> Result<u64, DataplaneError> {
        let values =
            self.ct_events.get(&(event as u32), 0).map_err(|e| DataplaneError::map(names::CT_EVENTS, "read", e))?;
        Ok(values.iter().sum())
    }

    /// Drop events reported and suppressed by the per-CPU budget, over all CPUs.
    pub fn event_totals(&self) -> Result<(u64, u64), DataplaneError> {
        let v = self.event_budget.get(&0, 0).map_err(|e| DataplaneError::map(names::EVENT_BUDGET, "read", e))?;
        Ok(v.iter().fold((0, 0), |(e, s), b| (e + b.emitted, s + b.suppressed)))
    }

    /// Size of each connection table.
    pub fn ct_v4_max(&self) -> u32 {
        self.ct_max
    }

    /// Live connection-table entries `[IPv4, IPv6]` as the kernel counts them.
    pub fn ct_live(&self) -> Result<[u64; 2], DataplaneError> {
        let get = |i| self.ct_live.get(&i, 0).map_err(|e| DataplaneError::map(names::CT_LIVE, "read", e));
        Ok([get(0)?, get(1)?])
    }

    /// Sets the live-entry gauge of one family (after the controller adds or removes entries).
    pub fn set_ct_live(&mut self, family: u32, value: u64) -> Result<(), DataplaneError> {
        self.ct_live.set(family, value, 0).map_err(|e| DataplaneError::map(names::CT_LIVE, "write", e))
    }
}

fn sum(map: &PerCpuArray<MapData, Counter>, index: u32, name: &str) -> Result<Counter, DataplaneError> {
    let values = map.get(&index, 0).map_err(|e| DataplaneError::map(name, "read", e))?;
    Ok(values
        .iter()
        .fold(Counter::default(), |acc, c| Counter { packets: acc.packets + c.packets, bytes: acc.bytes + c.bytes }))
}

fn per_cpu_zeros() -> Result<PerCpuValues<Counter>, DataplaneError> {
    let n = aya::util::nr_cpus().map_err(|(what, e)| DataplaneError::Io { what: what.into(), source: e })?;
    PerCpuValues::try_from(vec![Counter::default(); n])
        .map_err(|e| DataplaneError::Io { what: "per-CPU values".into(), source: e })
}

/// `ct_max` is the size of the live tables, which only a new attach changes (the policy's
/// value may differ after a reload).
fn gen_config(tables: &Tables, ct_max: u32) -> GenConfig {
    let mut cfg = GenConfig::zeroed();
    cfg.flags = tables.flags;
    cfg.hosts = *tables.hosts;
    cfg.ct_max = ct_max;
    cfg.ct_slot_mask = edge_common::ct_slots(ct_max) - 1;
    let hz = super::system::kernel_hz();
    cfg.hz = hz;
    cfg.ct_timeout_jiffies = tables.ct_timeout_ns.map(|ns| ns.saturating_mul(hz) / 1_000_000_000);
    // The kernel budgets per CPU; round up so a rate of 1 still reports.
    let cpus = aya::util::nr_cpus().map(|n| n.max(1) as u32).unwrap_or(1);
    cfg.events_per_cpu = tables.events_per_second.div_ceil(cpus);
    cfg.own_v4 = tables.own_v4;
    cfg.own_v6 = tables.own_v6;
    cfg.local_v4_len = tables.local_v4.len() as u32;
    cfg.local_v6_len = tables.local_v6.len() as u32;
    let fill4 = |dst: &mut [LocalV4]| dst[..tables.local_v4.len()].copy_from_slice(&tables.local_v4);
    let fill6 = |dst: &mut [LocalV6]| dst[..tables.local_v6.len()].copy_from_slice(&tables.local_v6);
    fill4(&mut cfg.local_v4);
    fill6(&mut cfg.local_v6);
    cfg
}

/// An mmapable array map (created with BPF_F_MMAPABLE) seen as a slice: writing a whole port
/// table generation is a memory copy instead of 262,144 map-update syscalls.
pub struct Mmapped<T> {
    ptr: *mut T,
    len: usize,
}

impl<T: Copy> Mmapped<T> {
    /// Maps `len` entries of the map behind `fd`; `name` is for errors.
    pub fn map(fd: std::os::fd::BorrowedFd<'_>, len: usize, name: &str) -> Result<Mmapped<T>, DataplaneError> {
        use std::os::fd::AsRawFd;
        // Array map values are laid out at their size rounded up to 8 bytes.
        assert_eq!(std::mem::size_of::<T>() % 8, 0, "array map entries are 8-byte aligned");
        let bytes = len * std::mem::size_of::<T>();
        // SAFETY: a shared mapping of an mmapable array map of exactly `bytes` bytes.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(DataplaneError::Io { what: format!("mmap {name}"), source: std::io::Error::last_os_error() });
        }
        Ok(Mmapped { ptr: ptr.cast(), len })
    }

    pub fn entries_mut(&mut self) -> &mut [T] {
        // SAFETY: the mapping holds `len` entries and lives as long as self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// A copy of the whole mapping, as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        // SAFETY: the mapping holds `len` entries of plain data and lives as long as self.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len * std::mem::size_of::<T>()) }.to_vec()
    }
}

impl Mmapped<PacketTables> {
    /// The live-generation word, as the atomic it is to the kernel.
    pub fn active(&mut self) -> &AtomicU32 {
        // SAFETY: `active` is an aligned u32 inside the mapping, which lives as long as self.
        unsafe { AtomicU32::from_ptr(&raw mut (*self.ptr).active) }
    }
}

impl<T> Drop for Mmapped<T> {
    fn drop(&mut self) {
        // SAFETY: unmapping what `map` mapped.
        unsafe {
            libc::munmap(self.ptr.cast(), self.len * std::mem::size_of::<T>());
        }
    }
}
