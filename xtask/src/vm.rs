//! `cargo xtask test --kernel K`: the privileged suites on the kernels people run, each booted in
//! a virtual machine.
//!
//! - The kernel is Debian's own package (`apt-get download` with a private sources list and
//!   state under target/, so the machine's apt configuration never changes), unpacked with
//!   `dpkg -x` into a cache under target/kernels.
//! - virtme-ng (from PyPI, in .tools/vng) boots it with QEMU on this machine's root file system,
//!   read-only with writable overlays, plus one writable directory per kernel (target/matrix/K)
//!   where the guest leaves its logs and results. KVM when it works, TCG otherwise.
//! - Inside, this same xtask binary (`xtask vm-guest`) runs `edge-ctl kernel` (features and the
//!   verifier's figures per program) and each suite's test binary, built on the host.
//! - Two guests run side by side (one per core); each kernel's results are printed per suite,
//!   and the verifier's instruction counts as a table of program by kernel.
//!
//! Nothing outlives a run but the caches and the logs under target/: the guest's network
//! namespaces, pins and qdiscs vanish with the guest.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// A kernel of the matrix: a Debian package series and the suites it runs.
pub struct Kernel {
    pub name: &'static str,
    /// Where it comes from, for the report.
    pub distribution: &'static str,
    /// Package name `linux-image-<prefix><N><suffix>`, N a number; the highest N is taken.
    prefix: &'static str,
    suffix: &'static str,
    pub suites: &'static [&'static str],
}

/// Every privileged suite, for `--suite all` (and a guest that should run them all).
pub const PRIVILEGED: &[&str] = &[
    "packets",
    "e2e",
    "stateful",
    "stateful_packets",
    "reload",
    "lync",
    "perimeter",
    "observe",
    "differential",
    crate::boot::SUITE,
];
/// What the oldest kernel runs: the packet suite (every program and path through the verifier
/// and BPF_PROG_TEST_RUN), the connection table's packet suite (where its compat object differs:
/// no flow slots, the precise clock) and real traffic through `attach` (e2e).
const OLDEST: &[&str] = &["packets", "stateful_packets", "e2e"];
/// The two kernels that load the full object without tcx (Debian 12's 6.1 and 6.12) share the
/// other suites: each runs the packet suite, and every other suite but the connection table's
/// packet suite runs on one of them (that one runs on 5.10 for the compat object and on the
/// host for both), so the full object attached through netlink runs every suite once. The host (a kernel with tcx)
/// runs every suite too. Running every suite on both took the matrix past CI's time on this
/// two-core machine without KVM; `--suite all` runs all of them on each kernel named. The
/// guests run two at a time and 5.10, the longest, boots after 6.12 in the same slot, so 6.12
/// takes the fewest: the matrix lasts max(6.1, 6.12 + 5.10). reload runs on 6.1, where the
/// egress program is a clsact filter replaced through netlink (6.12 and the host have tcx). The perimeter and pool suites run
/// on the host (their programs are the ones every guest verifies and drives; `--suite
/// perimeter` runs that one in a guest, as it was on 5.10 and 6.1 when it was written).
/// 6.1 also runs the boot suite (crate::boot): the Debian package installed in a booted Debian 12
/// guest with systemd, Debian 12's own kernel as the issue of the package asks.
/// The differential suite moved to 6.12 to make room for it (the two slots stay even).
const FULL_A: &[&str] = &["packets", "stateful", "observe", "reload", crate::boot::SUITE];
const FULL_B: &[&str] = &["packets", "e2e", "lync", "differential"];

pub const KERNELS: &[Kernel] = &[
    Kernel {
        name: "5.10",
        distribution: "Debian 11 (bullseye)",
        prefix: "5.10.0-",
        suffix: "-amd64-unsigned",
        suites: OLDEST,
    },
    Kernel {
        name: "6.1",
        distribution: "Debian 12 (bookworm)",
        prefix: "6.1.0-",
        suffix: "-amd64-unsigned",
        suites: FULL_A,
    },
    Kernel {
        name: "6.12",
        distribution: "Debian 12 (bookworm)",
        prefix: "6.12.",
        suffix: "+deb12-amd64-unsigned",
        suites: FULL_B,
    },
];

