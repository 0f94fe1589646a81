//! The kernel programs loaded for BPF_PROG_TEST_RUN: real verifier, real maps, no interface.
//! Maps are pinned in a private bpffs directory that is removed on drop.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use aya::Ebpf;
use aya::programs::{SchedClassifier, TestRun, TestRunOptions, Xdp};
use edge_common::{Counter, CtEvent, DropKind, DropReason, PassReason, programs};
use edge_ctl::compile::{self, SlotMap, Tables};
use edge_ctl::dataplane::{maps::MapSet, object, system};
use edge_ctl::policy::{Policy, Role};

static NEXT: AtomicU32 = AtomicU32::new(0);

pub const XDP_PASS: u32 = 2;
pub const XDP_DROP: u32 = 1;
pub const TC_PASS: i32 = 0;
pub const TC_DROP: i32 = 2;

pub struct Loaded {
    ebpf: Ebpf,
    dir: PathBuf,
    pub maps: MapSet,
    pub tables: Tables,
}

impl Loaded {
    /// Loads and verifies the programs and writes `policy`'s tables for `role` as generation 0.
    pub fn new(policy: &Policy, role: Role, interface: &[IpAddr]) -> Loaded {
        Loaded::with_flavor(policy, role, interface, object::Flavor::for_kernel())
    }

    /// [`Loaded::new`] without the egress program, for tests that only run the ingress filter:
    /// the egress program is most of the verifier's work, and under emulation in the kernel
    /// matrix each verification takes seconds (it is verified by the suites that run it).
    pub fn ingress_only(policy: &Policy, role: Role, interface: &[IpAddr]) -> Loaded {
        Loaded::load(policy, role, interface, object::Flavor::for_kernel(), false)
    }

    /// [`Loaded::new`] with the object of `flavor`.
    pub fn with_flavor(policy: &Policy, role: Role, interface: &[IpAddr], flavor: object::Flavor) -> Loaded {
        Loaded::load(policy, role, interface, flavor, true)
    }

