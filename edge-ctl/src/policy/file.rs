//! Policy files on disk: reading one for the controller, refusing a file that another user
//! could change (whoever can write the policy can change the firewall; see [`crate::trust`]).
//! Used by the command line and by `serve` alike.

use std::path::Path;

use anyhow::{Context, Result};

use super::Policy;

/// Reads a policy file, refusing one that another user could change.
pub fn read_policy(path: &Path) -> Result<Policy> {
    std::fs::metadata(path).with_context(|| format!("cannot read policy file {}", path.display()))?;
    crate::trust::check(path, "policy file")?;
    Ok(super::load(path)?)
}
