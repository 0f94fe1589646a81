//! `cargo xtask bench [--quick]`: builds, runs edge-bench (BPF_PROG_TEST_RUN), edge-compare
//! (veth traffic against no filter, xdp-filter and nftables) and edge-control (the control
//! plane's commands from 34 to 10,034 rules), and writes BENCHMARKS.md from their JSON. `--quick` (CI) writes target/bench/BENCHMARKS.quick.md instead and prints it.
//! A part that fails is reported in the file and on the terminal; the other part still runs.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::cargo;

/// Which build the benchmark binaries come from: `xtask bench` uses release; the test task's
/// quick run reuses the debug build it already has.
#[derive(Clone, Copy)]
pub enum Profile {
    Release,
    /// The test build (`cargo xtask test`): the `vm` profile, the test profile's checks optimized.
    Test,
}

impl Profile {
    fn dir(self) -> &'static str {
        match self {
            Profile::Release => "release",
            Profile::Test => "vm",
        }
    }
}

/// The result of one benchmark program: its JSON, or why there is none.
struct Part {
    json: Option<Value>,
    failure: Option<String>,
}

fn run_part(cmd: &mut Command, json: &Path) -> Part {
    let _ = std::fs::remove_file(json);
    let status = match cmd.status() {
        Ok(s) => s,
        Err(e) => return Part { json: None, failure: Some(format!("cannot run {cmd:?}: {e}")) },
    };
    let value = std::fs::read_to_string(json).ok().and_then(|t| serde_json::from_str(&t).ok());
    let failure = (!status.success()).then(|| format!("{} exited with {status}", cmd.get_program().to_string_lossy()));
    Part { json: value, failure }
}

pub fn bench(root: &Path, quick: bool, profile: Profile) -> Result<()> {
    let mut build = vec!["build", "-p", "edge-ctl", "-p", "edge-tests"];
    match profile {
        Profile::Release => build.push("--release"),
        Profile::Test => build.extend(["--profile", "vm"]),
    }
    cargo(root, &build)?;
    let bin = root.join("target").join(profile.dir());
    let out = root.join("target/bench");
    std::fs::create_dir_all(&out)?;
    let suffix = if quick { ".quick" } else { "" };
    let (testrun_json, compare_json, control_json) = (
        out.join(format!("testrun{suffix}.json")),
        out.join(format!("compare{suffix}.json")),
        out.join(format!("control{suffix}.json")),
    );

    let quick_arg: &[&str] = if quick { &["--quick"] } else { &[] };
    println!("== edge-bench: per-packet cost with BPF_PROG_TEST_RUN");
    let testrun =
        run_part(Command::new(bin.join("edge-bench")).args(quick_arg).arg("--json").arg(&testrun_json), &testrun_json);
    if let Some(f) = &testrun.failure {
        eprintln!("edge-bench FAILED: {f}; the comparison runs anyway");
    }
    println!("\n== edge-compare: veth traffic, edge-ctl against no filter, xdp-filter and nftables");
    let compare = run_part(
        Command::new(bin.join("edge-compare"))
            .args(quick_arg)
            .arg("--json")
            .arg(&compare_json)
            .env("EDGE_CTL_BIN", bin.join("edge-ctl")),
        &compare_json,
    );
    if let Some(f) = &compare.failure {
        eprintln!("edge-compare FAILED: {f}");
    }

    println!("\n== edge-control: policy check, attach and reload from 34 to 10,034 rules");
    let control = run_part(
        Command::new(bin.join("edge-control"))
            .args(quick_arg)
            .arg("--json")
            .arg(&control_json)
            .env("EDGE_CTL_BIN", bin.join("edge-ctl")),
        &control_json,
    );
    if let Some(f) = &control.failure {
        eprintln!("edge-control FAILED: {f}");
    }

    let text = render(quick, &machine(), &testrun, &compare, &control);
    let md = if quick { out.join("BENCHMARKS.quick.md") } else { root.join("BENCHMARKS.md") };
    std::fs::write(&md, &text).with_context(|| format!("write {}", md.display()))?;
    if quick {
        println!("\n{text}");
    }
    println!("wrote {}", md.display());
    let failed: Vec<&str> = [("edge-bench", &testrun), ("edge-compare", &compare), ("edge-control", &control)]
        .iter()
        .filter(|(_, p)| p.failure.is_some() || p.json.is_none())
        .map(|(n, _)| *n)
        .collect();
    if !failed.is_empty() {
        bail!("{} failed (see above and {})", failed.join(" and "), md.display());
    }
    Ok(())
}

