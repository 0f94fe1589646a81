use super::super::*;

const GOOD: &str = r#"
version = 1

[sets]
access_edge = ["203.0.113.10", "2001:db8:0:1::10/128"]
partners = ["198.51.100.0/24", "2001:db8:ff::/48"]

[roles.external]
essentials = { arp = true, ndp = true, pmtu = false }

[[rule]]
name = "access-sip-tls"
role = "external"
direction = "inbound"
protocol = "tcp"
ports = 443
local = "access_edge"
remote = "any"
note = "Client-to-server SIP traffic"

[[rule]]
name = "av-media"
role = "external"
direction = "inbound"
protocol = "udp"
ports = ["50000-59999", 3478]
local = "access_edge"
remote = ["partners", "192.0.2.0/24"]
enabled = false
"#;

fn errors(text: &str) -> Vec<String> {
    match parse(text, "p.toml") {
        Ok(p) => panic!("expected errors, got a policy with {} rules", p.rules.len()),
        Err(e) => e.errors.iter().map(|d| d.to_string()).collect(),
    }
}

fn one_error(text: &str) -> String {
    let e = errors(text);
    assert_eq!(e.len(), 1, "{e:#?}");
    e.into_iter().next().unwrap()
}

/// A valid single-rule policy with one field replaced.
fn rule_with(field: &str, value: &str) -> String {
    let mut fields = vec![
        ("name", "\"r1\""),
        ("role", "\"external\""),
        ("direction", "\"inbound\""),
        ("protocol", "\"tcp\""),
        ("ports", "443"),
        ("local", "\"edge\""),
        ("remote", "\"any\""),
    ];
    for f in fields.iter_mut() {
        if f.0 == field {
            f.1 = value;
        }
    }
    let mut s = String::from("[sets]\nedge = [\"203.0.113.10\"]\nedge6 = [\"2001:db8::1\"]\n\n[[rule]]\n");
    for (k, v) in fields {
        s += &format!("{k} = {v}\n");
    }
    s
}

#[test]
fn good_policy_parses() {
    let p = parse(GOOD, "p.toml").unwrap();
    assert_eq!(p.rules.len(), 3, "two rules and the failsafe");
    assert_eq!(p.rules[0].name, FAILSAFE_RULE);
    let r = &p.rules[2];
    assert_eq!(r.ports.0, vec![PortRange { first: 50000, last: 59999 }, PortRange { first: 3478, last: 3478 }]);
    assert!(!r.enabled);
    assert_eq!(
        r.remote,
        AddrMatch::Terms(vec![AddrTerm::Set("partners".into()), AddrTerm::Net("192.0.2.0/24".parse().unwrap())])
    );
    assert!(!p.external.essentials.pmtu);
    assert!(p.internal.essentials.pmtu, "essentials default to on");
    assert_eq!(p.rules[1].at.line, 11);
    assert_eq!(p.rules_of(Role::External).count(), 1, "disabled rules are not in effect");
}

#[test]
fn unknown_key_names_its_position() {
    let e = one_error(&rule_with("ports", "443\nprot = \"tcp\""));
    assert!(e.starts_with("p.toml:11:1: error: unknown field `prot`"), "{e}");
}

#[test]
fn every_unknown_key_is_reported_with_the_other_errors_in_line_order() {
    let text = "versoin = 1\n[sets]\nedge = [\"203.0.113.10\"]\n[roles.external]\negres = \"off\"\n\
                [[rule]]\nname = \"a\"\nrole = \"external\"\ndirection = \"inbound\"\nprotocol = \"tcp\"\n\
                ports = 0\nlocal = \"edge\"\nprot = \"tcp\"\n[[rule]]\nname = \"b\"\nrole = \"external\"\n\
                direction = \"inbound\"\nprotocol = \"tcp\"\nports = 443\nlocal = \"nowhere\"\n";
    let e = errors(text);
    let heads: Vec<&str> = e.iter().map(|e| e.split(": error: ").next().unwrap()).collect();
    assert_eq!(heads, ["p.toml:1:1", "p.toml:5:1", "p.toml:11:9", "p.toml:13:1", "p.toml:20:9"], "{e:#?}");
    assert!(e[0].contains("unknown field `versoin` in the top level, expected one of `version`"), "{}", e[0]);
    assert!(e[1].contains("unknown field `egres` in [roles.external]"), "{}", e[1]);
    assert!(e[3].contains("unknown field `prot` in [[rule]]"), "{}", e[3]);
    assert!(e[4].contains("nowhere"), "{}", e[4]);
}

