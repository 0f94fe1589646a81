//! The eBPF object, built by build.rs (aya-build) and embedded in the binary.

use std::os::fd::AsFd;
use std::path::Path;

use aya::maps::MapData;
use aya::programs::{Program, ProgramError, SchedClassifier, Xdp};
use aya::{Ebpf, EbpfLoader};

use super::DataplaneError;
use super::maps::Mmapped;

/// Which of the two embedded objects: the same programs, built for what the kernel offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// For kernels with the BPF atomic compare-and-exchange (5.12) and the coarse clock helper
    /// (5.11): flow slots in front of the connection tables.
    Full,
    /// For older kernels (Debian 11's 5.10): no flow slots, the precise clock helper.
    Compat,
}

impl Flavor {
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Full => "full",
            Flavor::Compat => "compat",
        }
    }

    /// The flavour for this kernel, by its probed features; `EDGE_CTL_OBJECT=compat` (or
    /// `full`) overrides it, so the compat object can be tested on a new kernel.
    pub fn for_kernel() -> Flavor {
        use super::kernel::{Feature, features};
        match std::env::var("EDGE_CTL_OBJECT").as_deref() {
            Ok("compat") => return Flavor::Compat,
            Ok("full") => return Flavor::Full,
            _ => {}
        }
        let f = features();
        if f.has(Feature::AtomicCmpxchg) && f.has(Feature::CoarseClock) { Flavor::Full } else { Flavor::Compat }
    }

    /// The compiled kernel programs of this flavour.
    pub fn bytes(self) -> &'static [u8] {
        match self {
            Flavor::Full => aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/edge-ebpf")),
            Flavor::Compat => aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/edge-ebpf-compat")),
        }
    }
}

/// The compiled kernel programs for this kernel ([`Flavor::for_kernel`]).
pub fn bytes() -> &'static [u8] {
    Flavor::for_kernel().bytes()
}

/// SHA-256 of the object for this kernel, hex: tells whether live programs came from this build.
pub fn hash() -> String {
    crate::sha256_hex(bytes())
}

/// The maps sized by `conntrack.max_entries` (at load; the object's size is a placeholder).
pub const CT_TABLES: [&str; 2] = [edge_common::maps::CT_V4, edge_common::maps::CT_V6];

/// The flow-slot arrays in front of the tables, sized by `edge_common::ct_slots(ct_max)`.
pub const CT_SLOT_TABLES: [&str; 2] = [edge_common::maps::CT_SLOTS_V4, edge_common::maps::CT_SLOTS_V6];

/// The size the object's maps get at load for connection tables of `ct_max` entries, for the
/// maps sized at attach; `None` for the others.
pub fn sized_at_attach(name: &str, ct_max: u32) -> Option<u32> {
    if CT_TABLES.contains(&name) {
        Some(ct_max)
    } else if CT_SLOT_TABLES.contains(&name) {
        Some(edge_common::ct_slots(ct_max))
    } else {
        None
    }
}

/// The object's section of global variables. It holds one, the packet tables
/// (`edge_common::PacketTables`), which the loader turns into a one-element array map that the
/// programs read at a constant address.
pub const TABLES_SECTION: &str = ".bss";
const TABLES_SYMBOL: &str = "EDGE_TABLES";

/// Loads the object; its maps are created (or, when already pinned there, reused) in `pin_dir`.
/// `ct_max` sizes each connection table (and the flow slots in front of it).
pub fn load(pin_dir: &Path, ct_max: u32) -> Result<Ebpf, DataplaneError> {
    load_flavor(pin_dir, ct_max, Flavor::for_kernel())
}

/// [`load`] with the object of `flavor` (the benchmark measures both on one kernel).
pub fn load_flavor(pin_dir: &Path, ct_max: u32, flavor: Flavor) -> Result<Ebpf, DataplaneError> {
    let tables_pin = pin_dir.join(edge_common::maps::TABLES);
    let live_tables = tables_map(&tables_pin)?;
    let mut loader = EbpfLoader::new();
    loader.default_map_pin_directory(pin_dir);
    loader.map_pin_path(TABLES_SECTION, tables_pin);
    // The loader writes a global variable's initial value into its map, pinned or not: for a
    // map already in use that value is what the map holds now, so loading changes nothing the
    // running programs read (only the controller writes the tables, and it holds the
    // interface's lock).
    if let Some(bytes) = &live_tables {
        loader.override_global(TABLES_SYMBOL, bytes.as_slice(), true);
    }
    for name in CT_TABLES.iter().chain(&CT_SLOT_TABLES) {
        if let Some(n) = sized_at_attach(name, ct_max) {
            loader.map_max_entries(name, n);
        }
    }
    loader.load(flavor.bytes()).map_err(|e| DataplaneError::Load(format!("{e:#}")))
}