/// Facts about the machine the numbers come from.
struct Machine {
    kernel: String,
    cpu: String,
    cores: usize,
    date: String,
    tools: Vec<(String, String)>,
}

fn command_line(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    text.lines().map(str::trim).find(|l| !l.is_empty()).map(str::to_string)
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_string()))
        .unwrap_or_else(|| "unknown".into());
    let tools = ["nftables", "xdp-tools"]
        .iter()
        .map(|pkg| {
            let version = command_line("dpkg-query", &["-W", "-f", "${Version}", pkg]);
            (pkg.to_string(), version.unwrap_or_else(|| "not installed".into()))
        })
        .collect();
    Machine {
        kernel: command_line("uname", &["-r"]).unwrap_or_else(|| "unknown".into()),
        cpu,
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        date: command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_else(|| "unknown".into()),
        tools,
    }
}

fn num(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

fn f0(v: Option<f64>) -> String {
    v.map_or("?".into(), |x| format!("{x:.0}"))
}

fn f1(v: Option<f64>) -> String {
    v.map_or("?".into(), |x| format!("{x:.1}"))
}

fn signed(v: Option<f64>) -> String {
    v.map_or("?".into(), |x| format!("{x:+.0}"))
}

fn render(quick: bool, m: &Machine, testrun: &Part, compare: &Part, control: &Part) -> String {
    let mut s = String::from("# Benchmarks\n\n");
    let _ = writeln!(
        s,
        "Written by `cargo xtask bench{}` on {}; run it again rather than editing this file.{}\n",
        if quick { " --quick" } else { "" },
        m.date,
        if quick { " **Quick mode: too few packets and rounds for the times to mean anything.**" } else { "" }
    );
    s.push_str("## Machine\n\n");
    let _ =
        writeln!(s, "- Kernel {}, {} ({} cores), a virtual machine shared with other work", m.kernel, m.cpu, m.cores);
    for (pkg, version) in &m.tools {
        let _ = writeln!(s, "- {pkg}: {version}");
    }
    s.push('\n');
    testrun_section(&mut s, testrun);
    compare_section(&mut s, compare);
    control_section(&mut s, control);
    noise_section(&mut s, testrun, compare);
    s
}

fn failure_note(s: &mut String, name: &str, part: &Part) {
    if let Some(f) = &part.failure {
        let _ = writeln!(s, "**{name} failed: {f}.** The tables below hold what it wrote, if anything.\n");
    } else if part.json.is_none() {
        let _ = writeln!(s, "**{name} wrote no JSON.**\n");
    }
}

fn testrun_section(s: &mut String, part: &Part) {
    s.push_str("## 1. Per-packet cost of the classifier (BPF_PROG_TEST_RUN)\n\n");
    failure_note(s, "edge-bench", part);
    let Some(j) = &part.json else { return };
    let _ = writeln!(
        s,
        "`edge-bench` runs edge-ctl's XDP program on fixed frames with the kernel's BPF_PROG_TEST_RUN, {} runs \
         per measurement, median of {} rounds spread over {} loads of the object (the kernel starts each \
         JIT-compiled image at a random offset, and where the hot code falls moves a packet's cost by up to \
         0.2x), pinned to the last CPU, against the floor: an empty XDP program in the same object, \
         measured alternately with each case (so a ratio cancels this machine's drift). ns per run is the \
         calling thread's CPU time across the BPF_PROG_TEST_RUN call divided by the runs: the kernel's own \
         figure is truncated to whole nanoseconds (0.04x of the floor), while the call's own cost, spread \
         over the runs, is a few thousandths of a nanosecond (the JSON keeps the kernel's figures too, as \
         `kernel_ns`). Both include the harness's own cost; the ratio to the floor is the comparable number. \
         **Matrix** is \
         the reference measured in the same rounds: a stateless port matrix in the same object (plain IPv4 \
         TCP/UDP, one lookup by destination port, no address conditions, no connection tracking, no \
         counters), what a hand-written filter of the ports alone costs on this harness.\n",
        j["repeat"], j["rounds"], j["loads"]
    );
    let results: &[Value] = j["results"].as_array().map_or(&[], Vec::as_slice);
    let mut policies: Vec<String> = Vec::new();
    for r in results {
        let p = r["policy"].as_str().unwrap_or("?").to_string();
        if !policies.contains(&p) {
            policies.push(p);
        }
    }
    for p in &policies {
        let rows: Vec<&Value> = results.iter().filter(|r| r["policy"].as_str() == Some(p)).collect();
        let first = rows[0];
        let _ = writeln!(
            s,
            "### Policy `{p}`: {} external rules, floor {} ns\n\n| Packet | ns | × floor | matrix × floor |\n|---|---:|---:|---:|",
            first["rules"],
            f1(num(first, "floor_ns"))
        );
        for r in &rows {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                r["packet"].as_str().unwrap_or("?"),
                f1(num(r, "ns")),
                num(r, "ratio").map_or("?".into(), |x| format!("{x:.2}")),
                num(r, "matrix_ratio").map_or("?".into(), |x| format!("{x:.2}"))
            );
        }
        s.push('\n');
    }
    // The compat object has its own table below; the scale table compares policy sizes.
    let sizes: Vec<String> = policies.iter().filter(|p| !p.contains("compat")).cloned().collect();
    if sizes.len() > 1 {
        scale_table(s, results, &sizes);
    }
    verifier_section(s, results);
}

