//! The `boot` suite of the kernel matrix: the Debian package in a booted Debian 12 guest with
//! systemd as PID 1 (tests/boot/guest.sh has the checks).
//!
//! The other suites boot the kernel on this machine's own root file system; systemd cannot be
//! PID 1 there (virtme-ng's `--systemd` on the host's root panics here: its init chain exits),
//! and installing a package must not touch the host. So this suite boots a disk image of its
//! own, made per run: a minimal Debian 12 root (`mmdebstrap`, cached as a tarball under
//! target/kernels), plus the .deb of this build and the guest script, packed into an ext4 image
//! with `mke2fs -d`. virtme-ng boots it with the matrix's kernel (its modules exported from the
//! unpacked kernel package) and a QEMU user-mode NIC. Two boots of the same image: the install,
//! then the reboot and every check. The image is deleted afterwards; nothing on the host
//! changes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::vm::{Image, SuiteResult};

pub const SUITE: &str = "boot";

/// One boot: systemd's start under emulation (about 30 s), the package's install or the checks.
const BOOT_TIMEOUT: Duration = Duration::from_secs(8 * 60);

const GUEST_SCRIPT: &str = include_str!("../../tests/boot/guest.sh");

/// Debian 12's minimal root with what the checks use: systemd as init, udev (the NIC, its name),
/// iproute2 (`ip`), kmod (the kernel's modules).
const PACKAGES: &str = "systemd-sysv,udev,iproute2,kmod";
const MIRROR: &str = "deb http://deb.debian.org/debian bookworm main";

/// The minimal root tarball, made once and cached (`EDGE_VM_REFRESH=1` makes it again).
fn root_tarball(cache: &Path) -> Result<PathBuf> {
    let tar = cache.join("bookworm-root.tar");
    let refresh = std::env::var("EDGE_VM_REFRESH").is_ok_and(|v| v == "1");
    if tar.is_file() && !refresh {
        return Ok(tar);
    }
    if !Path::new("/usr/bin/mmdebstrap").exists() {
        println!("vm: installing mmdebstrap");
        let install = || {
            crate::run(
                Command::new("apt-get")
                    .args(["install", "-y", "-q", "--no-install-recommends", "mmdebstrap"])
                    .env("DEBIAN_FRONTEND", "noninteractive"),
            )
        };
        install().or_else(|_| {
            crate::run(Command::new("apt-get").args(["update", "-q"]))?;
            install()
        })?;
    }
    std::fs::create_dir_all(cache)?;
    // mmdebstrap picks its output's format from the name: the partial file must end in .tar.
    let partial = cache.join("bookworm-root.partial.tar");
    let _ = std::fs::remove_dir_all(&partial);
    let _ = std::fs::remove_file(&partial);
    println!("vm: making a minimal Debian 12 root for the boot suite (mmdebstrap, about a minute)");
    crate::run(
        Command::new("mmdebstrap")
            .args(["--quiet", "--variant=minbase", "--format=tar", &format!("--include={PACKAGES}"), "bookworm"])
            .arg(&partial)
            .arg(MIRROR),
    )?;
    // (A directory in its place is what an older xtask's mmdebstrap left.)
    let _ = std::fs::remove_dir_all(&tar);
    std::fs::rename(&partial, &tar)?;
    Ok(tar)
}

/// The disk image of one run: the cached root, the package and the guest script.
fn disk(cache: &Path, out: &Path, deb: &Path) -> Result<PathBuf> {
    let tar = root_tarball(cache)?;
    let tree = out.join("root");
    let _ = std::fs::remove_dir_all(&tree);
    std::fs::create_dir_all(&tree)?;
    crate::run(Command::new("tar").args(["--numeric-owner", "-xpf"]).arg(&tar).arg("-C").arg(&tree))?;
    let home = tree.join("root");
    std::fs::copy(deb, home.join(deb.file_name().context("the package's file name")?))?;
    // The journal in /run: virtme-ng mounts a tmpfs over /var/log after journald has moved its
    // files there, which would hide every entry from journalctl.
    let journald = tree.join("etc/systemd/journald.conf.d");
    std::fs::create_dir_all(&journald)?;
    std::fs::write(journald.join("volatile.conf"), "[Journal]\nStorage=volatile\n")?;
    let script = home.join("guest.sh");
    std::fs::write(&script, GUEST_SCRIPT)?;
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let img = out.join("disk.img");
    let _ = std::fs::remove_file(&img);
    crate::run(Command::new("truncate").args(["-s", "2G"]).arg(&img))?;
    crate::run(Command::new("mke2fs").args(["-q", "-t", "ext4", "-d"]).arg(&tree).arg(&img))?;
    std::fs::remove_dir_all(&tree)?;
    Ok(img)
}

