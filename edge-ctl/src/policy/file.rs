//! Policy files on disk: reading one for the controller, refusing a file that another user
//! could change (whoever can write the policy can change the firewall; see [`crate::trust`]).
//! Used by the command line and by `serve` alike.

use std::path::Path;

use anyhow::{Context, Result};

use super::Policy;

/// Reads a policy file, refusing one that another user could change.
pub fn read_policy(path: &Path) -> Result<Policy> {
    let text = read_policy_text(path)?;
    Ok(super::parse(&text, &path.display().to_string())?)
}

/// The text of a policy file, refusing one that another user could change.
pub fn read_policy_text(path: &Path) -> Result<String> {
    std::fs::metadata(path).with_context(|| format!("cannot read policy file {}", path.display()))?;
    crate::trust::check(path, "policy file")?;
    std::fs::read_to_string(path).with_context(|| format!("cannot read policy file {}", path.display()))
}
