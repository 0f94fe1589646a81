//! Policy files on disk: reading one for the controller, refusing a file that other users may
//! write (whoever can write the policy can change the firewall). Used by the command line and
//! by `serve` alike.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result, bail};

use super::Policy;

/// Reads a policy file, refusing one that other users may write.
pub fn read_policy(path: &Path) -> Result<Policy> {
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read policy file {}", path.display()))?;
    if meta.permissions().mode() & 0o002 != 0 {
        bail!(
            "policy file {} is writable by other users, so anyone could change the firewall; \
             fix it with `chmod o-w {}`",
            path.display(),
            path.display()
        );
    }
    Ok(super::load(path)?)
}
