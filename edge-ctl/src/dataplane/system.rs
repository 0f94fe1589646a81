//! What the dataplane needs from the host: capabilities, bpffs, interfaces, the network namespace.

use std::ffi::CString;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::DataplaneError;

/// bpffs's magic number (statfs f_type).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// Effective capabilities of this process (from /proc/self/status).
fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim();
    u64::from_str_radix(hex, 16).ok()
}

/// Fails unless the process may load BPF programs and attach them to interfaces.
pub fn require_privileges() -> Result<(), DataplaneError> {
    let caps = effective_caps().unwrap_or(0);
    let has = |c: u32| caps & (1 << c) != 0;
    if !((has(CAP_BPF) || has(CAP_SYS_ADMIN)) && has(CAP_NET_ADMIN)) {
        return Err(DataplaneError::NotPrivileged);
    }
    raise_memlock();
    Ok(())
}

/// Lifts RLIMIT_MEMLOCK. Linux before 5.11 charges BPF maps against it (later ones charge the
/// memory cgroup instead), and its usual 8 MiB or 64 KiB does not hold the packet tables.
/// Without CAP_SYS_RESOURCE this fails: harmless on the newer kernels, and on the older ones
/// map creation then fails with EPERM, which the error for it explains.
pub fn raise_memlock() {
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: setrlimit reads the struct it is given.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
}

fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 == BPF_FS_MAGIC)
}

/// Makes sure a BPF filesystem is mounted at `root` (usually /sys/fs/bpf), mounting it if not.
/// Under a lock: two processes that both found none would each mount one, the second over the
/// first, and pins made in the first would vanish from sight.
pub fn ensure_bpffs(root: &Path) -> Result<(), DataplaneError> {
    if is_bpffs(root) {
        return Ok(());
    }
    let lock_path = Path::new("/run/edge-ctl.bpffs.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_path)
        .map_err(|e| DataplaneError::Io { what: format!("open {}", lock_path.display()), source: e })?;
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| DataplaneError::Io { what: format!("lock {}", lock_path.display()), source: e.into() })?;
    if is_bpffs(root) {
        return Ok(());
    }
    std::fs::create_dir_all(root).ok();
    nix::mount::mount(Some("bpf"), root, Some("bpf"), nix::mount::MsFlags::empty(), None::<&str>)
        .map_err(|e| DataplaneError::Bpffs { path: root.display().to_string(), reason: e.desc().to_string() })?;
    if is_bpffs(root) {
        Ok(())
    } else {
        Err(DataplaneError::Bpffs { path: root.display().to_string(), reason: "mount did not take effect".into() })
    }
}

/// The interface's index, or a clear error naming the interfaces that exist.
pub fn if_index(name: &str) -> Result<u32, DataplaneError> {
    let unknown = || DataplaneError::UnknownInterface { name: name.to_string(), known: interface_names() };
    let c = CString::new(name).map_err(|_| unknown())?;
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(unknown()),
        i => Ok(i),
    }
}

/// The name of the interface with index `index` in this network namespace, if there is one.
pub fn if_name(index: u32) -> Option<String> {
    nix::net::if_::if_nameindex()
        .ok()?
        .iter()
        .find(|i| i.index() == index)
        .map(|i| i.name().to_string_lossy().into_owned())
}