/// Runs the suite: install, reboot, check. Its result as the matrix reports a suite's; the
/// guests' output is in target/matrix/K/boot-*.log, and boot.log has both and what went wrong.
pub fn run(root: &Path, vng: &Path, accel: &str, image: &Image, deb: &Path, out: &Path) -> SuiteResult {
    let started = Instant::now();
    let mut tally = Tally::default();
    let outcome = match boots(root, vng, accel, image, deb, out, &mut tally) {
        Ok(()) => "ok",
        Err(e) => {
            tally.text.push_str(&format!("== {e:#}\n"));
            if tally.failed > 0 { "failed" } else { "error" }
        }
    };
    let _ = std::fs::write(out.join(format!("{SUITE}.log")), &tally.text);
    let _ = std::fs::remove_file(out.join("disk.img"));
    SuiteResult {
        name: SUITE.into(),
        outcome: outcome.into(),
        passed: tally.passed,
        failed: tally.failed,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// The checks so far, and the guests' output.
#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
    text: String,
}

fn boots(root: &Path, vng: &Path, accel: &str, image: &Image, deb: &Path, out: &Path, t: &mut Tally) -> Result<()> {
    let img = disk(&root.join("target/kernels"), out, deb)?;
    for phase in ["install", "check"] {
        let log = out.join(format!("{SUITE}-{phase}.log"));
        let mut c = Command::new(vng.join("vng"));
        c.arg("-r").arg(&image.vmlinuz);
        c.args(crate::vm::accel_args(accel));
        // --rw: the image itself is written (no overlays), so the install survives the reboot.
        c.arg("--root-disk").arg(&img).args(["--root-fstype", "ext4", "--systemd", "--rw", "--network", "user"]);
        // The command goes on the kernel's command line (2,048 bytes in all): keep it short.
        c.args(["--memory", "2G", "--exec", &format!("/root/guest.sh {phase}")]);
        c.env("PATH", crate::vm::path_with(vng)).current_dir(out).stdin(std::process::Stdio::null());
        let code = crate::vm::run_with_timeout(&mut c, BOOT_TIMEOUT, &log)?;
        let output = std::fs::read_to_string(&log).unwrap_or_default();
        let (p, f) = tally(&output);
        t.passed += p;
        t.failed += f;
        t.text.push_str(&format!("== {phase} (exit {code:?})\n{output}"));
        match code {
            Some(0) if f == 0 && p > 0 => {}
            Some(c) => bail!("the {phase} boot failed (exit {c}, {f} check(s) failed); see {}", log.display()),
            None => bail!("the {phase} boot did not finish within {} s; see {}", BOOT_TIMEOUT.as_secs(), log.display()),
        }
    }
    Ok(())
}

/// Passed and failed checks of the guest script's "ok - " and "FAIL - " lines.
fn tally(output: &str) -> (u64, u64) {
    let count = |prefix: &str| output.lines().filter(|l| l.starts_with(prefix)).count() as u64;
    (count("ok - "), count("FAIL - "))
}

/// The failed checks of the suite's log, for the matrix's report.
pub fn failures(log: &str) -> Vec<String> {
    log.lines().filter(|l| l.starts_with("FAIL - ") || l.starts_with("==")).map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn tally_counts_the_guest_script_lines() {
        let out = "# NIC: enp0s2\nok - a\nFAIL - b\nok - c\n# 1 failure(s)\n";
        assert_eq!(super::tally(out), (2, 1));
        assert_eq!(super::failures(out), ["FAIL - b"]);
    }
}
