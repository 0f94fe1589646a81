//! The built-in profile: Microsoft Lync Server 2013 Scaled Consolidated Edge, hardware load
//! balanced ("Edge Server Perimeter Network ports and protocols", last modified 2014-01-13).
//!
//! Every row of the document's four firewall tables is one rule here, named after its table and
//! carrying the row's note. The profile is rendered as policy TOML and parsed like any file, so
//! the built-in policy and `edge-ctl policy template` are the same thing.
//!
//! What a node's NIC sees behind the hardware load balancer (HLB):
//! - Access Edge and Web Conferencing Edge VIPs use source NAT: the HLB replaces the client's
//!   address with its VIP and forwards to the node's own service address. So these rows accept
//!   the VIP as remote, not "Any".
//! - The A/V Edge VIP must not use NAT: clients' real addresses arrive, and after setup clients
//!   talk to the node's real A/V address directly. These rows accept any remote.

use std::fmt::Write as _;

use crate::policy::{self, Placement, Policy, PolicyError};

/// The four tables of the document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    ExternalNode,
    InternalNode,
    ExternalVip,
    InternalVip,
}

impl Table {
    pub fn title(self) -> &'static str {
        match self {
            Table::ExternalNode => "Firewall Summary: External Interface - Node 1 and Node 2",
            Table::InternalNode => "Firewall Summary: Internal Interface - Node 1 and Node 2",
            Table::ExternalVip => "External Port Settings: External Interface Virtual IPs",
            Table::InternalVip => "Firewall Summary: Internal Interface Virtual IPs",
        }
    }
}

/// When a row is in effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Switch {
    Always,
    /// "Required only for federation with partners running Office Communications Server 2007".
    Ocs2007,
    /// The XMPP proxy is optional.
    Xmpp,
}

/// The remote side of a row as the node sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Remote {
    /// "Any", optionally "(can be defined as ...)" these sets.
    Any(&'static [&'static str]),
    /// A named set of peers (e.g. federated partners).
    Set(&'static str),
    /// Behind source NAT: the HLB's VIP is the only source the node sees.
    Snat(&'static str),
}

/// One row of the document.
#[derive(Clone, Copy, Debug)]
pub struct Row {
    pub name: &'static str,
    pub table: Table,
    /// The document's "Role/Protocol" prefix, e.g. "Access/HTTP".
    pub service: &'static str,
    pub direction: &'static str,
    pub protocol: &'static str,
    pub ports: &'static str,
    /// The node's local address set.
    pub local: &'static str,
    pub remote: Remote,
    pub switch: Switch,
    pub note: &'static str,
}

impl Row {
    pub fn role(&self) -> &'static str {
        match self.table {
            Table::ExternalNode | Table::ExternalVip => "external",
            Table::InternalNode | Table::InternalVip => "internal",
        }
    }
}

use Remote::{Any, Set, Snat};
use Switch::{Always, Ocs2007, Xmpp};
use Table::{ExternalNode, ExternalVip, InternalNode, InternalVip};

const FE_DIR: &[&str] = &["directors", "fe_pool"];

