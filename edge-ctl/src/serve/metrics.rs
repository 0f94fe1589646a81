//! Counters -> Prometheus text exposition format (version 0.0.4).
//!
//! Every value is a snapshot the kernel's maps (or the daemon's reload counters) hold at scrape
//! time; nothing is accumulated here. The text is written directly instead of through a client
//! library: such libraries are built around registering metrics and updating them in process,
//! while here each scrape reads a fresh, complete set of values, and the format for that is a
//! few lines (HELP, TYPE, samples with escaped label values).

use std::fmt::Write;

use crate::dataplane::{InterfaceStats, ReasonStats};
use crate::policy::Role;

/// Reloads the daemon made on an interface (an attach at start counts as one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReloadCounts {
    pub successes: u64,
    pub failures: u64,
}

/// What one scrape reports about one interface.
#[derive(Debug)]
pub struct InterfaceSample {
    pub interface: String,
    pub role: Role,
    /// The filter is attached (its pinned XDP link exists).
    pub attached: bool,
    /// Counters read from the maps; None when the interface is not attached or unreadable.
    pub stats: Option<InterfaceStats>,
    /// When the live policy was loaded into the kernel (attach or reload), Unix seconds.
    pub loaded_at: Option<u64>,
    /// Kept by this daemon; None for attached interfaces it does not manage.
    pub reloads: Option<ReloadCounts>,
}

/// Every metric the endpoint exposes, as (name, type, help); docs/operations.md's table follows it
/// (a test in edge-ctl/tests/docs.rs checks that it names each).
pub const METRICS: &[(&str, &str, &str)] = &[
    (
        "edge_ctl_interface_attached",
        "gauge",
        "1 when the filter is attached to the interface, 0 when the configuration lists it but it is not attached.",
    ),
    (
        "edge_ctl_rule_packets_total",
        "counter",
        "Packets a policy rule allowed (the first matching rule counts each packet).",
    ),
    ("edge_ctl_rule_bytes_total", "counter", "Bytes of the packets a policy rule allowed."),
    ("edge_ctl_dropped_packets_total", "counter", "Packets dropped, by direction and reason."),
    ("edge_ctl_dropped_bytes_total", "counter", "Bytes of the packets dropped, by direction and reason."),
    (
        "edge_ctl_would_drop_packets_total",
        "counter",
        "Packets audit mode or egress monitor mode passed but would have dropped, by direction and reason.",
    ),
    (
        "edge_ctl_would_drop_bytes_total",
        "counter",
        "Bytes of the packets audit mode or egress monitor mode passed but would have dropped.",
    ),
    (
        "edge_ctl_passed_packets_total",
        "counter",
        "Packets passed without a rule (essentials, tracked flows, replies), by direction and reason.",
    ),
    ("edge_ctl_passed_bytes_total", "counter", "Bytes of the packets passed without a rule, by direction and reason."),
    ("edge_ctl_conntrack_entries", "gauge", "Live entries in the connection table, by address family."),
    ("edge_ctl_conntrack_max_entries", "gauge", "Size of the connection table of each address family."),
    ("edge_ctl_conntrack_hits_total", "counter", "Packets that matched a tracked flow."),
    ("edge_ctl_conntrack_created_total", "counter", "Connection table entries created."),
    ("edge_ctl_conntrack_expired_total", "counter", "Connection table entries found expired."),
    (
        "edge_ctl_conntrack_table_full_total",
        "counter",
        "Entries created while the table was full (each evicted the least recently used entry).",
    ),
    (
        "edge_ctl_conntrack_resets_total",
        "counter",
        "TCP RSTs on tracked flows (the edge's own end the flow; a peer's makes it closing).",
    ),
    (
        "edge_ctl_drop_events_reported_total",
        "counter",
        "Drop events the kernel reported to the ring buffer (edge-ctl tail).",
    ),
    ("edge_ctl_drop_events_suppressed_total", "counter", "Drop events the per-CPU rate limit suppressed."),
    ("edge_ctl_audit_mode", "gauge", "1 when the role is in audit mode (nothing is dropped), else 0."),
    ("edge_ctl_policy_generation", "gauge", "The live policy generation (0 or 1; flips at each reload)."),
    ("edge_ctl_policy_info", "gauge", "Always 1; the sha256 label identifies the live policy text."),
    (
        "edge_ctl_policy_last_reload_success_timestamp_seconds",
        "gauge",
        "When the live policy was loaded into the kernel (attach or reload), seconds since the epoch.",
    ),
    (
        "edge_ctl_policy_reloads_total",
        "counter",
        "Policies this daemon applied successfully (attach at start or reload).",
    ),
    (
        "edge_ctl_policy_reload_failures_total",
        "counter",
        "Policy changes this daemon could not apply (invalid file, attach or reload error); nothing changed.",
    ),
];

/// The exposition text for a scrape.
pub fn render(samples: &[InterfaceSample]) -> String {
    let mut x = Exposition::default();
    for (name, kind, help) in METRICS {
        x.family(name, kind, help);
        for s in samples {
            family_samples(&mut x, name, s);
        }
    }
    x.out
}

