//! Failure modes: each must end in a clear message and no half state. Needs root.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use edge_tests::lab::{KillOnDrop, Lab, edge_ctl_bin};
use edge_tests::net::{Outcome, Servers, tcp_probe};

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
"#;

struct Setup {
    lab: Lab,
    edge: String,
    peer: String,
    file: std::path::PathBuf,
}

fn setup(tag: &str) -> Setup {
    let mut lab = Lab::new(tag);
    let (edge, peer) = lab.edge_and_peer();
    let file = lab.file("policy.toml", POLICY);
    Setup { lab, edge, peer, file }
}

impl Setup {
    fn policy(&self) -> &str {
        self.file.to_str().unwrap()
    }
    fn attach_args(&self) -> Vec<&str> {
        vec!["attach", "edge0", "--role", "external", "--policy", self.policy()]
    }
    fn filtered(&self) -> bool {
        tcp_probe(&self.peer, SocketAddr::new("192.0.2.1".parse::<IpAddr>().unwrap(), 8080), Duration::from_millis(400))
            == Outcome::Silent
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn not_root_is_told_what_to_do() {
    let s = setup("nr");
    for args in [vec!["status"], s.attach_args(), vec!["stats"]] {
        let out = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", s.edge))
            .args([
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
            ])
            .arg(edge_ctl_bin())
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("needs CAP_BPF (or CAP_SYS_ADMIN) and CAP_NET_ADMIN: run it as root"),
            "{}",
            stderr(&out)
        );
    }
    assert!(s.lab.edge_ctl_ok(&s.edge, &["status"]).contains("not attached"));
}

#[test]
fn bpffs_missing_is_mounted() {
    let s = setup("fs");
    // A private mount namespace without bpffs: attach mounts it, works, and detaches.
    let script = format!(
        "umount /sys/fs/bpf 2>/dev/null; mountpoint -q /sys/fs/bpf && exit 3; {bin} attach edge0 --role external --policy {p} && {bin} status && {bin} detach edge0",
        bin = edge_ctl_bin().display(),
        p = s.policy()
    );
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", s.edge))
        .args(["unshare", "--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("edge0: role external"));
}

#[test]
fn interface_comes_back_with_the_same_index() {
    // The state file's index matches; only the link can tell that the filter went with the old
    // device (the same happens to a namespace that gets a deleted one's inode).
    let s = setup("idx");
    let _servers = attach_filtered(&s);
    let index: u32 =
        s.lab.ip_out(&s.edge, &["-o", "link", "show", "edge0"]).split(':').next().unwrap().parse().unwrap();
    s.lab.ip(&s.edge, &["link", "del", "edge0"]);
    s.lab.link_edge_and_peer_at(&s.edge, &s.peer, Some(index));
    assert!(s.lab.ip_out(&s.edge, &["-o", "link", "show", "edge0"]).starts_with(&format!("{index}:")));
    let st = status_with_problem(&s);
    assert_eq!(st["interfaces"][0]["stale"], true, "{st}");
    assert!(st["interfaces"][0]["problem"].as_str().unwrap().contains("same index"), "{st}");
    reattach_replaces_stale(&s);
}

/// `status --json` when it reports a problem: exit code 3 (the plain form too), and its JSON.
fn status_with_problem(s: &Setup) -> serde_json::Value {
    let plain = s.lab.edge_ctl(&s.edge, &["status"]);
    assert_eq!(plain.status.code(), Some(3), "status with a problem: {}", String::from_utf8_lossy(&plain.stdout));
    assert!(String::from_utf8_lossy(&plain.stdout).contains("problem:"));
    let out = s.lab.edge_ctl(&s.edge, &["status", "--json"]);
    assert_eq!(out.status.code(), Some(3), "status --json with a problem: {}", stderr(&out));
    serde_json::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap()
}

/// Attaches, with a server on 8080 (kept while the guard lives), and checks the filter works.
fn attach_filtered(s: &Setup) -> Servers {
    s.lab.edge_ctl_ok(&s.edge, &s.attach_args());
    let servers = Servers::start(&s.edge, &[8080], &[]);
    assert!(s.filtered());
    servers
}

/// After the device was replaced: nothing filters it until attach, which replaces the stale
/// attachment.
fn reattach_replaces_stale(s: &Setup) {
    assert!(!s.filtered(), "the new device is not filtered yet");
    let out = s.lab.edge_ctl(&s.edge, &s.attach_args());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("removed a stale attachment"));
    assert!(s.filtered());
}

#[test]
fn interface_vanishes_and_comes_back() {
    let s = setup("van");
    let _servers = attach_filtered(&s);
    s.lab.ip(&s.edge, &["link", "del", "edge0"]);
    let st = status_with_problem(&s);
    assert!(st["interfaces"][0]["problem"].as_str().unwrap().contains("no longer exists"), "{st}");
    assert_eq!(st["interfaces"][0]["stale"], false, "{st}");
    // Back under the same name (a new device): status says so, and attach takes it over.
    s.lab.link_edge_and_peer(&s.edge, &s.peer);
    let st = status_with_problem(&s);
    assert!(st["interfaces"][0]["problem"].as_str().unwrap().contains("deleted and created again"), "{st}");
    assert_eq!(st["interfaces"][0]["stale"], true, "{st}");
    reattach_replaces_stale(&s);
    let st: serde_json::Value = serde_json::from_str(&s.lab.edge_ctl_ok(&s.edge, &["status", "--json"])).unwrap();
    assert!(st["interfaces"][0]["problem"].is_null(), "{st}");
}

#[test]
fn attach_killed_at_any_step_is_completed_or_cleaned_up() {
    let s = setup("kat");
    let _servers = Servers::start(&s.edge, &[8080], &[]);
    let ino = std::fs::metadata(format!("/run/netns/{}", s.edge)).unwrap().ino();
    // Attach's steps: loaded and filled, egress on, XDP on, state saved; then the commit point
    // (the pins' rename). Killed in the pause after each step, and once left to finish.
    const STEPS: usize = 4;
    for round in 0..=STEPS + 1 {
        let child = s
            .lab
            .edge_ctl_command(&s.edge, &s.attach_args())
            .env("EDGE_CTL_STEP_DELAY_MS", "300")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut child = KillOnDrop(child);
        if round <= STEPS {
            let (steps, other) = edge_tests::lab::wait_for_steps(&mut child.0, round, Duration::from_secs(120));
            assert_eq!(steps, round, "round {round}: attach stopped early: {other}");
        } else {
            assert!(child.0.wait().unwrap().success(), "round {round}: attach failed");
        }
        drop(child);
        // Either fully attached and filtering, or not attached and not filtering.
        let st: serde_json::Value = serde_json::from_str(&s.lab.edge_ctl_ok(&s.edge, &["status", "--json"])).unwrap();
        let attached = !st["interfaces"].as_array().unwrap().is_empty();
        if !attached {
            // Unpinning a staged link detaches it once the kernel frees the link, which it
            // does from a work queue: wait for that before probing.
            let start = std::time::Instant::now();
            while s.lab.ip_out(&s.edge, &["link", "show", "edge0"]).contains("prog/xdp") {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "round {round}: the staged XDP link stayed attached"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        assert_eq!(attached, s.filtered(), "round {round}: status says attached={attached}");
        assert_eq!(attached, round > STEPS, "round {round}: killed before the commit point, or finished");
        if attached {
            assert!(st["interfaces"][0]["problem"].is_null(), "{st}");
            s.lab.edge_ctl_ok(&s.edge, &["detach", "edge0"]);
        } else {
            // The next attach completes, cleaning up what the killed one left.
            s.lab.edge_ctl_ok(&s.edge, &s.attach_args());
            assert!(s.filtered());
            s.lab.edge_ctl_ok(&s.edge, &["detach", "edge0"]);
        }
        let left: Vec<_> =
            std::fs::read_dir(format!("/sys/fs/bpf/edge-ctl/{ino}")).map(|d| d.count()).into_iter().collect();
        assert!(left.iter().all(|n| *n == 0), "round {round}: pins left behind");
        let state = format!("/run/edge-ctl/{ino}/edge0.json");
        assert!(!std::path::Path::new(&state).exists(), "round {round}: {state} left behind");
    }
}

#[test]
fn two_processes_racing_on_one_interface() {
    let s = setup("race");
    let mut first = KillOnDrop(
        s.lab
            .edge_ctl_command(&s.edge, &s.attach_args())
            .env("EDGE_CTL_STEP_DELAY_MS", "300")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Past its first step the first one holds the interface's lock.
    let (steps, other) = edge_tests::lab::wait_for_steps(&mut first.0, 1, Duration::from_secs(120));
    assert_eq!(steps, 1, "the first attach stopped early: {other}");
    let second = s.lab.edge_ctl(&s.edge, &s.attach_args());
    assert!(!second.status.success());
    assert!(stderr(&second).contains("another edge-ctl is changing edge0 right now"), "{}", stderr(&second));
    assert!(first.0.wait().unwrap().success());
    assert!(s.filtered());
}

#[test]
fn maps_full_is_a_clear_error_and_attaches_nothing() {
    let s = setup("full");
    // 33,000 distinct remote prefixes: more than one generation's share of the remote table.
    let prefixes: Vec<String> =
        (0..33_000u32).map(|i| format!("\"198.{}.{}.{}/32\"", 18 + (i >> 16), (i >> 8) & 0xff, i & 0xff)).collect();
    let text = format!("{POLICY}\n[sets]\n");
    let text = text.replacen("[sets]\n", &format!("[sets]\npartners = [{}]\n", prefixes.join(", ")), 1);
    let text = text.replace("local = \"me\"", "local = \"me\"\nremote = \"partners\"");
    let text = text.trim_end().trim_end_matches("[sets]").to_string();
    std::fs::write(&s.file, text).unwrap();
    let out = s.lab.edge_ctl(&s.edge, &s.attach_args());
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("more than 32768 IPv4 prefixes") && err.contains("set `partners`, line 3"), "{err}");
    assert!(s.lab.edge_ctl_ok(&s.edge, &["status"]).contains("not attached"));
}

#[test]
fn a_driver_without_native_xdp() {
    let s = setup("drv");
    // A bridge has no native XDP.
    s.lab.ip(&s.edge, &["link", "add", "br0", "type", "bridge"]);
    s.lab.ip(&s.edge, &["link", "set", "br0", "up"]);
    let native =
        s.lab.edge_ctl(&s.edge, &["attach", "br0", "--role", "external", "--policy", s.policy(), "--mode", "native"]);
    assert!(!native.status.success());
    let err = stderr(&native);
    assert!(err.contains("cannot attach XDP to br0 in native mode") && err.contains("--mode generic"), "{err}");
    assert!(s.lab.edge_ctl_ok(&s.edge, &["status"]).contains("not attached"), "nothing half-attached");
    let auto =
        s.lab.edge_ctl(&s.edge, &["attach", "br0", "--role", "external", "--policy", s.policy(), "--mode", "auto"]);
    assert!(auto.status.success(), "{}", stderr(&auto));
    assert!(stderr(&auto).contains("native XDP failed") && stderr(&auto).contains("generic mode"));
    assert!(String::from_utf8_lossy(&auto.stdout).contains("generic XDP"));
}

#[test]
fn pins_and_state_are_root_only() {
    let s = setup("perm");
    s.lab.edge_ctl_ok(&s.edge, &s.attach_args());
    let ino = std::fs::metadata(format!("/run/netns/{}", s.edge)).unwrap().ino();
    let mode = |p: &str| std::fs::metadata(p).unwrap_or_else(|e| panic!("{p}: {e}")).permissions().mode() & 0o777;
    assert_eq!(mode(&format!("/run/edge-ctl/{ino}")), 0o700);
    assert_eq!(mode(&format!("/run/edge-ctl/{ino}/edge0.json")), 0o600);
    assert_eq!(mode(&format!("/sys/fs/bpf/edge-ctl/{ino}")), 0o700);
    let pins: Vec<_> = std::fs::read_dir(format!("/sys/fs/bpf/edge-ctl/{ino}/edge0")).unwrap().collect();
    assert!(pins.len() > 10, "the maps and the link are pinned: {pins:?}");
    for entry in pins {
        let path = entry.unwrap().path();
        let m = mode(path.to_str().unwrap());
        assert_eq!(m & 0o077, 0, "{} is {m:o}", path.display());
    }
}

#[test]
fn loopback_is_refused() {
    let s = setup("lo");
    let out = s.lab.edge_ctl(&s.edge, &["attach", "lo", "--role", "internal", "--policy", s.policy()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("lo is the loopback interface") && stderr(&out).contains("instead"),
        "{}",
        stderr(&out)
    );
    assert!(!s.lab.ip_out(&s.edge, &["link", "show", "lo"]).contains("xdp"), "nothing attached to lo");
    assert!(s.lab.edge_ctl_ok(&s.edge, &["status"]).contains("not attached"));
}

#[test]
fn a_role_without_rules_is_warned_loudly() {
    let s = setup("emp");
    // POLICY has external rules only; without the failsafe the internal role has none.
    let file = s.lab.file("internal-empty.toml", &format!("{POLICY}\n[failsafe]\nssh = false\n"));
    let out = s.lab.edge_ctl(&s.edge, &["attach", "edge0", "--role", "internal", "--policy", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("WARNING: the internal role of") && err.contains("has NO enabled rules"), "{err}");
    assert!(err.contains("edge0 will drop every packet it receives"), "{err}");
    s.lab.edge_ctl_ok(&s.edge, &["detach", "edge0"]);
    // A role with rules: no warning.
    let out = s.lab.edge_ctl(&s.edge, &s.attach_args());
    assert!(out.status.success() && !stderr(&out).contains("WARNING"), "{}", stderr(&out));
}

/// The directories edge-ctl keeps for a network namespace (pins, state).
fn namespace_dirs(ns: &str) -> [std::path::PathBuf; 2] {
    let ino = std::fs::metadata(format!("/run/netns/{ns}")).unwrap().ino();
    [format!("/sys/fs/bpf/edge-ctl/{ino}").into(), format!("/run/edge-ctl/{ino}").into()]
}

#[test]
fn a_renamed_interface_keeps_its_filter_under_its_new_name() {
    let s = setup("ren");
    let _servers = attach_filtered(&s);
    for args in [
        &["link", "set", "edge0", "down"][..],
        &["link", "set", "edge0", "name", "wan0"],
        &["link", "set", "wan0", "up"],
    ] {
        s.lab.ip(&s.edge, args);
    }
    assert!(s.filtered(), "the kernel's links hold the device, whatever its name");
    let allowed = SocketAddr::new("192.0.2.1".parse::<IpAddr>().unwrap(), 8443);
    assert_eq!(tcp_probe(&s.peer, allowed, Duration::from_millis(400)), Outcome::Refused, "the link works");
    // Every command finds it under the new name, and none under the old one.
    let out = s.lab.edge_ctl(&s.edge, &["status", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "status after a rename: {}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["interfaces"].as_array().unwrap().len(), 1, "{st}");
    assert_eq!(st["interfaces"][0]["interface"], "wan0", "{st}");
    assert!(st["interfaces"][0]["problem"].is_null(), "{st}");
    let stats = s.lab.stats(&s.edge, "wan0");
    assert!(stats.to_string().contains("\"web\""), "{stats}");
    let old = s.lab.edge_ctl(&s.edge, &["stats", "edge0"]);
    assert_eq!(old.status.code(), Some(1));
    assert!(stderr(&old).contains("not attached to edge0") && stderr(&old).contains("wan0"), "{}", stderr(&old));
    s.lab.edge_ctl_ok(&s.edge, &["reload", "wan0", "--policy", s.policy()]);
    assert!(s.filtered());
    // The old name's lock and state went with the move.
    let [_, state_dir] = namespace_dirs(&s.edge);
    let mut files: Vec<String> =
        std::fs::read_dir(&state_dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    files.sort();
    assert_eq!(files, ["wan0.json", "wan0.lock"], "{}", state_dir.display());
    s.lab.edge_ctl_ok(&s.edge, &["detach", "wan0"]);
    // At once: detach takes the links off their hooks before it returns.
    assert!(!s.filtered());
    for dir in namespace_dirs(&s.edge) {
        assert!(!dir.exists(), "{} is left after the last detach", dir.display());
    }
}

#[test]
fn the_connection_table_has_the_size_the_policy_sets() {
    // attach reads the size off the text to load the programs while it parses the policy; a
    // form it does not read (an inline table) costs a second load, never a wrong size.
    let s = setup("ctsz");
    for (conntrack, expected) in
        [("[conntrack]\nmax_entries = 256 # small\n", 256), ("conntrack = { max_entries = 128 }\n", 128), ("", 65536)]
    {
        std::fs::write(&s.file, format!("{conntrack}{POLICY}")).unwrap();
        let _servers = attach_filtered(&s);
        let stats = s.lab.stats(&s.edge, "edge0");
        assert_eq!(stats["conntrack"]["max_entries"], expected, "{conntrack:?}: {stats}");
        s.lab.edge_ctl_ok(&s.edge, &["detach", "edge0"]);
    }
}

#[test]
fn nothing_is_left_behind() {
    let s = setup("left");
    // Commands that find nothing to do, and an attach that fails, leave no lock file.
    for args in [vec!["detach", "edge0"], vec!["reload", "edge0", "--policy", s.policy()], vec!["detach", "nosuch0"]] {
        assert_eq!(s.lab.edge_ctl(&s.edge, &args).status.code(), Some(1), "{args:?}");
    }
    let bad = s.lab.file("bad.toml", "[[rule]]\nname = 1\n");
    assert!(
        !s.lab
            .edge_ctl(&s.edge, &["attach", "edge0", "--role", "external", "--policy", bad.to_str().unwrap()])
            .status
            .success()
    );
    for dir in namespace_dirs(&s.edge) {
        assert!(!dir.exists(), "{} is left after commands that did nothing", dir.display());
    }
    // Attach and detach: nothing is left either.
    s.lab.edge_ctl_ok(&s.edge, &s.attach_args());
    s.lab.edge_ctl_ok(&s.edge, &["detach", "edge0"]);
    for dir in namespace_dirs(&s.edge) {
        assert!(!dir.exists(), "{} is left after the last detach", dir.display());
    }
}

#[test]
fn a_deleted_namespace_leaves_nothing_behind() {
    let mut s = setup("gone");
    s.lab.edge_ctl_ok(&s.edge, &s.attach_args());
    let dirs = namespace_dirs(&s.edge);
    assert!(dirs.iter().all(|d| d.exists()));
    // A namespace of its own, deleted with the filter still attached in it.
    let doomed = s.lab.netns("doomed");
    s.lab.ip(&doomed, &["link", "add", "d0", "type", "veth", "peer", "name", "d1"]);
    s.lab.ip(&doomed, &["link", "set", "d0", "up"]);
    s.lab.ip(&doomed, &["addr", "add", "192.0.2.9/24", "dev", "d0"]);
    s.lab.edge_ctl_ok(&doomed, &["attach", "d0", "--role", "external", "--policy", s.policy()]);
    let gone = namespace_dirs(&doomed);
    assert!(gone.iter().all(|d| d.exists()));
    run_ip(&["netns", "del", &doomed]);
    // The kernel frees the namespace from a work queue; status elsewhere then removes its leftovers.
    let start = std::time::Instant::now();
    while gone.iter().any(|d| d.exists()) {
        assert!(start.elapsed() < Duration::from_secs(30), "{gone:?} stayed after the namespace was deleted");
        s.lab.edge_ctl_ok(&s.edge, &["status"]);
        std::thread::sleep(Duration::from_millis(200));
    }
    // A live namespace's are kept, and its filter works.
    assert!(dirs.iter().all(|d| d.exists()));
    assert!(s.filtered());
}

fn run_ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}