/// What the changes made for older kernels' verifiers cost: the compat object against the full
/// one, measured in the same rounds; the changes both objects carry were measured A/B once.
fn verifier_section(s: &mut String, results: &[Value]) {
    const FULL: &str = "lync";
    const COMPAT: &str = "lync, compat object";
    let ratio = |policy: &str, packet: &str| {
        results
            .iter()
            .find(|r| r["policy"].as_str() == Some(policy) && r["packet"].as_str() == Some(packet))
            .and_then(|r| num(r, "ratio"))
    };
    let packets: Vec<&str> =
        results.iter().filter(|r| r["policy"].as_str() == Some(COMPAT)).filter_map(|r| r["packet"].as_str()).collect();
    if packets.is_empty() {
        return;
    }
    s.push_str(
        "### What the verifier-driven changes cost\n\n\
         The kernels before 5.12 (Debian 11's 5.10) get the compat object: no flow slots in front of the \
         connection tables (no atomic compare-and-exchange there) and the precise clock instead of the coarse \
         one. Here both objects run the Lync profile on this kernel, in the same rounds:\n\n\
         | Packet | full × floor | compat × floor | compat − full |\n|---|---:|---:|---:|\n",
    );
    for packet in packets {
        let (full, compat) = (ratio(FULL, packet), ratio(COMPAT, packet));
        let diff = full.zip(compat).map(|(f, c)| c - f);
        let x = |v: Option<f64>| v.map_or("?".into(), |x| format!("{x:.2}"));
        let _ = writeln!(
            s,
            "| {packet} | {} | {} | {} |",
            x(full),
            x(compat),
            diff.map_or("?".into(), |d| format!("{d:+.2}"))
        );
    }
    s.push_str(
        "\nBoth objects carry the other two changes: index masks the compiler keeps (`bounds::index`) and \
         2,048 port classes so the packet tables fit one 4 MiB array value. They cost nothing measurable: \
         A/B against the build before them on 2026-12-05 (`edge-bench --only lync --rounds 14 --loads 7`, \
         four runs of each, alternating), every packet's ratio to the floor was 0.02 to 0.09 lower with \
         them. The command and the numbers per packet are in docs/decisions.md.\n\n",
    );
    s.push_str(
        "### What packet hygiene costs

\
         The checks of issue 16 (headers bounded by the datagram, TCP flag combinations, martian sources, \
         neighbour discovery from the link, extension-header order, ICMP errors judged by their quote, \
         fragments that follow their first, blind RST/FIN kept out of the connection table) measured A/B \
         against the last build without them on 2026-12-06 (`edge-bench --only lync --rounds 14 --loads 7`, \
         four runs of each, alternating; medians of the runs' ratios to the floor, before to after): allowed \
         TCP 5061 1.63 to 1.75, UDP 3478 1.58 to 1.68, IPv6 TCP 5061 1.64 to 2.30, denied TCP 2.00 to 2.21, \
         denied UDP 1.93 to 2.10, tracked DNS answer 2.13 to 2.37, tracked TCP ACK 2.27 to 2.62, ARP 1.44 to \
         1.51. In time on that run's 6 ns floor: 0.2 to 2.0 ns a packet, and 3.9 ns for IPv6 (not broken \
         down further; its martian check alone compares the source with four own IPv6 addresses, word by \
         word). The matrix \
         reference moved by up to 0.15 between the two builds too (it is the same code in both), which is \
         the size of the harness's own shift between objects. docs/decisions.md has the details.\n\n",
    );
}

/// Packets down, policy sizes across: the cost should not grow with the policy.
fn scale_table(s: &mut String, results: &[Value], policies: &[String]) {
    s.push_str("### By policy size (× floor)\n\n| Packet |");
    for p in policies {
        let rules =
            results.iter().find(|r| r["policy"].as_str() == Some(p)).map_or(Value::Null, |r| r["rules"].clone());
        let _ = write!(s, " {p} ({rules} rules) |");
    }
    s.push_str("\n|---|");
    s.push_str(&"---:|".repeat(policies.len()));
    s.push('\n');
    let mut packets: Vec<&str> = Vec::new();
    for r in results {
        let name = r["packet"].as_str().unwrap_or("?");
        if !packets.contains(&name) {
            packets.push(name);
        }
    }
    for packet in packets {
        let _ = write!(s, "| {packet} |");
        for p in policies {
            let cell = results
                .iter()
                .find(|r| r["policy"].as_str() == Some(p) && r["packet"].as_str() == Some(packet))
                .and_then(|r| num(r, "ratio"))
                .map_or("".into(), |x| format!("{x:.2}"));
            let _ = write!(s, " {cell} |");
        }
        s.push('\n');
    }
    s.push('\n');
}

fn compare_section(s: &mut String, part: &Part) {
    s.push_str("## 2. Against the alternatives, on veth traffic (edge-compare)\n\n");
    failure_note(s, "edge-compare", part);
    let Some(j) = &part.json else { return };
    let cpu = &j["send_cpu"];
    let _ = writeln!(
        s,
        "Two network namespaces joined by a veth pair. The receiver holds node 1's external addresses of \
         `edge-ctl policy template lync2013-edge-hlb` (203.0.113.21-23, 2001:db8:e::21-23) and a blackhole \
         default route, so the RSTs and ICMP errors it answers with are built but go nowhere. One thread \
         pinned to CPU {cpu} sends {} frames per round with an AF_PACKET socket, cycling through the mix below \
         ({} source ports per case, so a stateful filter sees a bounded, warm set of flows), after an \
         unmeasured warm-up; {} rounds, each measuring every configuration in rotated order.\n",
        j["packets_per_round"], j["source_ports_per_case"], j["rounds"]
    );
    s.push_str(
        "**How CPU time per packet is measured.** veth delivers a frame to its peer inside the sender's \
          transmit call: the receiver's side (native XDP, the IP stack, netfilter, the answer it builds) runs \
          in the NET_RX softirq raised there, on the sending CPU, as the transmit path re-enables bottom \
          halves, one packet at a time (no batching that would differ between configurations). This kernel \
          has no IRQ time accounting",
    );
    match j["irq_time_accounting"].as_bool() {
        Some(false) => s.push_str(" (CONFIG_IRQ_TIME_ACCOUNTING is off, checked at run time)"),
        Some(true) => s.push_str(
            " — *except here: CONFIG_IRQ_TIME_ACCOUNTING is on, so the softirq time from /proc/stat was added*",
        ),
        None => s.push_str(" (assumed: the kernel's configuration was not readable)"),
    }
    s.push_str(
        ", so softirq time is charged to the thread it interrupts: the sending thread's CPU time \
          (CLOCK_THREAD_CPUTIME_ID, ns, from the scheduler) plus ksoftirqd's is the sender's work and the whole \
          receive path. The sender's work is the same for every configuration, so **vs none** (the median of \
          per-round differences from the no-filter run of the same round) is the filter's effect on the \
          receiver. **Receive** is the receive path alone: the sending CPU's softirq time in /proc/stat, which \
          the kernel samples at each tick, so it is the less precise of the two.\n\n",
    );
    where_it_ran(s, j);
    s.push_str(
        "**Received** counts what the receiver's IP layers delivered to TCP, UDP and ICMP (Ip InDelivers + \
          Ip6InDelivers), **expected** what the configuration should let through given the mix; the run \
          fails if they differ.\n\n",
    );

    s.push_str("| Filter | Sent | Received | Expected | Dropped | CPU ns/pkt | vs none | Receive ns/pkt | Receive vs none | Spread |\n");
    s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let filters: &[Value] = j["filters"].as_array().map_or(&[], Vec::as_slice);
    for f in filters {
        let name = f["filter"].as_str().unwrap_or("?");
        if let Some(why) = f["skipped"].as_str() {
            let _ = writeln!(s, "| {name} | {why} | | | | | | | | |");
            continue;
        }
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {}% |",
            f["sent"],
            f["received"],
            f["expected"],
            f["dropped"],
            f0(num(f, "ns_per_packet")),
            signed(num(f, "delta_vs_none_ns")),
            f0(num(f, "rx_ns_per_packet")),
            signed(num(f, "rx_delta_vs_none_ns")),
            f1(num(f, "spread_pct")),
        );
    }
    s.push('\n');
    for f in filters {
        let _ =
            writeln!(s, "- **{}**: {}", f["filter"].as_str().unwrap_or("?"), f["description"].as_str().unwrap_or(""));
    }
    s.push_str(
        "\nNative XDP on veth is not free: veth turns each socket buffer into an XDP buffer (copying it into a \
          page of its own when it cannot use it in place, as with a socket's buffers) and back into a socket \
          buffer, which the *xdp pass* row measures with an empty program. A NIC driver runs XDP before any socket buffer exists, so there the XDP rows start \
          lower, and their early drops save the stack's work (no filter and nftables pay it for every \
          packet).\n\n",
    );

    s.push_str("### The mix\n\n| Case | Matrix (edge-ctl, nftables) | Port list (xdp-filter) |\n|---|---|---|\n");
    for c in j["cases"].as_array().map_or(&[][..], Vec::as_slice) {
        let yes = |b: &Value| if b.as_bool() == Some(true) { "pass" } else { "drop" };
        let _ = writeln!(
            s,
            "| {} | {} | {} |",
            c["name"].as_str().unwrap_or("?"),
            yes(&c["allowed_by_matrix"]),
            yes(&c["allowed_by_port_list"])
        );
    }
    let ports: Vec<&str> =
        j["xdp_filter_ports"].as_array().map_or(vec![], |a| a.iter().filter_map(Value::as_str).collect());
    let _ = writeln!(
        s,
        "\n### What xdp-filter cannot express\n\nConfigured as an allow-list of the external role's inbound \
         destination ports ({}), everything else dropped. Of the matrix it cannot express:\n",
        ports.join(", ")
    );
    for l in j["xdp_filter_limits"].as_array().map_or(&[][..], Vec::as_slice) {
        let _ = writeln!(s, "- {}", l.as_str().unwrap_or(""));
    }
    if let Some(rules) = j["nft_ruleset"].as_str() {
        let _ = writeln!(
            s,
            "\n### The nftables ruleset\n\nGenerated from the same policy model (the external role; \
             loaded in the receiver's namespace):\n\n<details><summary>nft ruleset</summary>\n\n```\n{}```\n\n</details>\n",
            rules
        );
    }
}