/// The samples of metric `name` for one interface.
fn family_samples(x: &mut Exposition, name: &str, s: &InterfaceSample) {
    let base = [("interface", s.interface.as_str()), ("role", s.role.as_str())];
    let st = s.stats.as_ref();
    match name {
        "edge_ctl_interface_attached" => x.sample(&base, &[], u64::from(s.attached)),
        "edge_ctl_rule_packets_total" | "edge_ctl_rule_bytes_total" => {
            for r in st.iter().flat_map(|st| &st.rules) {
                let labels = [("rule", r.name.as_str()), ("direction", r.direction.as_str())];
                let v = if name.contains("packets") { r.packets } else { r.bytes };
                x.sample(&base, &labels, v);
            }
        }
        "edge_ctl_dropped_packets_total" | "edge_ctl_dropped_bytes_total" => {
            reasons(x, &base, st.map(|s| &s.drops[..]), name)
        }
        "edge_ctl_would_drop_packets_total" | "edge_ctl_would_drop_bytes_total" => {
            reasons(x, &base, st.map(|s| &s.would_drop[..]), name)
        }
        "edge_ctl_passed_packets_total" | "edge_ctl_passed_bytes_total" => {
            reasons(x, &base, st.map(|s| &s.passes[..]), name)
        }
        "edge_ctl_conntrack_entries" => {
            if let Some(st) = st {
                x.sample(&base, &[("family", "ipv4")], st.conntrack.entries_v4);
                x.sample(&base, &[("family", "ipv6")], st.conntrack.entries_v6);
            }
        }
        "edge_ctl_policy_info" => {
            if let Some(st) = st {
                x.sample(&base, &[("sha256", st.policy_hash.as_str())], 1);
            }
        }
        "edge_ctl_policy_last_reload_success_timestamp_seconds" => {
            if let Some(t) = s.loaded_at {
                x.sample(&base, &[], t);
            }
        }
        "edge_ctl_policy_reloads_total" => {
            if let Some(r) = s.reloads {
                x.sample(&base, &[], r.successes);
            }
        }
        "edge_ctl_policy_reload_failures_total" => {
            if let Some(r) = s.reloads {
                x.sample(&base, &[], r.failures);
            }
        }
        _ => {
            if let Some(v) = st.and_then(|st| scalar(name, st)) {
                x.sample(&base, &[], v);
            }
        }
    }
}

/// Metrics with one value per interface, read from its stats.
fn scalar(name: &str, st: &InterfaceStats) -> Option<u64> {
    let c = &st.conntrack;
    Some(match name {
        "edge_ctl_conntrack_max_entries" => u64::from(c.max_entries),
        "edge_ctl_conntrack_hits_total" => c.hits,
        "edge_ctl_conntrack_created_total" => c.created,
        "edge_ctl_conntrack_expired_total" => c.expired,
        "edge_ctl_conntrack_table_full_total" => c.table_full,
        "edge_ctl_conntrack_resets_total" => c.reset,
        "edge_ctl_policy_generation" => u64::from(st.generation),
        "edge_ctl_drop_events_reported_total" => st.events.reported,
        "edge_ctl_drop_events_suppressed_total" => st.events.suppressed,
        "edge_ctl_audit_mode" => u64::from(st.mode == "audit"),
        _ => return None,
    })
}

fn reasons(x: &mut Exposition, base: &[(&str, &str)], rows: Option<&[ReasonStats]>, name: &str) {
    for r in rows.unwrap_or_default() {
        let labels = [("direction", r.direction.as_str()), ("reason", r.reason)];
        let v = if name.ends_with("_packets_total") { r.packets } else { r.bytes };
        x.sample(base, &labels, v);
    }
}

