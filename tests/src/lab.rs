//! A lab of network namespaces joined by veth pairs. The lab owns everything it creates and
//! removes it on drop, also when a test panics: edge-ctl's pins and state for each namespace,
//! then the namespaces themselves (which takes their veths with them).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Fails the test with a clear message unless running as root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!("this test needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN): run `sudo cargo xtask test`");
    }
}

/// The edge-ctl binary under test: $EDGE_CTL_BIN (set by `cargo xtask test`), else the one
/// beside this test executable.
pub fn edge_ctl_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("EDGE_CTL_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("deps dir");
    let dir = if dir.ends_with("deps") { dir.parent().expect("profile dir") } else { dir };
    dir.join("edge-ctl")
}

/// `program args` inside a namespace.
fn in_netns(ns: &str, program: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{ns}")).arg(program).args(args);
    c
}

/// Kills and reaps a child process when dropped, also when a test panics.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until an edge-ctl started with `EDGE_CTL_STEP_DELAY_MS` and a piped stderr has
/// finished `steps` steps (it is then paused after the last one), or has exited, or `limit`
/// passed. Returns the steps it reported and everything else it wrote to stderr meanwhile.
pub fn wait_for_steps(child: &mut std::process::Child, steps: usize, limit: Duration) -> (usize, String) {
    use std::io::BufRead;
    let stderr = child.stderr.take().expect("stderr piped");
    let (tx, rx) = std::sync::mpsc::channel();
    // The reader lives on: a child killed later closes the pipe and ends it.
    std::thread::spawn(move || {
        // Read to the end even after the caller stopped listening: a closed pipe would make
        // edge-ctl's next line on stderr fail.
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + limit;
    let (mut seen, mut other) = (0, String::new());
    while seen < steps {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line == edge_ctl::dataplane::STEP_MARK => seen += 1,
            Ok(line) => {
                other.push_str(&line);
                other.push('\n');
            }
            Err(_) => break,
        }
    }
    (seen, other)
}

pub struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    /// Files the test wrote (policies, configurations), removed with the lab.
    dir: PathBuf,
}

/// The edge's and the peer's addresses (IPv4, IPv6) in [`Lab::edge_and_peer`].
pub const EDGE: [&str; 2] = ["192.0.2.1", "2001:db8::1"];
pub const PEER: [&str; 2] = ["192.0.2.2", "2001:db8::2"];

impl Lab {
    pub fn new(tag: &str) -> Lab {
        require_root();
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        // `edt<pid>x`: `cargo xtask test` removes namespaces of processes that are gone.
        let prefix = format!("edt{}x{n}{tag}", std::process::id());
        let dir = std::env::temp_dir().join(&prefix);
        Lab { prefix, namespaces: Vec::new(), dir }
    }

    /// The set-up most tests use: namespaces `edge` and `peer` joined by edge0 <-> peer0, with
    /// [`EDGE`] and [`PEER`] on them. Returns the two namespaces.
    pub fn edge_and_peer(&mut self) -> (String, String) {
        let edge = self.netns("edge");
        let peer = self.netns("peer");
        self.link_edge_and_peer(&edge, &peer);
        (edge, peer)
    }

    /// The edge0 <-> peer0 link of [`Lab::edge_and_peer`] (again, after a test deleted it).
    pub fn link_edge_and_peer(&self, edge: &str, peer: &str) {
        self.link_edge_and_peer_at(edge, peer, None);
    }

    /// As [`Lab::link_edge_and_peer`], with edge0 given the interface index `index`.
    pub fn link_edge_and_peer_at(&self, edge: &str, peer: &str, index: Option<u32>) {
        self.veth_at((edge, "edge0"), (peer, "peer0"), index);
        for (ns, dev, a) in [(edge, "edge0", EDGE), (peer, "peer0", PEER)] {
            self.addr(ns, dev, &format!("{}/24", a[0]));
            self.addr(ns, dev, &format!("{}/64", a[1]));
        }
    }

    /// Writes a file the lab removes when dropped; returns its path.
    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        std::fs::create_dir_all(&self.dir).expect("create the lab's directory");
        let path = self.dir.join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// Creates a namespace with loopback up; returns its full name.
    pub fn netns(&mut self, short: &str) -> String {
        let name = format!("{}-{short}", self.prefix);
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        self.namespaces.push(name.clone());
        self.ip(&name, &["link", "set", "lo", "up"]);
        // Replies must not race duplicate address detection.
        self.sysctl(&name, "net.ipv6.conf.all.accept_dad", "0");
        self.sysctl(&name, "net.ipv6.conf.default.accept_dad", "0");
        name
    }

    pub fn sysctl(&self, ns: &str, key: &str, value: &str) {
        run_ok(Command::new("ip").args(["netns", "exec", ns, "sysctl", "-q", "-w", &format!("{key}={value}")]));
    }

    /// `ip -n NS ARGS...`
    pub fn ip(&self, ns: &str, args: &[&str]) {
        run_ok(Command::new("ip").arg("-n").arg(ns).args(args));
    }

    /// `ip -n NS ARGS...`, its standard output.
    pub fn ip_out(&self, ns: &str, args: &[&str]) -> String {
        run_ok(Command::new("ip").arg("-n").arg(ns).args(args))
    }