#[test]
fn every_key_of_the_format_is_known() {
    // Every key the structs take, once: none may be reported unknown.
    let text = "version = 1\nplacement = \"perimeter\"\n[sets]\nedge = [\"203.0.113.10\"]\n\
                [roles.external]\ndefault = \"drop\"\nessentials = { arp = true, ndp = true, pmtu = true }\n\
                egress = \"enforce\"\nmode = \"enforce\"\nfragments = \"drop\"\nmartians = \"drop\"\n\
                [roles.internal]\nessentials.arp = true\n\
                [conntrack]\nmax_entries = 1024\ntcp_syn_sent = 1\ntcp_established = 2\ntcp_closing = 3\nudp = 4\n\
                [events]\nper_second = 1\n[failsafe]\nssh = true\nssh_from = [\"192.0.2.0/24\"]\n\
                [[rule]]\nname = \"a\"\nrole = \"external\"\ndirection = \"inbound\"\nprotocol = \"tcp\"\n\
                ports = 443\nlocal = \"edge\"\nremote = \"any\"\nnote = \"n\"\nservice = \"s\"\nenabled = true\n";
    assert!(crate::tomlkeys::unknown(text, &super::super::raw::SHAPE).is_empty());
    parse(text, "p.toml").unwrap();
}

#[test]
fn toml_syntax_error_has_position() {
    let e = one_error("[[rule]\nname = 1");
    assert!(e.starts_with("p.toml:1:"), "{e}");
}

#[test]
fn unknown_set() {
    let e = one_error(&rule_with("local", "\"edgee\""));
    assert!(e.contains("p.toml:11:9: error: local: unknown address set `edgee`"), "{e}");
}

#[test]
fn port_zero_and_too_big() {
    assert!(one_error(&rule_with("ports", "0")).contains("port 0 is out of range"));
    assert!(one_error(&rule_with("ports", "65536")).contains("port 65536 is out of range"));
    assert!(one_error(&rule_with("ports", "\"1-70000\"")).contains("port 70000 is out of range"));
    let e = one_error(&rule_with("ports", "[443, 0]"));
    assert!(e.contains(":10:15:"), "element position: {e}");
}

#[test]
fn inverted_range() {
    let e = one_error(&rule_with("ports", "\"59999-50000\""));
    assert!(e.contains("inverted") && e.contains("50000-59999"), "{e}");
}

#[test]
fn not_a_port() {
    assert!(one_error(&rule_with("ports", "\"https\"")).contains("is not a port"));
    assert!(one_error(&rule_with("ports", "[]")).contains("ports is empty"));
}

#[test]
fn ipv4_ipv6_mixups() {
    let e = one_error(&rule_with("remote", "\"203.0.113.0/33\""));
    assert!(e.contains("too long for an IPv4 address"), "{e}");
    let e = one_error(&rule_with("remote", "\"2001:db8::/129\""));
    assert!(e.contains("too long for an IPv6 address"), "{e}");
    let e = one_error(&rule_with("remote", "\"2001:db8::/32\""));
    assert!(e.contains("can never match: local addresses are IPv4 only but remote addresses are IPv6 only"), "{e}");
    let e = one_error(&rule_with("local", "\"edge6\"").replace("remote = \"any\"", "remote = \"192.0.2.0/24\""));
    assert!(e.contains("can never match"), "{e}");
    assert!(one_error(&rule_with("remote", "\"192.0.2.300\"")).contains("is not an IPv4 or IPv6 address"));
}

