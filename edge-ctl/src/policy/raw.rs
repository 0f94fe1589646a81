//! The policy file as TOML gives it, with byte spans kept for diagnostics. Only structure is
//! checked here (unknown keys by [`SHAPE`], wrong types by serde); meaning is checked in
//! `validate`.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use toml::Spanned;

use crate::tomlkeys::Shape;

#[derive(Debug, Deserialize)]
pub struct RawPolicy {
    pub version: Option<Spanned<i64>>,
    pub placement: Option<Spanned<String>>,
    #[serde(default)]
    pub sets: BTreeMap<String, Spanned<Scalars>>,
    #[serde(default)]
    pub roles: RawRoles,
    pub conntrack: Option<Spanned<RawConntrack>>,
    pub events: Option<Spanned<RawEvents>>,
    pub failsafe: Option<Spanned<RawFailsafe>>,
    #[serde(default, rename = "rule")]
    pub rules: Vec<Spanned<RawRule>>,
}

#[derive(Debug, Deserialize)]
pub struct RawConntrack {
    pub max_entries: Option<Spanned<i64>>,
    pub tcp_syn_sent: Option<Spanned<i64>>,
    pub tcp_established: Option<Spanned<i64>>,
    pub tcp_closing: Option<Spanned<i64>>,
    pub udp: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
pub struct RawFailsafe {
    pub ssh: Option<bool>,
    pub ssh_from: Option<Spanned<Scalars>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawRoles {
    pub external: Option<Spanned<RawRole>>,
    pub internal: Option<Spanned<RawRole>>,
}

#[derive(Debug, Deserialize)]
pub struct RawRole {
    pub default: Option<Spanned<String>>,
    pub essentials: Option<RawEssentials>,
    pub egress: Option<Spanned<String>>,
    pub mode: Option<Spanned<String>>,
    pub fragments: Option<Spanned<String>>,
    pub martians: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
pub struct RawEvents {
    pub per_second: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
pub struct RawEssentials {
    pub arp: Option<bool>,
    pub ndp: Option<bool>,
    pub pmtu: Option<bool>,
    pub router: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct RawRule {
    pub name: Spanned<String>,
    pub role: Spanned<String>,
    pub direction: Spanned<String>,
    pub protocol: Spanned<String>,
    pub ports: Spanned<Scalars>,
    pub local: Option<Spanned<Scalars>>,
    pub remote: Option<Spanned<Scalars>>,
    pub note: Option<String>,
    pub service: Option<String>,
    pub enabled: Option<bool>,
}

/// The keys each table of a policy may hold (checked before deserializing, which ignores
/// unknown keys, so that all of them are reported with every other error). Kept beside the
/// structs above; `validate`'s tests parse a policy that uses every key.
pub const SHAPE: Shape = Shape::Table(
    "the top level",
    &[
        ("version", Shape::Any),
        ("placement", Shape::Any),
        ("sets", Shape::Any),
        (
            "roles",
            Shape::Table(
                "[roles]",
                &[
                    ("external", Shape::Table("[roles.external]", ROLE)),
                    ("internal", Shape::Table("[roles.internal]", ROLE)),
                ],
            ),
        ),
        (
            "conntrack",
            Shape::Table(
                "[conntrack]",
                &[
                    ("max_entries", Shape::Any),
                    ("tcp_syn_sent", Shape::Any),
                    ("tcp_established", Shape::Any),
                    ("tcp_closing", Shape::Any),
                    ("udp", Shape::Any),
                ],
            ),
        ),
        ("events", Shape::Table("[events]", &[("per_second", Shape::Any)])),
        ("failsafe", Shape::Table("[failsafe]", &[("ssh", Shape::Any), ("ssh_from", Shape::Any)])),
        ("rule", Shape::Tables(&RULE)),
    ],
);

const ROLE: &[(&str, Shape)] = &[
    ("default", Shape::Any),
    (
        "essentials",
        Shape::Table(
            "essentials",
            &[("arp", Shape::Any), ("ndp", Shape::Any), ("pmtu", Shape::Any), ("router", Shape::Any)],
        ),
    ),
    ("egress", Shape::Any),
    ("mode", Shape::Any),
    ("fragments", Shape::Any),
    ("martians", Shape::Any),
];

const RULE: Shape = Shape::Table(
    "[[rule]]",
    &[
        ("name", Shape::Any),
        ("role", Shape::Any),
        ("direction", Shape::Any),
        ("protocol", Shape::Any),
        ("ports", Shape::Any),
        ("local", Shape::Any),
        ("remote", Shape::Any),
        ("note", Shape::Any),
        ("service", Shape::Any),
        ("enabled", Shape::Any),
    ],
);

/// A TOML integer or string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scalar {
    Int(i64),
    Str(String),
}

/// One scalar or an array of them; array elements keep their own spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scalars {
    One(Scalar),
    Many(Vec<Spanned<Scalar>>),
}

impl Scalars {
    /// The items with their spans; a single value takes the span of the whole field.
    pub fn items(&self, whole: std::ops::Range<usize>) -> Vec<(std::ops::Range<usize>, Scalar)> {
        match self {
            Scalars::One(s) => vec![(whole, s.clone())],
            Scalars::Many(v) => v.iter().map(|s| (s.span(), s.get_ref().clone())).collect(),
        }
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number or a string")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
        Ok(Scalar::Int(i64::try_from(v).unwrap_or(i64::MAX)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar::Str(v.to_string()))
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

impl<'de> Deserialize<'de> for Scalars {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalars;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number, a string, or an array of them")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalars, E> {
                ScalarVisitor.visit_i64(v).map(Scalars::One)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalars, E> {
                ScalarVisitor.visit_u64(v).map(Scalars::One)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalars, E> {
                ScalarVisitor.visit_str(v).map(Scalars::One)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalars, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<Scalar>>()? {
                    items.push(item);
                }
                Ok(Scalars::Many(items))
            }
        }
        d.deserialize_any(V)
    }
}
