//! `edge-ctl policy ...`: policy files without the kernel: check, show, plan and template.

use std::path::Path;

use anyhow::Result;

use super::args::ProfileArg;
use crate::policy::{Placement, Role, read_policy};
use crate::profile;

pub(super) fn check(file: &Path) -> Result<()> {
    let p = read_policy(file)?;
    for role in Role::ALL {
        crate::compile::compile(&p, role, &[], &Default::default())?;
    }
    let mut warnings = p.warnings.clone();
    warnings.extend(crate::analysis::findings(&p).into_iter().map(|f| f.diagnostic));
    warnings.sort_by_key(|d| d.at);
    for w in &warnings {
        eprintln!("{w}");
    }
    let count = |r| p.rules_of(r).count();
    println!(
        "{}: ok ({} rules: {} external, {} internal enabled; {} warnings)",
        file.display(),
        p.rules.len(),
        count(Role::External),
        count(Role::Internal),
        warnings.len()
    );
    Ok(())
}

pub(super) fn show(file: &Path, role: Option<Role>) -> Result<()> {
    let p = read_policy(file)?;
    print!("{}", crate::show::render(&p, role));
    Ok(())
}

pub(super) fn plan(nodes: u8, placement: Placement) -> Result<()> {
    print!("{}", profile::plan(nodes, placement));
    Ok(())
}

pub(super) fn template(name: ProfileArg, nodes: u8, placement: Placement) -> Result<()> {
    match name {
        ProfileArg::Lync2013EdgeHlb => {
            print!("{}", profile::render(&profile::Options { nodes, placement, ..Default::default() }));
        }
    }
    Ok(())
}
