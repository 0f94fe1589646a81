//! The value enums of the command line's arguments, and what each value stands for in the
//! library's terms.

use crate::policy::{self, Role};

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ProtoArg {
    Tcp,
    Udp,
}

impl From<ProtoArg> for policy::Protocol {
    fn from(p: ProtoArg) -> policy::Protocol {
        match p {
            ProtoArg::Tcp => policy::Protocol::Tcp,
            ProtoArg::Udp => policy::Protocol::Udp,
        }
    }
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum FlagsArg {
    Syn,
    Ack,
    SynAck,
}

impl FlagsArg {
    /// The TCP flags of the probe.
    pub fn tcp_flags(self) -> u8 {
        match self {
            FlagsArg::Syn => crate::frame::SYN,
            FlagsArg::Ack => crate::frame::ACK,
            FlagsArg::SynAck => crate::frame::SYN | crate::frame::ACK,
        }
    }
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum DirectionArg {
    Inbound,
    Outbound,
}

impl From<DirectionArg> for policy::Direction {
    fn from(d: DirectionArg) -> policy::Direction {
        match d {
            DirectionArg::Inbound => policy::Direction::Inbound,
            DirectionArg::Outbound => policy::Direction::Outbound,
        }
    }
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum RoleArg {
    External,
    Internal,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::External => Role::External,
            RoleArg::Internal => Role::Internal,
        }
    }
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ProfileArg {
    #[value(name = "lync2013-edge-hlb")]
    Lync2013EdgeHlb,
}

/// `--placement`: where the filter sits.
#[derive(Clone, Copy, Debug, Default, clap::ValueEnum)]
pub enum PlacementArg {
    /// On an edge node's interfaces (or a Linux host fronting one), behind the HLB.
    #[default]
    Node,
    /// On the Linux firewalls in front of the pool, forwarding to the HLB's VIPs and the nodes.
    Perimeter,
}

impl From<PlacementArg> for crate::policy::Placement {
    fn from(p: PlacementArg) -> Self {
        match p {
            PlacementArg::Node => crate::policy::Placement::Node,
            PlacementArg::Perimeter => crate::policy::Placement::Perimeter,
        }
    }
}