/// The check that the work ran where the method says: the sending CPU's busy time from
/// /proc/stat against the thread's own time, in the no-filter configuration.
fn where_it_ran(s: &mut String, j: &Value) {
    let Some(base) = j["filters"].as_array().and_then(|f| f.iter().find(|f| f["skipped"].is_null())) else {
        return;
    };
    let _ = writeln!(
        s,
        "Where the work ran ({}): the sending thread and ksoftirqd used {} ns per packet; /proc/stat counted {} ns \
         per packet of busy time on the sending CPU, {} of it softirq. The other CPUs were {}% busy during these \
         rounds and {}% in idle windows between rounds (no traffic); what they do is other work on this \
         machine, not the receive path (`stat_*` and `*_busy_pct` fields in the JSON, for every configuration).\n",
        base["filter"].as_str().unwrap_or("?"),
        f0(num(base, "ns_per_packet")),
        f0(num(base, "stat_send_cpu_ns_per_packet")),
        f0(num(base, "rx_ns_per_packet")),
        f0(num(base, "other_cpus_busy_pct")),
        f0(num(j, "background_other_cpus_busy_pct")),
    );
}

/// The median and the largest of non-empty values.
/// Issue 18's targets for the control plane.
const CONTROL_TARGET_S: f64 = 0.5;
const LYNC_MAPS_TARGET_MIB: f64 = 8.0;