/// The VM kernels a `--kernel` value names: `all` (every one of [`KERNELS`]), or names
/// separated by commas; `host` names none.
pub fn select(value: &str) -> Result<Vec<&'static Kernel>> {
    if value == "all" {
        return Ok(KERNELS.iter().collect());
    }
    let mut kernels = Vec::new();
    for name in value.split(',').filter(|n| *n != "host") {
        match KERNELS.iter().find(|k| k.name == name) {
            Some(k) => kernels.push(k),
            None => {
                let names: Vec<&str> = KERNELS.iter().map(|k| k.name).collect();
                bail!("no kernel {name} in the matrix: use host, all, or one of {} (commas between)", names.join(", "))
            }
        }
    }
    Ok(kernels)
}

/// What the guest runs, written by the host into the kernel's work directory.
#[derive(Serialize, Deserialize)]
pub struct Plan {
    edge_ctl: PathBuf,
    out: PathBuf,
    suites: Vec<SuitePlan>,
}

#[derive(Serialize, Deserialize)]
struct SuitePlan {
    name: String,
    exe: PathBuf,
    args: Vec<String>,
    timeout_s: u64,
}

/// What the guest reports for one suite.
#[derive(Serialize, Deserialize, Clone)]
pub struct SuiteResult {
    pub name: String,
    /// "ok", "failed", "timeout" or "error".
    pub outcome: String,
    pub passed: u64,
    pub failed: u64,
    pub seconds: f64,
}

/// Per-suite time limit inside a guest: the slowest suite takes about 7 minutes under TCG.
const SUITE_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// The differential suite's random cases in a guest (the host runs 100,000).
const GUEST_DIFF_CASES: &str = "30000";
/// The reload suite's reloads under traffic in a guest (the host runs 100).
const GUEST_RELOADS: &str = "20";
/// The guest's boot and `edge-ctl kernel`, on top of the suites.
const GUEST_OVERHEAD: Duration = Duration::from_secs(5 * 60);

/// The host side: fetch, boot, collect, report. `filter` narrows the tests within each suite
/// (as for the host run); `suites` narrows the suites.
pub fn run(root: &Path, kernels: &[&'static Kernel], suites: &[String], filter: &[String]) -> Result<()> {
    crate::require_root("the kernel matrix")?;
    if let Some(bad) = suites.iter().find(|s| *s != "all" && !PRIVILEGED.contains(&s.as_str())) {
        bail!("no suite {bad}: use all, or one of {}", PRIVILEGED.join(", "));
    }
    host_packages()?;
    let vng = virtme_ng(root)?;
    let binaries = build(root, kernels, suites)?;
    let cache = root.join("target/kernels");
    let mut booted = Vec::new();
    for k in kernels {
        booted.push((*k, fetch(&cache, k)?));
    }
    let accel = accelerator(root, &vng, &booted[0].1)?;
    println!("vm: {} guests with {accel}, two at a time", booted.len());

    let queue = Mutex::new(booted.iter().collect::<Vec<_>>());
    let reports = Mutex::new(BTreeMap::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let Some((k, image)) = queue.lock().unwrap().pop() else { break };
                    let r = boot(root, &vng, &accel, k, image, &binaries, suites, filter);
                    reports.lock().unwrap().insert(k.name, (image.clone(), r));
                }
            });
        }
    });
    report(&root.join("target/matrix"), &reports.into_inner().unwrap())
}

/// One unpacked kernel: its package and version, and the vmlinuz to boot.
#[derive(Clone)]
pub struct Image {
    package: String,
    version: String,
    pub vmlinuz: PathBuf,
}

/// The outcome of one guest.
struct GuestReport {
    results: Vec<SuiteResult>,
    kernel: Option<serde_json::Value>,
    problem: Option<String>,
    seconds: f64,
}