    /// A veth pair between two namespaces, both ends up.
    pub fn veth(&self, a: (&str, &str), b: (&str, &str)) {
        self.veth_at(a, b, None);
    }

    /// As [`Lab::veth`], with the first end given the interface index `index`.
    pub fn veth_at(&self, a: (&str, &str), b: (&str, &str), index: Option<u32>) {
        let mut cmd = Command::new("ip");
        cmd.args(["-n", a.0, "link", "add", a.1]);
        if let Some(i) = index {
            cmd.args(["index", &i.to_string()]);
        }
        run_ok(cmd.args(["type", "veth", "peer", "name", b.1, "netns", b.0]));
        self.ip(a.0, &["link", "set", a.1, "up"]);
        self.ip(b.0, &["link", "set", b.1, "up"]);
    }

    /// Adds an address (IPv6 without duplicate address detection).
    pub fn addr(&self, ns: &str, dev: &str, cidr: &str) {
        if cidr.contains(':') {
            self.ip(ns, &["addr", "add", cidr, "dev", dev, "nodad"]);
        } else {
            self.ip(ns, &["addr", "add", cidr, "dev", dev]);
        }
    }

    /// Runs a command inside a namespace with `nsenter --net` (not `ip netns exec`, which
    /// remounts /sys and hides bpffs pins).
    pub fn exec(&self, ns: &str, program: &Path, args: &[&str]) -> Output {
        in_netns(ns, program, args).output().expect("run nsenter")
    }

    pub fn edge_ctl(&self, ns: &str, args: &[&str]) -> Output {
        self.exec(ns, &edge_ctl_bin(), args)
    }

    /// An edge-ctl command in the namespace, to set environment or spawn it.
    pub fn edge_ctl_command(&self, ns: &str, args: &[&str]) -> Command {
        in_netns(ns, &edge_ctl_bin(), args)
    }

    /// Runs edge-ctl and returns its stdout; panics with its stderr when it fails.
    pub fn edge_ctl_ok(&self, ns: &str, args: &[&str]) -> String {
        let out = self.edge_ctl(ns, args);
        assert!(
            out.status.success(),
            "edge-ctl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `edge-ctl stats IFACE --json` parsed.
    pub fn stats(&self, ns: &str, iface: &str) -> serde_json::Value {
        let out = self.edge_ctl_ok(ns, &["stats", iface, "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("stats --json is JSON");
        v["interfaces"][0].clone()
    }
}

/// Packets counted for a rule in a `stats --json` interface object.
pub fn rule_packets(stats: &serde_json::Value, rule: &str) -> u64 {
    stats["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .find(|r| r["name"] == rule)
        .unwrap_or_else(|| panic!("no rule {rule} in stats"))["packets"]
        .as_u64()
        .expect("packets")
}

/// Inbound packets counted for a drop reason in a `stats --json` interface object.
pub fn drop_packets(stats: &serde_json::Value, reason: &str) -> u64 {
    reason_packets(stats, "drops", "inbound", reason)
}

/// Packets of a `stats --json` reason list ("drops", "would_drop", "passes") for a direction.
pub fn reason_packets(stats: &serde_json::Value, list: &str, direction: &str, reason: &str) -> u64 {
    stats[list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list} in stats"))
        .iter()
        .find(|r| r["reason"] == reason && r["direction"] == direction)
        .unwrap_or_else(|| panic!("no {direction} {reason} in {list}"))["packets"]
        .as_u64()
        .expect("packets")
}

fn netns_inode(ns: &str) -> Option<u64> {
    std::fs::metadata(format!("/run/netns/{ns}")).ok().map(|m| m.ino())
}

/// edge-ctl's pin directory for the interfaces of namespace `ns`.
pub fn pin_dir(ns: &str) -> std::path::PathBuf {
    let ino = netns_inode(ns).unwrap_or_else(|| panic!("namespace {ns} has no inode"));
    std::path::PathBuf::from(format!("/sys/fs/bpf/edge-ctl/{ino}"))
}

/// Removes edge-ctl's pins and state for a namespace. Unpinning the links detaches the programs.
pub fn remove_edge_ctl_state(netns_inode: u64) {
    let _ = std::fs::remove_dir_all(format!("/sys/fs/bpf/edge-ctl/{netns_inode}"));
    let _ = std::fs::remove_dir_all(format!("/run/edge-ctl/{netns_inode}"));
    let _ = std::fs::remove_dir("/sys/fs/bpf/edge-ctl");
    let _ = std::fs::remove_dir("/run/edge-ctl");
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            if let Some(ino) = netns_inode(ns) {
                remove_edge_ctl_state(ino);
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs a command that must succeed; returns its standard output.
fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Lab {
    /// The MAC address of an interface.
    pub fn mac(&self, ns: &str, dev: &str) -> [u8; 6] {
        let out = Command::new("ip").args(["-n", ns, "-j", "link", "show", dev]).output().expect("ip link");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j output");
        let text = v[0]["address"].as_str().expect("address").to_string();
        let bytes: Vec<u8> = text.split(':').map(|b| u8::from_str_radix(b, 16).expect("hex")).collect();
        bytes.try_into().expect("6 bytes")
    }
}
