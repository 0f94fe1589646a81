//! `edge-ctl serve`: the daemon runs inside the lab's edge namespace; the tests scrape its
//! metrics from inside that namespace, send traffic from the peer, edit its policy file and
//! signal it. Needs root.
//!
//! Waits poll with generous timeouts and never assert on how long something took.

use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use edge_tests::lab::{Lab, drop_packets, edge_ctl_bin, rule_packets};
use edge_tests::net::{Outcome, Servers, http_get, in_netns, udp_probe};

const EDGE4: &str = edge_tests::lab::EDGE[0];
const PORT: u16 = 9469;
/// Start-up (attach), a reload after the quiet period, a scrape: each well within this.
const PATIENCE: Duration = Duration::from_secs(20);
const ALLOW_WAIT: Duration = Duration::from_secs(2);
const DENY_WAIT: Duration = Duration::from_millis(400);

/// A policy allowing inbound UDP to each port of `udp`, one rule `udp-PORT` each.
fn policy(udp: &[u16]) -> String {
    let mut text = String::from("[sets]\nme = [\"@interface\"]\n");
    for port in udp {
        text.push_str(&format!(
            "\n[[rule]]\nname = \"udp-{port}\"\nrole = \"external\"\ndirection = \"inbound\"\n\
             protocol = \"udp\"\nports = {port}\nlocal = \"me\"\n"
        ));
    }
    text
}

struct Setup {
    lab: Lab,
    edge: String,
    peer: String,
    /// The lab's directory: the policy, the configuration and the daemon's logs.
    dir: PathBuf,
}

fn setup(tag: &str) -> Setup {
    let mut lab = Lab::new(tag);
    let (edge, peer) = lab.edge_and_peer();
    lab.file("policy.toml", &policy(&[6000]));
    let config =
        lab.file("serve.toml", "[[interface]]\nname = \"edge0\"\nrole = \"external\"\npolicy = \"policy.toml\"\n");
    let dir = config.parent().unwrap().to_path_buf();
    Setup { lab, edge, peer, dir }
}

impl Setup {
    fn policy_file(&self) -> PathBuf {
        self.dir.join("policy.toml")
    }

    fn config_file(&self) -> PathBuf {
        self.dir.join("serve.toml")
    }

    /// Starts the daemon on 127.0.0.1:PORT (or the default address) and waits until it
    /// serves metrics with the filter attached.
    fn serve(&self, metrics_arg: bool) -> Daemon {
        let d = Daemon::start(self, metrics_arg);
        d.wait_for("the filter attached", |m| {
            m.get("edge_ctl_interface_attached", &[("interface", "edge0")]) == Some(1)
        });
        d
    }

    /// Sends `count` datagrams from the peer to the edge's `port`.
    fn send_udp(&self, port: u16, count: usize) {
        let to: SocketAddr = format!("{EDGE4}:{port}").parse().unwrap();
        in_netns(&self.peer, move || {
            let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
            for i in 0..count {
                sock.send_to(format!("datagram {i}").as_bytes(), to).unwrap();
            }
        });
    }
}

/// The daemon, killed on drop if still running.
struct Daemon {
    child: Child,
    ns: String,
    stderr: PathBuf,
    addr: SocketAddr,
}

impl Daemon {
    fn start(s: &Setup, metrics_arg: bool) -> Daemon {
        Daemon::start_with(s, metrics_arg, &[], &[])
    }

