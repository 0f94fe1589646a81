//! The `serve` configuration file: which interfaces the daemon manages, with which role,
//! policy file and XDP mode. Errors name file:line:column like the policy parser's.
//!
//! ```toml
//! [[interface]]
//! name = "eth0"
//! role = "external"
//! policy = "/etc/edge-ctl/policy.toml"
//! mode = "auto"          # optional: native | generic | auto
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use clap::ValueEnum;
use serde::Deserialize;
use toml::Spanned;

use crate::dataplane::Mode;
use crate::policy::{Diagnostic, Location, Role, Severity};
use crate::tomlkeys::Shape;

/// Longest interface name Linux accepts (IFNAMSIZ - 1).
const IFNAME_MAX: usize = 15;

/// One interface the daemon keeps filtered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceConfig {
    pub name: String,
    pub role: Role,
    /// Absolute, or relative to the configuration file's directory.
    pub policy: PathBuf,
    pub mode: Mode,
    /// Where the entry starts, for messages that point the operator at it.
    pub at: Location,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub origin: String,
    pub interfaces: Vec<InterfaceConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read serve configuration {path}: {source}")]
    Read { path: String, source: std::io::Error },
    /// Every problem found, one `file:line:col: error: ...` line each.
    #[error("{}", .0.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Diagnostic>),
    #[error(transparent)]
    Untrusted(#[from] crate::trust::Untrusted),
}

#[derive(Debug, Deserialize)]
struct RawConfig {
    #[serde(default, rename = "interface")]
    interfaces: Vec<Spanned<RawInterface>>,
}

#[derive(Debug, Deserialize)]
struct RawInterface {
    // Required, but optional here: a missing one is reported with every other error.
    name: Option<Spanned<String>>,
    role: Option<Spanned<String>>,
    policy: Option<Spanned<String>>,
    mode: Option<Spanned<String>>,
}

/// The keys a configuration may hold (the structs above, which ignore unknown keys).
const SHAPE: Shape = Shape::Table(
    "the top level",
    &[(
        "interface",
        Shape::Tables(&Shape::Table(
            "[[interface]]",
            &[("name", Shape::Any), ("role", Shape::Any), ("policy", Shape::Any), ("mode", Shape::Any)],
        )),
    )],
);

/// Reads and checks a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
    crate::trust::check(path, "serve configuration")?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&text, &path.display().to_string(), base)
}

/// Parses configuration text; relative policy paths are taken from `base`.
pub fn parse(text: &str, origin: &str, base: &Path) -> Result<Config, ConfigError> {
    let mut errors = Errors { origin, text, list: Vec::new() };
    // Unknown keys first (all of them; deserializing ignores them), so they hide nothing else.
    let (unknown, raw) = crate::tomlkeys::parse::<RawConfig>(text, &SHAPE);
    for (at, message) in unknown {
        errors.at(at, &message);
    }
    let raw = match raw {
        Ok(raw) => raw,
        Err(type_errors) => {
            for (at, message) in type_errors {
                errors.at(at, &message);
            }
            errors.list.sort_by_key(|d| d.at);
            return Err(ConfigError::Invalid(errors.list));
        }
    };
    if raw.interfaces.is_empty() {
        errors.at(0, "no interfaces: add an [[interface]] table with name, role and policy");
    }
    let mut seen: HashMap<String, Location> = HashMap::new();
    let mut interfaces = Vec::new();
    for entry in &raw.interfaces {
        let at = Location::of(text, entry.span().start);
        if let Some(i) = interface(entry.get_ref(), entry.span().start, at, base, &mut errors) {
            match seen.get(&i.name) {
                Some(first) => errors.at(
                    entry.get_ref().name.as_ref().map_or(entry.span().start, |n| n.span().start),
                    &format!(
                        "interface `{}` is listed twice (first at line {}); list each interface once",
                        i.name, first.line
                    ),
                ),
                None => {
                    seen.insert(i.name.clone(), at);
                    interfaces.push(i);
                }
            }
        }
    }
    if errors.list.is_empty() {
        Ok(Config { origin: origin.to_string(), interfaces })
    } else {
        errors.list.sort_by_key(|d| d.at);
        Err(ConfigError::Invalid(errors.list))
    }
}

/// Checks one `[[interface]]` table; every problem is reported, also when fields are missing.
fn interface(
    raw: &RawInterface,
    start: usize,
    at: Location,
    base: &Path,
    errors: &mut Errors,
) -> Option<InterfaceConfig> {
    for (field, present) in
        [("name", raw.name.is_some()), ("role", raw.role.is_some()), ("policy", raw.policy.is_some())]
    {
        if !present {
            errors.at(start, &format!("missing field `{field}` in [[interface]]"));
        }
    }
    let name = raw.name.as_ref().and_then(|n| {
        let name = n.get_ref();
        let ok = !name.is_empty()
            && name.len() <= IFNAME_MAX
            && !name.contains(['/', ' ', '\t', '\n', '\0', ':'])
            && name != "."
            && name != "..";
        if !ok {
            errors.at(
                n.span().start,
                &format!("`{name}` is not an interface name (1-{IFNAME_MAX} characters, no `/`, `:` or spaces)"),
            );
        }
        ok.then(|| name.clone())
    });
    let role = raw.role.as_ref().and_then(|r| {
        let role = Role::parse(r.get_ref());
        if role.is_none() {
            errors.at(r.span().start, &format!("unknown role `{}`: use `external` or `internal`", r.get_ref()));
        }
        role
    });
    let mode = match &raw.mode {
        None => Some(Mode::Auto),
        Some(m) => {
            let parsed = Mode::from_str(m.get_ref(), false).ok();
            if parsed.is_none() {
                errors
                    .at(m.span().start, &format!("unknown mode `{}`: use `native`, `generic` or `auto`", m.get_ref()));
            }
            parsed
        }
    };
    let policy = raw.policy.as_ref().and_then(|p| {
        if p.get_ref().is_empty() {
            errors.at(p.span().start, "empty policy path");
            return None;
        }
        Some(base.join(p.get_ref()))
    });
    Some(InterfaceConfig { name: name?, role: role?, policy: policy?, mode: mode?, at })
}

