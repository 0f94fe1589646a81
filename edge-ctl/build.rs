//! Builds the eBPF objects (edge-ebpf, for bpfel-unknown-none with the nightly toolchain and
//! bpf-linker) and leaves them in OUT_DIR, where `dataplane::object` embeds them: `edge-ebpf`,
//! and `edge-ebpf-compat` (feature `compat`, for kernels before 5.12).
//! `cargo xtask setup` installs what this needs; every xtask command runs it when missing.
use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } =
        cargo_metadata::MetadataCommand::new().no_deps().exec().context("cargo metadata")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "edge-ebpf")
        .ok_or_else(|| anyhow!("edge-ebpf package not found in the workspace"))?;
    let root = ebpf.manifest_path.parent().ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    let skip = std::env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v == "true");
    if !skip && which_bpf_linker().is_none() {
        return Err(anyhow!(
            "bpf-linker is not on PATH: run `cargo xtask setup` (it builds bpf-linker into .tools/bin), \
             or build through `cargo xtask ...`, which puts it on PATH"
        ));
    }
    let out_dir = std::path::PathBuf::from(std::env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    // aya-build leaves each build's binary at OUT_DIR/edge-ebpf: the compat build first, renamed,
    // then the default one.
    for (features, name) in [(&["compat"][..], Some("edge-ebpf-compat")), (&[][..], None)] {
        aya_build::build_ebpf(
            [aya_build::Package { name: ebpf.name.as_str(), root_dir: root.as_str(), features, ..Default::default() }],
            Toolchain::default(),
        )?;
        if let Some(name) = name.filter(|_| !skip) {
            std::fs::rename(out_dir.join("edge-ebpf"), out_dir.join(name)).context("rename the compat object")?;
        }
    }
    Ok(())
}

fn which_bpf_linker() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("bpf-linker")).find(|p| p.is_file())
}
