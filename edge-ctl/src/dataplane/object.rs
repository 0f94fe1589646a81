//! The eBPF object, built by build.rs (aya-build) and embedded in the binary.

use std::path::Path;

use aya::programs::{Program, ProgramError, SchedClassifier, Xdp};
use aya::{Ebpf, EbpfLoader};

use super::DataplaneError;

/// The compiled kernel programs.
pub fn bytes() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/edge-ebpf"))
}

/// SHA-256 of the embedded object, hex: tells whether live programs came from this build.
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

/// Loads the object; its maps are created (or, when already pinned there, reused) in `pin_dir`.
/// `ct_max` sizes each connection table (and the flow slots in front of it).
pub fn load(pin_dir: &Path, ct_max: u32) -> Result<Ebpf, DataplaneError> {
    let mut loader = EbpfLoader::new();
    loader.default_map_pin_directory(pin_dir);
    for name in CT_TABLES.iter().chain(&CT_SLOT_TABLES) {
        if let Some(n) = sized_at_attach(name, ct_max) {
            loader.map_max_entries(name, n);
        }
    }
    loader.load(bytes()).map_err(|e| DataplaneError::Load(format!("{e:#}")))
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

/// Loads (verifies) an XDP program of the object.
pub fn load_xdp<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp, DataplaneError> {
    let prog: &mut Xdp = program(ebpf, name)?;
    prog.load().map_err(|e| verifier_error(name, e))?;
    Ok(prog)
}

/// Loads (verifies) the egress program.
pub fn load_tc(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, DataplaneError> {
    let name = edge_common::programs::TC_EGRESS;
    let prog: &mut SchedClassifier = program(ebpf, name)?;
    prog.load().map_err(|e| verifier_error(name, e))?;
    Ok(prog)
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