fn control_section(s: &mut String, part: &Part) {
    s.push_str("## 3. Control plane: policy check, attach, reload (edge-control)\n\n");
    failure_note(s, "edge-control", part);
    let Some(j) = &part.json else { return };
    let rows: &[Value] = j["rows"].as_array().map_or(&[], Vec::as_slice);
    let _ = writeln!(
        s,
        "`edge-control` runs the release `edge-ctl` on the built-in Lync profile plus N rules (the policies of \
         section 1: N rules on 2,000 ports, remotes from 48 sets holding N prefixes), in a namespace on a veth \
         pair: `policy check`, `attach --role external` (load, verify and attach both programs, write the tables, \
         seed the connection table), `reload` of the same file (compile, write the idle generation, switch), \
         `detach`; median of {} run(s) by wall time. CPU is the edge-ctl process's user + system time (the kernel's \
         verifier runs in the process, in system time); peak RSS is its own (`wait4`). Map memory is the sum of \
         the kernel's `memlock` figure for each map one attached interface pins.\n",
        j["repeat"]
    );
    s.push_str(
        "| policy | rules | check s (CPU) | attach s (CPU) | reload s (CPU) | peak RSS MiB | map memory MiB | state file KiB |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let cell =
        |r: &Value| format!("{:.3} ({:.3})", num(r, "wall_s").unwrap_or(f64::NAN), num(r, "cpu_s").unwrap_or(f64::NAN));
    let mib = |v: Option<f64>| v.map_or("?".into(), |b| format!("{:.1}", b / 1048576.0));
    for r in rows {
        let rss = ["check", "attach", "reload"].iter().filter_map(|k| num(&r[*k], "rss_kib")).fold(0.0, f64::max);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {:.0} | {} | {:.0} |",
            r["policy"].as_str().unwrap_or("?"),
            r["rules"],
            cell(&r["check"]),
            cell(&r["attach"]),
            cell(&r["reload"]),
            rss / 1024.0,
            mib(num(r, "map_bytes")),
            num(r, "state_bytes").unwrap_or(0.0) / 1024.0
        );
    }
    s.push('\n');
    let by_extra = |n: u64| rows.iter().find(|r| r["extra_rules"].as_u64() == Some(n));
    if let (Some(small), Some(large)) = (by_extra(100), by_extra(10_000)) {
        let growth = |k: &str| {
            let (a, b) = (num(&small[k], "wall_s"), num(&large[k], "wall_s"));
            a.zip(b).map_or("?".into(), |(a, b)| format!("{:.1}x ({:.3} s -> {:.3} s)", b / a, a, b))
        };
        let _ = writeln!(
            s,
            "From 134 to 10,034 rules (100x): `policy check` {}, `attach` {}, `reload` {}.\n",
            growth("check"),
            growth("attach"),
            growth("reload")
        );
        let verdict = |k: &str| match num(&large[k], "wall_s") {
            Some(t) if t <= CONTROL_TARGET_S => format!("`{k}` {t:.3} s: met"),
            Some(t) => format!("`{k}` {t:.3} s: **not met**"),
            None => format!("`{k}`: not measured"),
        };
        let lync = by_extra(0).and_then(|r| num(r, "map_bytes")).map(|b| b / 1048576.0);
        let maps = match lync {
            Some(m) if m <= LYNC_MAPS_TARGET_MIB => format!("the Lync profile's maps {m:.1} MiB: met"),
            Some(m) => format!("the Lync profile's maps {m:.1} MiB: **not met**"),
            None => "the Lync profile's maps: not measured".into(),
        };
        let _ = writeln!(
            s,
            "Targets (issue 18: each command <= {CONTROL_TARGET_S} s for 10,000 rules, <= {LYNC_MAPS_TARGET_MIB} MiB of \
             maps per interface for the Lync profile): {}, {}, {}; {maps}.\n",
            verdict("check"),
            verdict("attach"),
            verdict("reload")
        );
    }
    let maps: &[Value] = j["lync_maps"].as_array().map_or(&[], Vec::as_slice);
    if !maps.is_empty() {
        s.push_str("The Lync profile's maps on one interface (kernel `memlock`):\n\n| map | KiB |\n|---|---:|\n");
        for m in maps {
            let _ = writeln!(
                s,
                "| {} | {:.0} |",
                m["map"].as_str().unwrap_or("?"),
                num(m, "bytes").unwrap_or(0.0) / 1024.0
            );
        }
        s.push('\n');
    }
}

