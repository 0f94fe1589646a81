//! A raw sender: one thread, pinned to one CPU, inside the sending namespace, writes prebuilt
//! frames to a veth with an AF_PACKET socket. Bounded by a count and a time limit. It measures
//! its own CPU time around the loop, and the other CPU counters, from inside the same thread.

use std::time::{Duration, Instant};

use super::cpu::{self, CpuTicks};
use crate::net::spawn_in_netns;

/// What one burst cost.
#[derive(Clone, Debug, Default)]
pub struct Burst {
    /// Frames the kernel accepted.
    pub sent: u64,
    /// Frames accepted per mix case (frame `i` of the list belongs to case `i % cases`).
    pub sent_by_case: Vec<u64>,
    /// sendto() failures (e.g. ENOBUFS): not counted as sent.
    pub errors: u64,
    /// The sending thread's CPU time over the loop, ns.
    pub thread_ns: u64,
    /// Time every ksoftirqd thread ran over the loop, ns.
    pub ksoftirqd_ns: u64,
    /// /proc/stat per CPU over the loop.
    pub stat: Vec<CpuTicks>,
    pub wall_ns: u64,
    /// The loop stopped at the time limit before `count` frames.
    pub timed_out: bool,
}

struct PacketSocket {
    fd: i32,
    addr: libc::sockaddr_ll,
}

impl PacketSocket {
    fn open(ifname: &str) -> PacketSocket {
        let index = nix::net::if_::if_nametoindex(ifname).unwrap_or_else(|e| panic!("interface {ifname}: {e}"));
        // SAFETY: plain socket call; the result is checked.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        assert!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
        // SAFETY: sockaddr_ll is plain data.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = index as i32;
        addr.sll_halen = 6;
        PacketSocket { fd, addr }
    }

    fn send(&self, frame: &[u8]) -> bool {
        // SAFETY: frame and addr are valid for the sizes given.
        let n = unsafe {
            libc::sendto(
                self.fd,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&self.addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        n == frame.len() as isize
    }
}

impl Drop for PacketSocket {
    fn drop(&mut self) {
        // SAFETY: fd is ours.
        unsafe { libc::close(self.fd) };
    }
}

/// What to send: frames cycled through, `cases` mix cases interleaved in them.
pub struct Load {
    pub frames: std::sync::Arc<Vec<Vec<u8>>>,
    pub cases: usize,
    pub count: u64,
    pub limit: Duration,
}

/// Sends `load` from `ifname` in namespace `ns`, on CPU `cpu`.
pub fn burst(ns: &str, ifname: &str, cpu: usize, load: &Load) -> Burst {
    let ifname = ifname.to_string();
    let (frames, cases, count, limit) = (load.frames.clone(), load.cases, load.count, load.limit);
    spawn_in_netns(ns, move || {
        cpu::pin_to_cpu(cpu);
        let sock = PacketSocket::open(&ifname);
        let mut b = Burst { sent_by_case: vec![0; cases], ..Default::default() };
        let stat0 = cpu::proc_stat();
        let soft0 = cpu::ksoftirqd_ns();
        let start = Instant::now();
        let t0 = cpu::thread_ns();
        let mut i = 0u64;
        while i < count {
            if i.is_multiple_of(4096) && start.elapsed() > limit {
                b.timed_out = true;
                break;
            }
            let at = (i % frames.len() as u64) as usize;
            if sock.send(&frames[at]) {
                b.sent += 1;
                b.sent_by_case[at % cases] += 1;
            } else {
                b.errors += 1;
            }
            i += 1;
        }
        b.thread_ns = cpu::thread_ns() - t0;
        b.wall_ns = start.elapsed().as_nanos() as u64;
        b.ksoftirqd_ns = cpu::ksoftirqd_ns() - soft0;
        b.stat = cpu::proc_stat_delta(&stat0, &cpu::proc_stat());
        b
    })
    .join()
    .expect("sender thread panicked")
}