/// Makes sure the packet-tables map is pinned at `pin`, memory-mappable, before the object is
/// loaded (the loader would create a global variable's map without `BPF_F_MMAPABLE`); returns
/// its current contents when it was pinned already.
fn tables_map(pin: &Path) -> Result<Option<Vec<u8>>, DataplaneError> {
    let name = edge_common::maps::TABLES;
    let size = std::mem::size_of::<edge_common::PacketTables>() as u32;
    let flags = aya_obj::generated::BPF_F_MMAPABLE;
    if pin.exists() {
        let map = MapData::from_pin(pin).map_err(|e| DataplaneError::map(name, "open pinned map", e))?;
        let info = map.info().map_err(|e| DataplaneError::map(name, "read info", e))?;
        let have = (info.value_size(), info.max_entries(), info.map_flags() & flags);
        if have != (size, 1, flags) {
            return Err(DataplaneError::LayoutChanged {
                map: name.into(),
                live: format!(
                    "value {} B, {} entries, flags {:#x}",
                    info.value_size(),
                    info.max_entries(),
                    info.map_flags()
                ),
                new: format!("value {size} B, 1 entry, flags {flags:#x}"),
            });
        }
        let mapped: Mmapped<edge_common::PacketTables> = Mmapped::map(map.fd().as_fd(), 1, name)?;
        return Ok(Some(mapped.to_bytes()));
    }
    let def = aya_obj::maps::bpf_map_def {
        map_type: aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_ARRAY as u32,
        key_size: 4,
        value_size: size,
        max_entries: 1,
        map_flags: flags,
        ..Default::default()
    };
    let obj = aya_obj::Map::Legacy(aya_obj::maps::LegacyMap {
        def,
        inner_def: None,
        section_index: 0,
        section_kind: aya_obj::EbpfSectionKind::Bss,
        symbol_index: None,
        data: Vec::new(),
    });
    let map = MapData::create(obj, name, None).map_err(|e| DataplaneError::map(name, "create", e))?;
    map.pin(pin).map_err(|e| DataplaneError::map(name, "pin", e))?;
    Ok(None)
}

/// A program of the object, as its type.
pub fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, DataplaneError>
where
    &'a mut T: TryFrom<&'a mut Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| DataplaneError::Load(format!("program {name} missing from the eBPF object")))?
        .try_into()
        .map_err(|e: ProgramError| DataplaneError::Load(e.to_string()))
}

/// Loads (verifies) an XDP program of the object, unless [`verify_filters`] did.
pub fn load_xdp<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp, DataplaneError> {
    let prog: &mut Xdp = program(ebpf, name)?;
    if prog.fd().is_err() {
        prog.load().map_err(|e| verifier_error(name, e))?;
    }
    Ok(prog)
}

/// Loads (verifies) the egress program, unless [`verify_filters`] did.
pub fn load_tc(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, DataplaneError> {
    let name = edge_common::programs::TC_EGRESS;
    let prog: &mut SchedClassifier = program(ebpf, name)?;
    if prog.fd().is_err() {
        prog.load().map_err(|e| verifier_error(name, e))?;
    }
    Ok(prog)
}

/// Loads (verifies) the XDP filter and the egress program at once, one thread each: the
/// kernel's verifier is most of an attach (about 0.2 s per program), and the two are
/// independent. [`load_xdp`] and [`load_tc`] then find them loaded.
pub fn verify_filters(ebpf: &mut Ebpf) -> Result<(), DataplaneError> {
    let (xdp_name, tc_name) = (edge_common::programs::XDP_FILTER, edge_common::programs::TC_EGRESS);
    let mut xdp = None;
    let mut tc = None;
    for (name, prog) in ebpf.programs_mut() {
        match (name == xdp_name, name == tc_name, prog) {
            (true, _, Program::Xdp(p)) => xdp = Some(p),
            (_, true, Program::SchedClassifier(p)) => tc = Some(p),
            _ => {}
        }
    }
    let missing = |name: &str| DataplaneError::Load(format!("program {name} missing from the eBPF object"));
    let (xdp, tc) = (xdp.ok_or_else(|| missing(xdp_name))?, tc.ok_or_else(|| missing(tc_name))?);
    let (x, t) = std::thread::scope(|scope| {
        let egress = scope.spawn(|| tc.load());
        let x = xdp.load();
        (x, egress.join().expect("the verifying thread does not panic"))
    });
    x.map_err(|e| verifier_error(xdp_name, e))?;
    t.map_err(|e| verifier_error(tc_name, e))
}

/// Turns a load failure into an error that shows the end of the verifier's log.
pub fn verifier_error(program: &str, e: ProgramError) -> DataplaneError {
    match e {
        ProgramError::LoadError { io_error, verifier_log } => {
            let log = verifier_log.to_string();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(20)..].join("\n");
            DataplaneError::Verifier { program: program.to_string(), reason: io_error.to_string(), log_tail: tail }
        }
        other => DataplaneError::Load(format!("{program}: {other}")),
    }
}

