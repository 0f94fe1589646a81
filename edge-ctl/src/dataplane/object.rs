//! The eBPF object, built by build.rs (aya-build) and embedded in the binary.

use std::path::Path;

use aya::programs::{ProgramError, Xdp};
use aya::{Ebpf, EbpfLoader};

use super::DataplaneError;

/// The compiled kernel programs.
pub fn bytes() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/edge-ebpf"))
}

/// SHA-256 of the embedded object, hex: tells whether live programs came from this build.
pub fn hash() -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Loads the object; its maps are created (or, when already pinned there, reused) in `pin_dir`.
/// `ct_max` sizes each connection table.
pub fn load(pin_dir: &Path, ct_max: u32) -> Result<Ebpf, DataplaneError> {
    EbpfLoader::new()
        .default_map_pin_directory(pin_dir)
        .map_max_entries(edge_common::maps::CT_V4, ct_max)
        .map_max_entries(edge_common::maps::CT_V6, ct_max)
        .load(bytes())
        .map_err(|e| DataplaneError::Load(format!("{e:#}")))
}

/// Loads (verifies) an XDP program of the object.
pub fn load_xdp<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp, DataplaneError> {
    let prog: &mut Xdp = ebpf
        .program_mut(name)
        .ok_or_else(|| DataplaneError::Load(format!("program {name} missing from the eBPF object")))?
        .try_into()
        .map_err(|e: ProgramError| DataplaneError::Load(e.to_string()))?;
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
