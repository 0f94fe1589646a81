//! The connection table seen from user space: list entries, flush them, insert seeds.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use std::collections::{HashMap, HashSet};
use std::os::fd::AsFd;

use aya::maps::MapData;
use edge_common::{CtEntry, CtKeyV4, CtKeyV6, CtSlotV4, CtSlotV6, CtState, ct_origin, ct_port_slot};
use serde::Serialize;

use super::DataplaneError;
use super::maps::{MapSet, Mmapped};
use super::state::InterfaceState;
use super::system;

/// A flow from the edge's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct FlowKey {
    pub protocol: &'static str,
    pub local: IpAddr,
    pub local_port: u16,
    pub remote: IpAddr,
    pub remote_port: u16,
}

impl FlowKey {
    fn proto_number(&self) -> u8 {
        if self.protocol == "tcp" { 6 } else { 17 }
    }
}

fn proto_name(p: u8) -> &'static str {
    if p == 6 { "tcp" } else { "udp" }
}

fn words(a: Ipv6Addr) -> [u32; 4] {
    let o = a.octets();
    std::array::from_fn(|i| u32::from_ne_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]]))
}

fn v6(w: [u32; 4]) -> Ipv6Addr {
    let mut o = [0u8; 16];
    for i in 0..4 {
        o[4 * i..4 * i + 4].copy_from_slice(&w[i].to_ne_bytes());
    }
    Ipv6Addr::from(o)
}

/// One entry as `edge-ctl conntrack` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct ConntrackEntry {
    #[serde(flatten)]
    pub flow: FlowKey,
    pub state: &'static str,
    /// Seconds since the entry was created / last saw a packet.
    pub age_s: f64,
    pub idle_s: f64,
    /// The rule that allowed the flow ("seeded at attach" for connections open before attach).
    pub rule: String,
    pub expired: bool,
}

/// CLOCK_MONOTONIC in ns: the clock `bpf_ktime_get_coarse_ns` reads.
pub fn monotonic_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("monotonic clock");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

fn flow_v4(k: &CtKeyV4) -> FlowKey {
    FlowKey {
        protocol: proto_name(k.proto),
        local: IpAddr::V4(Ipv4Addr::from(k.local.to_ne_bytes())),
        local_port: k.lport,
        remote: IpAddr::V4(Ipv4Addr::from(k.remote.to_ne_bytes())),
        remote_port: k.rport,
    }
}

fn flow_v6(k: &CtKeyV6) -> FlowKey {
    FlowKey {
        protocol: proto_name(k.proto),
        local: IpAddr::V6(v6(k.local)),
        local_port: k.lport,
        remote: IpAddr::V6(v6(k.remote)),
        remote_port: k.rport,
    }
}

/// A flow-slot array, memory-mapped (`None` when the live programs have none).
fn slots<T: Copy>(map: Option<&MapData>, name: &str) -> Result<Option<Mmapped<T>>, DataplaneError> {
    let Some(map) = map else { return Ok(None) };
    let n = map.info().map_err(|e| DataplaneError::map(name, "read size", e))?.max_entries();
    Mmapped::map(map.fd().as_fd(), n as usize, name).map(Some)
}

impl MapSet {
    /// Every tracked flow, with its entry: the tables' entries (the slot's copy, which is newer,
    /// where a flow slot also holds the flow), and the flows only a slot still holds (the
    /// table evicted them).
    pub fn ct_entries(&self) -> Result<Vec<(FlowKey, CtEntry)>, DataplaneError> {
        let mut out: Vec<(FlowKey, CtEntry)> =
            self.ct_v4.iter().filter_map(Result::ok).map(|(k, e)| (flow_v4(&k), e)).collect();
        out.extend(self.ct_v6.iter().filter_map(Result::ok).map(|(k, e)| (flow_v6(&k), e)));
        let mut index: HashMap<FlowKey, usize> = out.iter().enumerate().map(|(i, (f, _))| (*f, i)).collect();
        for (flow, entry) in self.ct_slot_entries()? {
            match index.get(&flow) {
                Some(&i) => out[i].1 = entry,
                None => {
                    index.insert(flow, out.len());
                    out.push((flow, entry));
                }
            }
        }
        Ok(out)
    }

    /// The flows the flow slots hold.
    pub fn ct_slotted(&self) -> Result<Vec<FlowKey>, DataplaneError> {
        Ok(self.ct_slot_entries()?.into_iter().map(|(flow, _)| flow).collect())
    }

    /// The occupied flow slots of both families, with their entries.
    fn ct_slot_entries(&self) -> Result<Vec<(FlowKey, CtEntry)>, DataplaneError> {
        let mut out = Vec::new();
        if let Some(mut m) = slots::<CtSlotV4>(self.ct_slots_v4.as_ref(), edge_common::maps::CT_SLOTS_V4)? {
            out.extend(m.entries_mut().iter().filter(|s| s.key.proto != 0).map(|s| (flow_v4(&s.key), s.entry)));
        }
        if let Some(mut m) = slots::<CtSlotV6>(self.ct_slots_v6.as_ref(), edge_common::maps::CT_SLOTS_V6)? {
            out.extend(m.entries_mut().iter().filter(|s| s.key.proto != 0).map(|s| (flow_v6(&s.key), s.entry)));
        }
        Ok(out)
    }