fn report(out: &Path, reports: &BTreeMap<&str, (Image, Result<GuestReport>)>) -> Result<()> {
    let mut failed = Vec::new();
    println!("\n== kernel matrix ==");
    let mut programs: BTreeMap<String, BTreeMap<&str, String>> = BTreeMap::new();
    for (name, (image, r)) in reports {
        println!("{name}: {} {} ", image.package, image.version);
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                println!("  could not run: {e:#}");
                failed.push(format!("{name}: {e:#}"));
                continue;
            }
        };
        println!("  guest ran {:.0} s", r.seconds);
        if let Some(k) = &r.kernel {
            let object = k["object"].as_str().unwrap_or("?");
            let missing: Vec<&str> = k["features"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|f| f["present"] == false)
                .filter_map(|f| f["feature"].as_str())
                .collect();
            println!(
                "  object {object}; features missing: {}",
                if missing.is_empty() { "none".into() } else { missing.join(", ") }
            );
            for p in k["programs"].as_array().into_iter().flatten() {
                let program = p["program"].as_str().unwrap_or("?").to_string();
                let cell = match (p["accepted"].as_bool(), p["insns_processed"].as_u64()) {
                    (Some(true), Some(n)) => n.to_string(),
                    (Some(true), None) => "ok".into(),
                    _ => "REFUSED".into(),
                };
                if cell == "REFUSED" {
                    failed.push(format!("{name}: the verifier refused {program}"));
                }
                programs.entry(program).or_default().insert(name, cell);
            }
        }
        for s in &r.results {
            println!(
                "  {:<18} {:<8} {:>4} passed {:>3} failed  {:>5.0} s",
                s.name, s.outcome, s.passed, s.failed, s.seconds
            );
            if s.outcome != "ok" {
                failed.push(format!("{name}: {} {}", s.name, s.outcome));
                let log = std::fs::read_to_string(out.join(name).join(format!("{}.log", s.name))).unwrap_or_default();
                let lines = if s.name == crate::boot::SUITE { crate::boot::failures(&log) } else { failures(&log) };
                for line in lines {
                    println!("    {line}");
                }
            }
        }
        if let Some(p) = &r.problem {
            println!("  {p}");
            failed.push(format!("{name}: {p}"));
        }
    }
    if !programs.is_empty() {
        println!("\nverifier: instructions processed per program (limit 1,000,000)");
        let kernels: Vec<&str> = reports.keys().copied().collect();
        print!("  {:<20}", "program");
        for k in &kernels {
            print!(" {k:>9}");
        }
        println!();
        for (program, cells) in &programs {
            print!("  {program:<20}");
            for k in &kernels {
                print!(" {:>9}", cells.get(k).map_or("-", String::as_str));
            }
            println!();
        }
    }
    if failed.is_empty() {
        println!("\nkernel matrix: all passed");
        Ok(())
    } else {
        bail!("kernel matrix failed:\n  {}", failed.join("\n  "))
    }
}

/// What a failed suite's log says of its failures, for the report (CI shows only the report):
/// the failed tests, and where each panicked with the message's first lines.
fn failures(log: &str) -> Vec<String> {
    const MESSAGE_LINES: usize = 4;
    let mut lines = Vec::new();
    let mut message = 0;
    for line in log.lines() {
        if line.starts_with("---- ") && line.ends_with(" ----") {
            lines.push(line.to_string());
        } else if line.contains("panicked at ") {
            lines.push(line.to_string());
            message = MESSAGE_LINES;
        } else if message > 0 && !line.is_empty() && !line.starts_with("note: ") {
            lines.push(format!("  {line}"));
            message -= 1;
        } else if line.starts_with("test ") && (line.ends_with(" FAILED") || line.contains("has been running")) {
            lines.push(line.to_string());
        } else {
            message = 0;
        }
        if lines.len() >= 40 {
            lines.push("(more in the suite's log)".into());
            break;
        }
    }
    lines
}

