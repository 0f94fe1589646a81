//! End to end: two namespaces joined by a veth pair, `edge-ctl attach` on one end, real TCP
//! connections and UDP datagrams from the other. Needs root.

use std::time::Duration;

use edge_tests::lab::{EDGE, Lab, drop_packets, edge_ctl_bin, rule_packets};
use edge_tests::net::{Outcome, Servers, at, tcp_probe, udp_probe};

const POLICY: &str = r#"
[sets]
me = ["@interface"]

[[rule]]
name = "web"
role = "external"
direction = "inbound"
protocol = "tcp"
ports = 8443
local = "me"

[[rule]]
name = "stun"
role = "external"
direction = "inbound"
protocol = "udp"
ports = [3478, "50000-50010"]
local = "me"
"#;

const EDGE4: &str = EDGE[0];
const EDGE6: &str = EDGE[1];
const ALLOW_WAIT: Duration = Duration::from_secs(2);
const DENY_WAIT: Duration = Duration::from_millis(400);

struct Setup {
    lab: Lab,
    edge: String,
    peer: String,
    policy: std::path::PathBuf,
}

fn setup(tag: &str) -> Setup {
    let mut lab = Lab::new(tag);
    let (edge, peer) = lab.edge_and_peer();
    let policy = lab.file("policy.toml", POLICY);
    Setup { lab, edge, peer, policy }
}

fn enforce(s: &Setup, mode: &str) {
    let out = s.lab.edge_ctl_ok(
        &s.edge,
        &["attach", "edge0", "--role", "external", "--policy", s.policy.to_str().unwrap(), "--mode", mode],
    );
    assert!(out.contains(&format!("{mode} XDP")), "{out}");
    let _servers = Servers::start(&s.edge, &[8443, 8080], &[3478, 5000, 50010]);
    let before = s.lab.stats(&s.edge, "edge0");

    for ip in [EDGE4, EDGE6] {
        assert_eq!(tcp_probe(&s.peer, at(ip, 8443), ALLOW_WAIT), Outcome::Answered, "tcp 8443 {ip}");
        assert_eq!(tcp_probe(&s.peer, at(ip, 8080), DENY_WAIT), Outcome::Silent, "tcp 8080 {ip}");
        for _ in 0..5 {
            assert_eq!(udp_probe(&s.peer, at(ip, 3478), ALLOW_WAIT), Outcome::Answered, "udp 3478 {ip}");
        }
        assert_eq!(udp_probe(&s.peer, at(ip, 50010), ALLOW_WAIT), Outcome::Answered, "udp 50010 {ip}");
        for _ in 0..3 {
            assert_eq!(udp_probe(&s.peer, at(ip, 5000), DENY_WAIT), Outcome::Silent, "udp 5000 {ip}");
        }
    }

    let after = s.lab.stats(&s.edge, "edge0");
    // Exactly what was sent: 6 allowed datagrams and 3 denied ones per family.
    assert_eq!(rule_packets(&after, "stun") - rule_packets(&before, "stun"), 12);
    let dropped = drop_packets(&after, "policy-default") - drop_packets(&before, "policy-default");
    // 6 denied datagrams plus at least one SYN per denied TCP probe.
    assert!(dropped >= 8, "policy-default drops: {dropped}");
    assert!(rule_packets(&after, "web") - rule_packets(&before, "web") >= 6, "handshake and close, twice");

    s.lab.edge_ctl_ok(&s.edge, &["detach", "edge0"]);
    for ip in [EDGE4, EDGE6] {
        assert_eq!(tcp_probe(&s.peer, at(ip, 8080), ALLOW_WAIT), Outcome::Answered, "after detach: tcp 8080 {ip}");
        assert_eq!(udp_probe(&s.peer, at(ip, 5000), ALLOW_WAIT), Outcome::Answered, "after detach: udp 5000 {ip}");
    }
}

#[test]
fn native_mode_enforces_and_detach_restores() {
    let s = setup("nat");
    enforce(&s, "native");
}

#[test]
fn generic_mode_enforces_and_detach_restores() {
    let s = setup("gen");
    enforce(&s, "generic");
}

#[test]
fn status_shows_what_is_attached() {
    let s = setup("sta");
    let policy = s.policy.to_str().unwrap();
    let out = s.lab.edge_ctl_ok(&s.edge, &["status"]);
    assert!(out.contains("not attached to any interface"), "{out}");
    s.lab.edge_ctl_ok(&s.edge, &["attach", "edge0", "--role", "external", "--policy", policy]);
    let json: serde_json::Value = serde_json::from_str(&s.lab.edge_ctl_ok(&s.edge, &["status", "--json"])).unwrap();
    let i = &json["interfaces"][0];
    assert_eq!(i["interface"], "edge0");
    assert_eq!(i["role"], "external");
    assert_eq!(i["mode"], "native");
    assert_eq!(i["rules"], 2);
    assert!(i["program_id"].as_u64().unwrap() > 0);
    assert_eq!(i["policy_origin"], policy);
    assert_eq!(i["policy_hash"].as_str().unwrap().len(), 64);
    assert!(i["problem"].is_null(), "{i}");
    // The same interface name in another namespace is independent.
    assert!(s.lab.edge_ctl_ok(&s.peer, &["status"]).contains("not attached"));
}