    /// Inserts (or replaces) an entry.
    pub fn ct_insert(&mut self, flow: &FlowKey, entry: CtEntry) -> Result<(), DataplaneError> {
        let proto = flow.proto_number();
        let r = match (flow.local, flow.remote) {
            (IpAddr::V4(l), IpAddr::V4(r)) => {
                let key = CtKeyV4::new(
                    u32::from_ne_bytes(l.octets()),
                    u32::from_ne_bytes(r.octets()),
                    flow.local_port,
                    flow.remote_port,
                    proto,
                );
                self.ct_v4.insert(key, entry, 0)
            }
            (IpAddr::V6(l), IpAddr::V6(r)) => {
                let key = CtKeyV6::new(words(l), words(r), flow.local_port, flow.remote_port, proto);
                self.ct_v6.insert(key, entry, 0)
            }
            _ => return Ok(()),
        };
        r.map_err(|e| DataplaneError::map(edge_common::maps::CT_V4, "insert", e))?;
        self.mark_ct_port(proto, flow.local_port)
    }

    /// Tells the kernel a flow with this local port may be tracked (see `ct_port_slot`).
    fn mark_ct_port(&mut self, proto: u8, port: u16) -> Result<(), DataplaneError> {
        self.ct_ports()?.entries_mut()[0].0[ct_port_slot(proto, port)] = 1;
        Ok(())
    }

    /// Removes every entry; returns how many there were.
    pub fn ct_flush(&mut self) -> Result<usize, DataplaneError> {
        let keys4: HashSet<CtKeyV4> = self.ct_v4.keys().filter_map(Result::ok).collect();
        let keys6: HashSet<CtKeyV6> = self.ct_v6.keys().filter_map(Result::ok).collect();
        for k in &keys4 {
            let _ = self.ct_v4.remove(k);
        }
        for k in &keys6 {
            let _ = self.ct_v6.remove(k);
        }
        let mut slotted = 0;
        if let Some(mut m) = slots::<CtSlotV4>(self.ct_slots_v4.as_ref(), edge_common::maps::CT_SLOTS_V4)? {
            for s in m.entries_mut().iter_mut().filter(|s| s.key.proto != 0) {
                slotted += usize::from(!keys4.contains(&s.key));
                s.key = CtKeyV4::default(); // Free (protocol 0).
            }
        }
        if let Some(mut m) = slots::<CtSlotV6>(self.ct_slots_v6.as_ref(), edge_common::maps::CT_SLOTS_V6)? {
            for s in m.entries_mut().iter_mut().filter(|s| s.key.proto != 0) {
                slotted += usize::from(!keys6.contains(&s.key));
                s.key = CtKeyV6::default();
            }
        }
        self.set_ct_live(0, 0)?;
        self.set_ct_live(1, 0)?;
        self.ct_ports()?.entries_mut()[0].0.fill(0);
        Ok(keys4.len() + keys6.len() + slotted)
    }
}

/// An entry for a connection that is open already (seeded at attach).
pub fn seeded_entry(tcp: bool, slot: u16) -> CtEntry {
    CtEntry {
        created_ns: monotonic_ns(),
        last_seen: system::jiffies_now().unwrap_or(0),
        rule: slot,
        state: if tcp { CtState::Established as u8 } else { CtState::Udp as u8 },
        origin: ct_origin::SEEDED,
        // Unknown until the edge's next segment: until then no RST from outside closes it.
        ack: 0,
    }
}

/// The entries of one interface, for `edge-ctl conntrack`.
pub fn list(ifname: &str) -> Result<Vec<ConntrackEntry>, DataplaneError> {
    system::require_privileges()?;
    let ns = super::namespace()?;
    let p = ns.attached(ifname)?;
    let maps = MapSet::open(&p.pins)?;
    let st = InterfaceState::load(&p.state)?;
    let generation = maps.active_generation()?;
    let live = st.as_ref().and_then(|s| s.live(generation));
    let timeouts = live.map(|g| g.ct_timeout_ns).unwrap_or_default();
    let now = monotonic_ns();
    let (jiffies, hz) = (system::jiffies_now().unwrap_or(0), system::kernel_hz());
    let mut out: Vec<ConntrackEntry> = maps
        .ct_entries()?
        .into_iter()
        .map(|(flow, e)| {
            let state = CtState::from_u8(e.state);
            let idle_ns = jiffies.saturating_sub(e.last_seen).saturating_mul(1_000_000_000) / hz;
            let rule = if e.origin == ct_origin::SEEDED {
                "seeded at attach".to_string()
            } else if e.rule == u16::MAX {
                "none (egress monitor/off)".to_string()
            } else {
                live.and_then(|g| g.rules.iter().find(|r| r.slot == e.rule))
                    .map_or_else(|| format!("slot {}", e.rule), |r| r.name.clone())
            };
            ConntrackEntry {
                flow,
                state: state.map_or("?", |s| s.name()),
                age_s: now.saturating_sub(e.created_ns) as f64 / 1e9,
                idle_s: idle_ns as f64 / 1e9,
                rule,
                expired: state.is_none_or(|s| idle_ns > timeouts[s as usize]),
            }
        })
        .collect();
    out.sort_by(|a, b| a.age_s.total_cmp(&b.age_s).reverse());
    Ok(out)
}

/// Removes every entry of an interface's tables.
pub fn flush(ifname: &str) -> Result<usize, DataplaneError> {
    system::require_privileges()?;
    let ns = super::namespace()?;
    let p = ns.attached(ifname)?;
    MapSet::open(&p.pins)?.ct_flush()
}
