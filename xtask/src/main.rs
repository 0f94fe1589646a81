//! Developer and CI tasks. `cargo xtask <task>`; every task first runs the parts of `setup` that
//! are missing, so a fresh clone needs nothing else.

mod bench;
mod boot;
mod deb;
mod leftovers;
mod setup;
mod vm;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "edge-ctl developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need: nightly rust-src, bpf-linker (in .tools/), bpffs.
    Setup,
    /// Build edge-ctl (release) with its embedded eBPF object.
    Build,
    /// Build and run the lab demo: namespaces, attach, probes, counters, teardown. Needs root.
    Demo {
        /// `node`: edge-ctl on both interfaces of both edge nodes; `perimeter`: on the two
        /// Linux firewalls in front of the pool, which forward to it.
        #[arg(long, default_value = "node", value_parser = ["node", "perimeter"])]
        placement: String,
    },
    /// cargo fmt --check, clippy for the host crates and for the eBPF crate (BPF target).
    Lint,
    /// Build target/deb/edge-ctl_<version>_amd64.deb (binary, systemd unit, example
    /// configuration, man pages, completions) and check it with lintian.
    Deb,
    /// Fuzz the policy parser and compiler with cargo fuzz (installs cargo-fuzz into .tools/).
    Fuzz {
        /// How long to run.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Benchmark: per-packet cost with BPF_PROG_TEST_RUN, then edge-ctl against no filter,
    /// xdp-filter and nftables on veth traffic; writes BENCHMARKS.md. Needs root.
    Bench {
        /// A short run that proves the benchmark works (CI); writes
        /// target/bench/BENCHMARKS.quick.md instead of BENCHMARKS.md. Times mean nothing.
        #[arg(long)]
        quick: bool,
    },
    /// Run every test: unit tests, the privileged integration tests and the benchmark in quick
    /// mode on this machine's kernel, then the privileged suites on Debian's packaged kernels
    /// (5.10, 6.1, 6.12), each booted in a VM (docs/kernels.md). Needs root.
    #[command(after_help = "Examples:
  cargo xtask test                       # everything: host, then 5.10, 6.1 and 6.12 in VMs
  cargo xtask test --kernel host         # this machine's kernel only (about 6 minutes)
  cargo xtask test --kernel 6.1,6.12     # Debian 12's kernels in VMs
  cargo xtask test --kernel 6.12 --suite e2e -- attach
  cargo xtask test --kernel 6.1 --suite all    # every suite on 6.1, not only its share")]
    Test {
        /// all (the default: host and every kernel), host, 5.10, 6.1, 6.12, or several with
        /// commas.
        #[arg(long, default_value = "all")]
        kernel: String,
        /// These suites in the VMs instead of each kernel's share (repeatable; `all` for every
        /// suite; docs/kernels.md lists the shares).
        #[arg(long = "suite")]
        suites: Vec<String>,
        /// Extra arguments for the test harness (e.g. a test name filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Inside a VM of `test --kernel`: run the plan the host wrote (not for direct use).
    #[command(hide = true)]
    VmGuest { plan: PathBuf },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    match cli.task {
        Task::Setup => setup::run(&root, true),
        Task::Build => {
            setup::run(&root, false)?;
            cargo(&root, &["build", "--release", "-p", "edge-ctl"])
        }
        Task::Demo { placement } => {
            require_root("the demo")?;
            let _bpffs = leftovers::Bpffs::note();
            setup::run(&root, false)?;
            cargo(&root, &["build", "--release", "-p", "edge-ctl", "-p", "edge-tests"])?;
            run(Command::new(root.join("target/release/edge-demo"))
                .args(["--placement", &placement])
                .env("EDGE_CTL_BIN", root.join("target/release/edge-ctl")))
        }
        Task::Deb => {
            setup::run(&root, false)?;
            cargo(
                &root,
                &[
                    "build",
                    "--release",
                    "-p",
                    "edge-ctl",
                    "-p",
                    "edge-tests",
                    "--bin",
                    "edge-ctl",
                    "--bin",
                    "edge-assets",
                ],
            )?;
            let deb = deb::build(&root, "release")?;
            deb::lintian(&deb)?;
            println!("{}", deb.display());
            Ok(())
        }
        Task::Lint => {
            setup::run(&root, false)?;
            cargo(&root, &["fmt", "--all", "--check"])?;
            cargo(&root, &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"])?;
            run(Command::new("rustup")
                .args(["run", "nightly", "cargo", "clippy", "-p", "edge-ebpf", "--release"])
                .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core", "--", "-D", "warnings"])
                .current_dir(&root)
                .env("PATH", path_with_tools(&root))
                .env("CARGO_TARGET_DIR", root.join("target/ebpf-lint")))
        }
        Task::Fuzz { seconds } => {
            setup::run(&root, false)?;
            setup::cargo_fuzz(&root)?;
            // corpus/ (ignored by git) grows as it runs; seeds/ holds valid policies to start from.
            std::fs::create_dir_all(root.join("fuzz/corpus/policy"))?;
            run(Command::new("rustup")
                .args(["run", "nightly", "cargo", "fuzz", "run", "policy", "corpus/policy", "seeds", "--"])
                .arg(format!("-max_total_time={seconds}"))
                .current_dir(root.join("fuzz"))
                .env("PATH", path_with_tools(&root)))
        }
        Task::Bench { quick } => {
            require_root("the benchmarks")?;
            let _bpffs = leftovers::Bpffs::note();
            setup::run(&root, false)?;
            bench::bench(&root, quick, bench::Profile::Release)
        }
        Task::Test { kernel, suites, args } => {
            require_root("the tests")?;
            let _bpffs = leftovers::Bpffs::note();
            setup::run(&root, false)?;
            let kernels = vm::select(&kernel)?;
            if kernel == "all" || kernel.split(',').any(|k| k == "host") {
                test(&root, &args)?;
            }
            if kernels.is_empty() {
                return Ok(());
            }
            vm::run(&root, &kernels, &suites, &args)
        }
        Task::VmGuest { plan } => vm::guest(&plan),
    }
}

fn test(root: &Path, args: &[String]) -> Result<()> {
    // One build for everything: the host suites, the benchmark's check and the kernel matrix's
    // guests all run the `vm` profile (the test profile's checks, optimized), so CI compiles
    // the workspace once, not once unoptimized and again for the guests.
    const PROFILE: [&str; 2] = ["--profile", "vm"];
    // The integration tests drive the real binary, so build it first.
    cargo(root, &[&["build", "-p", "edge-ctl"][..], &PROFILE].concat())?;
    let edge_ctl = root.join("target/vm/edge-ctl");
    leftovers::clean();
    let mut cmd = [&["test", "--workspace"][..], &PROFILE, &["--"]].concat();
    cmd.extend(args.iter().map(String::as_str));
    let mut c = cargo_cmd(root, &cmd);
    c.env("EDGE_CTL_BIN", &edge_ctl);
    run(&mut c)?;
    // The compat object (for kernels before 5.12) on this kernel too: the packet suites, where
    // it differs from the full one. The VM matrix runs it on 5.10.
    let mut cmd =
        [&["test", "-p", "edge-tests", "--test", "packets", "--test", "stateful_packets"][..], &PROFILE, &["--"]]
            .concat();
    cmd.extend(args.iter().map(String::as_str));
    let mut c = cargo_cmd(root, &cmd);
    c.env("EDGE_CTL_BIN", &edge_ctl).env("EDGE_CTL_OBJECT", "compat");
    println!("== the packet suites again on the compat object (EDGE_CTL_OBJECT=compat)");
    run(&mut c)?;
    if !args.is_empty() {
        // A filtered run is someone looking at a few tests: skip the benchmark.
        return Ok(());
    }
    // The Debian package of the test build, checked by lintian.
    let deb = deb::build(root, "vm")?;
    deb::lintian(&deb)?;
    // The benchmark must keep working: its quick mode on the test build (a few seconds; it
    // checks what each filter lets through, never times).
    bench::bench(root, true, bench::Profile::Test)
}

pub fn is_root() -> bool {
    nix_euid() == 0
}

pub fn require_root(what: &str) -> Result<()> {
    if !is_root() {
        bail!("{what} load BPF programs and create network namespaces: run as root (e.g. sudo -E cargo xtask ...)");
    }
    Ok(())
}

fn nix_euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe extern "C" {
        fn geteuid() -> u32;
    }
    unsafe { geteuid() }
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask is in the workspace").to_path_buf()
}

/// The project-local tools directory (bpf-linker, its LLVM).
pub fn tools_dir(root: &Path) -> PathBuf {
    root.join(".tools")
}

/// PATH with the project's tools first.
pub fn path_with_tools(root: &Path) -> std::ffi::OsString {
    let mut paths = vec![tools_dir(root).join("bin")];
    if let Some(p) = std::env::var_os("PATH") {
        paths.extend(std::env::split_paths(&p));
    }
    std::env::join_paths(paths).expect("PATH entries are valid")
}

pub fn cargo_cmd(root: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.args(args).current_dir(root).env("PATH", path_with_tools(root));
    c
}

fn cargo(root: &Path, args: &[&str]) -> Result<()> {
    run(&mut cargo_cmd(root, args))
}

pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}
