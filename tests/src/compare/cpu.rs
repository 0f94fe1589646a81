//! CPU time: the calling thread's own (precise, from the scheduler), every ksoftirqd thread's
//! (from /proc/PID/schedstat, ns), and each CPU's /proc/stat counters (sampled at the tick) to
//! show where the work ran.

use std::time::Duration;

/// CPU time the calling thread has used (CLOCK_THREAD_CPUTIME_ID), ns. Without
/// CONFIG_IRQ_TIME_ACCOUNTING this includes softirq work that ran while the thread was on
/// the CPU, which is where veth runs the receiver's side (see edge-compare's method).
pub fn thread_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid clock id and a valid out-pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Pins the calling thread to one CPU.
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity(0, ...) applies to the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let rc = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(rc, 0, "sched_setaffinity to CPU {cpu}: {}", std::io::Error::last_os_error());
    }
}

/// Total run time of every ksoftirqd thread, ns: softirq work the kernel deferred to them
/// instead of running it in the context that raised it.
pub fn ksoftirqd_ns() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else { return 0 };
    dir.filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .filter(|e| std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.starts_with("ksoftirqd/")))
        .filter_map(|e| std::fs::read_to_string(e.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// One CPU's /proc/stat counters, in USER_HZ ticks.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuTicks {
    pub user: u64,
    pub system: u64,
    pub idle: u64,
    pub irq: u64,
    pub softirq: u64,
    pub other: u64,
}

impl CpuTicks {
    pub fn busy(&self) -> u64 {
        self.user + self.system + self.irq + self.softirq + self.other
    }

    fn minus(&self, o: &CpuTicks) -> CpuTicks {
        CpuTicks {
            user: self.user - o.user,
            system: self.system - o.system,
            idle: self.idle - o.idle,
            irq: self.irq - o.irq,
            softirq: self.softirq - o.softirq,
            other: self.other - o.other,
        }
    }
}

/// Per-CPU counters of /proc/stat (`cpuN` lines).
pub fn proc_stat() -> Vec<CpuTicks> {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            let v: Vec<u64> = l.split_whitespace().skip(1).map(|x| x.parse().unwrap_or(0)).collect();
            let at = |i: usize| v.get(i).copied().unwrap_or(0);
            // user nice system idle iowait irq softirq steal (guest time is inside user).
            CpuTicks {
                user: at(0) + at(1),
                system: at(2),
                idle: at(3) + at(4),
                irq: at(5),
                softirq: at(6),
                other: at(7),
            }
        })
        .collect()
}

pub fn proc_stat_delta(before: &[CpuTicks], after: &[CpuTicks]) -> Vec<CpuTicks> {
    after.iter().zip(before).map(|(a, b)| a.minus(b)).collect()
}

/// Nanoseconds per USER_HZ tick.
pub fn tick_ns() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    1e9 / if hz > 0 { hz as f64 } else { 100.0 }
}

/// Whether the kernel subtracts interrupt time from tasks (then a thread's CPU time would not
/// include the softirq work it triggers). None when the kernel's configuration is not readable.
pub fn irq_time_accounting() -> Option<bool> {
    let out = std::process::Command::new("sh")
        .args(["-c", "zcat /proc/config.gz 2>/dev/null || cat /boot/config-$(uname -r) 2>/dev/null"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.is_empty() {
        return None;
    }
    Some(text.lines().any(|l| l == "CONFIG_IRQ_TIME_ACCOUNTING=y"))
}

pub fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}