/// What the kernel's verifier said about one program of an object.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProgramCheck {
    pub program: String,
    pub accepted: bool,
    /// Instructions the verifier processed (its complexity; the limit is 1,000,000).
    pub insns_processed: Option<u64>,
    /// The verifier's statistics line ("processed N insns (limit ...) ...").
    pub stats: String,
    /// When refused: the reason and the end of the verifier's log.
    pub error: Option<String>,
}

/// Runs every program of the object through this kernel's verifier, with maps of its own that
/// live only as long as the check (nothing is pinned or attached), and reads the verifier's
/// statistics: how close each program is to the kernel's limits. aya keeps the verifier's log
/// only when a load fails, so this loads the relocated instructions itself.
pub fn verify(flavor: Flavor) -> Result<Vec<ProgramCheck>, DataplaneError> {
    use std::os::fd::{AsFd, AsRawFd};
    let load_err = |e: &dyn std::fmt::Display| DataplaneError::Load(format!("{} object: {e}", flavor.name()));
    let mut obj = aya_obj::Object::parse(flavor.bytes()).map_err(|e| load_err(&e))?;
    let mut maps = Vec::new();
    for (name, map) in &obj.maps {
        let data = MapData::create(map.clone(), name, None).map_err(|e| DataplaneError::map(name, "create", e))?;
        maps.push((name.clone(), data, map.clone()));
    }
    let text_sections = obj.functions.keys().map(|(section, _)| *section).collect();
    let fds = maps.iter().map(|(name, data, map)| (name.as_str(), data.fd().as_fd().as_raw_fd(), map));
    obj.relocate_maps(fds, &text_sections).map_err(|e| load_err(&e))?;
    obj.relocate_calls(&text_sections).map_err(|e| load_err(&e))?;
    let mut names: Vec<&String> = obj.programs.keys().collect();
    names.sort();
    let mut checks = Vec::new();
    for name in names {
        let program = &obj.programs[name];
        let prog_type = match program.section {
            aya_obj::ProgramSection::Xdp { .. } => super::kernel::BPF_PROG_TYPE_XDP,
            aya_obj::ProgramSection::SchedClassifier => super::kernel::BPF_PROG_TYPE_SCHED_CLS,
            ref other => return Err(load_err(&format!("program {name} of unexpected kind {other:?}"))),
        };
        let insns = &obj.functions[&program.function_key()].instructions;
        // SAFETY: bpf_insn is the kernel's 8-byte instruction, plain data.
        let words = unsafe { std::slice::from_raw_parts(insns.as_ptr().cast::<u64>(), insns.len()) };
        checks.push(check_program(name, prog_type, words));
    }
    Ok(checks)
}

