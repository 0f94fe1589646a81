//! Reading the drop events the kernel reports (rate-limited per CPU) for `edge-ctl tail`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, SystemTime};

use aya::maps::{Map, MapData, RingBuf};
use edge_common::{DropEvent, DropKind, DropReason, maps as names};
use serde::Serialize;

use super::conntrack::monotonic_ns;
use super::{DataplaneError, system};

/// One reported packet.
#[derive(Clone, Debug, Serialize)]
pub struct TailEvent {
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    pub interface: String,
    pub direction: &'static str,
    /// "dropped", or "would-drop" (audit mode, egress monitor mode: the packet passed).
    pub verdict: &'static str,
    pub protocol: String,
    pub src: Option<IpAddr>,
    pub sport: Option<u16>,
    pub dst: Option<IpAddr>,
    pub dport: Option<u16>,
    pub reason: &'static str,
    /// What decided: the default action, or the check that failed.
    pub decided_by: &'static str,
}

fn addr(family: u8, w: [u32; 4]) -> Option<IpAddr> {
    match family {
        4 => Some(IpAddr::V4(Ipv4Addr::from(w[0].to_ne_bytes()))),
        6 => {
            let mut o = [0u8; 16];
            for i in 0..4 {
                o[4 * i..4 * i + 4].copy_from_slice(&w[i].to_ne_bytes());
            }
            Some(IpAddr::V6(Ipv6Addr::from(o)))
        }
        _ => None,
    }
}

fn protocol(family: u8, proto: u8) -> String {
    match (family, proto) {
        (0, _) => "non-ip".into(),
        (_, 6) => "tcp".into(),
        (_, 17) => "udp".into(),
        (4, 1) => "icmp".into(),
        (6, 58) => "icmpv6".into(),
        (_, p) => format!("ip-proto-{p}"),
    }
}

/// What a drop reason says decided the packet.
pub fn decided_by(reason: DropReason, direction: u8) -> &'static str {
    match reason {
        DropReason::PolicyDefault => "default: no rule allows it",
        DropReason::NoFlow => "default: no rule, no tracked flow",
        DropReason::EgressPolicy if direction == 1 => "egress default: no outbound rule, flow or reply",
        DropReason::Icmp | DropReason::EssentialOff => "essentials: ICMP other than NDP, PMTU, tracked errors",
        DropReason::Fragment => "fragments: no first fragment of this datagram passed",
        DropReason::TinyFragment => "parser: a fragment that could rewrite or hide the header",
        DropReason::TcpFlags => "parser: TCP flags no stack sends",
        DropReason::Martian => "martians: a source no packet on the wire can have",
        DropReason::IcmpUnrelated => "essentials: an ICMP error about no traffic of this interface",
        DropReason::NdpOffLink => "essentials: neighbour discovery that did not come from the link",
        _ => "parser: the frame is not a well-formed TCP/UDP/ICMP packet",
    }
}

/// Reads the events of the interfaces it was opened for.
pub struct Tail {
    readers: Vec<(String, RingBuf<MapData>)>,
    /// Realtime minus monotonic, to date kernel timestamps.
    offset_ns: i128,
    /// Events stamped before this (monotonic ns) were buffered before the reader came: skipped.
    cutoff_ns: u64,
    skipped: u64,
}

/// How far before opening an event still counts as new: the kernel stamps events with the
/// coarse clock, which lags the precise one by up to a tick.
const COARSE_SLACK: Duration = Duration::from_millis(20);

impl Tail {
    /// Opens one interface's events, or every attached interface's in this namespace. The ring
    /// buffer holds events of drops before the reader came; those older than `since` (default:
    /// all of them) are skipped and counted ([`Tail::skipped`]).
    pub fn open(ifname: Option<&str>, since: Option<Duration>) -> Result<Tail, DataplaneError> {
        system::require_privileges()?;
        let ns = super::namespace()?;
        let names = match ifname {
            Some(n) => vec![ns.attached(n)?.ifname],
            None => ns.attached_names(),
        };
        let mut readers = Vec::new();
        for name in names {
            let data = super::maps::pinned(&ns.interface(&name).pins, names::EVENTS)?;
            let map = Map::from_map_data(data).map_err(|e| DataplaneError::map(names::EVENTS, "open", e))?;
            let ring = RingBuf::try_from(map).map_err(|e| DataplaneError::map(names::EVENTS, "open", e))?;
            readers.push((name, ring));
        }
        let realtime = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos() as i128;
        let now = monotonic_ns();
        let back = since.unwrap_or(COARSE_SLACK).as_nanos().min(u64::MAX as u128) as u64;
        Ok(Tail { readers, offset_ns: realtime - now as i128, cutoff_ns: now.saturating_sub(back), skipped: 0 })
    }

    /// Events skipped so far because they were older than the reader (or than `since`).
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    pub fn interfaces(&self) -> Vec<&str> {
        self.readers.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// The events waiting now (non-blocking).
    pub fn poll(&mut self) -> Vec<TailEvent> {
        let mut out = Vec::new();
        for (name, ring) in &mut self.readers {
            while let Some(item) = ring.next() {
                if item.len() < std::mem::size_of::<DropEvent>() {
                    continue;
                }
                // SAFETY: the kernel wrote a DropEvent (plain old data) into this record.
                let e: DropEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
                if e.time_ns < self.cutoff_ns {
                    self.skipped += 1;
                    continue;
                }
                out.push(convert(name, &e, self.offset_ns));
            }
        }
        out.sort_by(|a, b| a.time.cmp(&b.time));
        out
    }

    /// Waits up to `timeout` for events (polling every 50 ms).
    pub fn wait(&mut self, timeout: Duration) -> Vec<TailEvent> {
        let start = std::time::Instant::now();
        loop {
            let events = self.poll();
            if !events.is_empty() || start.elapsed() >= timeout {
                return events;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn convert(interface: &str, e: &DropEvent, offset_ns: i128) -> TailEvent {
    let reason = DropReason::from_u32(e.reason as u32).unwrap_or(DropReason::PolicyDefault);
    let wall = (e.time_ns as i128 + offset_ns).max(0) as u128;
    let time = humantime::format_rfc3339_millis(SystemTime::UNIX_EPOCH + Duration::from_nanos(wall as u64)).to_string();
    let ports = e.family != 0 && (e.proto == 6 || e.proto == 17);
    TailEvent {
        time,
        interface: interface.to_string(),
        direction: if e.direction == 0 { "inbound" } else { "outbound" },
        verdict: if e.kind == DropKind::WouldDrop as u8 { "would-drop" } else { "dropped" },
        protocol: protocol(e.family, e.proto),
        src: addr(e.family, e.src),
        sport: ports.then_some(e.sport),
        dst: addr(e.family, e.dst),
        dport: ports.then_some(e.dport),
        reason: reason.name(),
        decided_by: decided_by(reason, e.direction),
    }
}
