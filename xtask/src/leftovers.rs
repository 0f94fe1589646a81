//! What test runs killed outright (SIGKILL, a timeout) leave behind, where no Drop ran: the
//! labs' network namespaces (`edt<pid>x...`), the packet tests' pin directories
//! (`/sys/fs/bpf/edge-test-<pid>-<n>`), and edge-ctl's pins and state for namespaces that no
//! longer exist. Removed before the tests run; anything of a process still alive is left. And
//! the BPF filesystem a run mounted itself ([`Bpffs`]).

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

/// Removes the leftovers; says what it removed.
pub fn clean() {
    let alive = |pid: &str| !pid.is_empty() && Path::new("/proc").join(pid).exists();
    for name in names("/run/netns") {
        if let Some(pid) = name.strip_prefix("edt").and_then(|r| r.split_once('x')).map(|(p, _)| p)
            && pid.chars().all(|c| c.is_ascii_digit())
            && !alive(pid)
        {
            eprintln!("removing network namespace {name} left by an earlier test run");
            let _ = Command::new("ip").args(["netns", "del", &name]).status();
        }
    }
    for name in names("/sys/fs/bpf") {
        if let Some(pid) = name.strip_prefix("edge-test-").and_then(|r| r.split_once('-')).map(|(p, _)| p)
            && !alive(pid)
        {
            eprintln!("removing /sys/fs/bpf/{name} left by an earlier test run");
            let _ = std::fs::remove_dir_all(Path::new("/sys/fs/bpf").join(&name));
        }
    }
    // edge-ctl's directories are named by network namespace inode: those of namespaces no
    // process and no /run/netns name holds any more can never be used again.
    let live = live_netns_inodes();
    for root in ["/sys/fs/bpf/edge-ctl", "/run/edge-ctl"] {
        for name in names(root) {
            if name.parse::<u64>().is_ok_and(|ino| !live.contains(&ino)) {
                eprintln!("removing {root}/{name}: its network namespace is gone");
                let _ = std::fs::remove_dir_all(Path::new(root).join(&name));
            }
        }
    }
}

fn names(dir: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
        .unwrap_or_default()
}

fn live_netns_inodes() -> HashSet<u64> {
    let mut inodes: HashSet<u64> = names("/run/netns")
        .iter()
        .filter_map(|n| std::fs::metadata(Path::new("/run/netns").join(n)).ok())
        .map(|m| m.ino())
        .collect();
    for pid in names("/proc").iter().filter(|n| n.chars().all(|c| c.is_ascii_digit())) {
        if let Ok(m) = std::fs::metadata(format!("/proc/{pid}/ns/net")) {
            inodes.insert(m.ino());
        }
    }
    inodes
}

/// The BPF filesystem the tests, the demo and the benchmarks use. When none was mounted at
/// /sys/fs/bpf before they ran, edge-ctl (or the test harness) mounted one; on drop this
/// unmounts it again if nothing but the kernel's own entries is left in it (`maps.debug` and
/// `progs.debug`, which the kernel puts into every new BPF filesystem, and an empty `edge-ctl`
/// directory). A pin of anything else keeps it mounted.
pub struct Bpffs {
    mounted_before: bool,
}

const BPFFS: &str = "/sys/fs/bpf";

pub fn bpffs_mounted() -> bool {
    std::fs::read_to_string("/proc/self/mounts")
        .is_ok_and(|m| m.lines().any(|l| l.split_whitespace().nth(1) == Some(BPFFS) && l.contains(" bpf ")))
}

impl Bpffs {
    pub fn note() -> Bpffs {
        Bpffs { mounted_before: bpffs_mounted() }
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        if self.mounted_before || !bpffs_mounted() {
            return;
        }
        let _ = std::fs::remove_dir(Path::new(BPFFS).join("edge-ctl")); // Only when empty.
        let ours = names(BPFFS).iter().all(|n| n == "maps.debug" || n == "progs.debug");
        if ours && !Command::new("umount").arg(BPFFS).status().is_ok_and(|s| s.success()) {
            eprintln!("could not unmount {BPFFS}, which this run mounted");
        }
    }
}