/// QEMU, and what virtme-ng's guest needs from the host: busybox for its init, udev so that the
/// command's output reaches the host (without it `vng` exits 255 although the command ran).
fn host_packages() -> Result<()> {
    let have = |path: &str| Path::new(path).exists();
    if have("/usr/bin/qemu-system-x86_64") && have("/bin/busybox") && have("/usr/bin/udevadm") {
        return Ok(());
    }
    let pkgs = ["qemu-system-x86", "busybox-static", "udev"];
    println!("vm: installing {}", pkgs.join(" "));
    let install = || {
        crate::run(
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(pkgs)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    };
    install().or_else(|_| {
        crate::run(Command::new("apt-get").args(["update", "-q"]))?;
        install()
    })
}

const VIRTME_NG: &str = "virtme-ng==1.42";

/// virtme-ng in a virtual environment of its own under .tools/vng; returns its bin directory,
/// which must be on PATH (vng runs virtme-run through it).
fn virtme_ng(root: &Path) -> Result<PathBuf> {
    let venv = crate::tools_dir(root).join("vng");
    let bin = venv.join("bin");
    if bin.join("vng").is_file() {
        return Ok(bin);
    }
    println!("vm: installing {VIRTME_NG} into {}", venv.display());
    crate::run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    crate::run(Command::new(bin.join("pip")).args(["install", "-q", VIRTME_NG]))?;
    Ok(bin)
}

/// What the guests run: edge-ctl, the integration test binaries by suite name, and this xtask.
struct Binaries {
    edge_ctl: PathBuf,
    suites: BTreeMap<String, PathBuf>,
    /// The Debian package, when a guest runs the boot suite.
    deb: Option<PathBuf>,
    xtask: PathBuf,
}

/// The guests run a build of their own, the `vm` profile (Cargo.toml): the test profile's checks,
/// optimized, because under emulation unoptimized code multiplies every suite's time.
fn build(root: &Path, kernels: &[&Kernel], only: &[String]) -> Result<Binaries> {
    crate::run(&mut crate::cargo_cmd(root, &["build", "--profile", "vm", "-p", "edge-ctl"]))?;
    let out =
        crate::cargo_cmd(root, &["test", "--profile", "vm", "-p", "edge-tests", "--no-run", "--message-format=json"])
            .stderr(Stdio::inherit())
            .output()
            .context("cargo test --no-run")?;
    if !out.status.success() {
        // The JSON messages hold the compiler's errors: let cargo print them as text.
        let _ = crate::cargo_cmd(root, &["test", "--profile", "vm", "-p", "edge-tests", "--no-run"]).status();
        bail!("building the test binaries failed");
    }
    let mut suites = BTreeMap::new();
    for line in out.stdout.lines() {
        let Ok(m) = serde_json::from_str::<serde_json::Value>(&line?) else { continue };
        let is_test = m["target"]["kind"].as_array().is_some_and(|k| k.iter().any(|v| v == "test"));
        if m["reason"] == "compiler-artifact"
            && is_test
            && let (Some(name), Some(exe)) = (m["target"]["name"].as_str(), m["executable"].as_str())
        {
            suites.insert(name.to_string(), PathBuf::from(exe));
        }
    }
    // The boot suite installs the package of this build.
    let deb = if kernels.iter().any(|k| suite_names(k, only).contains(&crate::boot::SUITE)) {
        Some(crate::deb::build(root, "vm")?)
    } else {
        None
    };
    Ok(Binaries {
        edge_ctl: root.join("target/vm/edge-ctl"),
        suites,
        deb,
        xtask: std::env::current_exe().context("this xtask's path")?,
    })
}

/// Debian's suites the kernels come from. Package lists and downloads go through a private
/// configuration: the machine's own sources, lists and caches are not read or written.
const SOURCES: &str = "\
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bullseye main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bullseye-security main
";

fn apt(cache: &Path, tool: &str) -> Command {
    let dir = cache.join("apt");
    let mut c = Command::new(tool);
    for (key, value) in [
        ("Dir::Etc::sourcelist", dir.join("sources.list")),
        ("Dir::Etc::sourceparts", PathBuf::from("/dev/null")),
        ("Dir::State::Lists", dir.join("lists")),
        ("Dir::Cache", dir.join("cache")),
    ] {
        c.arg("-o").arg(format!("{key}={}", value.display()));
    }
    // Its own lock-free state; downloads as root into target/ (the _apt user cannot write there).
    c.args(["-o", "Debug::NoLocking=1", "-o", "APT::Sandbox::User=root", "-q"]);
    c
}

/// The kernel's unpacked package in the cache; downloaded (newest of its series) when the
/// cache has none. `EDGE_VM_REFRESH=1` looks for a newer package.
fn fetch(cache: &Path, k: &Kernel) -> Result<Image> {
    let dir = cache.join(k.name);
    let refresh = std::env::var("EDGE_VM_REFRESH").is_ok_and(|v| v == "1");
    if !refresh && let Some(image) = cached(&dir)? {
        return Ok(image);
    }
    let apt_dir = cache.join("apt");
    for d in ["lists/partial", "cache/archives/partial"] {
        std::fs::create_dir_all(apt_dir.join(d))?;
    }
    std::fs::write(apt_dir.join("sources.list"), SOURCES)?;
    if !apt_dir.join("updated").exists() || refresh {
        println!("vm: reading Debian's package lists (private apt state in {})", apt_dir.display());
        crate::run(apt(cache, "apt-get").arg("update"))?;
        std::fs::write(apt_dir.join("updated"), b"")?;
    }
    let names = String::from_utf8(apt(cache, "apt-cache").args(["pkgnames", "linux-image-"]).output()?.stdout)?;
    let number = |name: &str| {
        let n = name.strip_prefix("linux-image-")?.strip_prefix(k.prefix)?.strip_suffix(k.suffix)?;
        n.parse::<u32>().ok()
    };
    let package = names
        .lines()
        .filter_map(|n| number(n).map(|v| (v, n)))
        .max()
        .map(|(_, n)| n.to_string())
        .with_context(|| format!("no linux-image-{}N{} package in Debian's lists", k.prefix, k.suffix))?;
    println!("vm: downloading {package} ({})", k.distribution);
    let debs = cache.join("debs");
    std::fs::create_dir_all(&debs)?;
    crate::run(apt(cache, "apt-get").arg("download").arg(&package).current_dir(&debs))?;
    let deb = std::fs::read_dir(&debs)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&format!("{package}_"))))
        .context("apt-get download left no .deb")?;
    // The new one replaces whatever this series held: keep only what is used.
    let _ = std::fs::remove_dir_all(&dir);
    let tree = dir.join("tree");
    std::fs::create_dir_all(&tree)?;
    crate::run(Command::new("dpkg").arg("-x").arg(&deb).arg(&tree))?;
    let version = deb.file_name().and_then(|n| n.to_str()).and_then(|n| n.split('_').nth(1)).unwrap_or("?");
    std::fs::write(dir.join("package"), format!("{package} {version}\n"))?;
    std::fs::remove_file(&deb)?;
    cached(&dir)?.context("the unpacked package has no boot/vmlinuz-*")
}

