//! `edge-ctl kernel`: what this kernel offers edge-ctl (probed features, the object for it, every
//! program through its verifier).

use anyhow::{Result, bail};

use crate::dataplane;

pub(super) fn kernel(json: bool) -> Result<()> {
    use dataplane::kernel::{self, Feature};
    use dataplane::object::{self, Flavor};
    dataplane::system::require_privileges()?;
    let features = kernel::features();
    let flavor = Flavor::for_kernel();
    let checks = object::verify(flavor)?;
    let missing = features.all().iter().any(|(f, ok): &(Feature, bool)| f.required() && !ok);
    let refused: Vec<&str> = checks.iter().filter(|c| !c.accepted).map(|c| c.program.as_str()).collect();
    if json {
        let features: Vec<_> = features
            .all()
            .iter()
            .map(|(f, ok)| {
                serde_json::json!({ "feature": f.name(), "present": ok, "since": f.since(), "required": f.required() })
            })
            .collect();
        let out = serde_json::json!({
            "release": kernel::release(), "features": features, "object": flavor.name(), "programs": checks,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("kernel {}", kernel::release());
        println!("features (probed):");
        for (f, ok) in features.all() {
            let need = if f.required() { "required" } else { "optional" };
            let answer = if *ok { "yes" } else { "no" };
            println!("  {:<24} {answer:<3}  Linux {}+, {need}: {}", f.name(), f.since(), f.purpose());
        }
        println!("object: {}", flavor.name());
        println!("programs (this kernel's verifier; instructions processed, limit 1,000,000):");
        for c in &checks {
            let insns = c.insns_processed.map_or("?".to_string(), |n| n.to_string());
            let verdict = if c.accepted { "accepted" } else { "REFUSED" };
            // The stats line after its "processed N insns (limit ...)" part: the states.
            let states = c.stats.split_once(") ").map_or("", |(_, rest)| rest);
            println!("  {:<20} {verdict:<8} {insns:>7} insns  {states}", c.program);
            if let Some(e) = &c.error {
                println!("    {}", e.replace('\n', "\n    "));
            }
        }
    }
    if missing {
        features.check_required()?;
    }
    if !refused.is_empty() {
        bail!("this kernel's verifier refuses {}: edge-ctl cannot attach here", refused.join(", "));
    }
    Ok(())
}
