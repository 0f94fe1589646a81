//! Counters -> Prometheus exposition, through the `prometheus-client` crate.
//!
//! Every value is a snapshot the kernel's maps (or the daemon's reload counters) hold at scrape
//! time; nothing is accumulated here. Each scrape builds a registry holding one collector over
//! that snapshot ([`Snapshot`]), and the crate writes the text: names, HELP and TYPE lines,
//! label escaping, and the two formats a scraper may ask for (see [`Format`]).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

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

/// The exposition formats the endpoint speaks; the scraper's Accept header chooses (serve/http.rs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The classic Prometheus text format, version 0.0.4: what every scraper understands.
    Prometheus,
    /// OpenMetrics 1.0 text (counters named without `_total` in HELP and TYPE, `# EOF` at the
    /// end): what Prometheus asks for first.
    OpenMetrics,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// The exposition text for a scrape.
pub fn render(samples: Vec<InterfaceSample>, format: Format) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot(samples)));
    let mut out = String::new();
    let written = match format {
        Format::Prometheus => prometheus_client::encoding::prometheus_text::encode(&mut out, &registry),
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry),
    };
    // Writing to a String cannot fail, and the collector returns only the writer's errors.
    written.expect("encoding into a String");
    out
}

/// One scrape's values, handed to the library as a collector: it is asked to encode them once.
#[derive(Debug)]
struct Snapshot(Vec<InterfaceSample>);

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, kind, help) in METRICS {
            let mut rows = Rows::default();
            for s in &self.0 {
                family_samples(&mut rows, name, s);
            }
            // A family without samples (e.g. nothing attached yet) is left out, HELP and TYPE too.
            if rows.0.is_empty() {
                continue;
            }
            // The library adds `_total` to a counter's samples (and, in text 0.0.4, to its HELP and
            // TYPE lines); the table names the samples, as Prometheus users query them.
            let (family, metric_type) = match *kind {
                "counter" => (name.strip_suffix("_total").expect("counters end in _total"), MetricType::Counter),
                _ => (*name, MetricType::Gauge),
            };
            let mut family_encoder = encoder.encode_descriptor(family, help, None, metric_type)?;
            for (labels, value) in &rows.0 {
                let sample = family_encoder.encode_family(labels)?;
                match metric_type {
                    MetricType::Counter => ConstCounter::new(*value).encode(sample)?,
                    _ => ConstGauge::new(*value).encode(sample)?,
                }
            }
        }
        Ok(())
    }
}

/// The samples of one family: label pairs and value.
#[derive(Default)]
struct Rows<'a>(Vec<(Vec<(&'a str, &'a str)>, u64)>);

impl<'a> Rows<'a> {
    fn sample(&mut self, base: &[(&'a str, &'a str)], extra: &[(&'a str, &'a str)], value: u64) {
        self.0.push((base.iter().chain(extra).copied().collect(), value));
    }
}

/// The samples of metric `name` for one interface.
fn family_samples<'a>(x: &mut Rows<'a>, name: &str, s: &'a InterfaceSample) {
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

fn reasons<'a>(x: &mut Rows<'a>, base: &[(&'a str, &'a str)], rows: Option<&'a [ReasonStats]>, name: &str) {
    for r in rows.unwrap_or_default() {
        let labels = [("direction", r.direction.as_str()), ("reason", r.reason)];
        let v = if name.ends_with("_packets_total") { r.packets } else { r.bytes };
        x.sample(base, &labels, v);
    }
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
        let text = render(vec![sample(Some(stats()))], Format::Prometheus);
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
        let text = render(vec![s], Format::Prometheus);
        let names: Vec<&str> =
            text.lines().filter(|l| !l.starts_with('#')).map(|l| l.split('{').next().unwrap()).collect();
        assert_eq!(
            names,
            ["edge_ctl_interface_attached", "edge_ctl_policy_reloads_total", "edge_ctl_policy_reload_failures_total"]
        );
        assert!(text.contains("edge_ctl_interface_attached{interface=\"eth0\",role=\"external\"} 0\n"));
    }

    #[test]
    fn openmetrics_names_counter_families_without_total_and_ends_with_eof() {
        let text = render(vec![sample(Some(stats()))], Format::OpenMetrics);
        let l = r#"interface="eth0",role="external""#;
        for line in [
            "# HELP edge_ctl_rule_packets Packets a policy rule allowed (the first matching rule counts each packet)."
                .to_string(),
            "# TYPE edge_ctl_rule_packets counter".into(),
            format!(r#"edge_ctl_rule_packets_total{{{l},rule="sip \"tls\"",direction="inbound"}} 7"#),
            "# TYPE edge_ctl_conntrack_entries gauge".into(),
            format!(r#"edge_ctl_conntrack_entries{{{l},family="ipv6"}} 5"#),
            format!(r#"edge_ctl_policy_reload_failures_total{{{l}}} 1"#),
        ] {
            assert!(text.lines().any(|x| x == line), "missing {line:?} in\n{text}");
        }
        assert!(text.ends_with("\n# EOF\n"), "{text}");
        assert!(!render(vec![sample(Some(stats()))], Format::Prometheus).contains("# EOF"));
    }

    #[test]
    fn label_values_are_escaped() {
        for format in [Format::Prometheus, Format::OpenMetrics] {
            let mut st = stats();
            st.rules[0].name = "a\\b\"c\nd".into();
            let text = render(vec![sample(Some(st))], format);
            assert!(text.contains(r#"rule="a\\b\"c\nd""#), "{format:?}:\n{text}");
        }
    }

    /// `promtool check metrics` (Debian's prometheus package, which `cargo xtask setup` installs)
    /// with the lint Prometheus applies. promtool 2.42 reads only the text format 0.0.4: that one
    /// must pass clean. OpenMetrics must parse (exit 3 is lint, 1 a parse error), and its only
    /// lint is the one 0.0.4 rules find in any OpenMetrics text: a counter's `_total` samples have
    /// no HELP of their own, since OpenMetrics names the family without the suffix.
    #[test]
    fn both_formats_pass_promtool() {
        use std::io::Write;
        use std::process::{Command, Stdio};
        for format in [Format::Prometheus, Format::OpenMetrics] {
            let mut idle = sample(None);
            idle.interface = "eth1".into();
            let text = render(vec![sample(Some(stats())), idle], format);
            let mut child = Command::new("promtool")
                .args(["check", "metrics"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("promtool: {e}; install Debian's prometheus package (`cargo xtask setup` does)")
                });
            child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
            let out = child.wait_with_output().unwrap();
            let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            match format {
                Format::Prometheus => {
                    assert!(out.status.success() && said.trim().is_empty(), "{format:?}: promtool: {said}\n{text}")
                }
                Format::OpenMetrics => {
                    assert_eq!(out.status.code(), Some(3), "{format:?}: promtool: {said}\n{text}");
                    let counters = METRICS.iter().filter(|(_, kind, _)| *kind == "counter").count();
                    let lint: Vec<&str> = said.lines().collect();
                    assert_eq!(lint.len(), counters, "{said}");
                    for line in lint {
                        let name = line.strip_suffix(" no help text").unwrap_or_else(|| panic!("{said}"));
                        assert!(METRICS.iter().any(|(n, kind, _)| *n == name && *kind == "counter"), "{said}");
                    }
                }
            }
        }
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