/// Loads one program with the verifier's statistics (log level 4) and, when it is refused,
/// again with its whole log (level 1) for the reason.
fn check_program(name: &str, prog_type: u32, insns: &[u64]) -> ProgramCheck {
    const LOG_STATS: u32 = 4;
    const LOG_ALL: u32 = 1;
    let mut log = vec![0u8; 64 << 10];
    let result = super::kernel::load_program(prog_type, insns, LOG_STATS, &mut log);
    let text = |log: &[u8]| {
        String::from_utf8_lossy(&log[..log.iter().position(|&b| b == 0).unwrap_or(log.len())]).into_owned()
    };
    let stats_text = text(&log);
    let stats = stats_text.lines().find(|l| l.starts_with("processed ")).unwrap_or_default().to_string();
    let insns_processed = stats.split_whitespace().nth(1).and_then(|n| n.parse().ok());
    let error = match result {
        Ok(_fd) => None,
        Err(e) => {
            let mut full = vec![0u8; 64 << 20];
            let _ = super::kernel::load_program(prog_type, insns, LOG_ALL | LOG_STATS, &mut full);
            let full = text(&full);
            let lines: Vec<&str> = full.lines().collect();
            Some(format!("{e}; end of the verifier log:\n{}", lines[lines.len().saturating_sub(12)..].join("\n")))
        }
    };
    ProgramCheck { program: name.to_string(), accepted: error.is_none(), insns_processed, stats, error }
}

#[cfg(test)]
mod tests {
    use super::Flavor;
    use aya_obj::generated::{BPF_CALL, BPF_JMP, BPF_PSEUDO_CALL};

    /// The global variables' map is created with the packet tables' size (see `load`):
    /// another global in the object would not fit in it.
    #[test]
    fn the_only_global_is_the_packet_tables() {
        for flavor in FLAVORS {
            let obj = aya_obj::Object::parse(flavor.bytes()).expect("the embedded object parses");
            let globals = &obj.maps[super::TABLES_SECTION];
            assert_eq!(globals.value_size() as usize, std::mem::size_of::<edge_common::PacketTables>());
            let data_sections: Vec<&String> = obj.maps.keys().filter(|n| n.starts_with('.')).collect();
            assert_eq!(data_sections, [super::TABLES_SECTION], "{flavor:?}: globals outside the packet tables");
        }
    }

    const FLAVORS: [Flavor; 2] = [Flavor::Full, Flavor::Compat];

    /// The compat object is for kernels without the atomic compare-and-exchange: it must not
    /// contain one anywhere (those verifiers refuse the encoding even in dead code), nor the
    /// coarse clock helper, nor the flow-slot maps; the full object has all three.
    #[test]
    fn the_compat_object_leaves_out_what_old_kernels_lack() {
        use aya_obj::generated::{BPF_ATOMIC, BPF_CALL, BPF_JMP, BPF_STX, bpf_func_id};
        for flavor in FLAVORS {
            let obj = aya_obj::Object::parse(flavor.bytes()).expect("the embedded object parses");
            let insns: Vec<_> = obj.functions.values().flat_map(|f| f.instructions.iter()).collect();
            // BPF_ATOMIC with an immediate other than a plain add (0): fetch and exchange forms.
            let fetching_atomics =
                insns.iter().filter(|i| i.code & 0xe7 == (BPF_STX | BPF_ATOMIC) as u8 && i.imm != 0).count();
            let coarse = bpf_func_id::BPF_FUNC_ktime_get_coarse_ns as i32;
            let coarse_calls = insns
                .iter()
                .filter(|i| i.code == (BPF_JMP | BPF_CALL) as u8 && i.src_reg() == 0 && i.imm == coarse)
                .count();
            let slots = obj.maps.contains_key(edge_common::maps::CT_SLOTS_V4);
            let full = flavor == Flavor::Full;
            assert_eq!((fetching_atomics > 0, coarse_calls > 0, slots), (full, full, full), "{flavor:?}");
        }
    }

    /// The programs are one function each. A BPF-to-BPF call returns through the kernel's
    /// return thunk on CPUs that need one, which the benchmark measured at 0.3-0.5x of the
    /// floor on every packet: a change that makes LLVM call out of a program (a body too big
    /// to inline, a struct zeroed with memset) fails here rather than in the benchmark.
    #[test]
    fn programs_make_no_function_calls() {
        for flavor in FLAVORS {
            let obj = aya_obj::Object::parse(flavor.bytes()).expect("the embedded object parses");
            assert!(obj.programs.contains_key(edge_common::programs::XDP_FILTER));
            for (name, program) in &obj.programs {
                let f = &obj.functions[&program.function_key()];
                let calls = f
                    .instructions
                    .iter()
                    .filter(|i| i.code == (BPF_JMP | BPF_CALL) as u8 && i.src_reg() == BPF_PSEUDO_CALL as u8)
                    .count();
                assert_eq!(calls, 0, "{flavor:?}: {name} makes {calls} BPF-to-BPF calls");
            }
        }
    }
}
