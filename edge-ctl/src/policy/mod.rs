//! The policy: what the operator writes (TOML), as a typed and validated model.
//!
//! `parse` turns text into a [`Policy`] or a [`PolicyError`] naming file:line:column for every
//! problem; `read_policy` reads a policy file from disk, refusing one that another user could change.
//! Nothing here knows about BPF; `compile` turns a policy into lookup tables.

mod diag;
mod file;
mod raw;
mod validate;

use std::fmt;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub use diag::{Diagnostic, Location, PolicyError, Severity};
pub use file::{read_policy, read_policy_text};

/// The current policy format version.
pub const FORMAT_VERSION: i64 = 1;

/// Which side of the edge an interface faces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    External,
    Internal,
}

impl Role {
    pub const ALL: [Role; 2] = [Role::External, Role::Internal];
    pub fn as_str(self) -> &'static str {
        match self {
            Role::External => "external",
            Role::Internal => "internal",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Direction of traffic relative to the edge node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub const ALL: [Direction; 2] = [Direction::Inbound, Direction::Outbound];
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
    pub fn parse(s: &str) -> Option<Direction> {
        Direction::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub const ALL: [Protocol; 2] = [Protocol::Tcp, Protocol::Udp];
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
    pub fn parse(s: &str) -> Option<Protocol> {
        Protocol::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// An inclusive port range; a single port has `first == last`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last { write!(f, "{}", self.first) } else { write!(f, "{}-{}", self.first, self.last) }
    }
}

/// The ports of a rule, as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ports(pub Vec<PortRange>);

impl Ports {
    pub fn contains(&self, port: u16) -> bool {
        self.0.iter().any(|r| r.contains(port))
    }
}

impl fmt::Display for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// One term of an address match: a named set or a literal prefix.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AddrTerm {
    Set(String),
    Net(IpNet),
}

impl fmt::Display for AddrTerm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddrTerm::Set(s) => f.write_str(s),
            AddrTerm::Net(n) => write!(f, "{n}"),
        }
    }
}

/// The local or remote side of a rule.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AddrMatch {
    Any,
    Terms(Vec<AddrTerm>),
}

impl fmt::Display for AddrMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddrMatch::Any => f.write_str("any"),
            AddrMatch::Terms(t) => {
                for (i, term) in t.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{term}")?;
                }
                Ok(())
            }
        }
    }
}

/// An entry of an address set.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SetEntry {
    Net(IpNet),
    /// `"@interface"`: the addresses of the interface the policy is attached to.
    Interface,
}

/// The token for [`SetEntry::Interface`].
pub const INTERFACE_TOKEN: &str = "@interface";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressSet {
    pub name: String,
    pub entries: Vec<SetEntry>,
    pub at: Location,
}

/// Traffic a host needs whatever the policy says; on unless switched off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Essentials {
    pub arp: bool,
    pub ndp: bool,
    pub pmtu: bool,
    /// IPv6 router advertisements and redirects (with `ndp` on): off on the external role by
    /// default, where a router advertisement from outside is an attack.
    pub router: bool,
}

impl Default for Essentials {
    fn default() -> Self {
        Essentials { arp: true, ndp: true, pmtu: true, router: true }
    }
}

impl Essentials {
    /// A role's defaults: everything on, but router advertisements on the external role.
    pub fn for_role(role: Role) -> Essentials {
        Essentials { router: role != Role::External, ..Essentials::default() }
    }
}

/// What the egress program does with an outbound packet that no outbound rule, tracked flow
/// or inbound-allowed reply explains.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EgressMode {
    /// Drop it.
    #[default]
    Enforce,
    /// Pass it, counting it as a would-be drop.
    Monitor,
    /// Pass it (flows are still recorded, so answers to allowed connections come back).
    Off,
}

impl EgressMode {
    pub fn parse(s: &str) -> Option<EgressMode> {
        match s {
            "enforce" => Some(EgressMode::Enforce),
            "monitor" => Some(EgressMode::Monitor),
            "off" => Some(EgressMode::Off),
            _ => None,
        }
    }
}

/// Whether a role's verdicts are carried out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RoleMode {
    /// Drops are drops.
    #[default]
    Enforce,
    /// Everything is evaluated and counted, nothing is dropped: drops are reported as
    /// would-be drops (roll a policy out in audit mode first).
    Audit,
}

/// Where the filter sits (`placement = ...`): what the policy's local sets hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// On an edge node's own interface (or a host fronting one node): the local sets are the
    /// node's addresses, and behind the HLB's source NAT clients arrive as the VIP.
    #[default]
    Node,
    /// On the firewall in front of the pool, forwarding to it: the local sets are the pool's
    /// addresses behind the firewall (the HLB's VIPs and the nodes' own), the remote side is
    /// what the document's Source and Destination columns name.
    Perimeter,
}