/// Every row of the four tables, in the document's order.
pub const ROWS: &[Row] = &[
    // External interface, node 1 and node 2.
    Row {
        name: "ext-access-http-out",
        table: ExternalNode,
        service: "Access/HTTP",
        direction: "outbound",
        protocol: "tcp",
        ports: "80",
        local: "access_edge",
        remote: Any(&[]),
        switch: Always,
        note: "Certificate revocation/CRL check and retrieval",
    },
    Row {
        name: "ext-access-dns-tcp-out",
        table: ExternalNode,
        service: "Access/DNS",
        direction: "outbound",
        protocol: "tcp",
        ports: "53",
        local: "access_edge",
        remote: Any(&[]),
        switch: Always,
        note: "DNS query over TCP",
    },
    Row {
        name: "ext-access-dns-udp-out",
        table: ExternalNode,
        service: "Access/DNS",
        direction: "outbound",
        protocol: "udp",
        ports: "53",
        local: "access_edge",
        remote: Any(&[]),
        switch: Always,
        note: "DNS query over UDP",
    },
    Row {
        name: "ext-av-rtp-tcp-out",
        table: ExternalNode,
        service: "A/V/RTP",
        direction: "outbound",
        protocol: "tcp",
        ports: "50000-59999",
        local: "av_edge",
        remote: Any(&[]),
        switch: Always,
        note: "Required for federating with partners running Office Communications Server 2007, Office Communications Server 2007 R2, Lync Server 2010 and Lync Server 2013.",
    },
    Row {
        name: "ext-av-rtp-udp-out",
        table: ExternalNode,
        service: "A/V/RTP",
        direction: "outbound",
        protocol: "udp",
        ports: "50000-59999",
        local: "av_edge",
        remote: Any(&[]),
        switch: Ocs2007,
        note: "Required only for federation with partners running Office Communications Server 2007.",
    },
    Row {
        name: "ext-av-rtp-tcp-in",
        table: ExternalNode,
        service: "A/V/RTP",
        direction: "inbound",
        protocol: "tcp",
        ports: "50000-59999",
        local: "av_edge",
        remote: Any(&[]),
        switch: Ocs2007,
        note: "Required only for federation with partners running Office Communications Server 2007",
    },
    Row {
        name: "ext-av-rtp-udp-in",
        table: ExternalNode,
        service: "A/V/RTP",
        direction: "inbound",
        protocol: "udp",
        ports: "50000-59999",
        local: "av_edge",
        remote: Any(&[]),
        switch: Ocs2007,
        note: "Required only for federation with partners running Office Communications Server 2007",
    },
    Row {
        name: "ext-av-stun-udp-out",
        table: ExternalNode,
        service: "A/V/STUN,MSTURN",
        direction: "outbound",
        protocol: "udp",
        ports: "3478",
        local: "av_edge",
        remote: Any(&[]),
        switch: Always,
        note: "3478 outbound is used to determine the version of Edge Server that Lync Server is communicating with and also for media traffic from Edge Server-to-Edge Server. Required for federation with Lync Server 2010, Windows Live Messenger, and Office Communications Server 2007 R2, and also if multiple Edge pools are deployed within a company.",
    },
    Row {
        name: "ext-av-stun-udp-in",
        table: ExternalNode,
        service: "A/V/STUN,MSTURN",
        direction: "inbound",
        protocol: "udp",
        ports: "3478",
        local: "av_edge",
        remote: Any(&[]),
        switch: Always,
        note: "STUN/TURN negotiation of candidates over UDP/3478",
    },
    Row {
        name: "ext-av-stun-tcp-in",
        table: ExternalNode,
        service: "A/V/STUN,MSTURN",
        direction: "inbound",
        protocol: "tcp",
        ports: "443",
        local: "av_edge",
        remote: Any(&[]),
        switch: Always,
        note: "STUN/TURN negotiation of candidates over TCP/443",
    },
    Row {
        name: "ext-av-stun-tcp-out",
        table: ExternalNode,
        service: "A/V/STUN,MSTURN",
        direction: "outbound",
        protocol: "tcp",
        ports: "443",
        local: "av_edge",
        remote: Any(&[]),
        switch: Always,
        note: "STUN/TURN negotiation of candidates over TCP/443",
    },
    // Internal interface, node 1 and node 2.
    Row {
        name: "int-xmpp-in",
        table: InternalNode,
        service: "XMPP/MTLS",
        direction: "inbound",
        protocol: "tcp",
        ports: "23456",
        local: "edge_internal",
        remote: Any(&["xmpp_gateway", "fe_pool"]),
        switch: Xmpp,
        note: "Outbound XMPP traffic from XMPP Gateway service running on Front End Server or Front End pool",
    },
    Row {
        name: "int-cms-replication-in",
        table: InternalNode,
        service: "HTTPS",
        direction: "inbound",
        protocol: "tcp",
        ports: "4443",
        local: "edge_internal",
        remote: Any(&["cms"]),
        switch: Always,
        note: "Replication of changes from the Central Management store to the Edge Server",
    },
    Row {
        name: "int-psom-in",
        table: InternalNode,
        service: "PSOM/MTLS",
        direction: "inbound",
        protocol: "tcp",
        ports: "8057",
        local: "edge_internal",
        remote: Any(FE_DIR),
        switch: Always,
        note: "Web conferencing traffic from Internal deployment to Internal Edge Server interface",
    },
    Row {
        name: "int-stun-udp-in",
        table: InternalNode,
        service: "STUN/MSTURN",
        direction: "inbound",
        protocol: "udp",
        ports: "3478",
        local: "edge_internal",
        remote: Any(&["directors", "fe_pool", "sba"]),
        switch: Always,
        note: "Preferred path for A/V media transfer between internal and external users, Survivable Branch Appliance or Survivable Branch Server",
    },
    Row {
        name: "int-stun-tcp-in",
        table: InternalNode,
        service: "STUN/MSTURN",
        direction: "inbound",
        protocol: "tcp",
        ports: "443",
        local: "edge_internal",
        remote: Any(&["directors", "fe_pool", "sba"]),
        switch: Always,
        note: "Fallback path for A/V media transfer between internal and external users, Survivable Branch Appliance or Survivable Branch Server if UDP communication cannot be established, TCP is used for file transfer and desktop sharing",
    },
    Row {
        name: "int-cls-50001-in",
        table: InternalNode,
        service: "MTLS",
        direction: "inbound",
        protocol: "tcp",
        ports: "50001",
        local: "edge_internal",
        remote: Any(&[]),
        switch: Always,
        note: "Centralized Logging Service controller using Lync Server Management Shell and Centralized Logging Service cmdlets, ClsController command line (ClsController.exe) or agent (ClsAgent.exe) commands and log collection",
    },
    Row {
        name: "int-cls-50002-in",
        table: InternalNode,
        service: "MTLS",
        direction: "inbound",
        protocol: "tcp",
        ports: "50002",
        local: "edge_internal",
        remote: Any(&[]),
        switch: Always,
        note: "Centralized Logging Service controller using Lync Server Management Shell and Centralized Logging Service cmdlets, ClsController command line (ClsController.exe) or agent (ClsAgent.exe) commands and log collection",
    },
    Row {
        name: "int-cls-50003-in",
        table: InternalNode,
        service: "MTLS",
        direction: "inbound",
        protocol: "tcp",
        ports: "50003",
        local: "edge_internal",
        remote: Any(&[]),
        switch: Always,
        note: "Centralized Logging Service controller using Lync Server Management Shell and Centralized Logging Service cmdlets, ClsController command line (ClsController.exe) or agent (ClsAgent.exe) commands and log collection",
    },
    // External interface virtual IPs (the HLB forwards to the node's service address).
    Row {
        name: "vip-xmpp-in",
        table: ExternalVip,
        service: "XMPP",
        direction: "inbound",
        protocol: "tcp",
        ports: "5269",
        local: "access_edge",
        remote: Snat("access_edge_vip"),
        switch: Xmpp,
        note: "XMPP Proxy service accepts traffic from XMPP contacts in defined XMPP federations",
    },
    Row {
        name: "vip-xmpp-out",
        table: ExternalVip,
        service: "XMPP",
        direction: "outbound",
        protocol: "tcp",
        ports: "5269",
        local: "access_edge",
        remote: Set("xmpp_federations"),
        switch: Xmpp,
        note: "XMPP Proxy service sends traffic to XMPP contacts in defined XMPP federations",
    },
    Row {
        name: "vip-access-sip-tls-in",
        table: ExternalVip,
        service: "Access/SIP(TLS)",
        direction: "inbound",
        protocol: "tcp",
        ports: "443",
        local: "access_edge",
        remote: Snat("access_edge_vip"),
        switch: Always,
        note: "Client-to-server SIP traffic for external user access",
    },
    Row {
        name: "vip-access-sip-mtls-in",
        table: ExternalVip,
        service: "Access/SIP(MTLS)",
        direction: "inbound",
        protocol: "tcp",
        ports: "5061",
        local: "access_edge",
        remote: Snat("access_edge_vip"),
        switch: Always,
        note: "SIP signaling, federated and public IM connectivity using SIP",
    },
    Row {
        name: "vip-access-sip-mtls-out",
        table: ExternalVip,
        service: "Access/SIP(MTLS)",
        direction: "outbound",
        protocol: "tcp",
        ports: "5061",
        local: "access_edge",
        remote: Set("federated_partners"),
        switch: Always,
        note: "SIP signaling, federated and public IM connectivity using SIP",
    },
    Row {
        name: "vip-webconf-psom-in",
        table: ExternalVip,
        service: "Web Conferencing/PSOM(TLS)",
        direction: "inbound",
        protocol: "tcp",
        ports: "443",
        local: "webconf_edge",
        remote: Snat("webconf_edge_vip"),
        switch: Always,
        note: "Web Conferencing media",
    },
    Row {
        name: "vip-av-stun-udp-in",
        table: ExternalVip,
        service: "A/V/STUN,MSTURN",
        direction: "inbound",
        protocol: "udp",
        ports: "3478",
        local: "av_edge",
        remote: Any(&[]),
        switch: Always,
        note: "STUN/TURN negotiation of candidates over UDP/3478",
    },
    Row {
        name: "vip-av-stun-tcp-in",
        table: ExternalVip,
        service: "A/V/STUN,MSTURN",
        direction: "inbound",
        protocol: "tcp",
        ports: "443",
        local: "av_edge",
        remote: Any(&[]),
        switch: Always,
        note: "STUN/TURN negotiation of candidates over TCP/443",
    },
    // Internal interface virtual IPs.
    Row {
        name: "ivip-sip-mtls-in",
        table: InternalVip,
        service: "Access/SIP(MTLS)",
        direction: "inbound",
        protocol: "tcp",
        ports: "5061",
        local: "edge_internal",
        remote: Any(FE_DIR),
        switch: Always,
        note: "Outbound SIP traffic (from Director, Director pool virtual IP address, Front End Server or Front End pool virtual IP address) to Internal Edge VIP",
    },
    Row {
        name: "ivip-sip-mtls-out",
        table: InternalVip,
        service: "Access/SIP(MTLS)",
        direction: "outbound",
        protocol: "tcp",
        ports: "5061",
        local: "edge_internal",
        remote: Any(FE_DIR),
        switch: Always,
        note: "Inbound SIP traffic (to Director, Director pool virtual IP address, Front End Server or Front End pool virtual IP address) from Edge Server internal interface",
    },
    Row {
        name: "ivip-sip-avauth-in",
        table: InternalVip,
        service: "SIP/MTLS",
        direction: "inbound",
        protocol: "tcp",
        ports: "5062",
        local: "edge_internal",
        remote: Any(&["fe_pool", "sba"]),
        switch: Always,
        note: "Authentication of A/V users (A/V authentication service) from Front End Server or Front End pool IP address or any Survivable Branch Appliance or Survivable Branch Server using this Edge Server",
    },
    Row {
        name: "ivip-stun-udp-in",
        table: InternalVip,
        service: "STUN/MSTURN",
        direction: "inbound",
        protocol: "udp",
        ports: "3478",
        local: "edge_internal",
        remote: Any(&[]),
        switch: Always,
        note: "Preferred path for A/V media transfer between internal and external users",
    },
    Row {
        name: "ivip-stun-tcp-in",
        table: InternalVip,
        service: "STUN/MSTURN",
        direction: "inbound",
        protocol: "tcp",
        ports: "443",
        local: "edge_internal",
        remote: Any(&[]),
        switch: Always,
        note: "Fallback path for A/V media transfer between internal and external users if UDP communication cannot be established, TCP is used for file transfer and desktop sharing",
    },
    Row {
        name: "ivip-stun-tcp-out",
        table: InternalVip,
        service: "STUN/MSTURN",
        direction: "outbound",
        protocol: "tcp",
        ports: "443",
        local: "edge_internal",
        remote: Any(&[]),
        switch: Always,
        note: "Fallback path for A/V media transfer between internal and external users if UDP communication cannot be established, TCP is used for file transfer and desktop sharing",
    },
];

