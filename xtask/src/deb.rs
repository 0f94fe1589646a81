//! `cargo xtask deb`: `target/deb/edge-ctl_<version>_amd64.deb`, laid out by hand and packed
//! with `dpkg-deb --root-owner-group` (docs/decisions.md says why not cargo-deb):
//!
//! - /usr/sbin/edge-ctl (stripped; the eBPF object is embedded in it);
//! - /lib/systemd/system/edge-ctl.service (`contrib/edge-ctl.service` with the package's path);
//! - /etc/edge-ctl/serve.toml and /etc/edge-ctl/examples/lync2013-edge-hlb.toml, conffiles (the
//!   example policy is not /etc/edge-ctl/policy.toml, which `attach` would take without asking);
//! - man pages edge-ctl(8) and edge-ctl-SUBCOMMAND(8), and bash, zsh and fish completions, all
//!   generated from the command line (`edge-assets`: clap_mangen, clap_complete);
//! - /usr/share/doc/edge-ctl: copyright (machine-readable, MIT or Apache-2.0), changelog, the
//!   Prometheus rules and the operations guide;
//! - DEBIAN: control (Depends from `dpkg-shlibdeps`), conffiles, md5sums, postinst, prerm and postrm.
//!
//! `lintian` then checks it (`cargo xtask test` fails on any lintian error).

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::run;

const NAME: &str = "edge-ctl";
const MAINTAINER: &str = "edge-ctl maintainers <edge-ctl@example.org>";

/// The workspace's version (Cargo.toml's `[workspace.package] version`).
fn version(root: &Path) -> Result<String> {
    let text = std::fs::read_to_string(root.join("Cargo.toml")).context("read Cargo.toml")?;
    let mut in_package = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[workspace.package]";
        } else if in_package && let Some(v) = line.strip_prefix("version") {
            let v = v.trim_start().trim_start_matches('=').trim().trim_matches('"');
            return Ok(v.to_string());
        }
    }
    bail!("no version in [workspace.package] of Cargo.toml")
}