    fn load(policy: &Policy, role: Role, interface: &[IpAddr], flavor: object::Flavor, egress: bool) -> Loaded {
        crate::lab::require_root();
        system::ensure_bpffs(Path::new("/sys/fs/bpf")).expect("bpffs");
        let dir = PathBuf::from(format!(
            "/sys/fs/bpf/edge-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("create pin dir");
        // Removes the pins if loading fails below (a panic here would otherwise leave them).
        let guard = PinDir(dir.clone());
        let tables = compile::compile(policy, role, interface, &SlotMap::default()).expect("compile");
        let mut ebpf = object::load_flavor(&dir, tables.ct_max, flavor).expect("load object");
        object::load_xdp(&mut ebpf, programs::XDP_FILTER).expect("verifier accepts the filter");
        object::load_xdp(&mut ebpf, programs::XDP_FLOOR).expect("verifier accepts the floor");
        object::load_xdp(&mut ebpf, programs::XDP_MATRIX).expect("verifier accepts the reference matrix");
        if egress {
            let tc: &mut SchedClassifier =
                ebpf.program_mut(programs::TC_EGRESS).expect("tc program").try_into().expect("classifier");
            tc.load()
                .map_err(|e| object::verifier_error(programs::TC_EGRESS, e))
                .expect("verifier accepts the egress filter");
        }
        let mut maps = MapSet::open(&dir).expect("open maps");
        maps.write_generation(0, &tables).expect("write tables");
        maps.set_active_generation(0).expect("activate");
        std::mem::forget(guard);
        Loaded { ebpf, dir, maps, tables }
    }

    /// The fragment table (first fragments that passed, see the kernel's `fragments`).
    pub fn fragments(&self) -> Vec<(edge_common::FragKey, edge_common::FragEntry)> {
        self.fragment_map().iter().filter_map(Result::ok).collect()
    }

    /// Empties the fragment table.
    pub fn fragments_flush(&self) {
        let mut map = self.fragment_map();
        let keys: Vec<edge_common::FragKey> = map.keys().filter_map(Result::ok).collect();
        for k in &keys {
            let _ = map.remove(k);
        }
    }

    fn fragment_map(&self) -> aya::maps::HashMap<aya::maps::MapData, edge_common::FragKey, edge_common::FragEntry> {
        let data =
            aya::maps::MapData::from_pin(self.dir.join(edge_common::maps::FRAGMENTS)).expect("fragment table pin");
        aya::maps::HashMap::try_from(aya::maps::Map::LruHashMap(data)).expect("fragment table")
    }

    /// Another handle on the same maps (for a writer running beside test runs).
    pub fn open_maps(&self) -> MapSet {
        MapSet::open(&self.dir).expect("open maps")
    }

    fn program(&self, name: &str) -> &Xdp {
        self.ebpf.program(name).expect("program").try_into().expect("xdp")
    }

    /// Runs the ingress filter once on a frame; returns the XDP action.
    pub fn run(&self, frame: &[u8]) -> u32 {
        self.run_program(programs::XDP_FILTER, frame, 1).0
    }

    /// Runs an XDP program `repeat` times; returns the action and the time per run in ns: this
    /// thread's CPU time across the BPF_PROG_TEST_RUN call, divided by `repeat`. The kernel's
    /// own figure (`Timed::kernel_ns`) is truncated to whole nanoseconds, a step of 0.04x of
    /// a 25 ns floor; the call's own cost, spread over a million runs, is far below that.
    pub fn run_program(&self, name: &str, frame: &[u8], repeat: u32) -> (u32, f64) {
        let r = self.timed_run(name, frame, repeat);
        (r.verdict, r.ns)
    }

    /// As [`Loaded::run_program`], with the kernel's own figure.
    pub fn timed_run(&self, name: &str, frame: &[u8], repeat: u32) -> Timed {
        let opts = TestRunOptions { data_in: Some(frame), repeat, ..Default::default() };
        let start = crate::compare::cpu::thread_ns();
        let r = self.program(name).test_run(opts).expect("BPF_PROG_TEST_RUN");
        let ns = (crate::compare::cpu::thread_ns() - start) as f64 / repeat as f64;
        Timed { verdict: r.return_value, ns, kernel_ns: r.duration.as_nanos() as f64 }
    }

    /// Runs the egress filter once on a frame; returns the TC action ([`TC_PASS`], [`TC_DROP`]).
    pub fn run_egress(&self, frame: &[u8]) -> i32 {
        self.try_run_egress(frame).unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN: {e}"))
    }

    /// As [`Loaded::run_egress`], or the kernel's refusal to build an skb from the frame.
    pub fn try_run_egress(&self, frame: &[u8]) -> Result<i32, aya::programs::ProgramError> {
        let prog: &SchedClassifier =
            self.ebpf.program(programs::TC_EGRESS).expect("program").try_into().expect("classifier");
        let opts = TestRunOptions { data_in: Some(frame), repeat: 1, ..Default::default() };
        prog.test_run(opts).map(|r| r.return_value as i32)
    }

    pub fn rule(&self, name: &str) -> Counter {
        let slot = self.tables.slots.0.get(name).unwrap_or_else(|| panic!("no rule {name} in this role"));
        self.maps.rule_counter(*slot).expect("read counter")
    }

    /// Inbound drops for a reason.
    pub fn dropped(&self, reason: DropReason) -> Counter {
        self.maps.drop_counter(0, DropKind::Dropped, reason).expect("read counter")
    }

    /// Outbound drops (`Dropped`) or would-be drops (`WouldDrop`) for a reason.
    pub fn dropped_out(&self, kind: DropKind, reason: DropReason) -> Counter {
        self.maps.drop_counter(1, kind, reason).expect("read counter")
    }

    /// Inbound passes for a reason.
    pub fn passed(&self, reason: PassReason) -> Counter {
        self.maps.pass_counter(0, reason).expect("read counter")
    }

    /// Outbound passes for a reason.
    pub fn passed_out(&self, reason: PassReason) -> Counter {
        self.maps.pass_counter(1, reason).expect("read counter")
    }

    pub fn ct_event(&self, event: CtEvent) -> u64 {
        self.maps.ct_event(event).expect("read counter")
    }
}

struct PinDir(PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for Loaded {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One BPF_PROG_TEST_RUN call's result (see [`Loaded::run_program`]).
pub struct Timed {
    pub verdict: u32,
    /// ns per run, from this thread's CPU time across the call.
    pub ns: f64,
    /// The kernel's mean ns per run, truncated to whole nanoseconds.
    pub kernel_ns: f64,
}