/// Where the profile's addresses come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addressing {
    /// Example addresses from the documentation ranges, for `policy template` and the lab.
    Documentation,
    /// The attached interface's own addresses (`@interface`), for `attach` without a policy.
    /// The VIPs are unknown then, so rows behind source NAT accept any remote.
    Interface,
}

#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub nodes: u8,
    pub addressing: Addressing,
    /// Where the filter sits: on a node (the rows as a node's NIC sees them behind the HLB) or
    /// on the firewall in front of the pool (the rows as the document's columns write them).
    pub placement: Placement,
    pub ocs2007: bool,
    pub xmpp: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            nodes: 2,
            addressing: Addressing::Documentation,
            placement: Placement::Node,
            ocs2007: false,
            xmpp: true,
        }
    }
}

/// The set a VIP row's edge side is at the perimeter: the HLB's VIP the document names.
fn vip_of(local: &str) -> &'static str {
    match local {
        "access_edge" => "access_edge_vip",
        "webconf_edge" => "webconf_edge_vip",
        "av_edge" => "av_edge_vip",
        "edge_internal" => "edge_internal_vip",
        other => unreachable!("no VIP for the local set {other}"),
    }
}

impl Row {
    /// The rule's local side as TOML: the node's own service address; at the perimeter, for the
    /// VIP tables, the VIP (what the firewall in front of the HLB sees), and for their outbound
    /// rows the nodes' addresses as well: the document's source is the VIP, which holds where
    /// the HLB source-NATs what the nodes open, but a node's internal interface is routed past
    /// the HLB, and an HLB that does not NAT outbound connections lets them leave as the node.
    pub fn local_at(&self, placement: Placement) -> String {
        match (placement, self.table, self.direction) {
            (Placement::Perimeter, Table::ExternalVip | Table::InternalVip, "outbound") => {
                format!("[\"{}\", \"{}\"]", vip_of(self.local), self.local)
            }
            (Placement::Perimeter, Table::ExternalVip | Table::InternalVip, _) => format!("\"{}\"", vip_of(self.local)),
            _ => format!("\"{}\"", self.local),
        }
    }
}