/// Text format writer. A family's HELP and TYPE lines are written with its first sample, so
/// families without samples (e.g. nothing attached yet) are left out.
#[derive(Default)]
struct Exposition {
    out: String,
    name: String,
    header: Option<String>,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        self.name = name.to_string();
        self.header = Some(format!("# HELP {name} {}\n# TYPE {name} {kind}\n", escape(help, false)));
    }

    fn sample(&mut self, base: &[(&str, &str)], extra: &[(&str, &str)], value: u64) {
        if let Some(h) = self.header.take() {
            self.out.push_str(&h);
        }
        self.out.push_str(&self.name);
        let mut sep = '{';
        for (k, v) in base.iter().chain(extra) {
            let _ = write!(self.out, "{sep}{k}=\"{}\"", escape(v, true));
            sep = ',';
        }
        if sep == ',' {
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// Escapes backslash and newline (HELP text), and double quotes too in label values.
fn escape(s: &str, label: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if label => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::{ConntrackStats, EventStats, RuleStats};
    use crate::policy::{Direction, Protocol};

    fn stats() -> InterfaceStats {
        let reason = |direction, reason, packets| ReasonStats { direction, reason, packets, bytes: packets * 100 };
        InterfaceStats {
            interface: "eth0".into(),
            role: Role::External,
            generation: 1,
            policy_hash: "ab12".into(),
            rules: vec![RuleStats {
                name: "sip \"tls\"".into(),
                direction: Direction::Inbound,
                protocol: Protocol::Tcp,
                ports: "5061".into(),
                local: "me".into(),
                remote: "any".into(),
                packets: 7,
                bytes: 700,
            }],
            drops: vec![reason(Direction::Inbound, "policy-default", 3)],
            would_drop: vec![reason(Direction::Outbound, "egress-policy", 2)],
            passes: vec![reason(Direction::Inbound, "arp", 1)],
            conntrack: ConntrackStats {
                entries_v4: 4,
                entries_v6: 5,
                max_entries: 65536,
                hits: 6,
                created: 7,
                expired: 8,
                table_full: 9,
                reset: 10,
            },
            mode: "enforce",
            events: EventStats { reported: 11, suppressed: 12 },
        }
    }

    fn sample(stats: Option<InterfaceStats>) -> InterfaceSample {
        InterfaceSample {
            interface: "eth0".into(),
            role: Role::External,
            attached: stats.is_some(),
            stats,
            loaded_at: Some(1_700_000_000),
            reloads: Some(ReloadCounts { successes: 2, failures: 1 }),
        }
    }

    #[test]
    fn renders_every_family_with_labels() {
        let text = render(&[sample(Some(stats()))]);
        let l = r#"interface="eth0",role="external""#;
        for line in [
            "# HELP edge_ctl_rule_packets_total Packets a policy rule allowed (the first matching rule counts each packet).".to_string(),
            "# TYPE edge_ctl_rule_packets_total counter".into(),
            format!(r#"edge_ctl_rule_packets_total{{{l},rule="sip \"tls\"",direction="inbound"}} 7"#),
            format!(r#"edge_ctl_rule_bytes_total{{{l},rule="sip \"tls\"",direction="inbound"}} 700"#),
            format!(r#"edge_ctl_dropped_packets_total{{{l},direction="inbound",reason="policy-default"}} 3"#),
            format!(r#"edge_ctl_dropped_bytes_total{{{l},direction="inbound",reason="policy-default"}} 300"#),
            format!(r#"edge_ctl_would_drop_packets_total{{{l},direction="outbound",reason="egress-policy"}} 2"#),
            format!(r#"edge_ctl_passed_packets_total{{{l},direction="inbound",reason="arp"}} 1"#),
            format!(r#"edge_ctl_conntrack_entries{{{l},family="ipv6"}} 5"#),
            "# TYPE edge_ctl_conntrack_entries gauge".into(),
            format!(r#"edge_ctl_conntrack_max_entries{{{l}}} 65536"#),
            format!(r#"edge_ctl_conntrack_hits_total{{{l}}} 6"#),
            format!(r#"edge_ctl_conntrack_created_total{{{l}}} 7"#),
            format!(r#"edge_ctl_conntrack_expired_total{{{l}}} 8"#),
            format!(r#"edge_ctl_conntrack_table_full_total{{{l}}} 9"#),
            format!(r#"edge_ctl_conntrack_resets_total{{{l}}} 10"#),
            format!(r#"edge_ctl_policy_generation{{{l}}} 1"#),
            format!(r#"edge_ctl_policy_info{{{l},sha256="ab12"}} 1"#),
            format!(r#"edge_ctl_policy_last_reload_success_timestamp_seconds{{{l}}} 1700000000"#),
            format!(r#"edge_ctl_policy_reloads_total{{{l}}} 2"#),
            format!(r#"edge_ctl_policy_reload_failures_total{{{l}}} 1"#),
            format!(r#"edge_ctl_interface_attached{{{l}}} 1"#),
        ] {
            assert!(text.lines().any(|x| x == line), "missing {line:?} in\n{text}");
        }
        // Each family's header appears once, before its samples.
        for (name, _, _) in METRICS {
            assert_eq!(text.matches(&format!("# TYPE {name} ")).count(), 1, "{name}");
        }
    }

    #[test]
    fn an_interface_that_is_not_attached_has_only_daemon_metrics() {
        let mut s = sample(None);
        s.loaded_at = None;
        let text = render(&[s]);
        let names: Vec<&str> =
            text.lines().filter(|l| !l.starts_with('#')).map(|l| l.split('{').next().unwrap()).collect();
        assert_eq!(
            names,
            ["edge_ctl_interface_attached", "edge_ctl_policy_reloads_total", "edge_ctl_policy_reload_failures_total"]
        );
        assert!(text.contains("edge_ctl_interface_attached{interface=\"eth0\",role=\"external\"} 0\n"));
    }

    #[test]
    fn escapes_label_values_and_help() {
        assert_eq!(escape("a\\b\"c\nd", true), "a\\\\b\\\"c\\nd");
        assert_eq!(escape("a\\b\"c\nd", false), "a\\\\b\"c\\nd");
    }

    #[test]
    fn names_follow_prometheus_conventions() {
        for (name, kind, help) in METRICS {
            assert!(name.starts_with("edge_ctl_"), "{name}");
            assert!(name.chars().all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit()), "{name}");
            assert_eq!(name.ends_with("_total"), *kind == "counter", "{name}");
            assert!(help.ends_with('.'), "{name}");
        }
    }
}