struct Errors<'a> {
    origin: &'a str,
    text: &'a str,
    list: Vec<Diagnostic>,
}

impl Errors<'_> {
    fn at(&mut self, offset: usize, message: &str) {
        self.list.push(Diagnostic {
            severity: Severity::Error,
            origin: self.origin.to_string(),
            at: Location::of(self.text, offset),
            message: message.to_string(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> Config {
        parse(text, "serve.toml", Path::new("/etc/edge-ctl")).unwrap()
    }

    fn errors(text: &str) -> Vec<String> {
        match parse(text, "serve.toml", Path::new("/etc/edge-ctl")) {
            Err(ConfigError::Invalid(d)) => d.iter().map(|d| d.to_string()).collect(),
            other => panic!("expected errors, got {other:?}"),
        }
    }

    #[test]
    fn reads_interfaces_with_defaults_and_relative_paths() {
        let c = parse_ok(
            r#"
[[interface]]
name = "eth0"
role = "external"
policy = "policy.toml"

[[interface]]
name = "eth1"
role = "internal"
policy = "/srv/internal.toml"
mode = "generic"
"#,
        );
        assert_eq!(c.interfaces.len(), 2);
        let (a, b) = (&c.interfaces[0], &c.interfaces[1]);
        assert_eq!((a.name.as_str(), a.role, a.mode), ("eth0", Role::External, Mode::Auto));
        assert_eq!(a.policy, Path::new("/etc/edge-ctl/policy.toml"));
        assert_eq!(a.at.line, 2);
        assert_eq!((b.name.as_str(), b.role, b.mode), ("eth1", Role::Internal, Mode::Generic));
        assert_eq!(b.policy, Path::new("/srv/internal.toml"));
    }

    #[test]
    fn errors_name_line_and_column() {
        let e = errors("[[interface]]\nname = \"eth0\"\nrole = \"outside\"\npolicy = \"p.toml\"\nmode = \"fast\"\n");
        assert_eq!(
            e,
            [
                "serve.toml:3:8: error: unknown role `outside`: use `external` or `internal`",
                "serve.toml:5:8: error: unknown mode `fast`: use `native`, `generic` or `auto`",
            ]
        );
    }

    #[test]
    fn every_wrong_type_is_located() {
        let e = errors(
            "[[interface]]\nname = 8\nrole = \"external\"\npolicy = \"a\"\n\
             [[interface]]\nname = \"eth1\"\nrole = \"external\"\npolicy = [\"b\"]\n",
        );
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].starts_with("serve.toml:2:8: error: invalid type: integer `8`"), "{e:?}");
        assert!(e[1].starts_with("serve.toml:8:10: error: invalid type: sequence"), "{e:?}");
    }

    #[test]
    fn unknown_keys_and_missing_fields_are_located() {
        // Every error at once, in line order: the unknown key hides neither the bad role nor the
        // missing policy.
        let e = errors("[[interface]]\nname = \"eth0\"\nrole = \"outside\"\npolcy = \"p.toml\"\nport = 1\n");
        assert_eq!(e.len(), 4, "{e:?}");
        assert!(e[0].contains("missing field `policy`"), "{e:?}");
        assert!(e[1].starts_with("serve.toml:3:8: error: unknown role `outside`"), "{e:?}");
        assert!(e[2].starts_with("serve.toml:4:1: error: unknown field `polcy` in [[interface]]"), "{e:?}");
        assert!(e[3].starts_with("serve.toml:5:1: error: unknown field `port`"), "{e:?}");
        let e = errors("[[interface]]\nname = \"eth0\"\nrole = \"external\"\n");
        assert!(e[0].contains("missing field `policy`"), "{e:?}");
    }

    #[test]
    fn duplicates_bad_names_and_empty_configs_are_refused() {
        let e = errors(
            "[[interface]]\nname = \"eth0\"\nrole = \"external\"\npolicy = \"a\"\n\
             [[interface]]\nname = \"eth0\"\nrole = \"internal\"\npolicy = \"b\"\n",
        );
        assert_eq!(
            e,
            ["serve.toml:6:8: error: interface `eth0` is listed twice (first at line 1); list each interface once"]
        );
        let e = errors("[[interface]]\nname = \"a/b\"\nrole = \"external\"\npolicy = \"\"\n");
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].starts_with("serve.toml:2:8: error: `a/b` is not an interface name"));
        assert!(e[1].starts_with("serve.toml:4:10: error: empty policy path"));
        let e = errors("# nothing\n");
        assert!(e[0].contains("no interfaces"), "{e:?}");
    }
}