    /// Starts the daemon with more arguments and environment variables.
    fn start_with(s: &Setup, metrics_arg: bool, args: &[&str], env: &[(&str, &Path)]) -> Daemon {
        static STARTS: AtomicU32 = AtomicU32::new(0);
        let n = STARTS.fetch_add(1, Ordering::SeqCst);
        let stderr = s.dir.join(format!("serve-{n}.log"));
        let config = s.config_file();
        let mut cmd = s.lab.edge_ctl_command(&s.edge, &["serve", "--config", config.to_str().unwrap()]);
        if metrics_arg {
            cmd.arg("--metrics").arg(format!("127.0.0.1:{PORT}"));
        }
        cmd.args(args).envs(env.iter().copied());
        let child = cmd
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start edge-ctl serve");
        Daemon { child, ns: s.edge.clone(), stderr, addr: SocketAddr::from(([127, 0, 0, 1], PORT)) }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// GET /metrics from inside the namespace: the head and the body.
    fn get(&self, path: &str) -> std::io::Result<(String, String)> {
        http_get(&self.ns, self.addr, path)
    }

    fn scrape(&self) -> Metrics {
        let (head, body) =
            self.get("/metrics").unwrap_or_else(|e| panic!("scrape failed: {e}\ndaemon log:\n{}", self.log()));
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        Metrics(body)
    }

    /// Scrapes until `ready` holds; panics with the daemon's log after PATIENCE.
    fn wait_for(&self, what: &str, ready: impl Fn(&Metrics) -> bool) -> Metrics {
        let start = Instant::now();
        loop {
            if let Ok((head, body)) = self.get("/metrics")
                && head.starts_with("HTTP/1.1 200")
            {
                let m = Metrics(body);
                if ready(&m) {
                    return m;
                }
            }
            assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}; daemon log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends a signal and waits for the daemon to exit.
    fn stop(&mut self, signal: libc::c_int) -> ExitStatus {
        // SAFETY: kill with a pid we own (nsenter execs edge-ctl: the pid is the daemon's).
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < PATIENCE, "the daemon did not exit after signal {signal}; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A scraped exposition. Label values in these tests hold no `",` so a simple split reads them.
struct Metrics(String);

impl Metrics {
    /// The value of the one sample of `name` whose labels include `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
        let mut found = self.0.lines().filter_map(|line| {
            if line.starts_with('#') {
                return None;
            }
            let (series, value) = line.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
            let have: Vec<(&str, &str)> = rest
                .trim_end_matches('}')
                .split("\",")
                .filter_map(|kv| kv.split_once("=\""))
                .map(|(k, v)| (k, v.trim_end_matches('"')))
                .collect();
            (n == name && labels.iter().all(|l| have.contains(l))).then(|| value.parse::<u64>().expect("integer value"))
        });
        let v = found.next();
        assert!(found.next().is_none(), "{name} {labels:?} is not one series");
        v
    }

    fn must(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.get(name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in\n{}", self.0))
    }

    fn rule(&self, rule: &str) -> u64 {
        self.must("edge_ctl_rule_packets_total", &[("rule", rule)])
    }

    fn dropped(&self, reason: &str) -> u64 {
        self.must("edge_ctl_dropped_packets_total", &[("direction", "inbound"), ("reason", reason)])
    }

    fn reloads(&self) -> (u64, u64) {
        (
            self.must("edge_ctl_policy_reloads_total", &[("interface", "edge0")]),
            self.must("edge_ctl_policy_reload_failures_total", &[("interface", "edge0")]),
        )
    }

    fn generation(&self) -> u64 {
        self.must("edge_ctl_policy_generation", &[("interface", "edge0")])
    }
}

fn at(port: u16) -> SocketAddr {
    format!("{EDGE4}:{port}").parse().unwrap()
}

#[test]
fn counters_move_by_exactly_what_is_sent() {
    let s = setup("cnt");
    let d = s.serve(true);
    let before = d.scrape();
    let (allowed, denied) = (25, 12);
    s.send_udp(6000, allowed);
    s.send_udp(6999, denied);

    let after = d.wait_for("the datagrams counted", |m| {
        m.rule("udp-6000") >= before.rule("udp-6000") + allowed as u64
            && m.dropped("policy-default") >= before.dropped("policy-default") + denied as u64
    });
    assert_eq!(after.rule("udp-6000") - before.rule("udp-6000"), allowed as u64);
    assert_eq!(after.dropped("policy-default") - before.dropped("policy-default"), denied as u64);
    assert_eq!(
        after.must("edge_ctl_rule_packets_total", &[("direction", "inbound")]),
        after.rule("udp-6000"),
        "labels: interface, role, rule, direction"
    );
    // The same numbers as `edge-ctl stats`: both read the kernel's maps.
    let stats = s.lab.stats(&s.edge, "edge0");
    assert_eq!(rule_packets(&stats, "udp-6000"), after.rule("udp-6000"));
    assert_eq!(drop_packets(&stats, "policy-default"), after.dropped("policy-default"));
    let bytes = |m: &Metrics| m.must("edge_ctl_rule_bytes_total", &[("rule", "udp-6000")]);
    assert_eq!(bytes(&after), stats["rules"][0]["bytes"].as_u64().unwrap(), "{stats}");
    assert!(bytes(&after) > bytes(&before));
}

#[test]
fn the_exposition_passes_promtool() {
    let s = setup("prm");
    let d = s.serve(true);
    s.send_udp(6000, 3);
    s.send_udp(7000, 3);
    let (head, body) = d.get("/metrics").unwrap();
    assert!(head.lines().any(|l| l == "Content-Type: text/plain; version=0.0.4; charset=utf-8"), "{head}");
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; `cargo xtask setup` installs it)");
    promtool.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool: {said}\n{body}");
    // Every family has HELP and TYPE, and the conntrack and policy families are there.
    for name in [
        "edge_ctl_conntrack_entries",
        "edge_ctl_conntrack_hits_total",
        "edge_ctl_would_drop_packets_total",
        "edge_ctl_passed_packets_total",
        "edge_ctl_policy_last_reload_success_timestamp_seconds",
    ] {
        assert!(body.contains(&format!("# HELP {name} ")), "{name}");
        assert!(body.contains(&format!("# TYPE {name} ")), "{name}");
    }
}

#[test]
fn metrics_listen_on_loopback_by_default() {
    let help = Command::new(edge_ctl_bin()).args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("[default: 127.0.0.1:9469]"), "{help}");

    let s = setup("lbk");
    let mut d = s.serve(false);
    let public = SocketAddr::from(([192, 0, 2, 1], PORT));
    let err = http_get(&s.edge, public, "/metrics").expect_err("listening on 192.0.2.1");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    let (head, _) = d.get("/nothing").unwrap();
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");

    let status = d.stop(libc::SIGINT);
    assert!(status.success(), "{status}; log:\n{}", d.log());
    assert!(d.log().contains("SIGINT: stopping"), "{}", d.log());
}

#[test]
fn policy_edits_are_hot_swapped_and_invalid_ones_refused() {
    let s = setup("hot");
    let _servers = Servers::start(&s.edge, &[], &[6000, 6001]);
    let d = s.serve(true);
    assert_eq!(udp_probe(&s.peer, at(6000), ALLOW_WAIT), Outcome::Answered);
    assert_eq!(udp_probe(&s.peer, at(6001), DENY_WAIT), Outcome::Silent);
    let m = d.scrape();
    let (reloads, failures) = m.reloads();
    assert_eq!((reloads, failures), (1, 0), "the attach at start counts");
    let generation = m.generation();

    // A port starts passing.
    std::fs::write(s.policy_file(), policy(&[6000, 6001])).unwrap();
    let m = d.wait_for("the reload", |m| m.reloads() == (reloads + 1, 0));
    assert_ne!(m.generation(), generation);
    assert_eq!(m.get("edge_ctl_rule_packets_total", &[("rule", "udp-6001")]), Some(0));
    assert_eq!(udp_probe(&s.peer, at(6001), ALLOW_WAIT), Outcome::Answered);
    let generation = m.generation();

    // An invalid file: the live policy stays, the error is logged with its location.
    let mut invalid = policy(&[6000, 6001]);
    invalid.push_str(
        "\n[[rule]]\nname = \"bad\"\nrole = \"external\"\ndirection = \"inbound\"\nprotocol = \"udp\"\nports = 70000\n",
    );
    std::fs::write(s.policy_file(), &invalid).unwrap();
    let m = d.wait_for("the failure", |m| m.reloads() == (reloads + 1, 1));
    assert_eq!(m.generation(), generation);
    assert_eq!(udp_probe(&s.peer, at(6001), ALLOW_WAIT), Outcome::Answered);
    let check = s.lab.exec(&s.edge, &edge_ctl_bin(), &["policy", "check", s.policy_file().to_str().unwrap()]);
    let diagnostic = String::from_utf8_lossy(&check.stderr).trim().to_string();
    let location = format!("{}:", s.policy_file().display());
    assert!(diagnostic.starts_with(&location) && diagnostic.contains(": error: "), "{diagnostic}");
    assert!(d.log().contains(&diagnostic), "the log lacks {diagnostic:?}:\n{}", d.log());

    // A file another user could change is refused; the fix its error names (chmod) is a change
    // the daemon sees, and the same content is then applied.
    let generation = {
        use std::os::unix::fs::PermissionsExt;
        let staged = s.dir.join("policy.toml.new");
        std::fs::write(&staged, policy(&[6000, 6001, 6002])).unwrap();
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o664)).unwrap();
        std::fs::rename(&staged, s.policy_file()).unwrap();
        d.wait_for("the refusal", |m| m.reloads() == (reloads + 1, 2));
        let fix = format!("chmod g-w {}", s.policy_file().display());
        assert!(d.log().contains(&fix), "the log lacks {fix:?}:\n{}", d.log());
        std::fs::set_permissions(s.policy_file(), std::fs::Permissions::from_mode(0o644)).unwrap();
        let m = d.wait_for("the reload after chmod", |m| m.reloads() == (reloads + 2, 2));
        assert_eq!(m.get("edge_ctl_rule_packets_total", &[("rule", "udp-6002")]), Some(0));
        assert_ne!(m.generation(), generation);
        m.generation()
    };

    // The port stops passing again.
    std::fs::write(s.policy_file(), policy(&[6000])).unwrap();
    let m = d.wait_for("the second reload", |m| m.reloads() == (reloads + 3, 2));
    assert_ne!(m.generation(), generation);
    assert_eq!(m.get("edge_ctl_rule_packets_total", &[("rule", "udp-6001")]), None);
    assert_eq!(udp_probe(&s.peer, at(6001), DENY_WAIT), Outcome::Silent);
    assert_eq!(udp_probe(&s.peer, at(6000), ALLOW_WAIT), Outcome::Answered);
}

