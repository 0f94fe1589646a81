//! Control-plane cost: how long `policy check`, `attach` and `reload` of the built-in Lync
//! profile plus 0 to 10,000 rules take (wall clock and CPU of the edge-ctl process, median of
//! the runs), the process's peak memory, the kernel memory of the maps one attached interface
//! pins (the kernel's own `memlock` figure for each map), and the size of the state file.
//! Everything runs in a namespace of its own on a veth pair (documentation addresses); the lab
//! removes it, with the pins and the state, also on failure.
//!
//! `edge-control [--quick] [--json PATH]`: `--quick` (CI) runs each command once.

use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use edge_tests::lab::{Lab, edge_ctl_bin, pin_dir};
use edge_tests::scale::scaled_policy;
use serde_json::{Value, json};

/// One run of a command: wall seconds, CPU seconds (user + system) and peak RSS in KiB.
#[derive(Clone, Copy)]
struct Run {
    wall: f64,
    cpu: f64,
    rss_kib: f64,
}

/// Runs `cmd` to its end with its output discarded, measuring the process itself (`wait4`: the
/// process's own resource use, not that of earlier children). Panics with the command's
/// messages when it fails.
fn measure(cmd: &mut Command) -> Run {
    let start = Instant::now();
    // Reaped by wait4 below, which also reads the process's resource use (Child::wait does not).
    #[allow(clippy::zombie_processes)]
    let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn edge-ctl");
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 writes into the two locals only.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let wall = start.elapsed().as_secs_f64();
    assert!(pid > 0, "wait4 failed: {}", std::io::Error::last_os_error());
    let exit = std::process::ExitStatus::from_raw(status);
    if !exit.success() {
        let out = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).output().expect("rerun edge-ctl");
        panic!(
            "{cmd:?} failed ({exit}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Run { wall, cpu: secs(usage.ru_utime) + secs(usage.ru_stime), rss_kib: usage.ru_maxrss as f64 }
}

/// The median run by wall time.
fn median(mut runs: Vec<Run>) -> Run {
    runs.sort_by(|a, b| a.wall.total_cmp(&b.wall));
    runs[runs.len() / 2]
}

fn run_json(r: Run) -> Value {
    json!({ "wall_s": r.wall, "cpu_s": r.cpu, "rss_kib": r.rss_kib })
}

/// Each pinned map of an interface with the kernel's `memlock` for it (bytes), by name.
fn map_memory(pins: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(pins).expect("read the pin directory").flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("EDGE_") {
            continue; // the links
        }
        let map = aya::maps::MapData::from_pin(e.path()).unwrap_or_else(|err| panic!("open {name}: {err}"));
        let fd = map.fd().as_fd().as_raw_fd();
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).expect("read fdinfo");
        let memlock = info
            .lines()
            .find_map(|l| l.strip_prefix("memlock:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no memlock for {name} in {info}"));
        out.push((name, memlock));
    }
    out
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let json_path = std::env::args().skip_while(|a| a != "--json").nth(1);
    let repeat = if quick { 1 } else { 5 };
    let sizes: &[usize] = &[0, 100, 1000, 10_000];

    let mut lab = Lab::new("cp");
    let ns = lab.netns("edge");
    let peer = lab.netns("peer");
    lab.link_edge_and_peer(&ns, &peer);
    let bin = edge_ctl_bin();
    let edge_ctl = |args: &[&str]| {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{ns}")).arg(&bin).args(args);
        c
    };
    let pins = pin_dir(&ns).join("edge0");

    println!(
        "edge-ctl control plane, median of {repeat} run(s): wall s / CPU s / peak RSS MiB; maps: kernel memlock of \
         the pinned maps of one interface"
    );
    println!(
        "{:<20} {:>6} {:>22} {:>22} {:>22} {:>9} {:>9}",
        "policy", "rules", "policy check", "attach", "reload", "maps MiB", "state KiB"
    );
    let mut rows = Vec::new();
    let mut breakdown = Vec::new();
    for &extra in sizes {
        let name = if extra == 0 { "lync".to_string() } else { format!("lync + {extra} rules") };
        let path = lab.file(&format!("p{extra}.toml"), &scaled_policy(extra));
        let path = path.to_str().expect("UTF-8 path");
        let rules = edge_ctl_policy_rules(path);

        let check = median((0..repeat).map(|_| measure(&mut edge_ctl(&["policy", "check", path]))).collect());
        let mut attaches = Vec::new();
        let mut reloads = Vec::new();
        let mut maps = Vec::new();
        let mut state = 0;
        for _ in 0..repeat {
            attaches.push(measure(&mut edge_ctl(&["attach", "edge0", "--role", "external", "--policy", path])));
            reloads.push(measure(&mut edge_ctl(&["reload", "edge0", "--policy", path])));
            maps = map_memory(&pins);
            state = state_file_size(&ns);
            measure(&mut edge_ctl(&["detach", "edge0"]));
        }
        let (attach, reload) = (median(attaches), median(reloads));
        let map_bytes: u64 = maps.iter().map(|m| m.1).sum();
        let mib = |b: f64| b / (1024.0 * 1024.0);
        let cell = |r: Run| format!("{:.3} / {:.3} / {:.0}", r.wall, r.cpu, r.rss_kib / 1024.0);
        println!(
            "{name:<20} {rules:>6} {:>22} {:>22} {:>22} {:>9.1} {:>9.0}",
            cell(check),
            cell(attach),
            cell(reload),
            mib(map_bytes as f64),
            state as f64 / 1024.0
        );
        if extra == 0 {
            breakdown = maps.iter().map(|(n, b)| json!({ "map": n, "bytes": b })).collect();
        }
        rows.push(json!({
            "policy": name,
            "extra_rules": extra,
            "rules": rules,
            "check": run_json(check),
            "attach": run_json(attach),
            "reload": run_json(reload),
            "map_bytes": map_bytes,
            "state_bytes": state,
        }));
    }
    let doc = json!({ "repeat": repeat, "rows": rows, "lync_maps": breakdown });
    if let Some(path) = json_path {
        std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap()).expect("write JSON");
    }
}

/// The number of rules `policy check` reports for the file.
fn edge_ctl_policy_rules(path: &str) -> u64 {
    let out = Command::new(edge_ctl_bin()).args(["policy", "check", path]).output().expect("run edge-ctl");
    assert!(out.status.success(), "policy check {path}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    text.split(" (").nth(1).and_then(|r| r.split(' ').next()).and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// The size of the state files edge-ctl keeps for the namespace (bytes).
fn state_file_size(ns: &str) -> u64 {
    let ino = std::fs::metadata(format!("/run/netns/{ns}")).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
    let dir = format!("/run/edge-ctl/{}", ino.unwrap_or(0));
    std::fs::read_dir(dir)
        .map(|d| d.flatten().filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum())
        .unwrap_or(0)
}