fn write(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    std::fs::write(path, data).with_context(|| format!("write {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// gzip -9n: no name or time stamp in the header, so the package is reproducible.
fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new("gzip")
        .args(["-9n", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("run gzip")?;
    let mut stdin = child.stdin.take().expect("piped");
    let input = data.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output()?;
    feeder.join().expect("gzip feeder")?;
    if !out.status.success() {
        bail!("gzip failed");
    }
    Ok(out.stdout)
}

const DESCRIPTION: &str = "\
Description: eBPF/XDP packet filter for Lync Server 2013 and Skype for Business Edge
 edge-ctl enforces the port matrix Microsoft documents for the Edge Servers of a
 hardware-load-balanced pool (external and internal interface of each node,
 external and internal VIPs) at line rate: an XDP program judges what arrives on
 an interface, a TC egress program what leaves and records the flows the edge
 opens so that their answers come back without open source ports.
 .
 It runs on an edge node's interfaces or on the Linux firewalls in front of the
 pool, compiles a declarative TOML policy into BPF maps, swaps it atomically,
 counts every rule and every drop by a named reason, and exports them as
 Prometheus metrics. The edge-ctl service keeps the configured interfaces
 filtered and reloads their policies when the files change.
";

const POSTINST: &str = "#!/bin/sh
set -e
# The filters are not started here: /etc/edge-ctl/serve.toml names no interface until the
# admin writes one; then `systemctl enable --now edge-ctl`.
if [ \"$1\" = configure ] && [ -d /run/systemd/system ]; then
\tsystemctl --system daemon-reload >/dev/null || true
fi
";

const PRERM: &str = "#!/bin/sh
set -e
# The filters outlive the package: say which stay attached, and how to take them off.
if [ \"$1\" = remove ] && command -v edge-ctl >/dev/null; then
\tif attached=$(edge-ctl status 2>/dev/null | awk '/^[^ ].*: role / {sub(\":\", \"\", $1); print $1}' | tr '\\n' ' ') && [ -n \"$attached\" ]; then
\t\techo \"edge-ctl: the filters on $attached stay attached and counting (pinned in /sys/fs/bpf/edge-ctl); before removing, \\`edge-ctl detach IFACE\\` takes one off\"
\tfi
fi
";

const POSTRM: &str = "#!/bin/sh
set -e
# remove: the filters stay attached and counting (they are pinned in /sys/fs/bpf and keep
# filtering without the binary, until the interface goes or the machine reboots).
# purge: dpkg removes the conffiles (/etc/edge-ctl/serve.toml and the example policy); this
# removes /etc/edge-ctl if nothing else is left in it, and the runtime state in /run/edge-ctl
# unless filters are still pinned (their state belongs to them). Files the admin made there
# (a policy.toml) and pinned filters are left alone, and said so.
if [ \"$1\" = purge ]; then
\trmdir /etc/edge-ctl/examples 2>/dev/null || true
\tif ! rmdir /etc/edge-ctl 2>/dev/null && [ -d /etc/edge-ctl ]; then
\t\techo \"edge-ctl: purged the conffiles; /etc/edge-ctl keeps the files the package did not install:\" $(ls /etc/edge-ctl)
\tfi
\tif [ -n \"$(ls -A /sys/fs/bpf/edge-ctl 2>/dev/null)\" ]; then
\t\techo \"edge-ctl: filters are still pinned in /sys/fs/bpf/edge-ctl (and their state in /run/edge-ctl): they filter until reboot; \\`ip link set dev IFACE xdp off\\` and removing the pins takes them off\"
\telse
\t\trm -rf /run/edge-ctl
\tfi
fi
if [ -d /run/systemd/system ]; then
\tsystemctl --system daemon-reload >/dev/null || true
fi
";

const SERVE_TOML: &str = "\
# edge-ctl serve configuration: one [[interface]] table per interface to keep filtered.
# Errors name file:line:column; `edge-ctl serve --help` and edge-ctl-serve(8) describe every key.
#
# Nothing is filtered until an interface is named here. Then:
#   edge-ctl policy template lync2013-edge-hlb > /etc/edge-ctl/policy.toml   # edit it
#   edge-ctl policy check /etc/edge-ctl/policy.toml
#   systemctl enable --now edge-ctl
# (on the firewalls in front of the pool: `--placement perimeter`). The example policy in
# /etc/edge-ctl/examples is the node template with documentation addresses.
#
#[[interface]]
#name = \"eth0\"
#role = \"external\"                       # external | internal
#policy = \"/etc/edge-ctl/policy.toml\"
#mode = \"auto\"                           # native | generic | auto
#
#[[interface]]
#name = \"eth1\"
#role = \"internal\"
#policy = \"/etc/edge-ctl/policy.toml\"
";

fn copyright() -> String {
    "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: edge-ctl
Source: https://example.org/edge-ctl

Files: *
Copyright: 2026 edge-ctl contributors
License: MIT or Apache-2.0

License: MIT
 Permission is hereby granted, free of charge, to any person obtaining a copy
 of this software and associated documentation files (the \"Software\"), to deal
 in the Software without restriction, including without limitation the rights
 to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
 copies of the Software, and to permit persons to whom the Software is
 furnished to do so, subject to the following conditions:
 .
 The above copyright notice and this permission notice shall be included in
 all copies or substantial portions of the Software.
 .
 THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
 IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
 FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
 AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
 LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
 OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN
 THE SOFTWARE.

License: Apache-2.0
 Licensed under the Apache License, Version 2.0 (the \"License\"); you may not
 use this file except in compliance with the License. You may obtain a copy of
 the License at http://www.apache.org/licenses/LICENSE-2.0
 .
 On Debian systems, the complete text of the Apache License, Version 2.0 can be
 found in /usr/share/common-licenses/Apache-2.0.
"
    .to_string()
}

/// Builds the package from the binaries of `profile_dir` (target/release, or target/vm for the
/// tests); returns its path.
pub fn build(root: &Path, profile_dir: &str) -> Result<PathBuf> {
    let version = version(root)?;
    let bin = root.join("target").join(profile_dir);
    let out = root.join("target/deb");
    let tree = out.join(format!("{NAME}_{version}_amd64"));
    if tree.exists() {
        std::fs::remove_dir_all(&tree).with_context(|| format!("remove {}", tree.display()))?;
    }
    std::fs::create_dir_all(&tree)?;

    // The binary, stripped (its eBPF object is data and survives).
    let sbin = tree.join("usr/sbin/edge-ctl");
    std::fs::create_dir_all(sbin.parent().unwrap())?;
    run(Command::new("strip")
        .args(["--strip-unneeded", "--remove-section=.comment", "-o"])
        .arg(&sbin)
        .arg(bin.join("edge-ctl")))?;
    std::fs::set_permissions(&sbin, std::fs::Permissions::from_mode(0o755))?;

    // The unit, pointing at the package's binary.
    let unit = std::fs::read_to_string(root.join("edge-ctl/contrib/edge-ctl.service"))?;
    let unit = unit.replace("/usr/local/sbin/edge-ctl", "/usr/sbin/edge-ctl");
    let unit: String = unit
        .lines()
        .filter(|l| !l.starts_with("#   install") && !l.starts_with("#   systemctl daemon-reload"))
        .map(|l| format!("{l}\n"))
        .collect();
    let unit = unit.replace(
        "127.0.0.1:9469. Install:\n",
        "127.0.0.1:9469. Name the interfaces in /etc/edge-ctl/serve.toml, then\n#   systemctl enable --now edge-ctl\n",
    );
    write(&tree.join("lib/systemd/system/edge-ctl.service"), unit.as_bytes(), 0o644)?;

    // Configuration: conffiles.
    write(&tree.join("etc/edge-ctl/serve.toml"), SERVE_TOML.as_bytes(), 0o644)?;
    let template = Command::new(bin.join("edge-ctl")).args(["policy", "template", "lync2013-edge-hlb"]).output()?;
    if !template.status.success() {
        bail!("edge-ctl policy template failed: {}", String::from_utf8_lossy(&template.stderr));
    }
    write(&tree.join("etc/edge-ctl/examples/lync2013-edge-hlb.toml"), &template.stdout, 0o644)?;

    // Man pages and completions from the command line.
    let assets = out.join("assets");
    if assets.exists() {
        std::fs::remove_dir_all(&assets)?;
    }
    run(Command::new(bin.join("edge-assets")).arg(&assets))?;
    for entry in std::fs::read_dir(assets.join("man8"))? {
        let path = entry?.path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let page = gzip(&std::fs::read(&path)?)?;
        write(&tree.join(format!("usr/share/man/man8/{name}.gz")), &page, 0o644)?;
    }
    let completions = assets.join("completions");
    for (from, to) in [
        ("edge-ctl.bash", "usr/share/bash-completion/completions/edge-ctl"),
        ("_edge-ctl", "usr/share/zsh/vendor-completions/_edge-ctl"),
        ("edge-ctl.fish", "usr/share/fish/vendor_completions.d/edge-ctl.fish"),
    ] {
        write(&tree.join(to), &std::fs::read(completions.join(from))?, 0o644)?;
    }

    // The YAML parser of --web.config.file (serde_yaml_ng) is unsafe-libyaml, libyaml
    // translated to Rust: lintian finds libyaml's strings in the binary, but there is no
    // shared library a Rust program could link instead.
    write(
        &tree.join("usr/share/lintian/overrides/edge-ctl"),
        b"# libyaml translated to Rust (unsafe-libyaml), compiled in as every Rust crate is.\n\
          edge-ctl: embedded-library libyaml [usr/sbin/edge-ctl]\n",
        0o644,
    )?;

    // Documentation.
    let doc = tree.join("usr/share/doc/edge-ctl");
    write(&doc.join("copyright"), copyright().as_bytes(), 0o644)?;
    let date = String::from_utf8(Command::new("date").args(["-R", "-u"]).output()?.stdout)?.trim().to_string();
    let changelog = format!(
        "{NAME} ({version}) unstable; urgency=medium\n\n  * Built by `cargo xtask deb`; the history is in the project's git log.\n\n -- {MAINTAINER}  {date}\n"
    );
    write(&doc.join("changelog.gz"), &gzip(changelog.as_bytes())?, 0o644)?;
    for (from, to) in [
        ("edge-ctl/contrib/prometheus/edge-ctl.rules.yml", "prometheus/edge-ctl.rules.yml"),
        ("edge-ctl/contrib/prometheus/edge-ctl.rules.test.yml", "prometheus/edge-ctl.rules.test.yml"),
    ] {
        write(&doc.join(to), &std::fs::read(root.join(from))?, 0o644)?;
    }
    write(&doc.join("operations.md.gz"), &gzip(&std::fs::read(root.join("docs/operations.md"))?)?, 0o644)?;

    // Control files.
    let debian = tree.join("DEBIAN");
    std::fs::create_dir_all(&debian)?;
    let depends = shlibdeps(&out, &sbin)?;
    let installed_kib = du_kib(&tree)?;
    let mut control = String::new();
    let _ = write!(
        control,
        "Package: {NAME}\nVersion: {version}\nArchitecture: amd64\nMaintainer: {MAINTAINER}\n\
         Installed-Size: {installed_kib}\nDepends: {depends}\nSection: net\nPriority: optional\n\
         Homepage: https://example.org/edge-ctl\n{DESCRIPTION}"
    );
    write(&debian.join("control"), control.as_bytes(), 0o644)?;
    write(
        &debian.join("conffiles"),
        b"/etc/edge-ctl/serve.toml\n/etc/edge-ctl/examples/lync2013-edge-hlb.toml\n",
        0o644,
    )?;
    write(&debian.join("postinst"), POSTINST.as_bytes(), 0o755)?;
    write(&debian.join("prerm"), PRERM.as_bytes(), 0o755)?;
    write(&debian.join("postrm"), POSTRM.as_bytes(), 0o755)?;
    write(&debian.join("md5sums"), md5sums(&tree)?.as_bytes(), 0o644)?;
    // Directories 0755, whatever the umask made them.
    fix_dirs(&tree)?;

    let deb = out.join(format!("{NAME}_{version}_amd64.deb"));
    run(Command::new("dpkg-deb").args(["--root-owner-group", "-Zxz", "--build"]).arg(&tree).arg(&deb))?;
    Ok(deb)
}

/// The Depends line for the binary's shared libraries, from dpkg-shlibdeps (which reads a
/// debian/control; a minimal one is written for it).
fn shlibdeps(out: &Path, binary: &Path) -> Result<String> {
    let work = out.join("shlibdeps");
    write(
        &work.join("debian/control"),
        format!("Source: {NAME}\n\nPackage: {NAME}\nArchitecture: amd64\n").as_bytes(),
        0o644,
    )?;
    let o = Command::new("dpkg-shlibdeps")
        .arg("-O")
        .arg(format!("-e{}", binary.display()))
        .current_dir(&work)
        .output()
        .context("run dpkg-shlibdeps (Debian's dpkg-dev)")?;
    if !o.status.success() {
        bail!("dpkg-shlibdeps: {}", String::from_utf8_lossy(&o.stderr));
    }
    let text = String::from_utf8_lossy(&o.stdout);
    let deps = text
        .lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .context("dpkg-shlibdeps printed no shlibs:Depends")?;
    Ok(deps.trim().to_string())
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>, dirs: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            dirs.push(path.clone());
            walk(&path, files, dirs)?;
        } else {
            files.push(path);
        }
    }
    Ok(())
}

fn du_kib(tree: &Path) -> Result<u64> {
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    walk(tree, &mut files, &mut dirs)?;
    let bytes: u64 = files
        .iter()
        .filter(|f| !f.starts_with(tree.join("DEBIAN")))
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    Ok(bytes.div_ceil(1024))
}

fn md5sums(tree: &Path) -> Result<String> {
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    walk(tree, &mut files, &mut dirs)?;
    files.retain(|f| !f.starts_with(tree.join("DEBIAN")) && !f.starts_with(tree.join("etc")));
    files.sort();
    let rel: Vec<String> = files.iter().map(|f| f.strip_prefix(tree).unwrap().display().to_string()).collect();
    let o = Command::new("md5sum").args(&rel).current_dir(tree).output().context("run md5sum")?;
    if !o.status.success() {
        bail!("md5sum: {}", String::from_utf8_lossy(&o.stderr));
    }
    Ok(String::from_utf8(o.stdout)?)
}

fn fix_dirs(tree: &Path) -> Result<()> {
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    walk(tree, &mut files, &mut dirs)?;
    for d in dirs.iter().chain(std::iter::once(&tree.to_path_buf())) {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// `lintian` on the package: any error fails (warnings are printed).
pub fn lintian(deb: &Path) -> Result<()> {
    println!("== lintian {}", deb.display());
    run(Command::new("lintian").args(["--fail-on", "error", "--info"]).arg(deb))
}