/// The most nodes the template lays out (the local address table holds 32 prefixes per family).
pub const MAX_NODES: u8 = 10;

pub const NAME: &str = "lync2013-edge-hlb";

/// Documentation-range addressing of the lab and the template.
pub mod addr {
    pub const ACCESS_VIP: &str = "203.0.113.10";
    pub const WEBCONF_VIP: &str = "203.0.113.11";
    pub const AV_VIP: &str = "203.0.113.12";
    pub const INTERNAL_VIP: &str = "198.51.100.10";
    pub const ACCESS_VIP6: &str = "2001:db8:e::10";
    pub const WEBCONF_VIP6: &str = "2001:db8:e::11";
    pub const AV_VIP6: &str = "2001:db8:e::12";
    pub const INTERNAL_VIP6: &str = "2001:db8:1::10";

    /// Node `n` (1-based): (access, webconf, av) public IPv4 addresses.
    pub fn node_external(n: u8) -> [String; 3] {
        [0, 1, 2].map(|k| format!("203.0.113.{}", 10 * (n as u32 + 1) + 1 + k))
    }
    pub fn node_external6(n: u8) -> [String; 3] {
        [0, 1, 2].map(|k| format!("2001:db8:e::{}", 10 * (n as u32 + 1) + 1 + k))
    }
    pub fn node_internal(n: u8) -> String {
        format!("198.51.100.{}", 20 + n as u32)
    }
    pub fn node_internal6(n: u8) -> String {
        format!("2001:db8:1::{}", 20 + n as u32)
    }
}

fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("\"{s}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

fn sets(o: &Options) -> String {
    let mut s = String::from("[sets]\n");
    let nodes = 1..=o.nodes;
    match o.addressing {
        Addressing::Interface => {
            s += "# Built from the attached interface's own addresses: every service set is the interface.\n";
            for name in ["access_edge", "webconf_edge", "av_edge", "edge_internal"] {
                let _ = writeln!(s, "{name} = [\"@interface\"]");
            }
        }
        Addressing::Documentation => {
            s += "# External interface, public addresses of each node (one per service and node).\n";
            for (k, name) in ["access_edge", "webconf_edge", "av_edge"].iter().enumerate() {
                let addrs: Vec<String> = nodes
                    .clone()
                    .flat_map(|n| [addr::node_external(n)[k].clone(), addr::node_external6(n)[k].clone()])
                    .collect();
                let _ = writeln!(s, "{name} = {}", list(&addrs));
            }
            match o.placement {
                Placement::Node => {
                    s += "# The HLB's external VIPs. Behind source NAT, Access and Web Conferencing clients\n";
                    s += "# arrive with the VIP as their source address.\n";
                }
                Placement::Perimeter => {
                    s += "# The HLB's external VIPs: clients and partners connect to these through this\n";
                    s += "# firewall; the VIP tables' rows are rules for them.\n";
                }
            }
            let _ = writeln!(s, "access_edge_vip = {}", list(&[addr::ACCESS_VIP.into(), addr::ACCESS_VIP6.into()]));
            let _ = writeln!(s, "webconf_edge_vip = {}", list(&[addr::WEBCONF_VIP.into(), addr::WEBCONF_VIP6.into()]));
            s += match o.placement {
                Placement::Node => "# No NAT for A/V: listed for reference; A/V rules accept any remote.\n",
                Placement::Perimeter => "# No NAT for A/V: clients reach the VIP, then each node's own A/V address.\n",
            };
            let _ = writeln!(s, "av_edge_vip = {}", list(&[addr::AV_VIP.into(), addr::AV_VIP6.into()]));
            s += "# Internal interface of each node, and the internal VIP.\n";
            let internal: Vec<String> =
                nodes.clone().flat_map(|n| [addr::node_internal(n), addr::node_internal6(n)]).collect();
            let _ = writeln!(s, "edge_internal = {}", list(&internal));
            let _ =
                writeln!(s, "edge_internal_vip = {}", list(&[addr::INTERNAL_VIP.into(), addr::INTERNAL_VIP6.into()]));
        }
    }
    s += "# Internal peers the document names; use them to narrow rows marked \"can be defined as\".\n";
    s += "fe_pool = [\"198.51.100.100/30\", \"2001:db8:1:f::100/126\"]\n";
    s += "directors = [\"198.51.100.110/31\", \"2001:db8:1:f::110/127\"]\n";
    s += "cms = [\"198.51.100.100\", \"2001:db8:1:f::100\"]          # Central Management store holder\n";
    s += "sba = [\"198.51.100.128/26\", \"2001:db8:1:b::/64\"]       # Survivable Branch Appliances/Servers\n";
    s += "xmpp_gateway = [\"198.51.100.100/30\", \"2001:db8:1:f::100/126\"]  # XMPP Gateway on the Front End pool\n";
    s += "# Open federation: any partner found through DNS. List partners' prefixes to restrict it.\n";
    s += "federated_partners = [\"0.0.0.0/0\", \"::/0\"]\n";
    s += "xmpp_federations = [\"0.0.0.0/0\", \"::/0\"]\n";
    s
}

fn rule(row: &Row, o: &Options) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# {} | {}/{}/{}", row.table.title(), row.service, row.protocol.to_uppercase(), row.ports);
    s += "[[rule]]\n";
    let _ = writeln!(s, "name = \"{}\"", row.name);
    let _ = writeln!(s, "service = \"{}\"", row.service);
    let _ = writeln!(s, "role = \"{}\"", row.role());
    let _ = writeln!(s, "direction = \"{}\"", row.direction);
    let _ = writeln!(s, "protocol = \"{}\"", row.protocol);
    if row.ports.contains('-') {
        let _ = writeln!(s, "ports = \"{}\"", row.ports);
    } else {
        let _ = writeln!(s, "ports = {}", row.ports);
    }
    let _ = writeln!(s, "local = {}", row.local_at(o.placement));
    match row.remote {
        Any([]) => s += "remote = \"any\"\n",
        Any(narrow) => {
            let _ = writeln!(
                s,
                "remote = \"any\"  # the document: \"Any (can be defined as ...)\"; narrow with remote = {}",
                list(&narrow.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            );
        }
        Set(set) => {
            let _ = writeln!(s, "remote = \"{set}\"");
        }
        Snat(_) if o.placement == Placement::Perimeter => {
            s += "remote = \"any\"  # in front of the HLB clients arrive with their own addresses\n";
        }
        Snat(vip) => match o.addressing {
            Addressing::Documentation => {
                let _ = writeln!(s, "remote = \"{vip}\"  # behind the HLB's source NAT clients arrive as the VIP");
            }
            Addressing::Interface => {
                let _ = writeln!(s, "remote = \"any\"  # the HLB's VIP is not known here; name it to narrow this row");
            }
        },
    }
    let _ = writeln!(s, "note = \"{}\"", row.note.replace('"', "\\\""));
    match row.switch {
        Always => {}
        Ocs2007 => {
            let _ = writeln!(
                s,
                "enabled = {}  # only for federation with Office Communications Server 2007 partners",
                o.ocs2007
            );
        }
        Xmpp => {
            let _ = writeln!(s, "enabled = {}  # the XMPP proxy is optional; false if it is not deployed", o.xmpp);
        }
    }
    s
}

/// The profile as policy TOML.
/// The profile's connection-table size per address family: one Edge Server at Microsoft's rated
/// load with room to spare, in under 8 MiB of maps per interface (docs/decisions.md).
pub const CONNTRACK_ENTRIES: u32 = 8192;

pub fn render(o: &Options) -> String {
    let mut s = String::new();
    s += "# edge-ctl policy: Lync Server 2013 Scaled Consolidated Edge, hardware load balanced.\n";
    s += "# Source: \"Edge Server Perimeter Network ports and protocols\" (Microsoft, 2014-01-13):\n";
    s += "# every row of its four firewall tables is one rule below, with the row's note.\n";
    let _ = writeln!(
        s,
        "# Generated by `edge-ctl policy template {NAME} --placement {} --nodes {}`.",
        o.placement.as_str(),
        o.nodes
    );
    s += "#\n";
    match o.placement {
        Placement::Node => {
            s += "# Placement: node. For an edge node's own interfaces (or a Linux host fronting one),\n";
            s += "# behind the hardware load balancer (HLB):\n";
            s += "# - Access Edge and Web Conferencing Edge VIPs use source NAT: the node sees the VIP as the\n";
            s += "#   client's address, at its own service address.\n";
            s += "# - The A/V Edge VIP must not use NAT: the node sees real client addresses, and clients talk\n";
            s += "#   to the node's real A/V address once the call is set up.\n";
        }
        Placement::Perimeter => {
            s += "# Placement: perimeter. For the Linux firewalls in front of the pool, which forward to it:\n";
            s += "# - the external firewall: `edge-ctl attach <nic toward the internet> --role external`;\n";
            s += "# - the internal firewall: `edge-ctl attach <nic toward the internal network> --role internal`.\n";
            s += "# Inbound is toward the pool, outbound from it. The rules are the document's columns as\n";
            s += "# written: clients (Any) to the HLB's VIPs, and to each node's own A/V address (no NAT for\n";
            s += "# A/V: clients talk to the node once a call is set up); outbound rows from the addresses the\n";
            s += "# document names as their source (for the VIP tables, the VIP and the nodes: what the HLB\n";
            s += "# does not source-NAT leaves as the node). The SSH failsafe admits SSH to this firewall only.\n";
        }
    }
    s += "# Rows the document lists twice (node table and VIP table) appear twice; the first counts.\n\n";
    s += "version = 1\n";
    let _ = writeln!(s, "placement = \"{}\"\n", o.placement.as_str());
    s += &sets(o);
    s += "\n# Default action is drop. ARP, IPv6 neighbour discovery and path-MTU ICMP pass unless\n";
    s += "# switched off here.\n";
    s += "[roles.external]\nessentials = { arp = true, ndp = true, pmtu = true }\n\n";
    s += "[roles.internal]\nessentials = { arp = true, ndp = true, pmtu = true }\n\n";
    s += "# The connection table holds the flows the edge opens (outbound rows) so that their answers\n";
    s += "# pass; connections to the listed inbound ports need no entry. Microsoft rates one Edge\n";
    s += "# Server for 500 concurrent A/V sessions (with 15,000 Access Edge and 1,000 Web Conferencing\n";
    s += "# client connections, which are inbound); the A/V media it relays outward is a few flows a\n";
    s += "# session. A firewall in front of a pool, or a busier node, raises this: each 1,024 entries\n";
    s += "# cost about 0.35 MiB per interface (both families). When the table is full the least recently\n";
    s += "# used flow makes room (counted: `edge-ctl stats`, edge_ctl_conntrack_table_full_total).\n";
    let _ = writeln!(s, "[conntrack]\nmax_entries = {CONNTRACK_ENTRIES}");
    for row in ROWS {
        s += "\n";
        s += &rule(row, o);
    }
    s
}

/// The profile, parsed.
pub fn policy(o: &Options) -> Result<Policy, PolicyError> {
    let origin = match o.addressing {
        Addressing::Documentation => format!("<built-in {NAME} template>"),
        Addressing::Interface => format!("<built-in {NAME}>"),
    };
    policy::parse(&render(o), &origin)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{AddrMatch, Role};

    #[test]
    fn every_row_becomes_a_rule() {
        for addressing in [Addressing::Documentation, Addressing::Interface] {
            let p = policy(&Options { addressing, ..Default::default() }).unwrap();
            assert_eq!(p.rules.len(), ROWS.len() + 1, "the rows and the failsafe");
            assert_eq!(p.rules[0].name, crate::policy::FAILSAFE_RULE);
            for (rule, row) in p.rules[1..].iter().zip(ROWS) {
                assert_eq!(rule.name, row.name);
                assert_eq!(rule.role.as_str(), row.role());
                assert_eq!(rule.note.as_deref(), Some(row.note));
                assert_eq!(rule.service.as_deref(), Some(row.service));
            }
        }
    }

    #[test]
    fn table_sizes_match_the_document() {
        let count = |t| ROWS.iter().filter(|r| r.table == t).count();
        assert_eq!(count(Table::ExternalNode), 11);
        assert_eq!(count(Table::InternalNode), 8);
        assert_eq!(count(Table::ExternalVip), 8);
        assert_eq!(count(Table::InternalVip), 6);
    }

    #[test]
    fn switches_default_as_documented() {
        let p = policy(&Options::default()).unwrap();
        let enabled = |n: &str| p.rules.iter().find(|r| r.name == n).unwrap().enabled;
        assert!(!enabled("ext-av-rtp-udp-in") && !enabled("ext-av-rtp-tcp-in") && !enabled("ext-av-rtp-udp-out"));
        assert!(enabled("ext-av-rtp-tcp-out"));
        assert!(enabled("vip-xmpp-in") && enabled("int-xmpp-in"));
        let p = policy(&Options { ocs2007: true, xmpp: false, ..Default::default() }).unwrap();
        let enabled = |n: &str| p.rules.iter().find(|r| r.name == n).unwrap().enabled;
        assert!(enabled("ext-av-rtp-udp-in") && !enabled("vip-xmpp-out"));
    }

    #[test]
    fn snat_rows_accept_only_the_vip_and_av_rows_any() {
        let p = policy(&Options::default()).unwrap();
        let remote = |n: &str| p.rules.iter().find(|r| r.name == n).unwrap().remote.to_string();
        assert_eq!(remote("vip-access-sip-tls-in"), "access_edge_vip");
        assert_eq!(remote("vip-webconf-psom-in"), "webconf_edge_vip");
        assert_eq!(remote("vip-av-stun-udp-in"), "any");
        let p = policy(&Options { addressing: Addressing::Interface, ..Default::default() }).unwrap();
        assert!(p.rules.iter().all(|r| r.name.starts_with("vip-access-sip-mtls-out")
            || r.name == "vip-xmpp-out"
            || r.remote == AddrMatch::Any));
        assert_eq!(p.rules_of(Role::External).count(), 16);
    }

    /// In front of the HLB the VIP tables' rows are for the VIPs, with the remote the document
    /// writes (Any, or the partners), and the node tables' rows for the nodes' own addresses.
    #[test]
    fn perimeter_rows_are_the_documents_columns() {
        let p = policy(&Options { placement: Placement::Perimeter, ..Default::default() }).unwrap();
        assert_eq!(p.placement, Placement::Perimeter);
        for row in ROWS {
            let rule = p.rules.iter().find(|r| r.name == row.name).unwrap();
            let local = rule.local.to_string();
            let vip = format!("{}_vip", row.local);
            match (row.table, row.direction) {
                (Table::ExternalVip | Table::InternalVip, "inbound") => assert_eq!(local, vip, "{}", row.name),
                (Table::ExternalVip | Table::InternalVip, _) => {
                    assert_eq!(local, format!("{vip}, {}", row.local), "{}", row.name)
                }
                _ => assert_eq!(local, row.local, "{}", row.name),
            }
            assert!(!rule.remote.to_string().contains("_vip"), "{}: the VIP is never the remote", row.name);
        }
        for role in Role::ALL {
            crate::compile::compile(&p, role, &[], &Default::default()).unwrap();
        }
        assert!(
            render(&Options { placement: Placement::Perimeter, ..Default::default() })
                .contains("placement = \"perimeter\"")
        );
    }

    #[test]
    fn nodes_scale_the_address_sets() {
        for nodes in 1..=MAX_NODES {
            let p = policy(&Options { nodes, ..Default::default() }).unwrap();
            let access = p.set("access_edge").unwrap();
            assert_eq!(access.entries.len(), 2 * nodes as usize);
            for role in Role::ALL {
                crate::compile::compile(&p, role, &[], &Default::default()).unwrap();
            }
        }
    }
}

/// `edge-ctl policy plan --nodes N`: the document's address arithmetic, which VIPs may use
/// source NAT, and the routing it requires, with the template's example addresses.
pub fn plan(nodes: u8, placement: Placement) -> String {
    let mut s = String::new();
    let n = nodes as u32;
    let _ = writeln!(s, "Scaled consolidated Edge, hardware load balanced: {nodes} Edge Server(s) in the pool\n");
    s += &placement_plan(nodes, placement);
    let _ = writeln!(s, "Public IP addresses: {} = 3 HLB VIPs + 3 per Edge Server x {nodes}", 3 + 3 * n);
    s += "  (the document's N+1: one address per real server interface and one per HLB VIP)\n";
    let _ = writeln!(s, "  HLB VIP  Access Edge               {}", addr::ACCESS_VIP);
    let _ = writeln!(s, "  HLB VIP  Web Conferencing Edge     {}", addr::WEBCONF_VIP);
    let _ = writeln!(s, "  HLB VIP  A/V Edge                  {}", addr::AV_VIP);
    for node in 1..=nodes {
        let [a, w, v] = addr::node_external(node);
        let _ = writeln!(s, "  Node {node}   Access / Web Conf / A/V   {a} / {w} / {v}");
    }
    s += "\nSource NAT (SNAT) on the HLB:\n";
    s += "  Access Edge VIP            may use SNAT: the node sees the VIP as the client's address\n";
    s += "  Web Conferencing Edge VIP  may use SNAT: the node sees the VIP as the client's address\n";
    s += "  A/V Edge VIP               must NOT use SNAT: the A/V Edge must answer with the real server\n";
    s += "                             address for STUN/TURN/FTURN; the external firewall keeps the real\n";
    s += "                             server address for all packets; once established, clients talk to\n";
    s += "                             the real server, not the HLB\n";
    s += "\nRouting:\n";
    let _ = writeln!(
        s,
        "  External interfaces: the HLB Access Edge VIP ({}) is the default gateway of each Edge Server",
        addr::ACCESS_VIP
    );
    s += "  Internal interfaces: no default gateway; persistent routes to every internal network that\n";
    s += "                       hosts servers or clients (internal edge traffic must be routed)\n";
    let _ = writeln!(
        s,
        "  Internal VIP {}; node internal addresses {}",
        addr::INTERNAL_VIP,
        (1..=nodes).map(addr::node_internal).collect::<Vec<_>>().join(", ")
    );
    s
}

/// Where the filters sit, as a picture, and what each one's rules name.
fn placement_plan(nodes: u8, placement: Placement) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Placement: {} ({})", placement.as_str(), placement.describe());
    match placement {
        Placement::Node => {
            s += concat!(
                "\n",
                "  internet --- external firewall --- HLB (VIPs) --- [XDP+TC] node external NIC\n",
                "                                                        node internal NIC [XDP+TC] --- internal firewall --- Front End / Director\n",
                "\n",
                "  edge-ctl filters each node's NICs (`--role external` / `--role internal`): local sets are the\n",
                "  node's own addresses; behind the HLB's source NAT, Access and Web Conferencing clients arrive\n",
                "  as the VIP; A/V clients with their own addresses.\n\n",
            );
        }
        Placement::Perimeter => {
            s += concat!(
                "\n",
                "  internet ---[XDP+TC] external firewall --- HLB (VIPs) + nodes' external NICs\n",
                "  Front End / Director ---[XDP+TC] internal firewall --- internal VIP + nodes' internal NICs\n",
                "\n",
                "  edge-ctl runs on each firewall, on the NIC facing away from the pool:\n",
                "    external firewall: edge-ctl attach <nic toward the internet> --role external\n",
                "    internal firewall: edge-ctl attach <nic toward the internal network> --role internal\n",
                "  Inbound (XDP) is toward the pool, outbound (TC egress) from it; flows the pool opens are\n",
                "  tracked there, so their answers come back. The rules are the document's columns as written:\n",
            );
            let _ = writeln!(
                s,
                "    clients (Any) -> the external VIPs {} / {} / {} on their ports",
                addr::ACCESS_VIP,
                addr::WEBCONF_VIP,
                addr::AV_VIP
            );
            let av: Vec<String> = (1..=nodes).map(|k| addr::node_external(k)[2].clone()).collect();
            let _ = writeln!(s, "    clients (Any) -> each node's own A/V address ({}): no NAT for A/V", av.join(", "));
            let _ = writeln!(
                s,
                "    Front End / Director -> the internal VIP {} and the nodes' internal addresses",
                addr::INTERNAL_VIP
            );
            s += "    the nodes' outbound rows from the addresses the document names as their source (the VIP\n";
            s += "    tables' from the VIP and the nodes: what the HLB does not source-NAT leaves as the node)\n";
            s += "  The SSH failsafe admits SSH to the firewall's own addresses, never to the hosts behind it.\n\n";
        }
    }
    s
}

#[cfg(test)]
mod plan_tests {
    #[test]
    fn nine_addresses_for_two_nodes() {
        use crate::policy::Placement;
        let p = super::plan(2, Placement::Node);
        assert!(p.contains("Public IP addresses: 9 = 3 HLB VIPs + 3 per Edge Server x 2"), "{p}");
        assert!(p.contains("must NOT use SNAT"));
        assert!(p.contains("default gateway"));
        assert!(p.contains("Placement: node"));
        assert!(super::plan(4, Placement::Node).contains("Public IP addresses: 15"));
        let p = super::plan(2, Placement::Perimeter);
        assert!(p.contains("Placement: perimeter"), "{p}");
        assert!(p.contains("203.0.113.23, 203.0.113.33"), "{p}");
    }
}