fn median_and_max(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[v.len() - 1])
}

fn noise_section(s: &mut String, testrun: &Part, compare: &Part) {
    s.push_str("## Noise\n\n");
    s.push_str(
        "This is a 2-core virtual machine shared with other work: the hypervisor, other guests and other \
          processes on it move every number from run to run. The commands measure that themselves:\n\n",
    );
    if let Some(j) = &compare.json {
        let filters: &[Value] = j["filters"].as_array().map_or(&[], Vec::as_slice);
        let spreads: Vec<String> = filters
            .iter()
            .filter(|f| f["skipped"].is_null())
            .map(|f| {
                format!(
                    "{} {}-{} ns ({}%)",
                    f["filter"].as_str().unwrap_or("?"),
                    f0(num(f, "ns_min")),
                    f0(num(f, "ns_max")),
                    f1(num(f, "spread_pct"))
                )
            })
            .collect();
        let _ = writeln!(
            s,
            "- edge-compare, CPU ns per packet across its {} rounds (min-max, spread = range/median): {}.",
            j["rounds"],
            spreads.join("; ")
        );
        let deltas: Vec<String> = filters
            .iter()
            .filter(|f| f["skipped"].is_null() && num(f, "delta_vs_none_max_ns").is_some_and(|d| d != 0.0))
            .map(|f| {
                format!(
                    "{} {} to {}",
                    f["filter"].as_str().unwrap_or("?"),
                    signed(num(f, "delta_vs_none_min_ns")),
                    signed(num(f, "delta_vs_none_max_ns"))
                )
            })
            .collect();
        let _ = writeln!(
            s,
            "- The differences from no filter are taken within each round, which cancels drift that moves \
             every configuration together; across rounds they ranged (ns per packet): {}.",
            deltas.join("; ")
        );
    }
    if let Some(j) = &testrun.json {
        let results: &[Value] = j["results"].as_array().map_or(&[], Vec::as_slice);
        // One floor per policy (every packet of a policy shares it).
        let mut floors: Vec<(&str, f64)> = Vec::new();
        for r in results {
            if let (Some(p), Some(f)) = (r["policy"].as_str(), num(r, "floor_ns"))
                && !floors.iter().any(|(q, _)| *q == p)
            {
                floors.push((p, f));
            }
        }
        let floors: Vec<f64> = floors.into_iter().map(|(_, f)| f).collect();
        let spreads: Vec<f64> = results
            .iter()
            .filter_map(|r| Some((num(r, "ns_max")? - num(r, "ns_min")?) / num(r, "ns")? * 100.0))
            .collect();
        let several_rounds = j["rounds"].as_u64().is_some_and(|r| r > 1);
        if spreads.is_empty() || !several_rounds {
            s.push_str(
                "- edge-bench ran one round (or kept no per-round spread), so this run says nothing about \
                 its noise; its ratios are taken within a round, against the floor measured right before.\n",
            );
        } else {
            let (typical, worst) = median_and_max(spreads);
            let _ = writeln!(
                s,
                "- edge-bench: a packet's ns varied across rounds by {typical:.1}% of its median for the median \
                 packet and by at most {worst:.1}% (range/median, each packet of each policy)."
            );
            let ratio_spreads: Vec<f64> =
                results.iter().filter_map(|r| Some(num(r, "ratio_max")? - num(r, "ratio_min")?)).collect();
            if !ratio_spreads.is_empty() {
                let (typical, worst) = median_and_max(ratio_spreads);
                let _ = writeln!(
                    s,
                    "- edge-bench: the ratio to the floor of one packet moved across rounds by {typical:.2} \
                     (median) and at most {worst:.2}; cells that differ by less than that are within the noise."
                );
            }
        }
        if floors.len() > 1 {
            let (lo, hi) = floors.iter().fold((f64::MAX, f64::MIN), |(l, h), &x| (l.min(x), h.max(x)));
            let _ = writeln!(
                s,
                "- edge-bench: the floor (the same empty program every time) measured {lo:.1}-{hi:.1} ns (medians of \
                 {} rounds) across the policies of this run; each ratio is taken within a round.",
                j["rounds"]
            );
        }
    }
    s.push_str(
        "- No hardware performance counters are available in this VM, so all times are wall-clock or \
          scheduler time, not cycles.\n",
    );
}