#[test]
fn duplicate_rule_name() {
    let mut text = rule_with("name", "\"dup\"");
    text +=
        "\n[[rule]]\nname = \"dup\"\nrole = \"internal\"\ndirection = \"inbound\"\nprotocol = \"udp\"\nports = 3478\n";
    let e = one_error(&text);
    assert!(e.contains("p.toml:15:8: error: duplicate rule name `dup` (first defined at line 5)"), "{e}");
}

#[test]
fn bad_keywords() {
    assert!(one_error(&rule_with("role", "\"dmz\"")).contains("unknown role `dmz`"));
    assert!(one_error(&rule_with("direction", "\"in\"")).contains("unknown direction `in`"));
    assert!(one_error(&rule_with("protocol", "\"icmp\"")).contains("unknown protocol `icmp`"));
}

#[test]
fn all_errors_are_reported_in_order() {
    let text = rule_with("ports", "0").replace("\"external\"", "\"dmz\"");
    let e = errors(&text);
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(e[0].contains("unknown role") && e[1].contains("port 0"), "{e:#?}");
}

#[test]
fn warnings_do_not_fail() {
    let text = rule_with("remote", "\"192.0.2.7/24\"");
    let p = parse(&text, "p.toml").unwrap();
    assert_eq!(p.warnings.len(), 1);
    assert!(p.warnings[0].to_string().contains("host bits set; it is read as 192.0.2.0/24"));
    assert_eq!(p.rules[1].remote, AddrMatch::Terms(vec![AddrTerm::Net("192.0.2.0/24".parse().unwrap())]));
}

#[test]
fn unsupported_version_and_default() {
    assert!(one_error("version = 2").contains("unsupported policy version 2"));
    assert!(one_error("[roles.external]\ndefault = \"pass\"").contains("default `pass` is not supported"));
}

#[test]
fn placement_is_node_or_perimeter() {
    assert_eq!(parse("", "p.toml").unwrap().placement, Placement::Node);
    assert_eq!(parse("placement = \"perimeter\"", "p.toml").unwrap().placement, Placement::Perimeter);
    let e = one_error("placement = \"router\"");
    assert!(e.contains("p.toml:1:13") && e.contains("expected \"node\"") && e.contains("\"perimeter\""), "{e}");
}

#[test]
fn interface_token_and_any_name() {
    let p = parse("[sets]\nme = [\"@interface\"]\n", "p.toml").unwrap();
    assert_eq!(p.sets[0].entries, vec![SetEntry::Interface]);
    assert!(one_error("[sets]\nany = [\"192.0.2.1\"]\n").contains("not allowed"));
}

#[test]
fn failsafe_ssh_is_on_by_default_and_first() {
    let p = parse("", "p.toml").unwrap();
    assert_eq!(p.rules.len(), 1);
    let r = &p.rules[0];
    assert_eq!(
        (r.name.as_str(), r.role, r.direction, r.protocol),
        (FAILSAFE_RULE, Role::Internal, Direction::Inbound, Protocol::Tcp)
    );
    assert_eq!(r.ports.0, vec![PortRange { first: 22, last: 22 }]);
    assert_eq!(r.remote, AddrMatch::Any);
    // The filtering host's own addresses, never the hosts behind a forwarding interface.
    assert_eq!(r.local, AddrMatch::Terms(vec![AddrTerm::Set(INTERFACE_TOKEN.into())]));
    assert_eq!(p.set(INTERFACE_TOKEN).unwrap().entries, vec![SetEntry::Interface]);
    // ... which no rule of a file can name.
    assert!(one_error(&rule_with("local", "\"@interface\"")).contains("@interface"));
    let p = parse(&format!("{GOOD}\n[failsafe]\nssh_from = [\"192.0.2.0/24\"]\n"), "p.toml").unwrap();
    assert_eq!(p.rules[0].remote, AddrMatch::Terms(vec![AddrTerm::Net("192.0.2.0/24".parse().unwrap())]));
    assert_eq!(p.rules[0].name, FAILSAFE_RULE);
    assert_eq!(p.rules.len(), 3);
    let p = parse("[failsafe]\nssh = false\n", "p.toml").unwrap();
    assert!(p.rules.is_empty());
    assert!(one_error("[failsafe]\nssh_from = []\n").contains("failsafe.ssh_from is empty"));
    let e = one_error(&rule_with("name", "\"failsafe-ssh\""));
    assert!(e.contains("reserved for the failsafe"), "{e}");
}

