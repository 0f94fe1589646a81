//! `cargo xtask setup`: idempotent installation of what building and testing need.
//!
//! - rust-src for the nightly toolchain (the eBPF crate builds `core` with `-Z build-std`);
//! - bpf-linker 0.13 built against the nightly toolchain's own libLLVM, copied into .tools/ so a
//!   toolchain update cannot break it (bpf-linker's LLVM major must equal rustc's);
//! - (it reports bpffs, which edge-ctl and the tests mount when they need it);
//! - the system commands the tests, the demo and the benchmark run (iproute2, util-linux,
//!   nftables, prometheus for promtool, xdp-tools for the comparison, dpkg-dev and lintian for
//!   the Debian package).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{run as exec, tools_dir};

const BPF_LINKER_VERSION: &str = "0.13.0";
const NIGHTLY: &str = "nightly";

/// Commands the tests and demo need, with the Debian package that provides each.
const COMMANDS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("nsenter", "util-linux"),
    ("nft", "nftables"),
    // `cargo xtask bench` compares edge-ctl with xdp-filter (skipped if missing).
    ("xdp-filter", "xdp-tools"),
    // The serve tests check the metrics exposition with `promtool check metrics`.
    ("promtool", "prometheus"),
    // `cargo xtask deb`: the package's Depends, and its check.
    ("dpkg-shlibdeps", "dpkg-dev"),
    ("lintian", "lintian"),
];

pub fn run(root: &Path, verbose: bool) -> Result<()> {
    rust_src(verbose)?;
    bpf_linker(root, verbose)?;
    bpffs(verbose);
    packages(verbose)?;
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn rust_src(verbose: bool) -> Result<()> {
    let installed =
        output(Command::new("rustup").args(["component", "list", "--installed", "--toolchain", NIGHTLY]))
            .context("the nightly toolchain is needed to build the eBPF programs (rustup toolchain install nightly)")?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        if verbose {
            println!("ok: rust-src for {NIGHTLY}");
        }
        return Ok(());
    }
    println!("setup: installing rust-src for {NIGHTLY}");
    exec(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))
}

fn bpf_linker_ok(bin: &Path) -> bool {
    Command::new(bin)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION))
}

fn bpf_linker(root: &Path, verbose: bool) -> Result<()> {
    let tools = tools_dir(root);
    let bin = tools.join("bin/bpf-linker");
    if bpf_linker_ok(&bin) {
        if verbose {
            println!("ok: bpf-linker {BPF_LINKER_VERSION} in {}", bin.display());
        }
        return Ok(());
    }
    println!("setup: building bpf-linker {BPF_LINKER_VERSION} against the {NIGHTLY} toolchain's LLVM (about a minute)");
    let sysroot = output(Command::new("rustc").args([&format!("+{NIGHTLY}"), "--print", "sysroot"]))?;
    let version = output(Command::new("rustc").args([&format!("+{NIGHTLY}"), "-vV"]))?;
    let major = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("rustc +nightly -vV names no LLVM version")?
        .to_string();
    let llvm = real_libllvm(&PathBuf::from(sysroot.trim()).join("lib"))?;
    let prefix = tools.join("llvm");
    let lib = prefix.join("lib");
    std::fs::create_dir_all(&lib)?;
    let name = llvm.file_name().expect("library has a name");
    // Copies, not links: a toolchain update must not pull the library from under bpf-linker.
    std::fs::copy(&llvm, lib.join(name)).context("copy libLLVM")?;
    std::fs::copy(&llvm, lib.join("libLLVM.so")).context("copy libLLVM")?;
    exec(
        Command::new("cargo")
            .args(["install", &format!("bpf-linker@{BPF_LINKER_VERSION}"), "--locked", "--no-default-features"])
            .args(["--features", &format!("llvm-{major}"), "--root"])
            .arg(&tools)
            .env("LLVM_PREFIX", &prefix),
    )?;
    if !bpf_linker_ok(&bin) {
        bail!("bpf-linker was built but {} --version does not work", bin.display());
    }
    Ok(())
}

/// The toolchain's real libLLVM shared object: the `libLLVM-NN-rust-*.so` file beside it is a
/// small linker script, not a library.
fn real_libllvm(dir: &Path) -> Result<PathBuf> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let big = std::fs::metadata(&path).is_ok_and(|m| m.len() > 1 << 20);
        if name.starts_with("libLLVM.so.") && big {
            return Ok(path);
        }
    }
    bail!("no libLLVM.so.* shared library in {}", dir.display())
}

/// Reports whether bpffs is mounted. Setup does not mount it: edge-ctl and the tests mount it
/// when they need it, and the tasks that did so unmount it again when nothing of theirs is
/// left in it (see `leftovers::Bpffs`), so a run leaves the machine as it found it.
fn bpffs(verbose: bool) {
    if !verbose {
        return;
    }
    if crate::leftovers::bpffs_mounted() {
        println!("ok: bpffs at /sys/fs/bpf");
    } else {
        println!("ok: bpffs is not mounted at /sys/fs/bpf; edge-ctl mounts it when it needs it");
    }
}

fn has_command(name: &str) -> bool {
    std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file())).unwrap_or(false)
        || ["/usr/sbin", "/sbin"].iter().any(|d| Path::new(d).join(name).is_file())
}

fn packages(verbose: bool) -> Result<()> {
    let missing: Vec<&str> = COMMANDS.iter().filter(|(c, _)| !has_command(c)).map(|(_, p)| *p).collect();
    if missing.is_empty() {
        if verbose {
            println!("ok: {}", COMMANDS.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", "));
        }
        return Ok(());
    }
    if !crate::is_root() || !has_command("apt-get") {
        println!("note: install these packages for the tests and the demo: {}", missing.join(" "));
        return Ok(());
    }
    println!("setup: installing {}", missing.join(" "));
    exec(Command::new("apt-get").args(["install", "-y", "-q"]).args(&missing).env("DEBIAN_FRONTEND", "noninteractive"))
        .or_else(|_| {
            exec(Command::new("apt-get").args(["update", "-q"]))?;
            exec(
                Command::new("apt-get")
                    .args(["install", "-y", "-q"])
                    .args(&missing)
                    .env("DEBIAN_FRONTEND", "noninteractive"),
            )
        })
}

/// cargo-fuzz in .tools/bin, installed on first use (only `cargo xtask fuzz` needs it).
pub fn cargo_fuzz(root: &Path) -> Result<()> {
    let tools = tools_dir(root);
    if tools.join("bin/cargo-fuzz").is_file() {
        return Ok(());
    }
    println!("setup: installing cargo-fuzz into {}", tools.display());
    exec(Command::new("cargo").args(["install", "cargo-fuzz", "--locked", "--root"]).arg(&tools))
}
