//! What the running kernel offers, probed at run time (never read off a version string: a
//! distribution's kernel backports, and a custom one may leave things out). Each probe asks the
//! kernel directly: a tiny program or map it has to accept, or a query that fails on kernels
//! without the feature. Nothing is attached and nothing outlives the probe.
//!
//! The answers pick the eBPF object (`object::Flavor`) and the egress attachment (TCX or
//! clsact); a missing required feature stops `attach` with the feature's name and the Linux
//! version it arrived in.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::OnceLock;

use aya::maps::MapType;
use aya::programs::ProgramType;
use aya::sys::{BpfHelper, is_helper_supported, is_map_supported};

use super::DataplaneError;

/// A kernel feature edge-ctl uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    MmapableArray,
    Jiffies64,
    RingBuf,
    CoarseClock,
    AtomicCmpxchg,
    Tcx,
}

impl Feature {
    pub const ALL: [Feature; 6] = [
        Feature::MmapableArray,
        Feature::Jiffies64,
        Feature::RingBuf,
        Feature::CoarseClock,
        Feature::AtomicCmpxchg,
        Feature::Tcx,
    ];

    /// The name `edge-ctl kernel` prints.
    pub fn name(self) -> &'static str {
        match self {
            Feature::MmapableArray => "mmapable-array",
            Feature::Jiffies64 => "bpf_jiffies64",
            Feature::RingBuf => "ringbuf",
            Feature::CoarseClock => "bpf_ktime_get_coarse_ns",
            Feature::AtomicCmpxchg => "atomic-cmpxchg",
            Feature::Tcx => "tcx",
        }
    }

    /// The mainline Linux version it arrived in.
    pub fn since(self) -> &'static str {
        match self {
            Feature::MmapableArray => "5.5",
            Feature::Jiffies64 => "5.5",
            Feature::RingBuf => "5.8",
            Feature::CoarseClock => "5.11",
            Feature::AtomicCmpxchg => "5.12",
            Feature::Tcx => "6.6",
        }
    }

    /// Whether edge-ctl cannot work without it (the others have a fallback).
    pub fn required(self) -> bool {
        !matches!(self, Feature::CoarseClock | Feature::AtomicCmpxchg | Feature::Tcx)
    }

    /// What it is used for, and without it what happens instead.
    pub fn purpose(self) -> &'static str {
        match self {
            Feature::MmapableArray => "the packet tables, written by the controller through a memory mapping",
            Feature::Jiffies64 => "the connection table's clock",
            Feature::RingBuf => "drop events for `edge-ctl tail`",
            Feature::CoarseClock => "timestamps of new flows and events (without it: the compat object)",
            Feature::AtomicCmpxchg => "the flow slots in front of the connection table (without it: the compat object)",
            Feature::Tcx => "the egress program as a TCX bpf_link (without it: a clsact filter)",
        }
    }
}

/// The answers of every probe.
#[derive(Clone, Debug)]
pub struct Features {
    found: Vec<(Feature, bool)>,
}

impl Features {
    pub fn has(&self, feature: Feature) -> bool {
        self.found.iter().any(|(f, ok)| *f == feature && *ok)
    }

    /// Every feature with its answer, in [`Feature::ALL`]'s order.
    pub fn all(&self) -> &[(Feature, bool)] {
        &self.found
    }

    /// The first required feature the kernel lacks, as the error `attach` gives.
    pub fn check_required(&self) -> Result<(), DataplaneError> {
        match self.found.iter().find(|(f, ok)| f.required() && !ok) {
            None => Ok(()),
            Some((f, _)) => Err(DataplaneError::MissingFeature {
                feature: f.name(),
                since: f.since(),
                purpose: f.purpose(),
                release: release(),
            }),
        }
    }
}

/// The running kernel's release (`uname -r`).
pub fn release() -> String {
    nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_else(|_| "?".into())
}

/// The kernel's features, probed once per process.
pub fn features() -> &'static Features {
    static FEATURES: OnceLock<Features> = OnceLock::new();
    FEATURES.get_or_init(|| Features { found: Feature::ALL.iter().map(|&f| (f, probe(f))).collect() })
}

/// One probe. An unexpected error counts as "absent": the fallbacks are safe, and for a
/// required feature `attach` then says what is missing instead of failing later, obscurely.
fn probe(feature: Feature) -> bool {
    match feature {
        Feature::MmapableArray => sys::map_create(sys::BPF_MAP_TYPE_ARRAY, 4, 8, 1, sys::BPF_F_MMAPABLE).is_ok(),
        Feature::Jiffies64 => helper(BpfHelper::BPF_FUNC_jiffies64),
        Feature::RingBuf => is_map_supported(MapType::RingBuf).unwrap_or(false),
        Feature::CoarseClock => helper(BpfHelper::BPF_FUNC_ktime_get_coarse_ns),
        Feature::AtomicCmpxchg => sys::cmpxchg_supported(),
        Feature::Tcx => sys::tcx_supported(),
    }
}

fn helper(h: BpfHelper) -> bool {
    is_helper_supported(ProgramType::Xdp, h).unwrap_or(false)
}

pub(super) use sys::{BPF_PROG_TYPE_SCHED_CLS, BPF_PROG_TYPE_XDP, load_program};

/// The bpf(2) calls the probes make that aya does not offer: fixed-layout attribute structs,
/// zero-padded to a size every kernel accepts.
mod sys {
    use super::*;

    const BPF_MAP_CREATE: u32 = 0;
    const BPF_PROG_LOAD: u32 = 5;
    const BPF_PROG_QUERY: u32 = 16;