impl Placement {
    pub fn as_str(self) -> &'static str {
        match self {
            Placement::Node => "node",
            Placement::Perimeter => "perimeter",
        }
    }

    /// Where the filter sits, in words.
    pub fn describe(self) -> &'static str {
        match self {
            Placement::Node => "on an edge node's interface, behind the hardware load balancer",
            Placement::Perimeter => "on the firewall in front of the pool, forwarding to the HLB's VIPs and the nodes",
        }
    }
}

/// Settings of one interface role.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RoleSettings {
    pub essentials: Essentials,
    pub egress: EgressMode,
    pub mode: RoleMode,
    /// What later fragments get: they carry no ports to judge.
    pub fragments: Fragments,
    /// What inbound packets from martian sources get.
    pub martians: Martians,
}

/// What inbound packets from a source no packet on the wire can have get (`martians = ...`):
/// the interface's own addresses or the destination itself (LAND), 0.0.0.0/8, 127/8, 224/4,
/// 255.255.255.255, ::, ::1, ff00::/8, ::ffff:0:0/96.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Martians {
    /// Dropped, as `martian`.
    #[default]
    Drop,
    /// Judged like any packet.
    Pass,
}

/// What later IPv4/IPv6 fragments get (`fragments = ...`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fragments {
    /// The verdict of their first fragment, when it passed in the last 30 s; unknown ones are
    /// dropped inbound and left to the egress mode outbound.
    #[default]
    Track,
    /// Dropped inbound; the host's own pass outbound.
    Drop,
    /// Passed in both directions.
    Pass,
}

/// Default budget of drop events per second and interface.
pub const DEFAULT_EVENTS_PER_SECOND: u32 = 100;

/// Connection tracking: table size (per address family) and idle timeouts in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ConntrackSettings {
    pub max_entries: u32,
    pub tcp_syn_sent: u32,
    pub tcp_established: u32,
    pub tcp_closing: u32,
    pub udp: u32,
}

impl Default for ConntrackSettings {
    fn default() -> Self {
        ConntrackSettings {
            max_entries: edge_common::CT_DEFAULT_MAX,
            tcp_syn_sent: 30,
            tcp_established: 7200,
            tcp_closing: 60,
            udp: 60,
        }
    }
}

/// The name of the rule the failsafe adds.
pub const FAILSAFE_RULE: &str = "failsafe-ssh";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    pub role: Role,
    pub direction: Direction,
    pub protocol: Protocol,
    pub ports: Ports,
    pub local: AddrMatch,
    pub remote: AddrMatch,
    pub note: Option<String>,
    /// The service label in the vendor's tables, e.g. "Access/SIP(MTLS)" (optional).
    pub service: Option<String>,
    pub enabled: bool,
    pub at: Location,
}

/// A validated policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// File path or `<built-in ...>`.
    pub origin: String,
    /// The text it was parsed from.
    pub text: String,
    pub placement: Placement,
    pub sets: Vec<AddressSet>,
    pub external: RoleSettings,
    pub internal: RoleSettings,
    pub conntrack: ConntrackSettings,
    /// Drop events the kernel may report per second and interface (0: none).
    pub events_per_second: u32,
    /// Rules in policy order; the failsafe rule (when on) comes first.
    pub rules: Vec<Rule>,
    /// Warnings found while validating.
    pub warnings: Vec<Diagnostic>,
}

impl Policy {
    pub fn set(&self, name: &str) -> Option<&AddressSet> {
        self.sets.iter().find(|s| s.name == name)
    }

    pub fn role(&self, role: Role) -> &RoleSettings {
        match role {
            Role::External => &self.external,
            Role::Internal => &self.internal,
        }
    }

    /// The enabled rules of a role, in policy order.
    pub fn rules_of(&self, role: Role) -> impl Iterator<Item = &Rule> {
        self.rules.iter().filter(move |r| r.role == role && r.enabled)
    }

    /// SHA-256 of the text, hex: identifies the policy in `status`.
    pub fn hash(&self) -> String {
        crate::sha256_hex(self.text.as_bytes())
    }

    /// The policy's diagnostic for a location (used by later stages, e.g. compile limits).
    pub fn error_at(&self, at: Location, message: impl Into<String>) -> PolicyError {
        PolicyError {
            errors: vec![Diagnostic {
                severity: Severity::Error,
                origin: self.origin.clone(),
                at,
                message: message.into(),
            }],
        }
    }
}

/// Parses and validates policy text. `origin` names it in diagnostics (a path or `<built-in>`).
pub fn parse(text: &str, origin: &str) -> Result<Policy, PolicyError> {
    validate::parse(text, origin)
}