#[test]
fn egress_and_conntrack_settings() {
    let p = parse("[roles.internal]\negress = \"monitor\"\n[conntrack]\nudp = 5\n", "p.toml").unwrap();
    assert_eq!(p.internal.egress, EgressMode::Monitor);
    assert_eq!(p.external.egress, EgressMode::Enforce);
    assert_eq!(p.conntrack.udp, 5);
    assert_eq!(p.conntrack.tcp_established, 7200);
    assert!(one_error("[roles.external]\negress = \"block\"\n").contains("unknown egress mode `block`"));
    assert!(one_error("[conntrack]\nudp = 0\n").contains("conntrack.udp = 0 is out of range"));
    assert!(one_error("[conntrack]\nmax_entries = 10\n").contains("max_entries = 10 is out of range"));
    assert!(one_error("[conntrack]\ntcp = 10\n").contains("unknown field `tcp`"));
}

#[test]
fn every_wrong_type_and_missing_field_is_reported_in_line_order() {
    let text = "version = \"one\"\n\
                [sets]\n\
                edge = [\"203.0.113.10\"]\n\
                bad = { a = 1 }\n\
                [conntrack]\n\
                udp = \"sixty\"\n\
                [[rule]]\n\
                name = \"r1\"\n\
                role = \"external\"\n\
                direction = \"inbound\"\n\
                protocol = \"tcp\"\n\
                ports = true\n\
                [[rule]]\n\
                name = \"r2\"\n\
                role = \"external\"\n\
                direction = \"inbound\"\n\
                protocol = \"tcp\"\n\
                [[rule]]\n\
                name = \"r3\"\n\
                role = \"external\"\n\
                direction = \"inbound\"\n\
                protocol = \"tcp\"\n\
                ports = 443\n\
                enabled = \"yes\"\n\
                prot = 1\n";
    let e = errors(text);
    let lines: Vec<&str> = e.iter().map(|m| m.split(": error: ").next().unwrap()).collect();
    assert_eq!(
        lines,
        ["p.toml:1:11", "p.toml:4:7", "p.toml:6:7", "p.toml:12:9", "p.toml:13:1", "p.toml:24:11", "p.toml:25:1"],
        "{e:#?}"
    );
    assert!(e[0].contains("invalid type: string \"one\", expected i64"), "{}", e[0]);
    assert!(e[1].contains("a number, a string, or an array of them"), "{}", e[1]);
    assert!(e[3].contains("invalid type: boolean `true`"), "{}", e[3]);
    assert!(e[4].contains("missing field `ports`"), "{}", e[4]);
    assert!(e[6].contains("unknown field `prot` in [[rule]]"), "{}", e[6]);
}

#[test]
fn a_wrong_type_in_an_inline_array_of_rules_is_found_per_rule() {
    let rule = |name: &str, ports: &str| {
        format!(
            "{{ name = \"{name}\", role = \"external\", direction = \"inbound\", protocol = \"tcp\", ports = {ports} }}"
        )
    };
    let text = format!("rule = [\n{},\n{},\n{},\n]\n", rule("a", "false"), rule("b", "443"), rule("c", "{ x = 1 }"));
    let e = errors(&text);
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(e[0].starts_with("p.toml:2:") && e[1].starts_with("p.toml:4:"), "{e:#?}");
}