fn cached(dir: &Path) -> Result<Option<Image>> {
    let Ok(meta) = std::fs::read_to_string(dir.join("package")) else { return Ok(None) };
    let (package, version) = meta.trim().split_once(' ').unwrap_or((meta.trim(), "?"));
    let boot = dir.join("tree/boot");
    let Ok(entries) = std::fs::read_dir(&boot) else { return Ok(None) };
    let vmlinuz = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("vmlinuz-")));
    Ok(vmlinuz.map(|vmlinuz| Image { package: package.into(), version: version.into(), vmlinuz }))
}

/// QEMU's accelerator: KVM when a guest boots with it, else TCG. On some hosts /dev/kvm is a
/// paravirtual KVM on which QEMU aborts at once ("failed to set MSR"). TCG is single-threaded:
/// with multi-threaded TCG, one boot of 6.12 in seven panicked in a timer here.
fn accelerator(root: &Path, vng: &Path, image: &Image) -> Result<String> {
    const TCG: &str = "tcg";
    if let Ok(forced) = std::env::var("EDGE_VM_ACCEL") {
        return Ok(forced);
    }
    if !Path::new("/dev/kvm").exists() {
        return Ok(TCG.into());
    }
    let dir = root.join("target/matrix");
    std::fs::create_dir_all(&dir)?;
    let mut c = vng_command(vng, "kvm", image, &dir, "echo edge-vm-kvm-ok");
    let out = run_with_timeout(&mut c, Duration::from_secs(60), &dir.join("kvm-probe.log"))?;
    let log = std::fs::read_to_string(dir.join("kvm-probe.log")).unwrap_or_default();
    Ok(if out == Some(0) && log.contains("edge-vm-kvm-ok") { "kvm".into() } else { TCG.into() })
}

fn vng_command(vng: &Path, accel: &str, image: &Image, rwdir: &Path, exec: &str) -> Command {
    let mut c = Command::new(vng.join("vng"));
    c.arg("-r").arg(&image.vmlinuz).args(accel_args(accel));
    c.args(["--memory", "2G"]).arg(format!("--rwdir={}", rwdir.display())).args(["--exec", exec]);
    c.env("PATH", path_with(vng)).current_dir(rwdir).stdin(Stdio::null());
    c
}