/// Names of the interfaces in this network namespace. (Not from /sys/class/net: under
/// `nsenter --net` sysfs still shows the namespace it was mounted in.)
pub fn interface_names() -> Vec<String> {
    let mut names: Vec<String> = nix::net::if_::if_nameindex()
        .map(|list| list.iter().map(|i| i.name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// The addresses configured on an interface (IPv6 link-local addresses excluded).
pub fn interface_addresses(name: &str) -> Vec<IpAddr> {
    let mut out = Vec::new();
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs.filter(|a| a.interface_name == name) {
            let Some(addr) = a.address else { continue };
            if let Some(v4) = addr.as_sockaddr_in() {
                out.push(IpAddr::V4(v4.ip()));
            } else if let Some(v6) = addr.as_sockaddr_in6() {
                let ip = v6.ip();
                if ip.segments()[0] & 0xffc0 != 0xfe80 {
                    out.push(IpAddr::V6(ip));
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Which families the kernel forwards from an interface (net.ipv4.conf.IF.forwarding,
/// net.ipv6.conf.IF.forwarding): a router's interfaces carry packets for the hosts behind them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Forwarding {
    pub ipv4: bool,
    pub ipv6: bool,
}

impl Forwarding {
    pub fn any(self) -> bool {
        self.ipv4 || self.ipv6
    }

    /// "IPv4 and IPv6", "IPv4", "IPv6" (empty when neither).
    pub fn families(self) -> &'static str {
        match (self.ipv4, self.ipv6) {
            (true, true) => "IPv4 and IPv6",
            (true, false) => "IPv4",
            (false, true) => "IPv6",
            (false, false) => "",
        }
    }
}

/// The interface's forwarding switches; an unreadable one counts as off.
pub fn forwarding(name: &str) -> Forwarding {
    let on = |family: &str| {
        // An interface name never holds '/', so it cannot leave the conf directory.
        !name.contains('/')
            && std::fs::read_to_string(format!("/proc/sys/net/{family}/conf/{name}/forwarding"))
                .is_ok_and(|v| v.trim() == "1")
    };
    Forwarding { ipv4: on("ipv4"), ipv6: on("ipv6") }
}

/// Whether the interface is a loopback device (IFF_LOOPBACK), whatever its name.
pub fn is_loopback(name: &str) -> bool {
    nix::ifaddrs::getifaddrs().is_ok_and(|mut addrs| {
        addrs.any(|a| a.interface_name == name && a.flags.contains(nix::net::if_::InterfaceFlags::IFF_LOOPBACK))
    })
}

/// Inodes of the network namespaces that exist as far as this process can see: those of every
/// thread of every process (/proc/*/task/*/ns/net) and those held by an nsfs mount (`ip netns`,
/// container runtimes), from this mount namespace's mountinfo.
pub fn live_netns_inodes() -> std::collections::HashSet<u64> {
    let mut live = std::collections::HashSet::new();
    let parse = |link: std::path::PathBuf| -> Option<u64> {
        let target = std::fs::read_link(link).ok()?;
        target.to_str()?.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
    };
    for proc_entry in std::fs::read_dir("/proc").into_iter().flatten().filter_map(|e| e.ok()) {
        if !proc_entry.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())) {
            continue;
        }
        for task in std::fs::read_dir(proc_entry.path().join("task")).into_iter().flatten().filter_map(|e| e.ok()) {
            live.extend(parse(task.path().join("ns/net")));
        }
    }
    // mountinfo: "id parent major:minor root mount-point options ... - fstype source ...".
    if let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") {
        for line in info.lines() {
            let Some((left, right)) = line.split_once(" - ") else { continue };
            if right.split(' ').next() != Some("nsfs") {
                continue;
            }
            let Some(point) = left.split(' ').nth(4) else { continue };
            // Octal escapes (\040 for a space) as the kernel writes them.
            let point = point.replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\");
            if let Ok(m) = std::fs::metadata(&point) {
                live.insert(m.ino());
            }
        }
    }
    live
}

/// Identifies the current network namespace (inode of /proc/self/ns/net).
pub fn netns_id() -> Result<u64, DataplaneError> {
    std::fs::metadata("/proc/self/ns/net")
        .map(|m| m.ino())
        .map_err(|e| DataplaneError::Io { what: "read /proc/self/ns/net".into(), source: e })
}

/// The kernel's tick rate (CONFIG_HZ), which the connection table's jiffies timestamps use:
/// from /proc/config.gz or /boot/config-<release>, else measured from /proc/timer_list.
pub fn kernel_hz() -> u64 {
    static HZ: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *HZ.get_or_init(|| config_hz().or_else(measured_hz).unwrap_or(250))
}

fn config_hz() -> Option<u64> {
    let from = |text: String| text.lines().find_map(|l| l.strip_prefix("CONFIG_HZ=")?.trim().parse().ok());
    let gz = std::fs::read("/proc/config.gz").ok().and_then(|b| {
        use std::io::Read;
        let mut s = String::new();
        flate2::read::GzDecoder::new(&b[..]).read_to_string(&mut s).ok().map(|_| s)
    });
    if let Some(hz) = gz.and_then(from) {
        return Some(hz);
    }
    let release = nix::sys::utsname::uname().ok()?.release().to_string_lossy().into_owned();
    std::fs::read_to_string(format!("/boot/config-{release}")).ok().and_then(from)
}

/// Two samples of (jiffies, ns) from /proc/timer_list 200 ms apart, rounded to a usual HZ.
fn measured_hz() -> Option<u64> {
    let sample = || -> Option<(u64, u64)> {
        let t = std::fs::read_to_string("/proc/timer_list").ok()?;
        let ns = t.lines().find_map(|l| l.strip_prefix("now at ")?.strip_suffix(" nsecs")?.parse().ok())?;
        Some((jiffies_in(&t)?, ns))
    };
    let (j0, n0) = sample()?;
    std::thread::sleep(std::time::Duration::from_millis(200));
    let (j1, n1) = sample()?;
    let hz = (j1 - j0) as f64 * 1e9 / (n1 - n0) as f64;
    [100u64, 250, 300, 1000].into_iter().min_by(|a, b| (*a as f64 - hz).abs().total_cmp(&(*b as f64 - hz).abs()))
}

fn jiffies_in(timer_list: &str) -> Option<u64> {
    timer_list.lines().find_map(|l| l.trim().strip_prefix("jiffies:")?.trim().parse().ok())
}

/// The current jiffies count (from /proc/timer_list), to date connection-table entries.
pub fn jiffies_now() -> Option<u64> {
    jiffies_in(&std::fs::read_to_string("/proc/timer_list").ok()?)
}

/// Opens a pinned BPF object (BPF_OBJ_GET); `None` when the pin cannot be opened. aya's link
/// handles expose neither the descriptor nor the fields read here, hence the syscall directly.
fn open_pin(pin: &Path) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    // union bpf_attr for BPF_OBJ_GET (pathname, bpf_fd, file_flags, path_fd), zero-padded.
    #[repr(C)]
    struct ObjGet {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        _pad: u32,
    }
    const BPF_OBJ_GET: libc::c_long = 7;
    let path = CString::new(pin.as_os_str().as_bytes()).ok()?;
    let attr = ObjGet { pathname: path.as_ptr() as u64, bpf_fd: 0, file_flags: 0, path_fd: 0, _pad: 0 };
    // SAFETY: a valid bpf_attr of the size given; the path outlives the call.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_GET, &attr as *const ObjGet, size_of::<ObjGet>()) };
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The interface index a pinned XDP link is attached to, as the kernel reports it in the link's
/// fdinfo: 0 once its device is gone. `None` when the pin cannot be opened.
pub fn xdp_link_ifindex(pin: &Path) -> Option<u32> {
    use std::os::fd::AsRawFd;
    let fd = open_pin(pin)?;
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    info.lines().find_map(|l| l.strip_prefix("ifindex:")?.trim().parse().ok())
}

/// Detaches a pinned link from its hook now (BPF_LINK_DETACH, Linux 5.9). Removing the last pin
/// also detaches it, but bpffs frees the inode after an RCU grace period, so the program could
/// still see a packet or two after `detach` returned. Errors are ignored: the pin's removal
/// that follows detaches it in any case.
pub fn link_detach(pin: &Path) {
    use std::os::fd::AsRawFd;
    const BPF_LINK_DETACH: libc::c_long = 34;
    let Some(fd) = open_pin(pin) else { return };
    // union bpf_attr for BPF_LINK_DETACH: link_fd, zero-padded.
    let attr: [u32; 2] = [fd.as_raw_fd() as u32, 0];
    // SAFETY: a valid bpf_attr of the size given.
    unsafe { libc::syscall(libc::SYS_bpf, BPF_LINK_DETACH, attr.as_ptr(), size_of_val(&attr)) };
}