#[test]
fn errors_are_clear_and_change_nothing() {
    let s = setup("err");
    let policy = s.policy.to_str().unwrap();
    let attach = ["attach", "edge0", "--role", "external", "--policy", policy];

    let out = s.lab.edge_ctl(&s.edge, &["attach", "nosuch0", "--role", "external", "--policy", policy]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no interface named `nosuch0`") && err.contains("edge0"), "{err}");

    let bad = s.lab.file("bad.toml", &POLICY.replace("ports = 8443", "ports = 0"));
    let out = s.lab.edge_ctl(&s.edge, &["attach", "edge0", "--role", "external", "--policy", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(".toml:10:9: error: port 0 is out of range"), "{err}");
    assert!(s.lab.edge_ctl_ok(&s.edge, &["status"]).contains("not attached"), "a bad policy attaches nothing");

    s.lab.edge_ctl_ok(&s.edge, &attach);
    let out = s.lab.edge_ctl(&s.edge, &attach);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already attached to edge0"));

    s.lab.edge_ctl_ok(&s.edge, &["detach", "edge0"]);
    let out = s.lab.edge_ctl(&s.edge, &["detach", "edge0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not attached to edge0"));

    let out = s.lab.edge_ctl(&s.edge, &["stats", "edge0"]);
    assert!(!out.status.success());
}

/// Whoever can change the policy can change the firewall: a policy another user could write
/// (group- or world-writable, owned by someone else, or in a directory others can write) is
/// refused by attach and by reload, naming the path at fault and the fix.
#[test]
fn untrusted_policy_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let s = setup("ww");
    let policy = s.policy.to_str().unwrap();
    let dir = s.policy.parent().unwrap().to_str().unwrap().to_string();
    let mode = |path: &str, m: u32| std::fs::set_permissions(path, std::fs::Permissions::from_mode(m)).unwrap();
    let refused = |args: &[&str], expect: &[&str]| {
        let out = s.lab.edge_ctl(&s.edge, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        for e in expect {
            assert!(err.contains(e), "{args:?}: expected {e:?} in: {err}");
        }
    };
    let attach = ["attach", "edge0", "--role", "external", "--policy", policy];
    mode(policy, 0o666);
    refused(&attach, &["writable by its group and all users", &format!("chmod go-w {policy}")]);
    mode(policy, 0o664);
    refused(&attach, &["writable by its group (mode 0664)", &format!("chmod g-w {policy}")]);
    mode(policy, 0o644);
    let nobody = nix::unistd::User::from_name("nobody").unwrap().expect("user nobody");
    nix::unistd::chown(policy, Some(nobody.uid), None).unwrap();
    refused(&attach, &["owned by user nobody", &format!("chown root {policy}")]);
    nix::unistd::chown(policy, Some(nix::unistd::Uid::from_raw(0)), None).unwrap();
    mode(&dir, 0o777);
    refused(
        &attach,
        &[&format!("directory {dir} is writable by its group and all users"), &format!("chmod go-w {dir}")],
    );
    assert!(s.lab.edge_ctl_ok(&s.edge, &["status"]).contains("not attached"));
    // Reload refuses the same way and keeps the live policy.
    mode(&dir, 0o755);
    s.lab.edge_ctl_ok(&s.edge, &attach);
    let hash =
        |st: &str| serde_json::from_str::<serde_json::Value>(st).unwrap()["interfaces"][0]["policy_hash"].clone();
    let before = hash(&s.lab.edge_ctl_ok(&s.edge, &["status", "--json"]));
    mode(policy, 0o646);
    refused(&["reload", "edge0", "--policy", policy], &["writable by all users", &format!("chmod o-w {policy}")]);
    assert_eq!(hash(&s.lab.edge_ctl_ok(&s.edge, &["status", "--json"])), before);
    mode(policy, 0o644);
}

#[test]
fn builtin_profile_without_a_policy() {
    let s = setup("blt");
    // Whatever this machine has in /etc/edge-ctl is hidden (a private mount namespace with an
    // empty directory over it), so the built-in profile is what attach must use.
    let dir = std::path::Path::new(edge_ctl::cli::DEFAULT_POLICY).parent().unwrap().display().to_string();
    let script = format!(
        "if [ -d {dir} ]; then mount -t tmpfs edge-test {dir} || exit 3; fi; exec {bin} attach edge0 --role external",
        bin = edge_ctl_bin().display()
    );
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", s.edge))
        .args(["unshare", "--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.contains("policy <built-in lync2013-edge-hlb>"), "{out}");
    assert!(out.contains("192.0.2.1") && out.contains("2001:db8::1"), "service addresses listed: {out}");
    let _servers = Servers::start(&s.edge, &[5061, 8080], &[3478]);
    // SIP/TLS and STUN are in the matrix; 8080 is not.
    assert_eq!(tcp_probe(&s.peer, at(EDGE4, 5061), ALLOW_WAIT), Outcome::Answered);
    assert_eq!(udp_probe(&s.peer, at(EDGE6, 3478), ALLOW_WAIT), Outcome::Answered);
    assert_eq!(tcp_probe(&s.peer, at(EDGE4, 8080), DENY_WAIT), Outcome::Silent);
}