    pub const BPF_MAP_TYPE_ARRAY: u32 = 2;
    pub const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
    pub const BPF_F_MMAPABLE: u32 = 1 << 10;
    pub const BPF_PROG_TYPE_XDP: u32 = 6;
    const BPF_TCX_EGRESS: u32 = 47;

    /// An attribute block: the command's fields first, the rest zero.
    #[repr(C, align(8))]
    struct Attr([u32; 32]);

    fn bpf(cmd: u32, attr: &mut Attr) -> io::Result<i64> {
        // SAFETY: `attr` is a valid, writable block of the size given.
        let r = unsafe {
            libc::syscall(libc::SYS_bpf, cmd as libc::c_long, attr as *mut Attr, std::mem::size_of::<Attr>())
        };
        if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) }
    }

    fn fd(r: i64) -> OwnedFd {
        // SAFETY: bpf(2) returned a new file descriptor that nothing else owns.
        unsafe { OwnedFd::from_raw_fd(r as i32) }
    }

    pub fn map_create(map_type: u32, key: u32, value: u32, entries: u32, flags: u32) -> io::Result<OwnedFd> {
        let mut a = Attr([0; 32]);
        a.0[..5].copy_from_slice(&[map_type, key, value, entries, flags]);
        bpf(BPF_MAP_CREATE, &mut a).map(fd)
    }

    /// An instruction: opcode, registers (dst low nibble, src high), offset, immediate.
    const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
        (code as u64)
            | ((dst as u64 | (src as u64) << 4) << 8)
            | ((off as u16 as u64) << 16)
            | ((imm as u32 as u64) << 32)
    }

    /// Loads an XDP program of raw instructions.
    fn load_xdp(insns: &[u64]) -> io::Result<OwnedFd> {
        load_program(BPF_PROG_TYPE_XDP, insns, 0, &mut [])
    }

    /// BPF_PROG_LOAD of a GPL program of type `prog_type`, with the verifier's log at
    /// `log_level` into `log` (none when empty).
    pub fn load_program(prog_type: u32, insns: &[u64], log_level: u32, log: &mut [u8]) -> io::Result<OwnedFd> {
        let license = c"GPL";
        let mut a = Attr([0; 32]);
        let (insns_lo, insns_hi) = split(insns.as_ptr() as u64);
        let (license_lo, license_hi) = split(license.as_ptr() as u64);
        // No log: level, size and pointer all zero (an empty slice's dangling pointer is not).
        let (level, size, buf) =
            if log.is_empty() { (0, 0, 0) } else { (log_level, log.len() as u32, log.as_mut_ptr() as u64) };
        let (log_lo, log_hi) = split(buf);
        let words =
            [prog_type, insns.len() as u32, insns_lo, insns_hi, license_lo, license_hi, level, size, log_lo, log_hi];
        a.0[..10].copy_from_slice(&words);
        bpf(BPF_PROG_LOAD, &mut a).map(fd)
    }

    fn split(p: u64) -> (u32, u32) {
        (p as u32, (p >> 32) as u32)
    }

    const XDP_PASS: i32 = 2;

    /// A program that makes one 64-bit compare-and-exchange on its stack. Kernels before 5.12
    /// refuse the instruction's encoding itself ("BPF_STX uses reserved fields").
    pub fn cmpxchg_supported() -> bool {
        const MOV64_IMM: u8 = 0xb7;
        const STX_DW: u8 = 0x7b;
        const ATOMIC_DW: u8 = 0xdb;
        const CMPXCHG: i32 = 0xf1;
        const EXIT: u8 = 0x95;
        let prog = [
            insn(MOV64_IMM, 0, 0, 0, 0),
            insn(STX_DW, 10, 0, -8, 0),
            insn(MOV64_IMM, 1, 0, 0, 1),
            insn(ATOMIC_DW, 10, 1, -8, CMPXCHG),
            insn(MOV64_IMM, 0, 0, 0, XDP_PASS),
            insn(EXIT, 0, 0, 0, 0),
        ];
        load_xdp(&prog).is_ok()
    }

    /// BPF_PROG_QUERY for TCX egress on the loopback interface (index 1 in every network
    /// namespace): a read, answered on kernels with TCX (6.6) and refused (EINVAL) before.
    pub fn tcx_supported() -> bool {
        let mut a = Attr([0; 32]);
        a.0[..2].copy_from_slice(&[1, BPF_TCX_EGRESS]);
        bpf(BPF_PROG_QUERY, &mut a).is_ok()
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn instructions_encode_as_the_kernel_reads_them() {
            // *(u64 *)(r10 - 8) = r1: code 0x7b, dst 10, src 1, off -8.
            assert_eq!(super::insn(0x7b, 10, 1, -8, 0), 0x0000_0000_fff8_1a7b);
            // r0 = 2
            assert_eq!(super::insn(0xb7, 0, 0, 0, 2), 0x0000_0002_0000_00b7);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Feature, Features};

    fn with(missing: &[Feature]) -> Features {
        Features { found: Feature::ALL.iter().map(|f| (*f, !missing.contains(f))).collect() }
    }

    #[test]
    fn a_missing_optional_feature_is_no_error() {
        assert!(with(&[Feature::Tcx, Feature::AtomicCmpxchg, Feature::CoarseClock]).check_required().is_ok());
    }

    #[test]
    fn a_missing_required_feature_names_itself_and_its_version() {
        let e = with(&[Feature::RingBuf]).check_required().unwrap_err().to_string();
        assert!(e.contains("lacks ringbuf") && e.contains("Linux 5.8"), "{e}");
        assert!(e.contains("drop events"), "{e}");
    }
}