/// vng's arguments for the accelerator and the guest's CPUs.
pub fn accel_args(accel: &str) -> &'static [&'static str] {
    if accel == "kvm" {
        &["--cpus", "2"]
    } else {
        &["--disable-kvm", "--qemu-opts=-accel tcg,thread=single", "--cpus", "2"]
    }
}

/// PATH with virtme-ng's bin directory first (vng runs virtme-run through it).
pub fn path_with(vng: &Path) -> std::ffi::OsString {
    let mut path = std::ffi::OsString::from(vng);
    if let Some(p) = std::env::var_os("PATH") {
        path.push(":");
        path.push(p);
    }
    path
}

/// The suites a guest of kernel `k` runs: its share, or those `--suite` names.
fn suite_names(k: &Kernel, only: &[String]) -> Vec<&'static str> {
    if only.is_empty() {
        k.suites.to_vec()
    } else if only.iter().any(|o| o == "all") {
        PRIVILEGED.to_vec()
    } else {
        PRIVILEGED.iter().copied().filter(|s| only.iter().any(|o| o == s)).collect()
    }
}

/// Runs `cmd` in a process group of its own with output to `log`; kills the group at the
/// deadline. The exit code, or `None` when it was killed.
pub fn run_with_timeout(cmd: &mut Command, limit: Duration, log: &Path) -> Result<Option<i32>> {
    use std::os::unix::process::CommandExt;
    let file = std::fs::File::create(log)?;
    cmd.stdout(file.try_clone()?).stderr(file).process_group(0);
    let mut child = cmd.spawn().with_context(|| format!("cannot run {cmd:?}"))?;
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status.code());
        }
        if Instant::now() > deadline {
            // SAFETY: kill(2) on the child's own process group.
            unsafe { libc_kill(-(child.id() as i32), 9) };
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[allow(clippy::too_many_arguments)]
fn boot(
    root: &Path,
    vng: &Path,
    accel: &str,
    k: &Kernel,
    image: &Image,
    bins: &Binaries,
    only: &[String],
    filter: &[String],
) -> Result<GuestReport> {
    let out = root.join("target/matrix").join(k.name);
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    let mut suites = Vec::new();
    let names = suite_names(k, only);
    // The boot suite boots a guest of its own (crate::boot), after this one.
    let booted = names.contains(&crate::boot::SUITE);
    for name in names.into_iter().filter(|n| *n != crate::boot::SUITE) {
        let exe = bins.suites.get(name).with_context(|| format!("no test binary for suite {name}"))?;
        suites.push(SuitePlan {
            name: name.to_string(),
            exe: exe.clone(),
            args: filter.to_vec(),
            timeout_s: SUITE_TIMEOUT.as_secs(),
        });
    }
    let limit = GUEST_OVERHEAD + SUITE_TIMEOUT * suites.len() as u32;
    let plan = Plan { edge_ctl: bins.edge_ctl.clone(), out: out.clone(), suites };
    std::fs::write(out.join("plan.json"), serde_json::to_vec_pretty(&plan)?)?;
    println!("vm: booting {} ({} {}) for {} suites", k.name, image.package, image.version, plan.suites.len());
    let exec = format!("{} vm-guest {}", bins.xtask.display(), out.join("plan.json").display());
    let started = Instant::now();
    let code = run_with_timeout(&mut vng_command(vng, accel, image, &out, &exec), limit, &out.join("console.log"))?;
    let mut results: Vec<SuiteResult> =
        std::fs::read(out.join("results.json")).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    let complete = results.len();
    if booted && let Some(deb) = &bins.deb {
        println!("vm: booting {} with systemd for the boot suite", k.name);
        results.push(crate::boot::run(root, vng, accel, image, deb, &out));
    }
    let seconds = started.elapsed().as_secs_f64();
    let kernel = std::fs::read(out.join("kernel.json")).ok().and_then(|b| serde_json::from_slice(&b).ok());
    let problem = if complete < plan.suites.len() || kernel.is_none() {
        Some(match code {
            None => format!("the guest did not finish within {} min; see {}", limit.as_secs() / 60, out.display()),
            Some(c) => format!("the guest stopped early (exit {c}); see {}/console.log", out.display()),
        })
    } else {
        None
    };
    println!("vm: {} done in {seconds:.0} s", k.name);
    Ok(GuestReport { results, kernel, problem, seconds })
}

/// The guest side (`xtask vm-guest PLAN`): runs `edge-ctl kernel`, then each suite, writing
/// results.json after every suite so that a guest that dies still reports what it finished.
pub fn guest(plan: &Path) -> Result<()> {
    let plan: Plan = serde_json::from_slice(&std::fs::read(plan)?)?;
    let out = &plan.out;
    // Kernels before 5.11 charge BPF maps against RLIMIT_MEMLOCK; the tests create maps too.
    let unlimited = [u64::MAX; 2];
    // SAFETY: setrlimit reads the two words it is given.
    unsafe { setrlimit(8, unlimited.as_ptr()) };
    let kernel = Command::new(&plan.edge_ctl).args(["kernel", "--json"]).output()?;
    std::fs::write(out.join("kernel.json"), &kernel.stdout)?;
    std::fs::write(out.join("kernel.log"), &kernel.stderr)?;
    let mut results = Vec::new();
    let mut all_ok = kernel.status.success();
    for s in &plan.suites {
        let log = out.join(format!("{}.log", s.name));
        let started = Instant::now();
        let mut c = Command::new(&s.exe);
        c.args(&s.args).env("EDGE_CTL_BIN", &plan.edge_ctl).env("RUST_BACKTRACE", "1");
        // The differential suite's random cases: 100,000 on the host, 30,000 here, where each
        // costs ten times as much (about two minutes saved per kernel).
        if std::env::var_os("EDGE_DIFF_CASES").is_none() {
            c.env("EDGE_DIFF_CASES", GUEST_DIFF_CASES);
        }
        // The reload suite's reloads under traffic: 100 on the host, 20 here, where each waits
        // for an RCU grace period under emulation (about 3 s; 100 took five minutes of 6.1's run).
        if std::env::var_os("EDGE_RELOADS").is_none() {
            c.env("EDGE_RELOADS", GUEST_RELOADS);
        }
        let code = run_with_timeout(&mut c, Duration::from_secs(s.timeout_s), &log);
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let (passed, failed) = counts(&text);
        let outcome = match code {
            Ok(Some(0)) => "ok",
            Ok(Some(_)) => "failed",
            Ok(None) => "timeout",
            Err(_) => "error",
        };
        all_ok &= outcome == "ok";
        results.push(SuiteResult {
            name: s.name.clone(),
            outcome: outcome.into(),
            passed,
            failed,
            seconds: started.elapsed().as_secs_f64(),
        });
        std::fs::write(out.join("results.json"), serde_json::to_vec_pretty(&results)?)?;
    }
    if !all_ok {
        std::process::exit(1);
    }
    Ok(())
}

unsafe extern "C" {
    fn setrlimit(resource: i32, limit: *const u64) -> i32;
}

/// Passed and failed tests from libtest's "test result:" lines.
fn counts(log: &str) -> (u64, u64) {
    let mut total = (0, 0);
    for line in BufReader::new(log.as_bytes()).lines().map_while(Result::ok) {
        let Some(rest) = line.split_once("test result: ").map(|(_, r)| r) else { continue };
        let number = |word: &str| {
            rest.split(';')
                .find_map(|part| part.trim().strip_suffix(word)?.rsplit(' ').next()?.trim().parse::<u64>().ok())
        };
        total.0 += number(" passed").unwrap_or(0);
        total.1 += number(" failed").unwrap_or(0);
    }
    total
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_read_libtest_summaries() {
        let log = "test a ... ok\ntest result: ok. 12 passed; 0 failed; 0 ignored\n\
                   test result: FAILED. 3 passed; 2 failed; 1 ignored; 0 measured";
        assert_eq!(super::counts(log), (15, 2));
    }

    #[test]
    fn failures_name_the_tests_and_their_messages() {
        let log = "running 2 tests\ntest a ... ok\ntest b ... FAILED\n\nfailures:\n\n---- b stdout ----\n\
                   thread 'b' panicked at tests/tests/x.rs:10:5:\nassertion failed: the flow\nleft: 1\n\
                   note: run with `RUST_BACKTRACE=1`\n\nfailures:\n    b\n";
        assert_eq!(
            super::failures(log),
            [
                "test b ... FAILED",
                "---- b stdout ----",
                "thread 'b' panicked at tests/tests/x.rs:10:5:",
                "  assertion failed: the flow",
                "  left: 1",
            ]
        );
    }
}
