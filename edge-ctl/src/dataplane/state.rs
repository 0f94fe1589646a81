//! What edge-ctl remembers about an attached interface, beside the pins: role, mode, and the
//! policy of each generation. Written atomically (temporary file + rename), readable by root only.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::DataplaneError;
use crate::compile::{CompiledRule, SlotMap};
use crate::policy::Role;

pub const STATE_FORMAT: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InterfaceState {
    pub format: u32,
    pub ifname: String,
    pub ifindex: u32,
    pub netns: u64,
    pub role: Role,
    /// "native" or "generic".
    pub mode: String,
    /// How the egress program is attached.
    pub egress: super::egress::EgressAttachment,
    /// Seconds since the Unix epoch.
    pub attached_at: u64,
    /// SHA-256 of the eBPF object the live programs came from (see `edge-ctl upgrade`).
    pub object_hash: String,
    /// The policy loaded in each generation; the live one is named by the packet tables' `active`.
    pub generations: [Option<GenerationState>; 2],
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GenerationState {
    pub policy_origin: String,
    pub policy_hash: String,
    pub policy_text: String,
    /// The interface addresses `@interface` stood for.
    pub interface_addresses: Vec<IpAddr>,
    pub loaded_at: u64,
    pub rules: Vec<CompiledRule>,
    pub slots: SlotMap,
    /// Connection-table idle timeouts by state, nanoseconds.
    pub ct_timeout_ns: [u64; edge_common::CT_STATES],
    /// The role is in audit mode.
    pub audit: bool,
}

pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl InterfaceState {
    pub fn load(path: &Path) -> Result<Option<InterfaceState>, DataplaneError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(DataplaneError::Io { what: format!("read {}", path.display()), source: e });
            }
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| DataplaneError::State { path: path.display().to_string(), reason: e.to_string() })
    }

    pub fn save(&self, path: &Path) -> Result<(), DataplaneError> {
        let dir = path.parent().expect("state path has a parent");
        let io = |what: &str, e| DataplaneError::Io { what: format!("{what} {}", path.display()), source: e };
        std::fs::create_dir_all(dir).map_err(|e| io("create directory for", e))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| io("chmod", e))?;
        let tmp = path.with_extension("json.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io("write", e))?;
        // Compact: with two generations of a 10,000-rule policy, indentation alone made the file
        // 9 MB and its writing and reading a sixth of a reload (`jq .` shows it readably).
        let text = serde_json::to_vec(self).expect("state serializes");
        f.write_all(&text).and_then(|_| f.sync_all()).map_err(|e| io("write", e))?;
        std::fs::rename(&tmp, path).map_err(|e| io("rename", e))
    }

    /// The state of an attached interface: a missing file is an error.
    pub fn load_required(path: &Path) -> Result<InterfaceState, DataplaneError> {
        Self::load(path)?
            .ok_or_else(|| DataplaneError::State { path: path.display().to_string(), reason: "missing".into() })
    }

    pub fn live(&self, generation: u32) -> Option<&GenerationState> {
        self.generations[(generation & 1) as usize].as_ref()
    }

    /// The policy of the live generation, which the state must record (`path`: for the error).
    pub fn live_required(&self, generation: u32, path: &Path) -> Result<&GenerationState, DataplaneError> {
        self.live(generation).ok_or_else(|| DataplaneError::State {
            path: path.display().to_string(),
            reason: format!("no policy recorded for live generation {generation}"),
        })
    }
}