#[test]
fn sigterm_leaves_the_filter_attached_and_counting() {
    let s = setup("trm");
    let mut d = s.serve(true);
    let status = d.stop(libc::SIGTERM);
    assert!(status.success(), "{status}; log:\n{}", d.log());
    assert!(d.log().contains("SIGTERM: stopping"), "{}", d.log());
    assert!(http_get(&s.edge, d.addr, "/metrics").is_err(), "the endpoint closed");

    let status: serde_json::Value = serde_json::from_str(&s.lab.edge_ctl_ok(&s.edge, &["status", "--json"])).unwrap();
    let i = &status["interfaces"][0];
    assert_eq!(i["interface"], "edge0");
    assert!(i["problem"].is_null(), "{i}");
    let before = s.lab.stats(&s.edge, "edge0");
    s.send_udp(6000, 10);
    s.send_udp(6999, 4);
    let start = Instant::now();
    let after = loop {
        let after = s.lab.stats(&s.edge, "edge0");
        if rule_packets(&after, "udp-6000") >= rule_packets(&before, "udp-6000") + 10
            && drop_packets(&after, "policy-default") >= drop_packets(&before, "policy-default") + 4
            || start.elapsed() > PATIENCE
        {
            break after;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(rule_packets(&after, "udp-6000") - rule_packets(&before, "udp-6000"), 10);
    assert_eq!(drop_packets(&after, "policy-default") - drop_packets(&before, "policy-default"), 4);
}

#[test]
fn adopts_an_attached_interface_and_reloads_only_a_changed_policy() {
    let s = setup("adp");
    // Attached by hand with another policy than the file serve will read.
    let other = s.dir.join("other.toml");
    std::fs::write(&other, policy(&[6001])).unwrap();
    s.lab.edge_ctl_ok(&s.edge, &["attach", "edge0", "--role", "external", "--policy", other.to_str().unwrap()]);

    let mut d = s.serve(true);
    let m = d.scrape();
    assert_eq!(m.reloads(), (1, 0));
    assert_eq!(m.generation(), 1, "reloaded, not attached anew");
    assert!(m.get("edge_ctl_rule_packets_total", &[("rule", "udp-6000")]).is_some());
    assert!(d.log().contains("edge0: reloaded"), "{}", d.log());
    assert!(d.stop(libc::SIGTERM).success());
    drop(d);

    // A restart finds the file's policy live and changes nothing.
    let d = s.serve(true);
    let m = d.scrape();
    assert_eq!(m.reloads(), (0, 0));
    assert_eq!(m.generation(), 1);
    assert!(d.log().contains("edge0: adopted"), "{}", d.log());
}

#[test]
fn a_bad_configuration_is_refused_with_its_location() {
    let dir = std::env::temp_dir().join(format!("edge-serve-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("serve.toml");
    std::fs::write(&config, "[[interface]]\nname = \"eth0\"\nrole = \"outside\"\npolicy = \"p.toml\"\n").unwrap();
    let out = Command::new(edge_ctl_bin()).args(["serve", "--config", config.to_str().unwrap()]).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        err.trim(),
        format!("{}:3:8: error: unknown role `outside`: use `external` or `internal`", config.display())
    );
}

/// Under systemd (Type=notify, ordered before network-pre.target): READY=1 only once the
/// configured interfaces that exist are filtered, after waiting --wait-for-interfaces for one
/// that does not exist yet; that one is attached when it appears, and the policy is compiled
/// again when the interface gets an address (`@interface`).
#[test]
fn ready_after_attaching_then_a_late_interface_is_attached_and_its_addresses_followed() {
    let s = setup("late");
    std::fs::write(
        s.config_file(),
        "[[interface]]\nname = \"edge0\"\nrole = \"external\"\npolicy = \"policy.toml\"\n\n\
         [[interface]]\nname = \"late0\"\nrole = \"external\"\npolicy = \"policy.toml\"\n",
    )
    .unwrap();
    // systemd's notification socket, as the service manager would pass it.
    let socket = s.dir.join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&socket).unwrap();
    notify.set_read_timeout(Some(PATIENCE)).unwrap();
    let started = Instant::now();
    let d = Daemon::start_with(&s, true, &["--wait-for-interfaces", "2"], &[("NOTIFY_SOCKET", &socket)]);
    let mut buf = [0u8; 512];
    let n = notify.recv(&mut buf).unwrap_or_else(|e| panic!("no notification ({e}); log:\n{}", d.log()));
    let message = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(message.lines().any(|l| l == "READY=1"), "{message}");
    assert!(message.contains("STATUS=2 configured interface(s), 1 present"), "{message}");
    assert!(started.elapsed() >= Duration::from_secs(2), "ready before the wait for late0 ended");
    // When it said ready, edge0 was filtered; late0 was waited for, then left for later.
    let status = s.lab.edge_ctl_ok(&s.edge, &["status"]);
    assert!(status.contains("edge0: role external"), "{status}");
    let log = d.log();
    assert!(log.contains("late0: no such interface (yet)"), "{log}");
    assert!(log.contains("late0 did not appear within 2 s"), "{log}");
    let m = d.scrape();
    assert_eq!(m.get("edge_ctl_interface_attached", &[("interface", "late0")]), Some(0));

    // It appears (a driver loaded late, a VLAN created): attached.
    s.lab.ip(&s.edge, &["link", "add", "late0", "type", "veth", "peer", "name", "late1"]);
    s.lab.ip(&s.edge, &["link", "set", "late0", "up"]);
    s.lab.ip(&s.edge, &["link", "set", "late1", "up"]);
    d.wait_for("late0 attached", |m| m.get("edge_ctl_interface_attached", &[("interface", "late0")]) == Some(1));
    let addresses = |ifname: &str| -> Vec<String> {
        let out = s.lab.edge_ctl_ok(&s.edge, &["status", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["interface"] == ifname)
            .flat_map(|i| i["interface_addresses"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()))
            .collect()
    };
    assert_eq!(addresses("late0"), Vec::<String>::new());

    // It gets its address after the attach (the network comes up after the filters): the
    // policy is compiled again for it, by a reload.
    s.lab.addr(&s.edge, "late0", "198.51.100.7/32");
    let start = Instant::now();
    while addresses("late0") != ["198.51.100.7"] {
        assert!(start.elapsed() < PATIENCE, "the address was not picked up; log:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(d.log().contains("late0: reloaded"), "{}", d.log());
    assert!(d.log().contains("for addresses [198.51.100.7]"), "{}", d.log());
    // edge0 was left alone: attached once, never reloaded.
    assert_eq!(d.scrape().reloads(), (1, 0));
}
